// edgemesh UDP session engine (N-API, C), part of build/edgemesh_tun.node.
//
// One UDP socket carries the data plane's sessions: one inner IP packet per datagram,
// sealed with an AEAD (OpenSSL EVP, taken from the Node binary that loads the addon), in
// batches both ways. Key exchange, endpoints and rekey decisions belong to the caller
// (overlay/); this file only seals, opens, checks replays and does the socket I/O.
//
// Wire format (all integers little-endian, as WireGuard's transport message):
//   0      u8   type: 4 = data (one IP packet), 5 = control (opaque, the overlay's)
//   1..3        reserved, zero
//   4..7   u32  receiver index (the receiving side's localIndex)
//   8..15  u64  counter (per session and direction, starts at 0, never reused)
//   16..   AEAD ciphertext of the payload, then its 16-byte tag
// The 16-byte header is the AEAD's associated data; the 96-bit nonce is 4 zero bytes and
// the counter. Senders refuse to pass the counter limit, so the overlay must rekey first.
// Receivers drop (and count) anything short, of an unknown type or index, failing
// authentication, or replayed (2048-bit sliding window, RFC 6479 style, updated only after
// the tag checked; it tolerates 1984 datagrams of reordering). None of it reaches JS.
//
// Send (JS thread, one call per batch): each packet is segmented if it is a GSO super-packet
// (udp_gso.c) straight into a preallocated datagram buffer, sealed in place, and the batch
// leaves with one sendmmsg(), equal-size runs as one UDP_SEGMENT message each.
// Receive (reader thread): recvmmsg() with UDP_GRO into preallocated buffers, open each
// datagram into one of a few preallocated delivery buffers (consecutive TCP segments of one
// flow coalesced back into a GSO super-packet there, as wireguard-go's tcpGRO does, so the
// TUN takes one write per ~64 KiB), hand that buffer to JS through a
// thread-safe function (bounded queue, blocking: when JS is slow the socket's receive queue
// fills and the kernel drops, counted as socket-overflow). JS sees the buffer as an external
// ArrayBuffer that is detached when the callback returns, so views cannot outlive the call
// and the buffer goes back to the pool: no allocation per batch.
// Extra sockets (addSocket): besides its main socket the engine can own more UDP sockets,
// each on its own ephemeral port, for hole punching through an endpoint-dependent NAT
// (overlay/birthday-punch.ts): each socket gets its own mapping at that NAT, and the session
// whose probe got through keeps sending from the socket that won. All sockets sit in one
// epoll set that the receiver waits on; a session's endpoint names the socket it uses (0 =
// main). Control records say which socket they arrived on (u16 in the unused vnet bytes).
// Errors thrown to JS carry the errno name first, as tun.c's.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <node_api.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define EM_MODULE "edgemesh_udp"
#include "native_util.h"
#include "sockaddr_util.h"
#include "udp_gso.h"
#include "udp_socket.h"
#include "udp_wire.h"
#include "uv_poll_shim.h"


#define MAX_DATAGRAM 65507
#define MAX_CONTROL 1200
// WireGuard's REJECT_AFTER_MESSAGES: far beyond any rekey-by-count, far below nonce reuse.
#define DEFAULT_COUNTER_LIMIT (UINT64_MAX - 8192 - 1)


// Send side: datagrams of one send() call, flushed early when full.
#define TX_BUF_BYTES (2 * 1024 * 1024)
#define TX_MAX_DGRAMS 2048
#define TX_MAX_SEGS UDP_GSO_MAX_SEGS
// Receive side (RX_MSGS messages of RX_BUF_BYTES per recvmmsg(): udp_socket.h).
#define POOL_BUFFERS 4  // delivery buffers: one being filled, the rest queued for JS
#define QUEUE_DEPTH (POOL_BUFFERS - 1)
_Static_assert(POOL_BUFFERS <= SLOT_POOL_MAX, "the receiver's pool is a slot_pool_t");
#define REC_HDR 38  // [u32 len][u32 localIndex][u8 type][u8 family][u16 port][16 addr][10 vnet]
// A record is at most REC_HDR - OVERHEAD bytes longer than its datagram, and one received
// message (GRO) holds at most RX_BUF_BYTES / OVERHEAD datagrams: the most one message can
// take in a delivery buffer. Opening writes plaintext before the tag is checked, so even
// forged datagrams must fit.
#define RX_MSG_WORST (RX_BUF_BYTES + (RX_BUF_BYTES / OVERHEAD) * (REC_HDR - OVERHEAD))
#define DELIVERY_BYTES ((size_t)RX_MSGS * RX_MSG_WORST)
#define NO_RECORD SIZE_MAX

// Receiver 'auto': the loop hands receiving to the thread when one wake-up opens this many
// datagrams, and the thread hands it back after this long without one.
#define AUTO_BUSY_DATAGRAMS 8
#define AUTO_IDLE_MS 20
// ... or once traffic has turned sparse: this many wake-ups in a row, each after a wait of at
// least AUTO_SPARSE_GAP_MS, that found a light batch (as tun.c: interactive traffic would
// otherwise pay the thread → loop hop on every datagram).
#define AUTO_SPARSE_GAP_MS 2
#define AUTO_SPARSE_WAKES 8

#define SESSION_BUCKETS 1024
#define MAX_SESSIONS 65536
// Extra sockets one engine may own at once (ids 1..MAX_EXTRA_SOCKETS; 0 is the main socket).
#define MAX_EXTRA_SOCKETS 1024

// The event-loop receiver's libuv calls: see uv_poll_shim.h. The box holds libuv's handle
// first, our pointer back to the socket after it.
typedef struct {
  _Alignas(16) unsigned char uv[EM_UV_HANDLE_BYTES];
  struct udp *u;
} uv_poll_box_t;

enum {
  D_SHORT,
  D_BAD_TYPE,
  D_UNKNOWN_INDEX,
  D_AUTH,
  D_REPLAY,
  D_OVERSIZE,
  D_COUNTER_LIMIT,
  D_NO_ENDPOINT,
  D_NO_SESSION,
  D_TX_FULL,
  D_TX_ERROR,
  D_GSO_MALFORMED,
  D_GSO_UNSUPPORTED,
  D_SOCKET_OVERFLOW,
  D_QUEUE_FULL,
  D_NO_SOCKET,
  D_COUNT
};
static const char *const DROP_NAMES[D_COUNT] = {
    "short",           "bad-type", "unknown-index", "auth-failed",    "replay",          "oversize",
    "counter-limit",   "no-endpoint", "no-session", "tx-full",        "tx-error",        "gso-malformed",
    "gso-unsupported", "socket-overflow", "queue-full", "no-socket"};


typedef struct session {
  struct session *next;
  uint32_t local_index, remote_index;
  EVP_CIPHER_CTX *tx, *rx;
  uint64_t tx_counter;  // JS thread only
  replay_t replay;      // reader thread, under the table lock
  uint64_t rx_packets;  // under the table lock
  uint64_t last_rx_ns, created_ns;
  struct sockaddr_storage ep;
  socklen_t ep_len;  // 0 = no endpoint yet
  uint16_t ep_sock;  // the socket the endpoint is reached from (0 = main, else an extra socket)
} session_t;

typedef struct {
  uint8_t *buf;
  size_t used;
  uint32_t count;
  int err;
  size_t last;  // offset of the last data record (a coalescing candidate), or NO_RECORD
} delivery_t;

typedef struct udp {
  int fd, stop_fd, family;
  // Every socket (main included, data.u32 = socket id) in one epoll set: what the receiver waits on.
  int epfd;
  char bind_ip[64];  // extra sockets bind the same address
  // Extra sockets: written on the JS thread under socks_lock, read by the receiver under it.
  pthread_mutex_t socks_lock;
  int extra_fd[MAX_EXTRA_SOCKETS + 1];  // by id; -1 = free (index 0 unused)
  atomic_uint extras;
  uint32_t next_sock;
  int tx_fd;    // the socket the batch being sent leaves from (JS thread)
  int rx_turn;  // which of main / extra sockets the receiver drains first (receiver only)
  int refs;  // the JS handle and the receiver (thread-safe function, or the uv_poll handle) each hold one
  // Receive mode: a reader thread handing batches over (thread), or uv_poll on the main loop
  // (loop), or both taking turns (auto: the loop while idle, the thread under load).
  int loop_mode, auto_mode;
  int go_fd;                // auto: eventfd, the loop hands receiving to the thread
  atomic_int auto_ready;    // auto: the thread is there to hand over to
  uint64_t handoffs, handbacks;  // auto: receiving moved loop → thread, thread → loop (JS thread)
  delivery_t handback;      // auto: the thread's "idle, poll again" message (no data)
  napi_env env;
  napi_ref cb_ref;
  napi_async_context async_ctx;
  uv_poll_box_t *poll;
  void *loop_rx;  // rx_ctx_t of loop mode
  int running, closed, hook_added;
  int gso_ok;  // UDP_SEGMENT works on this socket (cleared on the first failure)
  int coalesce;  // merge received TCP segments into GSO super-packets before delivery
  atomic_int stop;
  pthread_t thread;
  napi_threadsafe_function tsfn;
  const EVP_CIPHER *cipher;
  uint64_t counter_limit;
  uint32_t max_inner;  // largest inner packet sealed (the tunnel MTU)
  // Sessions: written on the JS thread under lock; read by the reader under lock and by
  // the JS thread without (it is the only writer).
  pthread_mutex_t lock;
  session_t *buckets[SESSION_BUCKETS];
  uint32_t sessions;
  // Delivery buffer pool.
  slot_pool_t slots;  // which of pool[] the receiver may fill
  uint8_t *pool[POOL_BUFFERS];
  delivery_t deliveries[POOL_BUFFERS];
  // Send buffers (JS thread).
  uint8_t *txbuf;
  size_t tx_used;
  uint32_t tx_n;
  uint32_t tx_len[TX_MAX_DGRAMS];
  struct mmsghdr tx_msgs[TX_MAX_DGRAMS];
  struct iovec tx_iov[TX_MAX_DGRAMS];
  uint32_t tx_counts[TX_MAX_DGRAMS];  // datagrams per message
  udp_gso_cmsg_t tx_cmsg[TX_MAX_DGRAMS];
  session_t *tx_sess;
  const struct sockaddr *tx_to;
  socklen_t tx_to_len;
  uint8_t tx_type;
  // Counters.
  atomic_ullong drops[D_COUNT];
  atomic_ullong rx_datagrams, tx_datagrams, rx_batches, rx_coalesced;
  atomic_uint last_overflow;
  atomic_int last_tx_errno;
} udp_t;


// ---- sessions ----------------------------------------------------------------------------

static session_t **bucket_of(udp_t *u, uint32_t idx) {
  return &u->buckets[(idx * 2654435761u) >> 22 & (SESSION_BUCKETS - 1)];
}

static session_t *find_session(udp_t *u, uint32_t idx) {
  for (session_t *s = *bucket_of(u, idx); s; s = s->next)
    if (s->local_index == idx) return s;
  return NULL;
}

static void free_session(session_t *s) {
  EVP_CIPHER_CTX_free(s->tx);
  EVP_CIPHER_CTX_free(s->rx);
  OPENSSL_cleanse(s, sizeof *s);
  free(s);
}

// ---- receive -----------------------------------------------------------------------------

static int pool_take(udp_t *u) { return slot_pool_take(&u->slots, &u->stop); }

static void pool_give(udp_t *u, int i) { slot_pool_give(&u->slots, i); }

static void count_drop(udp_t *u, int reason) { atomic_fetch_add_explicit(&u->drops[reason], 1, memory_order_relaxed); }

// Opens one datagram into the delivery buffer; the caller holds u->lock. `sock` is the
// socket it arrived on (0 = main).
static void open_datagram(udp_t *u, const uint8_t *d, size_t len, const struct sockaddr_storage *from,
                          delivery_t *out, uint64_t now, uint16_t sock) {
  if (len < OVERHEAD) { count_drop(u, D_SHORT); return; }
  uint8_t type = d[0];
  if ((type != MSG_DATA && type != MSG_CONTROL) || d[1] || d[2] || d[3]) { count_drop(u, D_BAD_TYPE); return; }
  if (type == MSG_CONTROL && len - OVERHEAD > MAX_CONTROL) { count_drop(u, D_OVERSIZE); return; }
  if (type == MSG_DATA && len == OVERHEAD) { count_drop(u, D_SHORT); return; }
  session_t *s = find_session(u, get_le32(d + 4));
  if (!s) { count_drop(u, D_UNKNOWN_INDEX); return; }
  uint64_t counter = get_le64(d + 8);
  if (counter >= u->counter_limit || !replay_check(&s->replay, counter)) { count_drop(u, D_REPLAY); return; }
  uint8_t *rec = out->buf + out->used;
  if (out->used + REC_HDR + (len - OVERHEAD) > DELIVERY_BYTES) {  // cannot happen (see RX_MSG_WORST): refuse, never overflow
    count_drop(u, D_QUEUE_FULL);
    return;
  }
  if (aead_open(s->rx, d, len, counter, rec + REC_HDR) != 0) { count_drop(u, D_AUTH); return; }
  replay_mark(&s->replay, counter);
  s->rx_packets++;
  s->last_rx_ns = now;
  uint32_t plen = (uint32_t)(len - OVERHEAD);
  put_le32(rec, plen);
  put_le32(rec + 4, s->local_index);
  rec[8] = type;
  memset(rec + 12, 0, 16);
  if (from->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const void *)from;
    rec[9] = 4;
    memcpy(rec + 10, &a->sin_port, 2);
    memcpy(rec + 12, &a->sin_addr, 4);
  } else {
    const struct sockaddr_in6 *a = (const void *)from;
    memcpy(rec + 10, &a->sin6_port, 2);
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
      rec[9] = 4;
      memcpy(rec + 12, a->sin6_addr.s6_addr + 12, 4);
    } else {
      rec[9] = 6;
      memcpy(rec + 12, &a->sin6_addr, 16);
    }
  }
  memset(rec + 28, 0, 10);  // vnet: a plain packet unless coalesced below
  if (type == MSG_CONTROL) {  // control records have no vnet: it carries the socket id instead
    rec[28] = (uint8_t)(sock & 0xff);
    rec[29] = (uint8_t)(sock >> 8);
  }
  size_t at;
  if (type == MSG_DATA && u->coalesce && out->last != NO_RECORD && memcmp(out->buf + out->last + 4, rec + 4, 24) == 0) {
    uint8_t *prev = out->buf + out->last;
    uint32_t prev_len = get_le32(prev);
    if (gro_tcp_append(prev + 28, prev + REC_HDR, prev_len, rec + REC_HDR, plen, &at)) {
      // The segment's payload joins the previous record; its headers go away.
      memmove(rec, rec + REC_HDR + at, plen - at);
      put_le32(prev, prev_len + (uint32_t)(plen - at));
      out->used += plen - at;
      atomic_fetch_add_explicit(&u->rx_coalesced, 1, memory_order_relaxed);
      return;
    }
  }
  out->last = type == MSG_DATA ? out->used : NO_RECORD;
  out->used += REC_HDR + plen;
  out->count++;
}

// Receive scratch space: recvmmsg() lands here before opening (one per receive mode).
typedef udp_rx_batch_t rx_ctx_t;

static rx_ctx_t *rx_ctx_new(void) {
  rx_ctx_t *rx = calloc(1, sizeof *rx);
  if (rx && !(rx->buf = malloc((size_t)RX_MSGS * RX_BUF_BYTES))) {
    free(rx);
    return NULL;
  }
  return rx;
}

static void rx_ctx_free(rx_ctx_t *rx) {
  if (!rx) return;
  free(rx->buf);
  free(rx);
}

static void delivery_reset(delivery_t *out, uint8_t *buf) {
  out->buf = buf;
  out->used = 0;
  out->count = 0;
  out->err = 0;
  out->last = NO_RECORD;
}

// Reads and opens datagrams of one socket into `out` until it is empty or `out` might not
// hold another round. Returns 1 when it stopped because `out` filled up (more may be waiting).
static int rx_drain_fd(udp_t *u, rx_ctx_t *rx, delivery_t *out, int fd, uint16_t sock) {
  for (int round = 0; round < 4; round++) {
    size_t room = DELIVERY_BYTES - out->used;
    int want = (int)(room / RX_MSG_WORST);
    if (want > RX_MSGS) want = RX_MSGS;
    if (want < RX_MSGS / 4) return 1;
    udp_rx_prepare(rx, want);
    int got = recvmmsg(fd, rx->msgs, (unsigned)want, MSG_DONTWAIT, NULL);
    if (got <= 0) return 0;
    uint64_t now = now_ns();
    pthread_mutex_lock(&u->lock);
    for (int i = 0; i < got; i++) {
      struct msghdr *m = &rx->msgs[i].msg_hdr;
      size_t len = rx->msgs[i].msg_len;
      uint32_t overflowed;
      size_t seg = udp_rx_cmsgs(m, len, &u->last_overflow, &overflowed);
      if (overflowed) atomic_fetch_add(&u->drops[D_SOCKET_OVERFLOW], overflowed);
      if (m->msg_flags & MSG_TRUNC) {
        count_drop(u, D_OVERSIZE);
        continue;
      }
      const uint8_t *base = udp_rx_data(rx, i);
      for (size_t off = 0; off < len; off += seg) {
        size_t dl = len - off < seg ? len - off : seg;
        atomic_fetch_add_explicit(&u->rx_datagrams, 1, memory_order_relaxed);
        open_datagram(u, base + off, dl, &rx->from[i], out, now, sock);
      }
    }
    pthread_mutex_unlock(&u->lock);
    if (got < want) return 0;
  }
  return 1;
}

// The extra sockets epoll says are readable.
static int rx_drain_extras(udp_t *u, rx_ctx_t *rx, delivery_t *out) {
  struct epoll_event ev[64];
  int more = 0;
  // Held while reading, so closeSocket() cannot close (and the kernel reuse) an fd under us.
  pthread_mutex_lock(&u->socks_lock);
  int n = epoll_wait(u->epfd, ev, 64, 0);
  for (int i = 0; i < n && !more; i++) {
    uint32_t id = ev[i].data.u32;
    if (id == 0 || id > MAX_EXTRA_SOCKETS || u->extra_fd[id] < 0) continue;
    more = rx_drain_fd(u, rx, out, u->extra_fd[id], (uint16_t)id);
  }
  pthread_mutex_unlock(&u->socks_lock);
  return more;
}

// The main socket and, when there are any, the extra sockets: in turns which goes first, so a
// busy main socket cannot starve a session carried by an extra one, nor the other way round.
static int rx_drain(udp_t *u, rx_ctx_t *rx, delivery_t *out) {
  if (atomic_load_explicit(&u->extras, memory_order_relaxed) == 0) return rx_drain_fd(u, rx, out, u->fd, 0);
  u->rx_turn ^= 1;
  int more = u->rx_turn ? rx_drain_extras(u, rx, out) : rx_drain_fd(u, rx, out, u->fd, 0);
  return (u->rx_turn ? rx_drain_fd(u, rx, out, u->fd, 0) : rx_drain_extras(u, rx, out)) | more;
}

static void *reader_main(void *arg) {
  udp_t *u = arg;
  rx_ctx_t *rx = rx_ctx_new();
  if (!rx) return NULL;
  while (reader_wait(u->epfd, u->stop_fd, &u->stop) >= 0) {
    int slot = pool_take(u);
    if (slot < 0) break;
    delivery_t *out = &u->deliveries[slot];
    delivery_reset(out, u->pool[slot]);
    rx_drain(u, rx, out);
    if (out->count == 0) {
      pool_give(u, slot);
      continue;
    }
    atomic_fetch_add(&u->rx_batches, 1);
    // Blocks while QUEUE_DEPTH batches wait for JS: the bound on memory in flight.
    if (napi_call_threadsafe_function(u->tsfn, out, napi_tsfn_blocking) != napi_ok) {
      pool_give(u, slot);
      break;
    }
  }
  rx_ctx_free(rx);
  return NULL;
}

// Receiver 'auto': parked until the loop hands receiving over (go_fd), then reads like
// reader_main until AUTO_IDLE_MS pass without a datagram or the traffic turns sparse
// (AUTO_SPARSE_WAKES), and hands receiving back through
// the same queue as the batches (the loop polls again only after delivering them). Only one
// side reads the socket at a time.
static void *auto_reader_main(void *arg) {
  udp_t *u = arg;
  rx_ctx_t *rx = rx_ctx_new();
  if (!rx) return NULL;  // the loop keeps receiving (auto_ready stays 0)
  atomic_store(&u->auto_ready, 1);
  struct pollfd park[2] = {{.fd = u->go_fd, .events = POLLIN}, {.fd = u->stop_fd, .events = POLLIN}};
  // The epoll set holds the main socket and any extra ones (birthday probing): one wait for all.
  struct pollfd fds[2] = {{.fd = u->epfd, .events = POLLIN}, {.fd = u->stop_fd, .events = POLLIN}};
  while (!atomic_load(&u->stop)) {
    if (poll(park, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (atomic_load(&u->stop) || (park[1].revents & POLLIN)) break;
    uint64_t v;
    if (read(u->go_fd, &v, sizeof v) < 0 && errno != EAGAIN) break;
    int waited_ms = 0, sparse = 0;
    for (;;) {
      int r = poll(fds, 2, AUTO_SPARSE_GAP_MS);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 || atomic_load(&u->stop) || (fds[1].revents & POLLIN)) goto out;
      if (r == 0) waited_ms += AUTO_SPARSE_GAP_MS;
      if (r == 0 && waited_ms < AUTO_IDLE_MS) continue;
      if (r != 0) {
        int slot = pool_take(u);
        if (slot < 0) goto out;
        delivery_t *d = &u->deliveries[slot];
        delivery_reset(d, u->pool[slot]);
        rx_drain(u, rx, d);
        sparse = waited_ms > 0 && d->count < AUTO_BUSY_DATAGRAMS ? sparse + 1 : 0;
        waited_ms = 0;
        if (d->count == 0) {
          pool_give(u, slot);
        } else {
          atomic_fetch_add(&u->rx_batches, 1);
          if (napi_call_threadsafe_function(u->tsfn, d, napi_tsfn_blocking) != napi_ok) {
            pool_give(u, slot);
            goto out;
          }
        }
        if (sparse < AUTO_SPARSE_WAKES) continue;
      }
      // Idle, or sparse: the loop polls again (after the deliveries queued before this one).
      if (napi_call_threadsafe_function(u->tsfn, &u->handback, napi_tsfn_blocking) != napi_ok) goto out;
      break;
    }
  }
out:
  rx_ctx_free(rx);
  return NULL;
}

static void noop_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  (void)hint;
}

static void udp_unref(udp_t *u);

// JS thread: hands one delivery to the callback as an ArrayBuffer that is detached after
// the call (views kept past it see an empty buffer, never reused memory).
static void deliver_js(napi_env env, udp_t *u, napi_value cb, delivery_t *d, int from_loop) {
  napi_value argv[2], result, ab, recv;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_get_undefined(env, &recv);
  if (napi_create_external_arraybuffer(env, d->buf, d->used, noop_finalize, NULL, &ab) == napi_ok) {
    argv[0] = ab;
    napi_create_uint32(env, d->count, &argv[1]);
    if (from_loop) {
      // From a libuv callback: make_callback runs the microtasks and reports exceptions
      // (its receiver must be an object).
      napi_value err;
      napi_get_global(env, &recv);
      if (napi_make_callback(env, u->async_ctx, recv, cb, 2, argv, &result) == napi_pending_exception &&
          napi_get_and_clear_last_exception(env, &err) == napi_ok)
        napi_fatal_exception(env, err);
    } else {
      napi_call_function(env, recv, cb, 2, argv, &result);
    }
    napi_detach_arraybuffer(env, ab);
  }
  napi_close_handle_scope(env, scope);
}

static void on_readable(void *handle, int status, int events);

// Thread mode, JS thread: the reader's delivery → callback, then the buffer back to the pool
// (auto: or the thread went idle and the loop polls again).
static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  udp_t *u = context;
  delivery_t *d = data;
  if (d == &u->handback) {
    u->handbacks++;
    if (env != NULL && !u->closed && u->poll) uv_poll_start(u->poll, EM_UV_READABLE, on_readable);
    return;
  }
  int slot = (int)(d - u->deliveries);
  if (env != NULL && cb != NULL) deliver_js(env, u, cb, d, 0);
  pool_give(u, slot);
}

// Loop mode: libuv says the socket is readable; read, open and deliver on this thread,
// a bounded number of batches per wake-up so one busy socket cannot starve the loop.
static void on_readable(void *handle, int status, int events) {
  (void)events;
  uv_poll_box_t *box = handle;
  udp_t *u = box->u;
  if (status < 0 || u->closed) return;
  napi_env env = u->env;
  napi_handle_scope scope;
  napi_value cb;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  if (napi_get_reference_value(env, u->cb_ref, &cb) == napi_ok && cb) {
    for (int batch = 0; batch < 8 && !u->closed; batch++) {
      delivery_t *out = &u->deliveries[0];
      delivery_reset(out, u->pool[0]);
      int more = rx_drain(u, u->loop_rx, out);
      uint32_t count = out->count;
      if (count > 0) {
        atomic_fetch_add(&u->rx_batches, 1);
        deliver_js(env, u, cb, out, 1);
      }
      if (u->auto_mode && count >= AUTO_BUSY_DATAGRAMS && !u->closed && atomic_load(&u->auto_ready)) {
        // Under load: the thread receives (overlapping JS) until the socket goes idle again.
        uint64_t one = 1;
        uv_poll_stop(u->poll);
        if (write(u->go_fd, &one, sizeof one) < 0)
          uv_poll_start(u->poll, EM_UV_READABLE, on_readable);
        else
          u->handoffs++;
        break;
      }
      if (!more) break;
    }
  }
  napi_close_handle_scope(env, scope);
}

static void on_poll_closed(void *handle) {
  uv_poll_box_t *box = handle;
  udp_t *u = box->u;
  free(box);
  udp_unref(u);
}

// ---- lifecycle ---------------------------------------------------------------------------

static void udp_shutdown(udp_t *u) {
  if (u->closed) return;
  u->closed = 1;
  reader_stop(u->stop_fd, &u->stop);
  slot_pool_wake(&u->slots);
  if (u->tsfn) napi_release_threadsafe_function(u->tsfn, napi_tsfn_abort);
  if (u->poll) {
    uv_poll_stop(u->poll);
    uv_close(u->poll, on_poll_closed);  // on_poll_closed drops the poll handle's reference
    u->poll = NULL;
  }
  rx_ctx_free(u->loop_rx);
  u->loop_rx = NULL;
  if (u->cb_ref) {
    napi_delete_reference(u->env, u->cb_ref);
    u->cb_ref = NULL;
  }
  if (u->async_ctx) {
    napi_async_destroy(u->env, u->async_ctx);
    u->async_ctx = NULL;
  }
  if (u->running) {
    pthread_join(u->thread, NULL);
    u->running = 0;
  }
  close(u->fd);
  close(u->stop_fd);
  if (u->go_fd >= 0) close(u->go_fd);
  u->fd = u->stop_fd = u->go_fd = -1;
  pthread_mutex_lock(&u->socks_lock);
  for (int i = 1; i <= MAX_EXTRA_SOCKETS; i++)
    if (u->extra_fd[i] >= 0) {
      close(u->extra_fd[i]);
      u->extra_fd[i] = -1;
    }
  atomic_store(&u->extras, 0);
  if (u->epfd >= 0) close(u->epfd);
  u->epfd = -1;
  pthread_mutex_unlock(&u->socks_lock);
  pthread_mutex_lock(&u->lock);
  for (int b = 0; b < SESSION_BUCKETS; b++) {
    session_t *s = u->buckets[b];
    while (s) {
      session_t *next = s->next;
      free_session(s);
      s = next;
    }
    u->buckets[b] = NULL;
  }
  u->sessions = 0;
  pthread_mutex_unlock(&u->lock);
}

static void udp_unref(udp_t *u) {
  if (--u->refs > 0) return;
  for (int i = 0; i < POOL_BUFFERS; i++) free(u->pool[i]);
  free(u->txbuf);
  pthread_mutex_destroy(&u->lock);
  pthread_mutex_destroy(&u->socks_lock);
  slot_pool_destroy(&u->slots);
  free(u);
}

static void cleanup_hook(void *arg) { udp_shutdown(arg); }

static void tsfn_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  udp_unref(data);
}

static void finalize_handle(napi_env env, void *data, void *hint) {
  (void)hint;
  udp_t *u = data;
  udp_shutdown(u);
  if (u->hook_added) napi_remove_env_cleanup_hook(env, cleanup_hook, u);
  udp_unref(u);
}

static const napi_type_tag UDP_TAG = {0x6564676d65736855ULL, 0x4450736573736e31ULL};

static udp_t *get_udp(napi_env env, napi_value obj) {
  udp_t *u = handle_arg(env, obj, &UDP_TAG, "edgemesh_udp: not a UDP socket handle");
  if (u && u->closed) {
    throw_plain(env, "EBADF", "EBADF: the UDP socket is closed");
    return NULL;
  }
  return u;
}

// ---- argument helpers --------------------------------------------------------------------

// An endpoint given as (ip text, port) arguments: 0 with *len set, or -1 after throwing
// EINVAL. With `optional`, an undefined ip means none (*len = 0).
static int get_endpoint(napi_env env, udp_t *u, napi_value ip_v, napi_value port_v, bool optional,
                        struct sockaddr_storage *ss, socklen_t *len) {
  char ip[64];
  size_t n = 0;
  uint32_t port;
  napi_valuetype t;
  *len = 0;
  if (optional && napi_typeof(env, ip_v, &t) == napi_ok && t == napi_undefined) return 0;
  // IPv4 text becomes v4-mapped on a dual-stack socket.
  if (napi_get_value_string_utf8(env, ip_v, ip, sizeof ip, &n) != napi_ok || n == 0 || n >= sizeof ip - 1 ||
      get_u32_arg(env, port_v, &port) != 0 || sockaddr_for_family(u->family, ip, port, ss, len) != 0) {
    throw_plain(env, "EINVAL", "EINVAL: bad endpoint (IP text of the socket's family, port 1-65535)");
    return -1;
  }
  return 0;
}

// The head every per-session call shares — (handle, localIndex, ...): the arguments, the
// open socket and the u32 localIndex. Returns the socket, or NULL after throwing.
static udp_t *session_call(napi_env env, napi_callback_info info, napi_value *argv, size_t cap, size_t *argc,
                           size_t min, const char *usage, uint32_t *li) {
  if (get_args(env, info, argv, cap, argc, min, usage)) return NULL;
  udp_t *u = get_udp(env, argv[0]);
  if (!u) return NULL;
  if (get_u32_arg(env, argv[1], li)) {
    throw_plain(env, "EINVAL", "EINVAL: localIndex must be a u32");
    return NULL;
  }
  return u;
}

// ---- open --------------------------------------------------------------------------------

// open({ bind, port, cipher, mtu, counterLimit?, coalesce?, receiver? }, callback(arrayBuffer, count)) → handle { port }
static napi_value udp_open(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], v;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype vt;
  if (argc < 2 || napi_typeof(env, argv[0], &vt) != napi_ok || vt != napi_object)
    return throw_plain(env, "EINVAL", "EINVAL: udpOpen(options, callback)");
  char bind_ip[64] = {0}, cipher_name[32] = {0};
  size_t n = 0;
  if (get_prop(env, argv[0], "bind", napi_string, &v) != 0 ||
      napi_get_value_string_utf8(env, v, bind_ip, sizeof bind_ip, &n) != napi_ok)
    return throw_plain(env, "EINVAL", "EINVAL: bind must be an IP address string");
  uint32_t port = 0, mtu = 0;
  if (get_prop(env, argv[0], "port", napi_number, &v) != 0 || get_u32_arg(env, v, &port) != 0 || port > 65535)
    return throw_plain(env, "EINVAL", "EINVAL: port must be an integer 0-65535");
  if (get_prop(env, argv[0], "mtu", napi_number, &v) != 0 || get_u32_arg(env, v, &mtu) != 0 || mtu < 576 ||
      mtu > MAX_DATAGRAM - OVERHEAD)
    return throw_plain(env, "EINVAL", "EINVAL: mtu must be an integer 576-65475");
  if (get_prop(env, argv[0], "cipher", napi_string, &v) != 0 ||
      napi_get_value_string_utf8(env, v, cipher_name, sizeof cipher_name, &n) != napi_ok)
    return throw_plain(env, "EINVAL", "EINVAL: cipher must be a string");
  const EVP_CIPHER *cipher = cipher_by_name(cipher_name);
  if (!cipher) return throw_plain(env, "EINVAL", "EINVAL: cipher must be aes-256-gcm or chacha20-poly1305");
  bool coalesce = true;
  if (get_prop(env, argv[0], "coalesce", napi_boolean, &v) == 0) napi_get_value_bool(env, v, &coalesce);
  char receiver[16] = "thread";
  if (get_prop(env, argv[0], "receiver", napi_string, &v) == 0)
    napi_get_value_string_utf8(env, v, receiver, sizeof receiver, &n);
  int auto_mode = strcmp(receiver, "auto") == 0;
  int loop_mode = auto_mode || strcmp(receiver, "loop") == 0;
  if (!loop_mode && strcmp(receiver, "thread") != 0)
    return throw_plain(env, "EINVAL", "EINVAL: receiver must be 'thread', 'loop' or 'auto'");
  uint64_t limit = DEFAULT_COUNTER_LIMIT;
  int has = get_prop(env, argv[0], "counterLimit", napi_number, &v);
  if (has < 0) return throw_plain(env, "EINVAL", "EINVAL: counterLimit must be a number");
  if (has == 0) {
    double d;
    napi_get_value_double(env, v, &d);
    if (!(d >= 1) || d > 9007199254740991.0) return throw_plain(env, "EINVAL", "EINVAL: counterLimit out of range");
    limit = (uint64_t)d;
  }

  udp_socket_t sock;
  const char *what;
  if (udp_socket_open(bind_ip, (uint16_t)port, &sock, &what) != 0)
    return what ? throw_errno(env, errno, what) : throw_plain(env, "EINVAL", "EINVAL: bind must be an IPv4 or IPv6 address");
  int fd = sock.fd, family = sock.family;
  uint16_t bound_port = sock.port;

  udp_t *u = calloc(1, sizeof *u);
  if (!u) {
    close(fd);
    return throw_errno(env, ENOMEM, "allocating the UDP socket");
  }
  u->fd = fd;
  u->go_fd = -1;
  u->family = family;
  snprintf(u->bind_ip, sizeof u->bind_ip, "%s", bind_ip);
  pthread_mutex_init(&u->socks_lock, NULL);
  for (int i = 0; i <= MAX_EXTRA_SOCKETS; i++) u->extra_fd[i] = -1;
  u->next_sock = 1;
  u->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (u->epfd >= 0) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 0};
    if (epoll_ctl(u->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      close(u->epfd);
      u->epfd = -1;
    }
  }
  u->cipher = cipher;
  u->counter_limit = limit;
  u->max_inner = mtu;
  u->gso_ok = 1;
  u->coalesce = coalesce;
  pthread_mutex_init(&u->lock, NULL);
  slot_pool_init(&u->slots, POOL_BUFFERS);
  u->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  u->txbuf = malloc(TX_BUF_BYTES);
  int ok = u->stop_fd >= 0 && u->txbuf && u->epfd >= 0;
  for (int i = 0; i < POOL_BUFFERS && ok; i++) {
    u->pool[i] = malloc(DELIVERY_BYTES);
    ok = u->pool[i] != NULL;
  }
  if (!ok) {
    close(fd);
    if (u->stop_fd >= 0) close(u->stop_fd);
    if (u->epfd >= 0) close(u->epfd);
    u->refs = 1;
    udp_unref(u);
    return throw_errno(env, ENOMEM, "allocating the UDP buffers");
  }
  napi_value name, handle;
  u->env = env;
  u->loop_mode = loop_mode;
  CHECK(env, napi_create_string_utf8(env, "edgemesh_udp_reader", NAPI_AUTO_LENGTH, &name));
  if (loop_mode) {
    uv_loop_t *loop = NULL;
    napi_valuetype cbt;
    int failed = napi_typeof(env, argv[1], &cbt) != napi_ok || cbt != napi_function ||
                 napi_get_uv_event_loop(env, (struct uv_loop_s **)&loop) != napi_ok ||
                 napi_create_reference(env, argv[1], 1, &u->cb_ref) != napi_ok ||
                 napi_async_init(env, NULL, name, &u->async_ctx) != napi_ok || !(u->loop_rx = rx_ctx_new()) ||
                 !(u->poll = calloc(1, sizeof *u->poll));
    if (!failed) {
      u->poll->u = u;
      failed = uv_poll_init(loop, u->poll, u->epfd) != 0;
      if (failed) {
        free(u->poll);  // never initialised: nothing for libuv to close
        u->poll = NULL;
      }
    }
    if (failed) {
      u->refs = 1;
      u->closed = 0;
      udp_shutdown(u);
      udp_unref(u);
      return throw_plain(env, "EINVAL", "EINVAL: cannot poll the socket on the event loop");
    }
    u->refs = 2;
    uv_poll_start(u->poll, EM_UV_READABLE, on_readable);
    uv_unref(u->poll);  // an open socket alone does not keep Node alive
  }
  if (auto_mode) {
    u->auto_mode = 1;
    if ((u->go_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0 ||
        napi_create_threadsafe_function(env, argv[1], NULL, name, QUEUE_DEPTH, 1, u, tsfn_finalize, u, call_js,
                                        &u->tsfn) != napi_ok) {
      u->tsfn = NULL;
      udp_shutdown(u);  // closing the poll handle drops its reference
      udp_unref(u);
      return throw_plain(env, "EINVAL", "EINVAL: cannot start the auto receiver");
    }
    u->refs = 3;
    napi_unref_threadsafe_function(env, u->tsfn);
  } else if (!loop_mode) {
    if (napi_create_threadsafe_function(env, argv[1], NULL, name, QUEUE_DEPTH, 1, u, tsfn_finalize, u, call_js,
                                        &u->tsfn) != napi_ok) {
      close(fd);
      close(u->stop_fd);
      close(u->epfd);
      u->refs = 1;
      udp_unref(u);
      return throw_plain(env, "EINVAL", "EINVAL: callback must be a function");
    }
    u->refs = 2;
    napi_unref_threadsafe_function(env, u->tsfn);  // an open socket alone does not keep Node alive
  }
  CHECK(env, handle_new(env, &UDP_TAG, u, finalize_handle, &handle));
  CHECK(env, napi_create_uint32(env, bound_port, &v));
  CHECK(env, napi_set_named_property(env, handle, "port", v));
  if (!loop_mode || auto_mode) {
    int rc = pthread_create(&u->thread, NULL, auto_mode ? auto_reader_main : reader_main, u);
    if (rc != 0) {
      udp_shutdown(u);
      return throw_errno(env, rc, "pthread_create");
    }
    u->running = 1;
  }
  napi_add_env_cleanup_hook(env, cleanup_hook, u);
  u->hook_added = 1;
  return handle;
}

// ---- extra sockets (JS thread) -----------------------------------------------------------

// The fd of socket `id` (0 = main), or -1 when no such socket is open. JS thread only: it is
// the only writer of the table.
static int sock_fd(udp_t *u, uint32_t id) {
  if (id == 0) return u->fd;
  return id <= MAX_EXTRA_SOCKETS ? u->extra_fd[id] : -1;
}

// An optional socket id argument: 0 when undefined; -1 after throwing.
static int get_sock_arg(napi_env env, udp_t *u, napi_value v, uint32_t *id) {
  napi_valuetype t;
  *id = 0;
  if (napi_typeof(env, v, &t) == napi_ok && t == napi_undefined) return 0;
  if (get_u32_arg(env, v, id) != 0 || sock_fd(u, *id) < 0) {
    throw_plain(env, "ENOENT", "ENOENT: no open socket with this id");
    return -1;
  }
  return 0;
}

// addSocket(h) → { id, port }: one more UDP socket on the main one's address, kernel-chosen port.
static napi_value udp_add_socket(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[1], o, v;
  if (get_args(env, info, argv, 1, &argc, 1, "EINVAL: addSocket(handle)")) return NULL;
  udp_t *u = get_udp(env, argv[0]);
  if (!u) return NULL;
  if (u->extras >= MAX_EXTRA_SOCKETS) return throw_plain(env, "ENOSPC", "ENOSPC: too many extra sockets");
  uint32_t id = u->next_sock;
  while (u->extra_fd[id] >= 0) id = id % MAX_EXTRA_SOCKETS + 1;
  udp_socket_t sock;
  const char *what;
  if (udp_socket_open(u->bind_ip, 0, &sock, &what) != 0) return throw_errno(env, errno, what ? what : "socket");
  struct epoll_event ev = {.events = EPOLLIN, .data.u32 = id};
  if (epoll_ctl(u->epfd, EPOLL_CTL_ADD, sock.fd, &ev) != 0) {
    int e = errno;
    close(sock.fd);
    return throw_errno(env, e, "epoll_ctl");
  }
  pthread_mutex_lock(&u->socks_lock);
  u->extra_fd[id] = sock.fd;
  atomic_fetch_add(&u->extras, 1);
  pthread_mutex_unlock(&u->socks_lock);
  // Ids go round before one is used again: a late call with a closed socket's id fails.
  u->next_sock = id % MAX_EXTRA_SOCKETS + 1;
  CHECK(env, napi_create_object(env, &o));
  CHECK(env, napi_create_uint32(env, id, &v));
  CHECK(env, napi_set_named_property(env, o, "id", v));
  CHECK(env, napi_create_uint32(env, sock.port, &v));
  CHECK(env, napi_set_named_property(env, o, "port", v));
  return o;
}

// closeSocket(h, id) → bool. Sessions whose endpoint used it are left without an endpoint.
static napi_value udp_close_socket(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[2], r;
  uint32_t id;
  if (get_args(env, info, argv, 2, &argc, 2, "EINVAL: closeSocket(handle, id)")) return NULL;
  udp_t *u = get_udp(env, argv[0]);
  if (!u) return NULL;
  if (get_u32_arg(env, argv[1], &id) != 0) return throw_plain(env, "EINVAL", "EINVAL: id must be a u32");
  bool found = id >= 1 && id <= MAX_EXTRA_SOCKETS && u->extra_fd[id] >= 0;
  if (found) {
    pthread_mutex_lock(&u->socks_lock);
    epoll_ctl(u->epfd, EPOLL_CTL_DEL, u->extra_fd[id], NULL);
    close(u->extra_fd[id]);
    u->extra_fd[id] = -1;
    atomic_fetch_sub(&u->extras, 1);
    pthread_mutex_unlock(&u->socks_lock);
    pthread_mutex_lock(&u->lock);
    for (int b = 0; b < SESSION_BUCKETS; b++)
      for (session_t *s = u->buckets[b]; s; s = s->next)
        if (s->ep_sock == id) {
          s->ep_sock = 0;
          s->ep_len = 0;
        }
    pthread_mutex_unlock(&u->lock);
  }
  CHECK(env, napi_get_boolean(env, found, &r));
  return r;
}

// ---- sessions (JS thread) ----------------------------------------------------------------

// addSession(h, localIndex, remoteIndex, txKey, rxKey, ip?, port?)
static napi_value udp_add_session(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[7];
  if (get_args(env, info, argv, 7, &argc, 5, "EINVAL: addSession(handle, localIndex, remoteIndex, txKey, rxKey)")) return NULL;
  udp_t *u = get_udp(env, argv[0]);
  if (!u) return NULL;
  uint32_t li, ri;
  uint8_t *tk, *rk;
  size_t tl, rl;
  if (get_u32_arg(env, argv[1], &li) || get_u32_arg(env, argv[2], &ri))
    return throw_plain(env, "EINVAL", "EINVAL: session indexes must be u32 integers");
  if (get_bytes(env, argv[3], &tk, &tl) || get_bytes(env, argv[4], &rk, &rl) || tl != 32 || rl != 32)
    return throw_plain(env, "EINVAL", "EINVAL: keys must be 32-byte Uint8Arrays");
  struct sockaddr_storage ep;
  socklen_t ep_len = 0;
  if (argc >= 7 && get_endpoint(env, u, argv[5], argv[6], true, &ep, &ep_len) != 0) return NULL;
  if (find_session(u, li)) return throw_plain(env, "EEXIST", "EEXIST: a session with this localIndex exists");
  if (u->sessions >= MAX_SESSIONS) return throw_plain(env, "ENOSPC", "ENOSPC: too many sessions on this socket");
  session_t *s = calloc(1, sizeof *s);
  if (!s) return throw_errno(env, ENOMEM, "allocating a session");
  s->local_index = li;
  s->remote_index = ri;
  s->tx = aead_new(u->cipher, tk, 1);
  s->rx = aead_new(u->cipher, rk, 0);
  if (!s->tx || !s->rx) {
    free_session(s);
    return throw_plain(env, "EM_CRYPTO", "EM_CRYPTO: cipher initialisation failed");
  }
  s->created_ns = now_ns();
  if (ep_len) {
    s->ep = ep;
    s->ep_len = ep_len;
  }
  pthread_mutex_lock(&u->lock);
  session_t **b = bucket_of(u, li);
  s->next = *b;
  *b = s;
  u->sessions++;
  pthread_mutex_unlock(&u->lock);
  return NULL;
}

// setEndpoint(h, localIndex, ip, port, socket?)
static napi_value udp_set_endpoint(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[5];
  uint32_t li, sock = 0;
  udp_t *u = session_call(env, info, argv, 5, &argc, 4, "EINVAL: setEndpoint(handle, localIndex, ip, port, socket?)", &li);
  if (!u) return NULL;
  struct sockaddr_storage ep;
  socklen_t len;
  if (get_endpoint(env, u, argv[2], argv[3], false, &ep, &len) != 0) return NULL;
  if (argc >= 5 && get_sock_arg(env, u, argv[4], &sock) != 0) return NULL;
  session_t *s = find_session(u, li);
  if (!s) return throw_plain(env, "ENOENT", "ENOENT: no session with this localIndex");
  // Only the JS thread reads the endpoint: no lock needed.
  s->ep = ep;
  s->ep_len = len;
  s->ep_sock = (uint16_t)sock;
  return NULL;
}

// removeSession(h, localIndex) → bool
static napi_value udp_remove_session(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[2], r;
  uint32_t li;
  udp_t *u = session_call(env, info, argv, 2, &argc, 2, "EINVAL: removeSession(handle, localIndex)", &li);
  if (!u) return NULL;
  session_t *found = NULL;
  pthread_mutex_lock(&u->lock);
  for (session_t **p = bucket_of(u, li); *p; p = &(*p)->next)
    if ((*p)->local_index == li) {
      found = *p;
      *p = found->next;
      u->sessions--;
      break;
    }
  pthread_mutex_unlock(&u->lock);
  if (found) free_session(found);
  CHECK(env, napi_get_boolean(env, found != NULL, &r));
  return r;
}

// session(h, localIndex) → { txCounter, rxPackets, lastRxAgeMs, createdAgeMs } | undefined
static napi_value udp_session_info(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[2], o, v;
  uint32_t li;
  udp_t *u = session_call(env, info, argv, 2, &argc, 2, "EINVAL: session(handle, localIndex)", &li);
  if (!u) return NULL;
  session_t *s = find_session(u, li);
  if (!s) {
    CHECK(env, napi_get_undefined(env, &o));
    return o;
  }
  pthread_mutex_lock(&u->lock);
  uint64_t rx = s->rx_packets, last = s->last_rx_ns;
  pthread_mutex_unlock(&u->lock);
  uint64_t now = now_ns();
  CHECK(env, napi_create_object(env, &o));
  CHECK(env, napi_create_bigint_uint64(env, s->tx_counter, &v));
  CHECK(env, napi_set_named_property(env, o, "txCounter", v));
  CHECK(env, napi_create_double(env, (double)rx, &v));
  CHECK(env, napi_set_named_property(env, o, "rxPackets", v));
  CHECK(env, napi_create_double(env, last ? (double)(now - last) / 1e6 : -1, &v));
  CHECK(env, napi_set_named_property(env, o, "lastRxAgeMs", v));
  CHECK(env, napi_create_double(env, (double)(now - s->created_ns) / 1e6, &v));
  CHECK(env, napi_set_named_property(env, o, "createdAgeMs", v));
  return o;
}

// ---- send (JS thread) --------------------------------------------------------------------

// Lays the staged datagrams out as messages: with GSO, each equal-size run (the last one of
// a run may be shorter) is one UDP_SEGMENT message. msg_len holds the datagram count.
static uint32_t tx_build(udp_t *u, int gso) {
  uint32_t nmsg = 0;
  size_t off = 0;
  for (uint32_t i = 0; i < u->tx_n;) {
    uint32_t len = u->tx_len[i], j = i + 1;
    size_t total = len;
    if (gso) {
      while (j < u->tx_n && j - i < TX_MAX_SEGS && u->tx_len[j] <= len && total + u->tx_len[j] <= MAX_DATAGRAM) {
        total += u->tx_len[j];
        if (u->tx_len[j++] < len) break;  // a shorter one ends the run
      }
    }
    struct msghdr *m = &u->tx_msgs[nmsg].msg_hdr;
    memset(m, 0, sizeof *m);
    u->tx_iov[nmsg].iov_base = u->txbuf + off;
    u->tx_iov[nmsg].iov_len = total;
    m->msg_name = (void *)u->tx_to;
    m->msg_namelen = u->tx_to_len;
    m->msg_iov = &u->tx_iov[nmsg];
    m->msg_iovlen = 1;
    if (j - i > 1) udp_tx_set_gso(m, u->tx_cmsg[nmsg], (uint16_t)len);
    u->tx_counts[nmsg] = j - i;
    off += total;
    nmsg++;
    i = j;
  }
  return nmsg;
}

// Sends messages [0, nmsg); returns 0, or the errno that stopped it with *sent messages out.
static int tx_send(udp_t *u, uint32_t nmsg, uint32_t *sent_out) {
  uint32_t sent = 0;
  int waited = 0, err = 0;
  while (sent < nmsg) {
    int r = sendmmsg(u->tx_fd, &u->tx_msgs[sent], nmsg - sent, MSG_DONTWAIT);
    if (r > 0) {
      for (int k = 0; k < r; k++) atomic_fetch_add(&u->tx_datagrams, u->tx_counts[sent + k]);
      sent += (uint32_t)r;
      continue;
    }
    if (errno == EINTR) continue;
    if ((errno == EAGAIN || errno == ENOBUFS) && waited < 4) {
      // The socket's send queue is full: wait a moment for it, like a NIC queue, then drop.
      struct pollfd p = {.fd = u->tx_fd, .events = POLLOUT};
      poll(&p, 1, 2);
      waited++;
      continue;
    }
    err = errno;
    break;
  }
  *sent_out = sent;
  return err;
}

// Sends the datagrams staged in txbuf with one sendmmsg() (more only on a partial send).
static void tx_flush(udp_t *u) {
  if (u->tx_n == 0) return;
  uint32_t nmsg = tx_build(u, u->gso_ok), sent = 0;
  int err = tx_send(u, nmsg, &sent);
  if (err && u->gso_ok && u->tx_msgs[sent].msg_hdr.msg_controllen) {
    // UDP_SEGMENT refused (a device without it, or a segment above the device MTU): resend
    // what is left one datagram per message. If that goes, the path lacks GSO: stop using it.
    uint32_t skip = 0;
    for (uint32_t k = 0; k < sent; k++) skip += u->tx_counts[k];
    uint32_t all = tx_build(u, 0), sent2 = 0;
    // Messages are now single datagrams: the first `skip` of them already went out.
    memmove(&u->tx_msgs[0], &u->tx_msgs[skip], (all - skip) * sizeof u->tx_msgs[0]);
    memmove(&u->tx_counts[0], &u->tx_counts[skip], (all - skip) * sizeof u->tx_counts[0]);
    nmsg = all - skip;
    err = tx_send(u, nmsg, &sent2);
    if (!err) u->gso_ok = 0;
    sent = sent2;
  }
  if (err) {
    uint32_t left = 0;
    for (uint32_t k = sent; k < nmsg; k++) left += u->tx_counts[k];
    atomic_fetch_add(&u->drops[(err == EAGAIN || err == ENOBUFS) ? D_TX_FULL : D_TX_ERROR], left);
    atomic_store(&u->last_tx_errno, err);
  }
  u->tx_n = 0;
  u->tx_used = 0;
}

static uint8_t *tx_reserve(void *ctx, size_t len) {
  udp_t *u = ctx;
  if (u->tx_n >= TX_MAX_DGRAMS || u->tx_used + len + OVERHEAD > TX_BUF_BYTES) return NULL;
  return u->txbuf + u->tx_used + HDR_LEN;
}

// Seals the plain packet just written at tx_reserve()'s pointer.
static void tx_commit(void *ctx, size_t len) {
  udp_t *u = ctx;
  session_t *s = u->tx_sess;
  uint8_t *h = u->txbuf + u->tx_used;
  if (len > u->max_inner && u->tx_type == MSG_DATA) {
    count_drop(u, D_OVERSIZE);
    return;
  }
  if (s->tx_counter >= u->counter_limit) {
    count_drop(u, D_COUNTER_LIMIT);
    return;
  }
  uint64_t counter = s->tx_counter++;
  h[0] = u->tx_type;
  h[1] = h[2] = h[3] = 0;
  put_le32(h + 4, s->remote_index);
  put_le64(h + 8, counter);
  if (aead_seal(s->tx, h, len, counter) != 0) {
    count_drop(u, D_TX_ERROR);
    return;
  }
  u->tx_len[u->tx_n++] = (uint32_t)(len + OVERHEAD);
  u->tx_used += len + OVERHEAD;
}

// send(h, localIndex, parts: Uint8Array[] (vnet, data pairs)) → packets accepted
static napi_value udp_send(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[3], r;
  uint32_t li, n = 0, accepted = 0;
  udp_t *u = session_call(env, info, argv, 3, &argc, 3, "EINVAL: send(handle, localIndex, parts)", &li);
  if (!u) return NULL;
  bool is_array = false;
  if (napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array)
    return throw_plain(env, "EINVAL", "EINVAL: parts must be an array");
  CHECK(env, napi_get_array_length(env, argv[2], &n));
  session_t *s = find_session(u, li);
  uint32_t packets = n / 2;
  if (!s || !s->ep_len) {
    atomic_fetch_add(&u->drops[s ? D_NO_ENDPOINT : D_NO_SESSION], packets);
    CHECK(env, napi_create_uint32(env, 0, &r));
    return r;
  }
  u->tx_fd = sock_fd(u, s->ep_sock);
  u->tx_sess = s;
  u->tx_to = (const struct sockaddr *)&s->ep;
  u->tx_to_len = s->ep_len;
  u->tx_type = MSG_DATA;
  u->tx_n = 0;
  u->tx_used = 0;
  seg_sink_t sink = {tx_reserve, tx_commit, u};
  for (uint32_t i = 0; i + 1 < n; i += 2) {
    napi_value ev, dv;
    uint8_t *vnet, *data;
    size_t vl, dl;
    if (napi_get_element(env, argv[2], i, &ev) != napi_ok || napi_get_element(env, argv[2], i + 1, &dv) != napi_ok ||
        get_bytes(env, ev, &vnet, &vl) || get_bytes(env, dv, &data, &dl) || vl != 10) {
      count_drop(u, D_GSO_MALFORMED);
      continue;
    }
    size_t max_len = 0;
    int segs = gso_segment_count(vnet, data, dl, &max_len);
    if (segs < 0) {
      count_drop(u, segs == SEG_UNSUPPORTED ? D_GSO_UNSUPPORTED : D_GSO_MALFORMED);
      continue;
    }
    if (max_len > u->max_inner) {
      count_drop(u, D_OVERSIZE);  // the forwarder answers with ICMP before it gets here
      continue;
    }
    if (s->tx_counter + (uint64_t)segs > u->counter_limit) {
      atomic_fetch_add(&u->drops[D_COUNTER_LIMIT], (unsigned)segs);
      continue;
    }
    size_t need = dl + (size_t)segs * (120 + OVERHEAD);
    if (u->tx_n + (uint32_t)segs > TX_MAX_DGRAMS || u->tx_used + need > TX_BUF_BYTES) tx_flush(u);
    if ((uint32_t)segs > TX_MAX_DGRAMS || need > TX_BUF_BYTES) {
      count_drop(u, D_GSO_MALFORMED);
      continue;
    }
    int rc = gso_to_plain(vnet, data, dl, &sink);
    if (rc == SEG_OK)
      accepted++;
    else
      count_drop(u, rc == SEG_UNSUPPORTED ? D_GSO_UNSUPPORTED : D_GSO_MALFORMED);
  }
  tx_flush(u);
  CHECK(env, napi_create_uint32(env, accepted, &r));
  return r;
}

// sendControl(h, localIndex, message, ip?, port?, socket?) → bool. With ip and port, from
// `socket` (default main); without, to the session's endpoint from its socket.
static napi_value udp_send_control(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[6], r;
  uint32_t li, sock = 0;
  uint8_t *msg;
  size_t ml;
  udp_t *u = session_call(env, info, argv, 6, &argc, 3, "EINVAL: sendControl(handle, localIndex, message, ip?, port?, socket?)", &li);
  if (!u) return NULL;
  if (get_bytes(env, argv[2], &msg, &ml) || ml > MAX_CONTROL)
    return throw_plain(env, "EINVAL", "EINVAL: a control message is a Uint8Array of at most 1200 bytes");
  struct sockaddr_storage to;
  socklen_t to_len = 0;
  if (argc >= 5 && get_endpoint(env, u, argv[3], argv[4], true, &to, &to_len) != 0) return NULL;
  session_t *s = find_session(u, li);
  bool ok = false;
  if (argc >= 6) {
    napi_valuetype t;
    if (napi_typeof(env, argv[5], &t) == napi_ok && t != napi_undefined && get_u32_arg(env, argv[5], &sock) != 0)
      return throw_plain(env, "EINVAL", "EINVAL: socket must be a u32");
  }
  int fd = to_len ? sock_fd(u, sock) : (s ? sock_fd(u, s->ep_sock) : u->fd);
  if (fd < 0) {
    count_drop(u, D_NO_SOCKET);  // a socket closed since the caller learned its id
  } else if (!s) {
    count_drop(u, D_NO_SESSION);
  } else if (!to_len && !s->ep_len) {
    count_drop(u, D_NO_ENDPOINT);
  } else {
    u->tx_fd = fd;
    u->tx_sess = s;
    u->tx_to = (const struct sockaddr *)(to_len ? &to : &s->ep);
    u->tx_to_len = to_len ? to_len : s->ep_len;
    u->tx_type = MSG_CONTROL;
    u->tx_n = 0;
    u->tx_used = 0;
    uint64_t before = atomic_load(&u->tx_datagrams);
    uint8_t *p = tx_reserve(u, ml);
    if (p) {
      memcpy(p, msg, ml);
      tx_commit(u, ml);
    }
    tx_flush(u);
    ok = atomic_load(&u->tx_datagrams) > before;
  }
  CHECK(env, napi_get_boolean(env, ok, &r));
  return r;
}

// sendRelayAllocate(h, datagram, ip, port) → bool: sends a relay allocate datagram (type 6, built
// by relay.c's relayAllocateDatagram) from this socket, so the relay learns the endpoint this
// socket's sessions use. Nothing else leaves raw: the type and length are checked.
static napi_value udp_send_relay_allocate(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[4], r;
  if (get_args(env, info, argv, 4, &argc, 4, "EINVAL: sendRelayAllocate(handle, datagram, ip, port)")) return NULL;
  udp_t *u = get_udp(env, argv[0]);
  if (!u) return NULL;
  uint8_t *d;
  size_t dl;
  if (get_bytes(env, argv[1], &d, &dl) || dl != ALLOC_LEN || d[0] != MSG_ALLOCATE)
    return throw_plain(env, "EINVAL", "EINVAL: not a relay allocate datagram (64 bytes, type 6)");
  struct sockaddr_storage to;
  socklen_t to_len = 0;
  if (get_endpoint(env, u, argv[2], argv[3], false, &to, &to_len) != 0) return NULL;
  ssize_t w = sendto(u->fd, d, dl, MSG_DONTWAIT, (struct sockaddr *)&to, to_len);
  if (w < 0) {
    int e = errno;
    count_drop(u, (e == EAGAIN || e == ENOBUFS) ? D_TX_FULL : D_TX_ERROR);
    atomic_store(&u->last_tx_errno, e);
  }
  CHECK(env, napi_get_boolean(env, w == (ssize_t)dl, &r));
  return r;
}

// stats(h) → { rxDatagrams, txDatagrams, rxBatches, sessions, gso, drops: { reason: n } }
static napi_value udp_stats(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[1], o, d, v;
  if (get_args(env, info, argv, 1, &argc, 1, "EINVAL: stats(handle)")) return NULL;
  udp_t *u = get_udp(env, argv[0]);
  if (!u) return NULL;
  CHECK(env, napi_create_object(env, &o));
  CHECK(env, napi_create_double(env, (double)atomic_load(&u->rx_datagrams), &v));
  CHECK(env, napi_set_named_property(env, o, "rxDatagrams", v));
  CHECK(env, napi_create_double(env, (double)atomic_load(&u->tx_datagrams), &v));
  CHECK(env, napi_set_named_property(env, o, "txDatagrams", v));
  CHECK(env, napi_create_double(env, (double)atomic_load(&u->rx_batches), &v));
  CHECK(env, napi_set_named_property(env, o, "rxBatches", v));
  CHECK(env, napi_create_double(env, (double)atomic_load(&u->rx_coalesced), &v));
  CHECK(env, napi_set_named_property(env, o, "rxCoalesced", v));
  CHECK(env, napi_create_double(env, (double)u->handoffs, &v));
  CHECK(env, napi_set_named_property(env, o, "receiverHandoffs", v));
  CHECK(env, napi_create_double(env, (double)u->handbacks, &v));
  CHECK(env, napi_set_named_property(env, o, "receiverHandbacks", v));
  CHECK(env, napi_create_uint32(env, u->sessions, &v));
  CHECK(env, napi_set_named_property(env, o, "sessions", v));
  CHECK(env, napi_create_uint32(env, atomic_load(&u->extras), &v));
  CHECK(env, napi_set_named_property(env, o, "extraSockets", v));
  CHECK(env, napi_get_boolean(env, u->gso_ok, &v));
  CHECK(env, napi_set_named_property(env, o, "gso", v));
  int last = atomic_load(&u->last_tx_errno);
  if (last) {
    CHECK(env, napi_create_string_utf8(env, errno_name(last), NAPI_AUTO_LENGTH, &v));
  } else {
    CHECK(env, napi_get_null(env, &v));
  }
  CHECK(env, napi_set_named_property(env, o, "lastTxError", v));
  CHECK(env, napi_create_object(env, &d));
  for (int i = 0; i < D_COUNT; i++) {
    uint64_t c = atomic_load(&u->drops[i]);
    if (!c) continue;
    CHECK(env, napi_create_double(env, (double)c, &v));
    CHECK(env, napi_set_named_property(env, d, DROP_NAMES[i], v));
  }
  CHECK(env, napi_set_named_property(env, o, "drops", d));
  return o;
}

static napi_value udp_close(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[1];
  if (get_args(env, info, argv, 1, &argc, 1, "EINVAL: close(handle)")) return NULL;
  void *p;
  if (!handle_unwrap(env, argv[0], &UDP_TAG, &p))
    return throw_plain(env, "EM_BAD_HANDLE", "edgemesh_udp: not a UDP socket handle");
  if (p) udp_shutdown(p);
  return NULL;
}

// Called from tun.c's module init: adds this file's functions to the addon's exports.
napi_status edgemesh_udp_tools_init(napi_env env, napi_value exports);  // udp_tools.c

napi_status edgemesh_udp_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"udpOpen", NULL, udp_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpAddSession", NULL, udp_add_session, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpSetEndpoint", NULL, udp_set_endpoint, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpRemoveSession", NULL, udp_remove_session, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpSession", NULL, udp_session_info, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpSend", NULL, udp_send, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpSendControl", NULL, udp_send_control, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpSendRelayAllocate", NULL, udp_send_relay_allocate, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpStats", NULL, udp_stats, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpClose", NULL, udp_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpAddSocket", NULL, udp_add_socket, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpCloseSocket", NULL, udp_close_socket, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_status st = napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return st == napi_ok ? edgemesh_udp_tools_init(env, exports) : st;
}
