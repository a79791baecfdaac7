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
// Errors thrown to JS carry the errno name first, e.g. "EPERM: TUNSETIFF failed (...)", and
// the error's .code is that errno name.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
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
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define EM_MODULE "edgemesh_tun"
#include "native_util.h"

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

typedef struct {
  int fd;
  int stop_fd;  // eventfd: wakes the reader's poll() on close
  int vnet;     // 1 when records carry a virtio_net_hdr
  int running;  // reader thread started and not yet joined
  int closed;
  int hook_added;  // env cleanup hook registered (after the tsfn, so it runs before the tsfn's)
  atomic_int stop;
  pthread_t thread;
  napi_threadsafe_function tsfn;
  napi_env env;
  char name[IFNAMSIZ];
  unsigned offload_flags;
  // Counters, written by the reader thread (rx) or the JS thread (tx), read by JS.
  atomic_ullong rx_batches, rx_read_errors, tx_errors;
  atomic_int last_tx_errno;
} tun_t;

typedef struct {
  uint8_t *buf;
  size_t used;
  uint32_t count;
  int err;  // non-zero: the reader stopped on this errno (buf is NULL)
} batch_t;

// ---- reader thread -------------------------------------------------------------------

static void *reader_main(void *arg) {
  tun_t *t = arg;
  const size_t cap = t->vnet ? BATCH_BYTES_OFFLOAD : BATCH_BYTES_PLAIN;
  const size_t room = 4 + (t->vnet ? VNET_HDR_LEN : 0) + MAX_PACKET;
  int ev;
  while ((ev = reader_wait(t->fd, t->stop_fd, &t->stop)) >= 0) {
    if (ev & (POLLERR | POLLHUP | POLLNVAL)) {
      batch_t *b = calloc(1, sizeof *b);
      if (b) {
        b->err = EIO;
        napi_call_threadsafe_function(t->tsfn, b, napi_tsfn_blocking);
      }
      break;
    }
    uint8_t *buf = malloc(cap);
    if (!buf) {
      atomic_fetch_add(&t->rx_read_errors, 1);
      usleep(1000);
      continue;
    }
    size_t used = 0;
    uint32_t count = 0;
    int fatal = 0;
    while (count < BATCH_MAX_PACKETS && cap - used >= room) {
      ssize_t r = read(t->fd, buf + used + 4, cap - used - 4);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) {
          atomic_fetch_add(&t->rx_read_errors, 1);
          if (errno == EBADF || errno == EBADFD || errno == EIO) fatal = errno;
        }
        break;
      }
      if ((size_t)r <= (t->vnet ? VNET_HDR_LEN : 0)) continue;  // nothing behind the header
      uint32_t len = (uint32_t)r;
      memcpy(buf + used, &len, 4);
      used += 4 + (size_t)r;
      count++;
    }
    if (count == 0) {
      free(buf);
    } else {
      // Give back the unused tail (mremap for large chunks: cheap) before JS owns it.
      uint8_t *shrunk = realloc(buf, used);
      batch_t *b = malloc(sizeof *b);
      if (!b) {
        free(shrunk ? shrunk : buf);
      } else {
        b->buf = shrunk ? shrunk : buf;
        b->used = used;
        b->count = count;
        b->err = 0;
        atomic_fetch_add(&t->rx_batches, 1);
        // Blocks while QUEUE_DEPTH batches wait for JS: the bound on memory in flight.
        if (napi_call_threadsafe_function(t->tsfn, b, napi_tsfn_blocking) != napi_ok) {
          free(b->buf);
          free(b);
          break;  // closing
        }
      }
    }
    if (fatal) {
      batch_t *e = calloc(1, sizeof *e);
      if (e) {
        e->err = fatal;
        if (napi_call_threadsafe_function(t->tsfn, e, napi_tsfn_blocking) != napi_ok) free(e);
      }
      break;
    }
  }
  return NULL;
}

static void free_batch_buffer(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

// Runs on the JS thread: batch → callback(arrayBuffer, count) or callback(null, 0, errnoName).
static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  (void)context;
  batch_t *b = data;
  if (env == NULL || cb == NULL) {  // torn down with batches still queued
    if (b) free(b->buf);
    free(b);
    return;
  }
  napi_value undefined, argv[3];
  napi_get_undefined(env, &undefined);
  if (b->err) {
    napi_get_null(env, &argv[0]);
    napi_create_uint32(env, 0, &argv[1]);
    napi_create_string_utf8(env, errno_name(b->err), NAPI_AUTO_LENGTH, &argv[2]);
    free(b);
  } else {
    if (napi_create_external_arraybuffer(env, b->buf, b->used, free_batch_buffer, NULL, &argv[0]) != napi_ok) {
      free(b->buf);
      free(b);
      return;
    }
    napi_create_uint32(env, b->count, &argv[1]);
    napi_get_undefined(env, &argv[2]);
    free(b);
  }
  napi_value result;
  // An exception thrown by the handler surfaces as an uncaught exception, as for any event.
  napi_call_function(env, undefined, cb, 3, argv, &result);
}

// ---- lifecycle -----------------------------------------------------------------------

// Stops the reader and closes the fd. Safe to call twice and from the env cleanup hook.
static void tun_shutdown(tun_t *t) {
  if (t->closed) return;
  t->closed = 1;
  atomic_store(&t->stop, 1);
  if (t->running) {
    reader_stop(t->stop_fd, &t->stop);
    // Abort makes a reader blocked in napi_call_threadsafe_function return napi_closing.
    napi_release_threadsafe_function(t->tsfn, napi_tsfn_abort);
    pthread_join(t->thread, NULL);
    t->running = 0;
  }
  close(t->fd);
  close(t->stop_fd);
  t->fd = -1;
  t->stop_fd = -1;
}

static void cleanup_hook(void *arg) { tun_shutdown(arg); }

static void finalize_tun(napi_env env, void *data, void *hint) {
  (void)hint;
  tun_t *t = data;
  tun_shutdown(t);
  if (t->hook_added) napi_remove_env_cleanup_hook(env, cleanup_hook, t);
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
  t->vnet = offload ? 1 : 0;
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

// start(handle, callback(arrayBuffer|null, count, errnoName?)) — starts the reader thread.
static napi_value tun_start(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[2];
  if (get_args(env, info, argv, 2, &argc, 2, "EINVAL: start(handle, callback)")) return NULL;
  tun_t *t = get_tun(env, argv[0]);
  if (!t) return NULL;
  if (t->closed) return throw_plain(env, "EBADF", "EBADF: the TUN device is closed");
  if (t->running) return throw_plain(env, "EBUSY", "EBUSY: the TUN reader is already running");
  napi_value resource_name;
  CHECK(env, napi_create_string_utf8(env, "edgemesh_tun_reader", NAPI_AUTO_LENGTH, &resource_name));
  CHECK(env, napi_create_threadsafe_function(env, argv[1], NULL, resource_name, QUEUE_DEPTH, 1, NULL, NULL, NULL,
                                             call_js, &t->tsfn));
  // The open device should not by itself keep the process alive; the owner closes it.
  napi_unref_threadsafe_function(env, t->tsfn);
  int rc = pthread_create(&t->thread, NULL, reader_main, t);
  if (rc != 0) {
    napi_release_threadsafe_function(t->tsfn, napi_tsfn_abort);
    return throw_errno(env, rc, "pthread_create");
  }
  t->running = 1;
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
    }
  }
  napi_value result;
  CHECK(env, napi_create_uint32(env, ok, &result));
  return result;
}

// stats(handle) → { rxBatches, rxReadErrors, txErrors, lastTxError }
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

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
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
