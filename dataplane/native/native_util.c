// See native_util.h.
#define _GNU_SOURCE
#define EM_MODULE "edgemesh"
#include "native_util.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

const char *errno_name(int err) {
  const char *n = strerrorname_np(err);
  return n ? n : "EUNKNOWN";
}

napi_value throw_errno(napi_env env, int err, const char *what) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s failed (%s)", errno_name(err), what, strerror(err));
  napi_throw_error(env, errno_name(err), msg);
  return NULL;
}

napi_value throw_plain(napi_env env, const char *code, const char *msg) {
  napi_throw_error(env, code, msg);
  return NULL;
}

int get_prop(napi_env env, napi_value obj, const char *key, napi_valuetype want, napi_value *out) {
  napi_valuetype t;
  if (napi_get_named_property(env, obj, key, out) != napi_ok) return -1;
  if (napi_typeof(env, *out, &t) != napi_ok) return -1;
  if (t == napi_undefined) return 1;
  return t == want ? 0 : -1;
}

int get_u32_arg(napi_env env, napi_value v, uint32_t *out) {
  napi_valuetype t;
  double d;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return -1;
  napi_get_value_double(env, v, &d);
  if (!(d >= 0 && d <= 4294967295.0) || d != (double)(uint32_t)d) return -1;
  *out = (uint32_t)d;
  return 0;
}

int get_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is_ta = false;
  napi_typedarray_type type;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) return -1;
  if (napi_get_typedarray_info(env, v, &type, len, (void **)data, NULL, NULL) != napi_ok) return -1;
  return type == napi_uint8_array ? 0 : -1;
}

napi_status handle_new(napi_env env, const napi_type_tag *tag, void *data, napi_finalize finalize, napi_value *out) {
  napi_status st = napi_create_object(env, out);
  if (st == napi_ok) st = napi_type_tag_object(env, *out, tag);
  if (st == napi_ok) st = napi_wrap(env, *out, data, finalize, NULL, NULL);
  return st;
}

bool handle_unwrap(napi_env env, napi_value obj, const napi_type_tag *tag, void **data) {
  bool ok = false;
  if (napi_check_object_type_tag(env, obj, tag, &ok) != napi_ok || !ok) return false;
  *data = NULL;
  napi_unwrap(env, obj, data);
  return true;
}

void *handle_arg(napi_env env, napi_value obj, const napi_type_tag *tag, const char *not_a_handle) {
  void *p;
  if (handle_unwrap(env, obj, tag, &p)) return p;
  napi_throw_type_error(env, "EM_BAD_HANDLE", not_a_handle);
  return NULL;
}

int reader_wait(int fd, int stop_fd, atomic_int *stop) {
  struct pollfd fds[2] = {{.fd = fd, .events = POLLIN}, {.fd = stop_fd, .events = POLLIN}};
  while (!atomic_load(stop)) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (atomic_load(stop) || (fds[1].revents & POLLIN)) return -1;
    return fds[0].revents;
  }
  return -1;
}

void reader_stop(int stop_fd, atomic_int *stop) {
  atomic_store(stop, 1);
  uint64_t one = 1;
  ssize_t w = write(stop_fd, &one, sizeof one);
  (void)w;  // a full eventfd counter (never reached) still wakes the reader
}

void slot_pool_init(slot_pool_t *p, int n) {
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->cond, NULL);
  p->n = n;
  for (int i = 0; i < n; i++) p->free[i] = 1;
}

void slot_pool_destroy(slot_pool_t *p) {
  pthread_mutex_destroy(&p->lock);
  pthread_cond_destroy(&p->cond);
}

int slot_pool_take(slot_pool_t *p, atomic_int *stop) {
  pthread_mutex_lock(&p->lock);
  int got = -1;
  while (!atomic_load(stop)) {
    for (int i = 0; i < p->n && got < 0; i++)
      if (p->free[i]) {
        p->free[i] = 0;
        got = i;
      }
    if (got >= 0) break;
    pthread_cond_wait(&p->cond, &p->lock);
  }
  pthread_mutex_unlock(&p->lock);
  return got;
}

void slot_pool_give(slot_pool_t *p, int slot) {
  pthread_mutex_lock(&p->lock);
  p->free[slot] = 1;
  pthread_cond_signal(&p->cond);
  pthread_mutex_unlock(&p->lock);
}

void slot_pool_wake(slot_pool_t *p) {
  pthread_mutex_lock(&p->lock);
  pthread_cond_broadcast(&p->cond);
  pthread_mutex_unlock(&p->lock);
}
