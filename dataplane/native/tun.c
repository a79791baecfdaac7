// edgemesh_tun: the TUN device addon (N-API, C).
//
// Opens or attaches a Linux TUN device (IFF_TUN | IFF_NO_PI, optionally IFF_VNET_HDR with
// TSO/USO offloads so the kernel hands us up-to-64 KiB GSO super-packets), reads it on a
// dedicated pthread and hands JS whole batches, and writes batches from JS.
//
// Read path, and why it looks like this:
//  - The reader thread waits in poll() on the TUN fd and an eventfd (the stop signal), then
//    drains the non-blocking fd into ONE malloc'd batch buffer until EAGAIN or the buffer is
//    full. Each record is [u32 length][vnet hdr?][IP packet].
//  - The filled buffer becomes one external ArrayBuffer on the JS thread: no copy between
//    the kernel's read() and the Uint8Array views JS hands to the forwarder.
//  - Hand-off goes through a napi_threadsafe_function with a bounded queue in blocking mode:
//    when JS is slow the reader blocks, so the kernel's own TUN queue (txqueuelen) fills and
//    the kernel drops and counts, exactly like a NIC. Nothing grows without bound.
//  - The thread costs a hop per packet (reader wakes, then the JS thread wakes): reader 'loop'
//    polls the fd on Node's event loop instead (uv_poll) and reads on the JS thread, 'auto'
//    does that while traffic is light and hands reading to the thread when a wake-up finds a
//    batch (the thread overlaps reading with JS: the throughput), back after 20 ms of idle.
// Errors thrown to JS carry the errno name first, e.g. "EPERM: TUNSETIFF failed (...)", and
// the error's .code is that errno name.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <malloc.h>
#include <node_api.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define EM_MODULE "edgemesh_tun"
#include "native_util.h"
#include "uv_poll_shim.h"

// Older kernel headers lack the UDP segmentation offload flags (Linux 6.2+).
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

#define VNET_HDR_LEN 10
#define MAX_PACKET 65535
// Batch buffers: large enough for several super-packets with offloads, bounded in count.
#define BATCH_BYTES_OFFLOAD (1024 * 1024)
#define BATCH_BYTES_PLAIN (256 * 1024)
#define BATCH_MAX_PACKETS 1024
// At most this many batches wait for the JS thread; then the reader blocks.
#define QUEUE_DEPTH 8
// The reader thread's batch buffers: the queue, the one JS is handling and the one being
// filled. Allocated when the thread starts, reused batch after batch; a batch's ArrayBuffer
// is detached when its handler returns and the buffer goes back to the pool.
#define POOL_BATCHES (QUEUE_DEPTH + 2)
_Static_assert(POOL_BATCHES <= SLOT_POOL_MAX, "the reader's pool is a slot_pool_t");
// Reader 'auto': the loop hands reading to the thread when one wake-up finds this much, and
// the thread hands it back after this long without a packet.
#define AUTO_BUSY_PACKETS 8
#define AUTO_BUSY_BYTES (64 * 1024)
#define AUTO_IDLE_MS 20
// ... and also once traffic has turned sparse: this many wake-ups in a row that each came
// after a wait of at least AUTO_SPARSE_GAP_MS and found a light batch. Interactive traffic
// (a ping every 10 ms, say) never leaves the device idle for AUTO_IDLE_MS, and on the thread
// every packet pays a second wake-up (thread → loop) on top of the device's.
#define AUTO_SPARSE_GAP_MS 2
#define AUTO_SPARSE_WAKES 8
// A batch_t.err that is no errno: the thread went idle, the loop polls again.
#define EM_HANDBACK (-1)

struct tun;
typedef struct {
  _Alignas(16) unsigned char uv[EM_UV_HANDLE_BYTES];
  struct tun *t;
} tun_poll_box_t;

typedef struct tun {
  int fd;
  int stop_fd;  // eventfd: wakes the reader's poll() on close
  int vnet;     // 1 when records carry a virtio_net_hdr
  int running;  // reader thread started and not yet joined
  int started;  // start() succeeded (either mode)
  uint32_t write_burst;  // packets one write() call writes before it yields the CPU (0: never)
  int closed;
  int hook_added;  // env cleanup hook registered (after the tsfn, so it runs before the tsfn's)
  atomic_int stop;
  pthread_t thread;
  napi_threadsafe_function tsfn;
  napi_env env;
  // Loop mode: the fd is polled on Node's event loop and read on the JS thread.
  tun_poll_box_t *poll;
  int auto_mode;  // 'auto': the loop polls while idle, the thread reads under load
  int go_fd;      // eventfd: the loop hands reading to the thread ('auto')
  napi_ref cb_ref;
  napi_async_context async_ctx;
  // Loop mode: one batch buffer, reused. A batch read on the loop is handed to JS and
  // detached when the callback returns, so no read allocates.
  uint8_t *loop_buf;
  // Thread mode: the pool of batch buffers (mmap'd; pool_ready once they and the lock exist).
  uint8_t *pool[POOL_BATCHES];
  int pool_ready;
  slot_pool_t slots;  // which of pool[] the reader may fill
  char name[IFNAMSIZ];
  unsigned offload_flags;
  // Counters, written by the reader thread (rx) or the JS thread (tx), read by JS.
  atomic_ullong rx_batches, rx_read_errors, tx_errors;
  uint64_t handoffs, handbacks;  // 'auto': reading moved loop → thread, thread → loop (JS thread only)
  atomic_int last_tx_errno;
} tun_t;

typedef struct {
  uint8_t *buf;
  size_t used;
  uint32_t count;
  int err;   // non-zero: the reader stopped on this errno (buf is NULL)
  int slot;  // the pool buffer holding it, or -1 (the loop's buffer; no data)
} batch_t;

// ---- reading ---------------------------------------------------------------------------

static size_t batch_cap(const tun_t *t) { return t->vnet ? BATCH_BYTES_OFFLOAD : BATCH_BYTES_PLAIN; }

// Drains the non-blocking fd into `buf` (batch_cap bytes) as [u32 len][packet] records until
// EAGAIN, the buffer is full or BATCH_MAX_PACKETS; returns the packets read, *used_out the
// bytes; *fatal gets the errno that ends reading for good (the device is gone), else 0.
static uint32_t read_into(tun_t *t, uint8_t *buf, size_t *used_out, int *fatal) {
  const size_t cap = batch_cap(t);
  const size_t room = 4 + (t->vnet ? VNET_HDR_LEN : 0) + MAX_PACKET;
  *fatal = 0;
  size_t used = 0;
  uint32_t count = 0;
  while (count < BATCH_MAX_PACKETS && cap - used >= room) {
    ssize_t r = read(t->fd, buf + used + 4, cap - used - 4);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) {
        atomic_fetch_add(&t->rx_read_errors, 1);
        if (errno == EBADF || errno == EBADFD || errno == EIO) *fatal = errno;
      }
      break;
    }
    if ((size_t)r <= (t->vnet ? VNET_HDR_LEN : 0)) continue;  // nothing behind the header
    uint32_t len = (uint32_t)r;
    memcpy(buf + used, &len, 4);
    used += 4 + (size_t)r;
    count++;
  }
  *used_out = used;
  if (count > 0) atomic_fetch_add(&t->rx_batches, 1);
  return count;
}

// The reader thread's buffers, mapped once (pages come in as batches fill them); 0 or errno.
static int pool_init(tun_t *t) {
  if (t->pool_ready) return 0;
  for (int i = 0; i < POOL_BATCHES; i++) {
    void *m = mmap(NULL, batch_cap(t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
      int e = errno;
      while (i-- > 0) munmap(t->pool[i], batch_cap(t));
      return e;
    }
    t->pool[i] = m;
  }
  slot_pool_init(&t->slots, POOL_BATCHES);
  t->pool_ready = 1;
  return 0;
}

// The reader thread's next free pool buffer; blocks while JS holds them all. -1 once the
// device is closing.
static int pool_take(tun_t *t) { return slot_pool_take(&t->slots, &t->stop); }

static void pool_give(tun_t *t, int slot) { slot_pool_give(&t->slots, slot); }

// Reader thread: drains the fd into a pool buffer. Returns the batch (NULL when nothing was
// read or the device is closing); *fatal as read_into; *nomem when the small descriptor
// could not be allocated. The descriptor is on the heap, not in the pool: a batch still
// queued when the device is torn down reaches call_js after the device is gone, and only
// its descriptor may be touched then.
static batch_t *read_batch(tun_t *t, int *fatal, int *nomem) {
  *fatal = 0;
  *nomem = 0;
  int slot = pool_take(t);
  if (slot < 0) return NULL;
  size_t used = 0;
  uint32_t count = read_into(t, t->pool[slot], &used, fatal);
  batch_t *b = count == 0 ? NULL : malloc(sizeof *b);
  if (!b) {
    if (count > 0) {
      atomic_fetch_add(&t->rx_read_errors, 1);
      *nomem = 1;
    }
    pool_give(t, slot);
    return NULL;
  }
  b->buf = t->pool[slot];
  b->used = used;
  b->count = count;
  b->err = 0;
  b->slot = slot;
  return b;
}

static batch_t *error_batch(int err) {
  batch_t *b = calloc(1, sizeof *b);
  if (b) {
    b->err = err;
    b->slot = -1;
  }
  return b;
}

// ---- reader thread -------------------------------------------------------------------

static void *reader_main(void *arg) {
  tun_t *t = arg;
  int ev;
  while ((ev = reader_wait(t->fd, t->stop_fd, &t->stop)) >= 0) {
    if (ev & (POLLERR | POLLHUP | POLLNVAL)) {
      batch_t *b = error_batch(EIO);
      if (b && napi_call_threadsafe_function(t->tsfn, b, napi_tsfn_blocking) != napi_ok) free(b);
      break;
    }
    int fatal, nomem;
    batch_t *b = read_batch(t, &fatal, &nomem);
    if (nomem) usleep(1000);
    // Blocks while QUEUE_DEPTH batches wait for JS: the bound on memory in flight.
    if (b && napi_call_threadsafe_function(t->tsfn, b, napi_tsfn_blocking) != napi_ok) {
      pool_give(t, b->slot);
      free(b);
      break;  // closing
    }
    if (fatal) {
      batch_t *e = error_batch(fatal);
      if (e && napi_call_threadsafe_function(t->tsfn, e, napi_tsfn_blocking) != napi_ok) free(e);
      break;
    }
  }
  return NULL;
}

// Reader 'auto': parked until the loop hands reading over (go_fd), then reads like
// reader_main until AUTO_IDLE_MS pass without a packet or the traffic turns sparse
// (AUTO_SPARSE_WAKES), and hands reading back to the loop
// through the same queue as the batches (so the loop polls again only after it has
// delivered them). Only one side reads at a time.
static void *auto_reader_main(void *arg) {
  tun_t *t = arg;
  struct pollfd park[2] = {{.fd = t->go_fd, .events = POLLIN}, {.fd = t->stop_fd, .events = POLLIN}};
  struct pollfd fds[2] = {{.fd = t->fd, .events = POLLIN}, {.fd = t->stop_fd, .events = POLLIN}};
  while (!atomic_load(&t->stop)) {
    if (poll(park, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return NULL;
    }
    if (atomic_load(&t->stop) || (park[1].revents & POLLIN)) return NULL;
    uint64_t v;
    if (read(t->go_fd, &v, sizeof v) < 0 && errno != EAGAIN) return NULL;
    int waited_ms = 0, sparse = 0;
    for (;;) {
      int r = poll(fds, 2, AUTO_SPARSE_GAP_MS);
      if (r < 0) {
        if (errno == EINTR) continue;
        return NULL;
      }
      if (atomic_load(&t->stop) || (fds[1].revents & POLLIN)) return NULL;
      if (r == 0) waited_ms += AUTO_SPARSE_GAP_MS;
      if (r == 0 && waited_ms < AUTO_IDLE_MS) continue;
      if (r != 0) {
        int fatal = (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) ? EIO : 0, nomem = 0;
        batch_t *b = fatal ? NULL : read_batch(t, &fatal, &nomem);
        if (nomem) usleep(1000);
        int light = b == NULL || (b->count < AUTO_BUSY_PACKETS && b->used < AUTO_BUSY_BYTES);
        sparse = waited_ms > 0 && light ? sparse + 1 : 0;
        waited_ms = 0;
        if (b && napi_call_threadsafe_function(t->tsfn, b, napi_tsfn_blocking) != napi_ok) {
          pool_give(t, b->slot);
          free(b);
          return NULL;
        }
        if (fatal) {
          batch_t *e = error_batch(fatal);
          if (e && napi_call_threadsafe_function(t->tsfn, e, napi_tsfn_blocking) != napi_ok) free(e);
          return NULL;
        }
        if (sparse < AUTO_SPARSE_WAKES) continue;
      }
      // Idle, or sparse: the loop polls again (after the batches queued before this message).
      batch_t *h = error_batch(EM_HANDBACK);
      if (!h) {  // keep reading on this thread rather than leave nobody reading
        waited_ms = sparse = 0;
        continue;
      }
      if (napi_call_threadsafe_function(t->tsfn, h, napi_tsfn_blocking) != napi_ok) {
        free(h);
        return NULL;
      }
      break;
    }
  }
  return NULL;
}

static void keep_batch_buffer(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  (void)hint;
}

// JS thread: batch → callback(arrayBuffer, count) or callback(null, 0, errnoName).
// From a libuv callback (loop mode) it goes through make_callback, which runs the microtasks
// and reports exceptions. No batch buffer is allocated per read: a batch is the loop's
// buffer (on its stack descriptor) or one of the reader thread's pool buffers (its heap
// descriptor is freed here, the buffer goes back to the pool); either way its ArrayBuffer is
// detached once the callback returns, so nothing in JS can see the buffer after the next
// read refills it.
static void deliver(napi_env env, tun_t *t, napi_value cb, batch_t *b, int from_loop) {
  napi_value recv, argv[3];
  napi_get_undefined(env, &recv);
  int data = b->err == 0;
  int slot = b->slot;
  int heap = slot >= 0 || !data;  // a descriptor from read_batch/error_batch, not the loop's stack one
  if (!data) {
    napi_get_null(env, &argv[0]);
    napi_create_uint32(env, 0, &argv[1]);
    napi_create_string_utf8(env, errno_name(b->err), NAPI_AUTO_LENGTH, &argv[2]);
  } else if (napi_create_external_arraybuffer(env, b->buf, b->used, keep_batch_buffer, NULL, &argv[0]) != napi_ok) {
    if (heap) free(b);
    if (slot >= 0) pool_give(t, slot);
    return;
  } else {
    napi_create_uint32(env, b->count, &argv[1]);
    napi_get_undefined(env, &argv[2]);
  }
  if (heap) free(b);
  napi_value result;
  if (from_loop) {
    napi_value err;
    napi_get_global(env, &recv);  // make_callback's receiver must be an object
    if (napi_make_callback(env, t->async_ctx, recv, cb, 3, argv, &result) == napi_pending_exception &&
        napi_get_and_clear_last_exception(env, &err) == napi_ok)
      napi_fatal_exception(env, err);
  } else {
    // An exception thrown by the handler surfaces as an uncaught exception, as for any event.
    napi_call_function(env, recv, cb, 3, argv, &result);
  }
  if (data) napi_detach_arraybuffer(env, argv[0]);
  if (slot >= 0) pool_give(t, slot);
}

static void on_readable(void *handle, int status, int events);

// Thread mode, JS thread: the reader's batch → callback ('auto': or the loop polls again).
static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  batch_t *b = data;
  if (env == NULL || cb == NULL) {  // torn down with batches still queued: the pool goes with the device
    free(b);
    return;
  }
  tun_t *t = context;
  if (b->err == EM_HANDBACK) {
    free(b);
    t->handbacks++;
    // Every batch queued before this message has been handled: the whole pool is free, and
    // its pages go back to the kernel until the next load (an idle node holds none of them).
    for (int i = 0; i < POOL_BATCHES && t->pool_ready; i++) madvise(t->pool[i], batch_cap(t), MADV_DONTNEED);
    if (!t->closed && t->poll) uv_poll_start(t->poll, EM_UV_READABLE, on_readable);
    return;
  }
  deliver(env, t, cb, b, 0);
}

static void loop_stop(tun_t *t);

// Loop mode: libuv says the TUN is readable; read and deliver on this thread, a bounded
// number of batches per wake-up so a busy device cannot starve the loop. No thread hop: the
// packet reaches JS in the same wake-up that saw it (lower idle RTT).
static void on_readable(void *handle, int status, int events) {
  tun_t *t = ((tun_poll_box_t *)handle)->t;
  if (!t || t->closed) return;
  napi_env env = t->env;
  napi_handle_scope scope;
  napi_value cb;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  if (napi_get_reference_value(env, t->cb_ref, &cb) != napi_ok || !cb) {
    napi_close_handle_scope(env, scope);
    return;
  }
  int fatal = 0;
  if (status < 0 || (events & ~EM_UV_READABLE)) {
    fatal = EIO;  // the device went away (POLLERR/POLLHUP)
  } else {
    for (int n = 0; n < 4 && !t->closed; n++) {
      batch_t loop_batch = {.buf = t->loop_buf, .err = 0, .slot = -1};
      batch_t *b = &loop_batch;
      loop_batch.count = read_into(t, t->loop_buf, &loop_batch.used, &fatal);
      if (loop_batch.count == 0) break;
      uint32_t count = b->count;
      size_t used = b->used;
      deliver(env, t, cb, b, 1);
      if (!fatal && t->auto_mode && !t->closed && (count >= AUTO_BUSY_PACKETS || used >= AUTO_BUSY_BYTES)) {
        // Under load: the thread reads (overlapping JS) until the device goes idle again.
        uint64_t one = 1;
        uv_poll_stop(t->poll);
        if (write(t->go_fd, &one, sizeof one) < 0)
          uv_poll_start(t->poll, EM_UV_READABLE, on_readable);
        else
          t->handoffs++;
        break;
      }
      if (fatal || count < BATCH_MAX_PACKETS / 2) break;  // drained (a full batch may have more behind it)
    }
  }
  if (fatal && !t->closed) {
    batch_t *e = error_batch(fatal);
    loop_stop(t);  // stop polling a dead fd (it would report readable forever)
    if (e) deliver(env, t, cb, e, 1);
  }
  napi_close_handle_scope(env, scope);
}

static void on_poll_closed(void *handle) { free(handle); }

// Stops and releases the loop-mode poll handle and the callback; safe to call twice.
static void loop_stop(tun_t *t) {
  if (t->poll) {
    t->poll->t = NULL;
    uv_poll_stop(t->poll);
    uv_close(t->poll, on_poll_closed);
    t->poll = NULL;
  }
  if (t->cb_ref) {
    napi_delete_reference(t->env, t->cb_ref);
    t->cb_ref = NULL;
  }
  if (t->async_ctx) {
    napi_async_destroy(t->env, t->async_ctx);
    t->async_ctx = NULL;
  }
}

// ---- lifecycle -----------------------------------------------------------------------

// Stops the reader and closes the fd. Safe to call twice and from the env cleanup hook.
static void tun_shutdown(tun_t *t) {
  if (t->closed) return;
  t->closed = 1;
  atomic_store(&t->stop, 1);
  if (t->pool_ready) slot_pool_wake(&t->slots);  // a reader waiting for a buffer JS will never give back
  loop_stop(t);
  if (t->running) {
    reader_stop(t->stop_fd, &t->stop);
    // Abort makes a reader blocked in napi_call_threadsafe_function return napi_closing.
    napi_release_threadsafe_function(t->tsfn, napi_tsfn_abort);
    pthread_join(t->thread, NULL);
    t->running = 0;
  }
  close(t->fd);
  close(t->stop_fd);
  if (t->go_fd >= 0) close(t->go_fd);
  t->fd = -1;
  t->stop_fd = -1;
  t->go_fd = -1;
}

static void cleanup_hook(void *arg) { tun_shutdown(arg); }

static void finalize_tun(napi_env env, void *data, void *hint) {
  (void)hint;
  tun_t *t = data;
  tun_shutdown(t);
  if (t->hook_added) napi_remove_env_cleanup_hook(env, cleanup_hook, t);
  // Here, not at close(): a handler may close the device while its batch is still in use.
  free(t->loop_buf);
  if (t->pool_ready) {
    for (int i = 0; i < POOL_BATCHES; i++) munmap(t->pool[i], batch_cap(t));
    slot_pool_destroy(&t->slots);
  }
  free(t);
}

static const napi_type_tag TUN_TAG = {0x6564676d65736830ULL, 0x74756e6465766963ULL};

static tun_t *get_tun(napi_env env, napi_value obj) {
  return handle_arg(env, obj, &TUN_TAG, "edgemesh_tun: not a TUN handle");
}

// ---- helpers on the JS thread ---------------------------------------------------------

static int get_string(napi_env env, napi_value v, char *out, size_t cap, size_t *len) {
  return napi_get_value_string_utf8(env, v, out, cap, len) == napi_ok ? 0 : -1;
}

static bool get_bool_prop(napi_env env, napi_value obj, const char *key, bool dflt) {
  napi_value v;
  if (get_prop(env, obj, key, napi_boolean, &v) != 0) return dflt;
  bool b = dflt;
  napi_get_value_bool(env, v, &b);
  return b;
}

static int32_t get_int_prop(napi_env env, napi_value obj, const char *key, int32_t dflt) {
  napi_value v;
  if (get_prop(env, obj, key, napi_number, &v) != 0) return dflt;
  int32_t n = dflt;
  napi_get_value_int32(env, v, &n);
  return n;
}

// Enters /var/run/netns/<name> (or an explicit path) on this thread; returns the fd of the
// namespace to go back to, or -1 with errno set.
static int enter_netns(const char *netns) {
  char path[512];
  if (strchr(netns, '/'))
    snprintf(path, sizeof path, "%s", netns);
  else
    snprintf(path, sizeof path, "/var/run/netns/%s", netns);
  int back = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (back < 0) return -1;
  int target = open(path, O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int e = errno;
    close(back);
    errno = e;
    return -1;
  }
  if (setns(target, CLONE_NEWNET) < 0) {
    int e = errno;
    close(target);
    close(back);
    errno = e;
    return -1;
  }
  close(target);
  return back;
}

static void leave_netns(int back) {
  if (back < 0) return;
  // Going back to where we were cannot fail short of the process losing CAP_SYS_ADMIN.
  if (setns(back, CLONE_NEWNET) < 0) abort();
  close(back);
}

// open({ name, offload, mtu, netns }) → handle
// handle has: name, offload (effective), offloadFlags (string[]), mtu.
static napi_value tun_open(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype vt;
  if (argc < 1 || napi_typeof(env, argv[0], &vt) != napi_ok || vt != napi_object)
    return throw_plain(env, "EINVAL", "EINVAL: open() needs an options object");
  napi_value opts = argv[0];

  char name[64] = {0};
  size_t name_len = 0;
  napi_value name_v;
  if (napi_get_named_property(env, opts, "name", &name_v) != napi_ok ||
      get_string(env, name_v, name, sizeof name, &name_len) != 0)
    return throw_plain(env, "EINVAL", "EINVAL: TUN name must be a string");
  if (name_len == 0 || name_len >= IFNAMSIZ || strchr(name, '/') || strchr(name, ' ') || strchr(name, ':') ||
      strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
    char msg[160];
    snprintf(msg, sizeof msg, "EINVAL: bad TUN name \"%s\" (1-%d characters, no '/', ':' or spaces)", name,
             IFNAMSIZ - 1);
    return throw_plain(env, "EINVAL", msg);
  }
  bool offload = get_bool_prop(env, opts, "offload", true);
  int32_t mtu = get_int_prop(env, opts, "mtu", 0);
  int32_t write_burst = get_int_prop(env, opts, "writeBurst", 0);
  if (write_burst < 0) return throw_plain(env, "EINVAL", "EINVAL: writeBurst must be 0 or more");

  char netns[400] = {0};
  size_t netns_len = 0;
  napi_value netns_v;
  napi_valuetype netns_t = napi_undefined;
  if (napi_get_named_property(env, opts, "netns", &netns_v) == napi_ok) napi_typeof(env, netns_v, &netns_t);
  if (netns_t == napi_string) get_string(env, netns_v, netns, sizeof netns, &netns_len);

  int back = -1;
  if (netns_len > 0) {
    back = enter_netns(netns);
    if (back < 0) return throw_errno(env, errno, "entering the network namespace");
  }

  int err = 0;
  const char *what = NULL;
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  struct ifreq ifr;
  unsigned flags_set = 0;
  int sock = -1;
  int eff_mtu = 0;
  if (fd < 0) {
    err = errno;
    what = "open /dev/net/tun";
    goto done;
  }
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, name, name_len);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (offload ? IFF_VNET_HDR : 0);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    err = errno;
    what = "TUNSETIFF";
    goto done;
  }
  if (offload) {
    int hdr = VNET_HDR_LEN;
    if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) {
      err = errno;
      what = "TUNSETVNETHDRSZ";
      goto done;
    }
    // USO needs Linux 6.2; older kernels reject unknown bits with EINVAL: fall back.
    unsigned want = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6;
    if (ioctl(fd, TUNSETOFFLOAD, want) == 0) {
      flags_set = want;
    } else {
      want = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
      if (ioctl(fd, TUNSETOFFLOAD, want) < 0) {
        err = errno;
        what = "TUNSETOFFLOAD";
        goto done;
      }
      flags_set = want;
    }
  }
  sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) {
    err = errno;
    what = "socket for SIOCGIFMTU";
    goto done;
  }
  struct ifreq mreq;
  memset(&mreq, 0, sizeof mreq);
  memcpy(mreq.ifr_name, ifr.ifr_name, IFNAMSIZ);
  if (mtu > 0) {
    mreq.ifr_mtu = mtu;
    if (ioctl(sock, SIOCSIFMTU, &mreq) < 0) {
      err = errno;
      what = "SIOCSIFMTU";
      goto done;
    }
  }
  if (ioctl(sock, SIOCGIFMTU, &mreq) < 0) {
    err = errno;
    what = "SIOCGIFMTU";
    goto done;
  }
  eff_mtu = mreq.ifr_mtu;

done:
  if (sock >= 0) close(sock);
  leave_netns(back);
  if (err) {
    if (fd >= 0) close(fd);
    return throw_errno(env, err, what);
  }

  tun_t *t = calloc(1, sizeof *t);
  if (!t) {
    close(fd);
    return throw_errno(env, ENOMEM, "allocating the TUN handle");
  }
  t->fd = fd;
  t->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (t->stop_fd < 0) {
    int e = errno;
    close(fd);
    free(t);
    return throw_errno(env, e, "eventfd");
  }
  t->go_fd = -1;
  t->vnet = offload ? 1 : 0;
  t->write_burst = (uint32_t)write_burst;
  t->offload_flags = flags_set;
  t->env = env;
  memcpy(t->name, ifr.ifr_name, IFNAMSIZ);
  t->name[IFNAMSIZ - 1] = 0;

  napi_value handle;
  CHECK(env, handle_new(env, &TUN_TAG, t, finalize_tun, &handle));

  napi_value v;
  CHECK(env, napi_create_string_utf8(env, t->name, NAPI_AUTO_LENGTH, &v));
  CHECK(env, napi_set_named_property(env, handle, "name", v));
  CHECK(env, napi_get_boolean(env, offload, &v));
  CHECK(env, napi_set_named_property(env, handle, "offload", v));
  CHECK(env, napi_create_int32(env, eff_mtu, &v));
  CHECK(env, napi_set_named_property(env, handle, "mtu", v));
  napi_value list;
  CHECK(env, napi_create_array(env, &list));
  static const struct {
    unsigned bit;
    const char *name;
  } names[] = {{TUN_F_CSUM, "csum"}, {TUN_F_TSO4, "tso4"}, {TUN_F_TSO6, "tso6"},
               {TUN_F_USO4, "uso4"}, {TUN_F_USO6, "uso6"}};
  uint32_t idx = 0;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (!(flags_set & names[i].bit)) continue;
    CHECK(env, napi_create_string_utf8(env, names[i].name, NAPI_AUTO_LENGTH, &v));
    CHECK(env, napi_set_element(env, list, idx++, v));
  }
  CHECK(env, napi_set_named_property(env, handle, "offloadFlags", list));
  return handle;
}

// start(handle, callback(arrayBuffer|null, count, errnoName?), reader?: 'thread' | 'loop' | 'auto')
// — starts reading: on a reader thread (default), polled on Node's event loop, or 'auto': on
// the loop while traffic is light, handed to the thread when a wake-up finds a batch.
static napi_value tun_start(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[3];
  if (get_args(env, info, argv, 3, &argc, 2, "EINVAL: start(handle, callback, reader?)")) return NULL;
  tun_t *t = get_tun(env, argv[0]);
  if (!t) return NULL;
  if (t->closed) return throw_plain(env, "EBADF", "EBADF: the TUN device is closed");
  if (t->started) return throw_plain(env, "EBUSY", "EBUSY: the TUN reader is already running");
  char reader[16] = "thread";
  size_t n = 0;
  napi_valuetype rt = napi_undefined;
  if (argc >= 3) napi_typeof(env, argv[2], &rt);
  if (rt == napi_string) napi_get_value_string_utf8(env, argv[2], reader, sizeof reader, &n);
  int auto_mode = strcmp(reader, "auto") == 0;
  int loop_mode = auto_mode || strcmp(reader, "loop") == 0;
  if ((rt != napi_string && rt != napi_undefined) || (!loop_mode && strcmp(reader, "thread") != 0))
    return throw_plain(env, "EINVAL", "EINVAL: reader must be 'thread', 'loop' or 'auto'");
  napi_valuetype cbt;
  if (napi_typeof(env, argv[1], &cbt) != napi_ok || cbt != napi_function)
    return throw_plain(env, "EINVAL", "EINVAL: callback must be a function");
  napi_value resource_name;
  CHECK(env, napi_create_string_utf8(env, "edgemesh_tun_reader", NAPI_AUTO_LENGTH, &resource_name));
  if (loop_mode && !(t->loop_buf = malloc(batch_cap(t)))) return throw_errno(env, ENOMEM, "allocating the TUN batch buffer");
  if (!loop_mode || auto_mode) {
    int rc = pool_init(t);
    if (rc != 0) return throw_errno(env, rc, "allocating the TUN reader's batch buffers");
  }
  if (loop_mode) {
    uv_loop_t *loop = NULL;
    if (napi_get_uv_event_loop(env, (struct uv_loop_s **)&loop) != napi_ok ||
        napi_create_reference(env, argv[1], 1, &t->cb_ref) != napi_ok ||
        napi_async_init(env, NULL, resource_name, &t->async_ctx) != napi_ok || !(t->poll = calloc(1, sizeof *t->poll))) {
      loop_stop(t);
      return throw_plain(env, "EINVAL", "EINVAL: cannot poll the TUN on the event loop");
    }
    t->poll->t = t;
    if (uv_poll_init(loop, t->poll, t->fd) != 0) {
      free(t->poll);  // never initialised: nothing for libuv to close
      t->poll = NULL;
      loop_stop(t);
      return throw_plain(env, "EINVAL", "EINVAL: cannot poll the TUN on the event loop");
    }
    uv_poll_start(t->poll, EM_UV_READABLE, on_readable);
    uv_unref(t->poll);  // the open device should not by itself keep the process alive
  }
  if (!loop_mode || auto_mode) {
    CHECK(env, napi_create_threadsafe_function(env, argv[1], NULL, resource_name, QUEUE_DEPTH, 1, NULL, NULL, t,
                                               call_js, &t->tsfn));
    // The open device should not by itself keep the process alive; the owner closes it.
    napi_unref_threadsafe_function(env, t->tsfn);
    int rc = 0;
    if (auto_mode && (t->go_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) rc = errno;
    if (rc == 0) rc = pthread_create(&t->thread, NULL, auto_mode ? auto_reader_main : reader_main, t);
    if (rc != 0) {
      if (t->go_fd >= 0) close(t->go_fd);
      t->go_fd = -1;
      napi_release_threadsafe_function(t->tsfn, napi_tsfn_abort);
      t->tsfn = NULL;
      loop_stop(t);
      return throw_errno(env, rc, "pthread_create");
    }
    t->running = 1;
  }
  t->auto_mode = auto_mode;
  t->started = 1;
  // Hooks run in reverse order of registration: this one, added after the tsfn's own, stops
  // the reader before Node tears the tsfn down at exit.
  napi_add_env_cleanup_hook(env, cleanup_hook, t);
  t->hook_added = 1;
  return NULL;
}

// write(handle, parts: Uint8Array[], partsPerPacket: 1|2, status?: Uint8Array) → packets
// accepted. With offloads each packet is two parts (vnet header, IP packet) sent with one
// writev(). status[k] is set to 1 when packet k was accepted, 0 when it was refused.
static napi_value tun_write(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[4];
  if (get_args(env, info, argv, 4, &argc, 3, "EINVAL: write(handle, parts, partsPerPacket)")) return NULL;
  uint8_t *status = NULL;
  size_t status_len = 0;
  if (argc >= 4 && get_bytes(env, argv[3], &status, &status_len) != 0) status = NULL;
  tun_t *t = get_tun(env, argv[0]);
  if (!t) return NULL;
  if (t->closed) return throw_plain(env, "EBADF", "EBADF: the TUN device is closed");
  uint32_t n = 0, per = 0;
  CHECK(env, napi_get_array_length(env, argv[1], &n));
  CHECK(env, napi_get_value_uint32(env, argv[2], &per));
  if (per != 1 && per != 2) return throw_plain(env, "EINVAL", "EINVAL: partsPerPacket must be 1 or 2");
  uint32_t ok = 0;
  for (uint32_t i = 0; i + per <= n; i += per) {
    struct iovec iov[2];
    int bad = 0;
    for (uint32_t j = 0; j < per; j++) {
      napi_value el;
      size_t len;
      uint8_t *data;
      if (napi_get_element(env, argv[1], i + j, &el) != napi_ok || get_bytes(env, el, &data, &len) != 0) {
        bad = 1;
        break;
      }
      iov[j].iov_base = data;
      iov[j].iov_len = len;
    }
    size_t k = i / per;
    if (status && k < status_len) status[k] = 0;
    if (bad) {
      atomic_fetch_add(&t->tx_errors, 1);
      atomic_store(&t->last_tx_errno, EINVAL);
      continue;
    }
    ssize_t w;
    do {
      w = writev(t->fd, iov, (int)per);
    } while (w < 0 && errno == EINTR);
    if (w < 0) {
      atomic_fetch_add(&t->tx_errors, 1);
      atomic_store(&t->last_tx_errno, errno);
    } else {
      ok++;
      if (status && k < status_len) status[k] = 1;
      // Each write delivers its packet to the receiving socket right away (in this thread):
      // a long run overflows a pod's default receive buffer (~90 datagrams) unless the pod's
      // reader gets the CPU in between.
      if (t->write_burst && ok % t->write_burst == 0 && i + 2 * per <= n) sched_yield();
    }
  }
  napi_value result;
  CHECK(env, napi_create_uint32(env, ok, &result));
  return result;
}

// stats(handle) → { rxBatches, rxReadErrors, txErrors, readerHandoffs, readerHandbacks, lastTxError }
static napi_value tun_stats(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[1];
  if (get_args(env, info, argv, 1, &argc, 1, "EINVAL: stats(handle)")) return NULL;
  tun_t *t = get_tun(env, argv[0]);
  if (!t) return NULL;
  napi_value o, v;
  CHECK(env, napi_create_object(env, &o));
  CHECK(env, napi_create_double(env, (double)atomic_load(&t->rx_batches), &v));
  CHECK(env, napi_set_named_property(env, o, "rxBatches", v));
  CHECK(env, napi_create_double(env, (double)atomic_load(&t->rx_read_errors), &v));
  CHECK(env, napi_set_named_property(env, o, "rxReadErrors", v));
  CHECK(env, napi_create_double(env, (double)atomic_load(&t->tx_errors), &v));
  CHECK(env, napi_set_named_property(env, o, "txErrors", v));
  CHECK(env, napi_create_double(env, (double)t->handoffs, &v));
  CHECK(env, napi_set_named_property(env, o, "readerHandoffs", v));
  CHECK(env, napi_create_double(env, (double)t->handbacks, &v));
  CHECK(env, napi_set_named_property(env, o, "readerHandbacks", v));
  int last = atomic_load(&t->last_tx_errno);
  if (last) {
    CHECK(env, napi_create_string_utf8(env, errno_name(last), NAPI_AUTO_LENGTH, &v));
  } else {
    CHECK(env, napi_get_null(env, &v));
  }
  CHECK(env, napi_set_named_property(env, o, "lastTxError", v));
  return o;
}

// close(handle): stops the reader thread and closes the fd; a second call does nothing.
static napi_value tun_close(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[1];
  if (get_args(env, info, argv, 1, &argc, 1, "EINVAL: close(handle)")) return NULL;
  tun_t *t = get_tun(env, argv[0]);
  if (!t) return NULL;
  tun_shutdown(t);
  return NULL;
}

// The UDP session engine (udp.c) shares this module.
napi_status edgemesh_udp_init(napi_env env, napi_value exports);
// The UDP relay (relay.c) too.
napi_status edgemesh_relay_init(napi_env env, napi_value exports);

// trimHeap() → malloc_trim(0): returns what glibc's heaps hold free to the kernel (true
// when it gave anything back). For a process that allocated much at start-up and then idles.
static napi_value tun_trim_heap(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value r;
#ifdef __GLIBC__
  CHECK(env, napi_get_boolean(env, malloc_trim(0) == 1, &r));
#else
  CHECK(env, napi_get_boolean(env, false, &r));
#endif
  return r;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"trimHeap", NULL, tun_trim_heap, NULL, NULL, NULL, napi_enumerable, NULL},
      {"open", NULL, tun_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"start", NULL, tun_start, NULL, NULL, NULL, napi_enumerable, NULL},
      {"write", NULL, tun_write, NULL, NULL, NULL, napi_enumerable, NULL},
      {"stats", NULL, tun_stats, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, tun_close, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  CHECK(env, edgemesh_udp_init(env, exports));
  CHECK(env, edgemesh_relay_init(env, exports));
  return exports;
}

#ifndef NODE_GYP_MODULE_NAME
#define NODE_GYP_MODULE_NAME edgemesh_tun
#endif
NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
