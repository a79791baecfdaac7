// Helpers every module of the addon (tun.c, udp.c, relay.c, udp_tools.c) needs on the JS
// thread and around its reader threads. One definition each, so that the error shape the
// TypeScript side and the tests match on — .code is the errno name and the message starts
// with it: "EPERM: TUNSETIFF failed (Operation not permitted)" — cannot drift between modules.
#ifndef EDGEMESH_NATIVE_UTIL_H
#define EDGEMESH_NATIVE_UTIL_H
#include <node_api.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

// Each file names itself (EM_MODULE "edgemesh_udp", ...) before including this header, so a
// failed N-API call still says which part of the addon it came from.
#ifndef EM_MODULE
#error "define EM_MODULE (the module's name in N-API failure messages) before including native_util.h"
#endif
#define CHECK(env, call)                                                                           \
  do {                                                                                             \
    if ((call) != napi_ok) {                                                                       \
      napi_throw_error((env), "EM_NAPI", EM_MODULE ": N-API call failed: " #call);                 \
      return NULL;                                                                                 \
    }                                                                                              \
  } while (0)

// "EPERM" for EPERM; "EUNKNOWN" for a number libc has no name for.
const char *errno_name(int err);
// Throws Error(code = errno name, "ENAME: <what> failed (<strerror>)"); returns NULL.
napi_value throw_errno(napi_env env, int err, const char *what);
// Throws Error(code, msg); returns NULL so callers can `return throw_plain(...)`.
napi_value throw_plain(napi_env env, const char *code, const char *msg);

// Fetches up to `cap` arguments into argv (*argc gets the count passed) and throws
// EINVAL with `usage` when fewer than `min` came. Returns 0, or -1 after throwing.
// Inline so that EM_MODULE names the caller's module.
static inline int get_args(napi_env env, napi_callback_info info, napi_value *argv, size_t cap, size_t *argc,
                           size_t min, const char *usage) {
  *argc = cap;
  if (napi_get_cb_info(env, info, argc, argv, NULL, NULL) != napi_ok) {
    napi_throw_error(env, "EM_NAPI", EM_MODULE ": N-API call failed: napi_get_cb_info");
    return -1;
  }
  if (*argc < min) {
    napi_throw_error(env, "EINVAL", usage);
    return -1;
  }
  return 0;
}
// An optional property of an options object: 1 when undefined, 0 when of type `want`
// (*out holds it), -1 when of another type or unreadable (nothing thrown).
int get_prop(napi_env env, napi_value obj, const char *key, napi_valuetype want, napi_value *out);
// A JS number that is an integer 0..2^32-1. Returns 0, or -1 (nothing thrown).
int get_u32_arg(napi_env env, napi_value v, uint32_t *out);
// A Uint8Array's bytes, in place (no copy). Returns 0, or -1 (nothing thrown).
int get_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len);

// The addon's handles (TUN device, UDP socket, relay) are plain objects that wrap the
// native struct and carry a type tag per kind, so that JS can pass neither another kind's
// handle nor a look-alike object where one is expected.
napi_status handle_new(napi_env env, const napi_type_tag *tag, void *data, napi_finalize finalize, napi_value *out);
// The struct behind a handle of `tag`'s kind (*data may be NULL: none wrapped); false, with
// nothing thrown, for any other value: the caller throws its own error.
bool handle_unwrap(napi_env env, napi_value obj, const napi_type_tag *tag, void **data);
// The same for a call's handle argument: for any other value throws TypeError (code
// EM_BAD_HANDLE, message `not_a_handle`) and returns NULL.
void *handle_arg(napi_env env, napi_value obj, const napi_type_tag *tag, const char *not_a_handle);

// Monotonic nanoseconds. Inline: the reader threads stamp every received batch with it.
static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// The reader threads' stop protocol: each owns an eventfd (stop_fd) beside its socket or
// TUN fd and a stop flag. The reader sleeps in reader_wait(); shutdown calls reader_stop(),
// which sets the flag and wakes the poll(). The flag alone is not enough (the reader may be
// blocked in poll()), the eventfd alone would race with a reader between two polls.
//
// Blocks until fd has an event or a stop is asked. Returns fd's poll revents (>= 0; may be
// 0 when only a spurious wake-up came) or -1 when the reader must end.
int reader_wait(int fd, int stop_fd, atomic_int *stop);
// Asks the reader to end (the thread is joined by the caller).
void reader_stop(int stop_fd, atomic_int *stop);
// A reader thread's fixed set of buffers (tun.c, udp.c): the thread takes a free slot,
// fills it and hands it to JavaScript, which gives it back once its handler has returned.
// The thread blocks while JavaScript holds every slot (back-pressure, no allocation).
#define SLOT_POOL_MAX 16
typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int n;
  unsigned char free[SLOT_POOL_MAX];
} slot_pool_t;
// All n (<= SLOT_POOL_MAX) slots free.
void slot_pool_init(slot_pool_t *p, int n);
void slot_pool_destroy(slot_pool_t *p);
// The next free slot; blocks while none is. -1 once *stop is set (see slot_pool_wake).
int slot_pool_take(slot_pool_t *p, atomic_int *stop);
void slot_pool_give(slot_pool_t *p, int slot);
// Wakes a reader blocked in slot_pool_take, after the caller has set its stop flag.
void slot_pool_wake(slot_pool_t *p);
#endif
