// edgemesh UDP relay (N-API, C), part of build/edgemesh_tun.node.
//
// A relay node moves the members' sealed session datagrams (udp.c's wire format, types 4 and
// 5) between the two members of a binding without opening them: no keys, no crypto on the
// data, no queue. One reader thread does recvmmsg() (with UDP_GRO) → lookup → sendmmsg()
// (a GRO train leaves again as one UDP_SEGMENT message), MSG_DONTWAIT both ways: a full
// socket drops and counts.
//
// Bindings are made by the control plane (overlay/relay-binding.ts, over authenticated
// libp2p streams): binding id + one random 32-byte token per member. A member then proves
// its UDP endpoint with an allocate datagram sent from its data socket:
//   0      u8   type 6 (allocate)
//   1      u8   member: 0 or 1 (its side of the binding)
//   2      u8   n: receiver indexes listed (0-4)
//   3           zero
//   4..7   u32  binding id
//   8..15  u64  counter: strictly increasing per member and binding (stale ones are refused)
//   16..31 u32×4 the receiver indexes this member sends to (the peer's session localIndexes,
//               current and, during a rekey, the next one); unused ones zero
//   32..63      HMAC-SHA256(member's token, bytes 0..31)
// (all little-endian). The relay records the observed source ip:port as the member's
// endpoint; a newer allocate from elsewhere moves it (NAT rebinding). A datagram is forwarded
// only when its (source ip:port, receiver index) was registered so, and only to the other
// member's registered endpoint; anything else is dropped and counted. An endpoint+index held
// by another live member is refused (endpoint-taken) until that one is idle for 60 s.
//
// Each member's forwarding is limited by a token bucket (packets and bytes per second).
// Memory is fixed at open: the receive buffers, a message array, and one small struct per
// binding (capped by maxBindings).
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <node_api.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define EM_MODULE "edgemesh_relay"
#include "native_util.h"
#include "sockaddr_util.h"
#include "udp_socket.h"
#include "udp_wire.h"


#define TOKEN_LEN 32
#define MAX_INDEXES 4
#define MAX_SEGS UDP_GSO_MAX_SEGS  // per UDP_SEGMENT message
#define TX_MAX (RX_MSGS * MAX_SEGS)
#define ROUTE_BUCKETS 8192
#define BINDING_BUCKETS 1024
#define TAKEOVER_IDLE_NS (60ull * 1000000000ull)

enum {
  R_SHORT,
  R_BAD_TYPE,
  R_OVERSIZE,
  R_UNKNOWN_SOURCE,
  R_HALF_OPEN,
  R_RATE_LIMITED,
  R_BAD_ALLOCATE,
  R_NO_BINDING,
  R_AUTH,
  R_STALE_ALLOCATE,
  R_ENDPOINT_TAKEN,
  R_TX_FULL,
  R_TX_ERROR,
  R_SOCKET_OVERFLOW,
  R_COUNT
};
static const char *const DROP_NAMES[R_COUNT] = {
    "short",         "bad-type",        "oversize",        "unknown-source", "half-open",
    "rate-limited",  "bad-allocate",    "no-binding",      "auth-failed",    "stale-allocate",
    "endpoint-taken", "tx-full",        "tx-error",        "socket-overflow"};

struct member;
typedef struct route {
  struct route *next;
  struct member *m;
  uint32_t index;
  int linked;
} route_t;

typedef struct member {
  struct binding *b;
  int side;
  uint8_t token[TOKEN_LEN];
  uint64_t last_counter;
  int registered;
  uint8_t key[18];  // endpoint as v4-mapped IPv6 address + port (network order)
  struct sockaddr_storage ep;
  socklen_t ep_len;
  route_t routes[MAX_INDEXES];
  int nroutes;
  uint64_t last_rx_ns;
  // From this member towards the other.
  uint64_t packets, bytes, rate_drops, half_open_drops, allocations;
  double tok_pkts, tok_bytes;
  uint64_t refill_ns;
} member_t;

typedef struct binding {
  struct binding *next;
  uint32_t id;
  uint64_t created_ns;
  member_t m[2];
} binding_t;

typedef struct {
  const uint8_t *data;
  size_t len;
  uint16_t seg;   // segment size when count > 1
  uint16_t count;  // datagrams in this message
  int full;       // every segment so far had size `seg` (another may follow)
  struct sockaddr_storage to;
  socklen_t to_len;
  int src_msg;
} tx_t;

typedef struct relay {
  int fd, stop_fd, family;
  int closed, running, hook_added;
  atomic_int stop;
  pthread_t thread;
  pthread_mutex_t lock;  // bindings and routes: JS thread writes, reader reads
  binding_t *bindings[BINDING_BUCKETS];
  route_t *routes[ROUTE_BUCKETS];
  uint32_t nbindings, max_bindings;
  double pps, bps, burst_pkts, burst_bytes;
  int gso_ok;
  // Reader scratch (reader thread only).
  udp_rx_batch_t rx;
  tx_t tx[TX_MAX];
  struct mmsghdr txm[TX_MAX];
  struct iovec txiov[TX_MAX];
  udp_gso_cmsg_t txctrl[TX_MAX];
  atomic_ullong drops[R_COUNT];
  atomic_ullong rx_datagrams, tx_datagrams, rx_batches, tx_bytes;
  atomic_uint last_overflow;
} relay_t;

static void count(relay_t *r, int reason, uint64_t n) {
  atomic_fetch_add_explicit(&r->drops[reason], n, memory_order_relaxed);
}

// ---- tables (callers hold r->lock) -------------------------------------------------------

static void endpoint_key(const struct sockaddr_storage *ss, uint8_t key[18]) {
  memset(key, 0, 18);
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const void *)ss;
    key[10] = key[11] = 0xff;
    memcpy(key + 12, &a->sin_addr, 4);
    memcpy(key + 16, &a->sin_port, 2);
  } else {
    const struct sockaddr_in6 *a = (const void *)ss;
    memcpy(key, &a->sin6_addr, 16);
    memcpy(key + 16, &a->sin6_port, 2);
  }
}

static uint32_t route_hash(const uint8_t key[18], uint32_t index) {
  uint64_t h = 1469598103934665603ull ^ index;
  for (int i = 0; i < 18; i++) h = (h ^ key[i]) * 1099511628211ull;
  h ^= h >> 29;
  return (uint32_t)(h & (ROUTE_BUCKETS - 1));
}

static member_t *find_route(relay_t *r, const uint8_t key[18], uint32_t index) {
  for (route_t *x = r->routes[route_hash(key, index)]; x; x = x->next)
    if (x->index == index && memcmp(x->m->key, key, 18) == 0) return x->m;
  return NULL;
}

static void unlink_routes(relay_t *r, member_t *m) {
  for (int i = 0; i < m->nroutes; i++) {
    route_t *rt = &m->routes[i];
    if (!rt->linked) continue;
    for (route_t **p = &r->routes[route_hash(m->key, rt->index)]; *p; p = &(*p)->next)
      if (*p == rt) {
        *p = rt->next;
        break;
      }
    rt->linked = 0;
  }
  m->nroutes = 0;
  m->registered = 0;
}

static binding_t **binding_slot(relay_t *r, uint32_t id) {
  binding_t **p = &r->bindings[(id * 2654435761u) >> 22 & (BINDING_BUCKETS - 1)];
  while (*p && (*p)->id != id) p = &(*p)->next;
  return p;
}

// ---- the reader --------------------------------------------------------------------------

// Takes one packet (len bytes) from the member's bucket; 0 = over its rate.
static int bucket_take(relay_t *r, member_t *m, size_t len, uint64_t now) {
  if (r->pps <= 0 && r->bps <= 0) return 1;
  double dt = (double)(now - m->refill_ns) / 1e9;
  m->refill_ns = now;
  if (r->pps > 0) {
    m->tok_pkts += dt * r->pps;
    if (m->tok_pkts > r->burst_pkts) m->tok_pkts = r->burst_pkts;
  }
  if (r->bps > 0) {
    m->tok_bytes += dt * r->bps;
    if (m->tok_bytes > r->burst_bytes) m->tok_bytes = r->burst_bytes;
  }
  if ((r->pps > 0 && m->tok_pkts < 1) || (r->bps > 0 && m->tok_bytes < (double)len)) return 0;
  if (r->pps > 0) m->tok_pkts -= 1;
  if (r->bps > 0) m->tok_bytes -= (double)len;
  return 1;
}

static void handle_allocate(relay_t *r, const uint8_t *d, size_t len, const struct sockaddr_storage *from,
                            socklen_t from_len, uint64_t now) {
  if (len != ALLOC_LEN || d[1] > 1 || d[2] > MAX_INDEXES || d[3]) {
    count(r, R_BAD_ALLOCATE, 1);
    return;
  }
  binding_t *b = *binding_slot(r, get_le32(d + 4));
  if (!b) {
    count(r, R_NO_BINDING, 1);
    return;
  }
  member_t *m = &b->m[d[1]];
  uint8_t mac[32];
  unsigned int mac_len = 0;
  if (!HMAC(EVP_sha256(), m->token, TOKEN_LEN, d, ALLOC_SIGNED, mac, &mac_len) || mac_len != 32 ||
      CRYPTO_memcmp(mac, d + ALLOC_SIGNED, 32) != 0) {
    count(r, R_AUTH, 1);
    return;
  }
  uint64_t counter = get_le64(d + 8);
  if (counter <= m->last_counter) {
    count(r, R_STALE_ALLOCATE, 1);
    return;
  }
  uint8_t key[18];
  endpoint_key(from, key);
  uint32_t idx[MAX_INDEXES];
  int n = d[2];
  for (int i = 0; i < n; i++) {
    idx[i] = get_le32(d + 16 + 4 * i);
    member_t *owner = find_route(r, key, idx[i]);
    if (owner && owner != m) {
      if (now - owner->last_rx_ns < TAKEOVER_IDLE_NS) {
        count(r, R_ENDPOINT_TAKEN, 1);
        return;
      }
      unlink_routes(r, owner);  // idle for a minute: its NAT mapping is gone, the port is reused
    }
  }
  unlink_routes(r, m);
  memcpy(m->key, key, 18);
  memcpy(&m->ep, from, from_len);
  m->ep_len = from_len;
  for (int i = 0; i < n; i++) {
    int dup = 0;
    for (int j = 0; j < m->nroutes; j++) dup |= m->routes[j].index == idx[i];
    if (dup) continue;
    route_t *rt = &m->routes[m->nroutes++];
    rt->index = idx[i];
    rt->m = m;
    route_t **head = &r->routes[route_hash(key, idx[i])];
    rt->next = *head;
    *head = rt;
    rt->linked = 1;
  }
  m->registered = 1;
  m->last_counter = counter;
  m->last_rx_ns = now;
  m->allocations++;
}

// Queues [d, d+len) for `to`, joining the previous message when it continues its GSO run.
static void tx_add(relay_t *r, uint32_t *ntx, int msg, const uint8_t *d, size_t len, const member_t *to) {
  if (*ntx > 0 && r->gso_ok) {
    tx_t *p = &r->tx[*ntx - 1];
    if (p->src_msg == msg && p->full && p->data + p->len == d && len <= p->seg && p->count < MAX_SEGS &&
        p->to_len == to->ep_len && memcmp(&p->to, &to->ep, to->ep_len) == 0) {
      p->len += len;
      p->count++;
      p->full = len == p->seg;
      return;
    }
  }
  if (*ntx >= TX_MAX) return;  // cannot happen: one entry per received segment at most
  tx_t *t = &r->tx[(*ntx)++];
  t->data = d;
  t->len = len;
  t->seg = (uint16_t)len;
  t->count = 1;
  t->full = 1;
  memcpy(&t->to, &to->ep, to->ep_len);
  t->to_len = to->ep_len;
  t->src_msg = msg;
}

static void tx_prepare(relay_t *r, uint32_t i, int gso) {
  tx_t *t = &r->tx[i];
  struct msghdr *h = &r->txm[i].msg_hdr;
  memset(h, 0, sizeof *h);
  r->txiov[i].iov_base = (void *)t->data;
  r->txiov[i].iov_len = t->len;
  h->msg_name = &t->to;
  h->msg_namelen = t->to_len;
  h->msg_iov = &r->txiov[i];
  h->msg_iovlen = 1;
  if (gso && t->count > 1) udp_tx_set_gso(h, r->txctrl[i], t->seg);
}

// Sends one message's segments one datagram each (a path that refused UDP_SEGMENT).
static void tx_one_by_one(relay_t *r, const tx_t *t) {
  for (size_t off = 0; off < t->len; off += t->seg) {
    size_t l = t->len - off < t->seg ? t->len - off : t->seg;
    ssize_t w = sendto(r->fd, t->data + off, l, MSG_DONTWAIT, (const struct sockaddr *)&t->to, t->to_len);
    if (w < 0)
      count(r, (errno == EAGAIN || errno == ENOBUFS) ? R_TX_FULL : R_TX_ERROR, 1);
    else {
      atomic_fetch_add_explicit(&r->tx_datagrams, 1, memory_order_relaxed);
      atomic_fetch_add_explicit(&r->tx_bytes, l, memory_order_relaxed);
    }
  }
}

static void tx_flush(relay_t *r, uint32_t ntx) {
  for (uint32_t i = 0; i < ntx; i++) tx_prepare(r, i, r->gso_ok);
  uint32_t at = 0;
  while (at < ntx) {
    int n = sendmmsg(r->fd, &r->txm[at], ntx - at, MSG_DONTWAIT);
    if (n > 0) {
      for (int k = 0; k < n; k++) {
        atomic_fetch_add_explicit(&r->tx_datagrams, r->tx[at + k].count, memory_order_relaxed);
        atomic_fetch_add_explicit(&r->tx_bytes, r->tx[at + k].len, memory_order_relaxed);
      }
      at += (uint32_t)n;
      continue;
    }
    if (errno == EINTR) continue;
    // The message at `at` failed: a full socket drops it (no waiting: other bindings' traffic
    // is behind it); a GSO message the path refused goes again one datagram at a time.
    tx_t *t = &r->tx[at];
    if (errno == EAGAIN || errno == ENOBUFS)
      count(r, R_TX_FULL, t->count);
    else if (t->count > 1)
      tx_one_by_one(r, t);
    else
      count(r, R_TX_ERROR, 1);
    at++;
  }
}

// One received message (a GRO train of datagrams from one source, each `seg` bytes but the last).
static void handle_message(relay_t *r, int msg, const uint8_t *base, size_t len, size_t seg,
                           const struct sockaddr_storage *from, socklen_t from_len, uint32_t *ntx, uint64_t now) {
  uint8_t key[18];
  int have_key = 0;
  uint32_t last_index = 0;
  member_t *src = NULL;
  for (size_t off = 0; off < len; off += seg) {
    size_t dl = len - off < seg ? len - off : seg;
    const uint8_t *d = base + off;
    atomic_fetch_add_explicit(&r->rx_datagrams, 1, memory_order_relaxed);
    if (dl < 4) {
      count(r, R_SHORT, 1);
      continue;
    }
    if (d[0] == MSG_ALLOCATE) {
      handle_allocate(r, d, dl, from, from_len, now);
      src = NULL;  // the routes may have changed
      continue;
    }
    if ((d[0] != MSG_DATA && d[0] != MSG_CONTROL) || d[1] || d[2] || d[3]) {
      count(r, R_BAD_TYPE, 1);
      continue;
    }
    if (dl < OVERHEAD) {
      count(r, R_SHORT, 1);
      continue;
    }
    uint32_t index = get_le32(d + 4);
    if (!have_key) {
      endpoint_key(from, key);
      have_key = 1;
    }
    if (!src || index != last_index) {
      src = find_route(r, key, index);
      last_index = index;
    }
    if (!src) {
      count(r, R_UNKNOWN_SOURCE, 1);
      continue;
    }
    member_t *dst = &src->b->m[1 - src->side];
    if (!dst->registered) {
      src->half_open_drops++;
      count(r, R_HALF_OPEN, 1);
      continue;
    }
    if (!bucket_take(r, src, dl, now)) {
      src->rate_drops++;
      count(r, R_RATE_LIMITED, 1);
      continue;
    }
    src->packets++;
    src->bytes += dl;
    src->last_rx_ns = now;
    tx_add(r, ntx, msg, d, dl, dst);
  }
}

static void *reader_main(void *arg) {
  relay_t *r = arg;
  while (reader_wait(r->fd, r->stop_fd, &r->stop) >= 0) {
    for (int round = 0; round < 64 && !atomic_load(&r->stop); round++) {
      udp_rx_prepare(&r->rx, RX_MSGS);
      int got = recvmmsg(r->fd, r->rx.msgs, RX_MSGS, MSG_DONTWAIT, NULL);
      if (got <= 0) break;
      atomic_fetch_add_explicit(&r->rx_batches, 1, memory_order_relaxed);
      uint64_t now = now_ns();
      uint32_t ntx = 0;
      pthread_mutex_lock(&r->lock);
      for (int i = 0; i < got; i++) {
        struct msghdr *m = &r->rx.msgs[i].msg_hdr;
        size_t len = r->rx.msgs[i].msg_len;
        uint32_t overflowed;
        size_t seg = udp_rx_cmsgs(m, len, &r->last_overflow, &overflowed);
        if (overflowed) count(r, R_SOCKET_OVERFLOW, overflowed);
        if (m->msg_flags & MSG_TRUNC) {
          count(r, R_OVERSIZE, 1);
          continue;
        }
        if (len == 0 || seg == 0) {
          count(r, R_SHORT, 1);
          continue;
        }
        handle_message(r, i, udp_rx_data(&r->rx, i), len, seg, &r->rx.from[i], m->msg_namelen, &ntx, now);
      }
      pthread_mutex_unlock(&r->lock);
      tx_flush(r, ntx);  // the tx entries carry copies of the destinations: no lock needed
      if (got < RX_MSGS) break;
    }
  }
  return NULL;
}

// ---- lifecycle ---------------------------------------------------------------------------

static void free_bindings(relay_t *r) {
  for (int i = 0; i < BINDING_BUCKETS; i++) {
    binding_t *b = r->bindings[i];
    while (b) {
      binding_t *next = b->next;
      OPENSSL_cleanse(b, sizeof *b);
      free(b);
      b = next;
    }
    r->bindings[i] = NULL;
  }
  memset(r->routes, 0, sizeof r->routes);
  r->nbindings = 0;
}

static void relay_shutdown(relay_t *r) {
  if (r->closed) return;
  r->closed = 1;
  reader_stop(r->stop_fd, &r->stop);
  if (r->running) {
    pthread_join(r->thread, NULL);
    r->running = 0;
  }
  close(r->fd);
  close(r->stop_fd);
  r->fd = r->stop_fd = -1;
  pthread_mutex_lock(&r->lock);
  free_bindings(r);
  pthread_mutex_unlock(&r->lock);
}

static void cleanup_hook(void *arg) { relay_shutdown(arg); }

static void finalize_handle(napi_env env, void *data, void *hint) {
  (void)hint;
  relay_t *r = data;
  relay_shutdown(r);
  if (r->hook_added) napi_remove_env_cleanup_hook(env, cleanup_hook, r);
  pthread_mutex_destroy(&r->lock);
  free(r->rx.buf);
  free(r);
}

static const napi_type_tag RELAY_TAG = {0x6564676d72656c61ULL, 0x7955445072656c31ULL};

static relay_t *get_relay(napi_env env, napi_value obj) {
  relay_t *r = handle_arg(env, obj, &RELAY_TAG, "edgemesh_relay: not a relay handle");
  if (r && r->closed) {
    throw_plain(env, "EBADF", "EBADF: the relay socket is closed");
    return NULL;
  }
  return r;
}

// ---- argument helpers --------------------------------------------------------------------

// A number option: 1 when absent (*out keeps its default), 0 when read, -1 when not a number.
static int num_prop(napi_env env, napi_value obj, const char *key, double *out) {
  napi_value v;
  int has = get_prop(env, obj, key, napi_number, &v);
  if (has == 0) napi_get_value_double(env, v, out);
  return has;
}

// Copies the token: the caller cleanses its copy once it is stored or used.
static int get_token(napi_env env, napi_value v, uint8_t out[TOKEN_LEN]) {
  uint8_t *data;
  size_t len;
  if (get_bytes(env, v, &data, &len) != 0 || len != TOKEN_LEN) return -1;
  memcpy(out, data, TOKEN_LEN);
  return 0;
}

// The head every per-binding call shares — (handle, id, ...): the arguments, the open relay
// and the u32 binding id. Returns the relay, or NULL after throwing.
static relay_t *binding_call(napi_env env, napi_callback_info info, napi_value *argv, size_t n, const char *usage,
                             uint32_t *id) {
  size_t argc;
  if (get_args(env, info, argv, n, &argc, n, usage)) return NULL;
  relay_t *r = get_relay(env, argv[0]);
  if (!r) return NULL;
  if (get_u32_arg(env, argv[1], id)) {
    throw_plain(env, "EINVAL", "EINVAL: binding id must be a u32");
    return NULL;
  }
  return r;
}

// relayOpen({ bind, port, maxBindings, packetsPerSecond, bytesPerSecond, burstSeconds }) → handle { port }
static napi_value relay_open(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], v;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype vt;
  if (argc < 1 || napi_typeof(env, argv[0], &vt) != napi_ok || vt != napi_object)
    return throw_plain(env, "EINVAL", "EINVAL: relayOpen(options)");
  char bind_ip[64] = {0};
  size_t n = 0;
  if (get_prop(env, argv[0], "bind", napi_string, &v) != 0 ||
      napi_get_value_string_utf8(env, v, bind_ip, sizeof bind_ip, &n) != napi_ok)
    return throw_plain(env, "EINVAL", "EINVAL: bind must be an IP address string");
  double port = 0, maxb = 4096, pps = 0, bps = 0, burst = 0.05;
  if (num_prop(env, argv[0], "port", &port) < 0 || !(port >= 0 && port <= 65535) || port != (int)port)
    return throw_plain(env, "EINVAL", "EINVAL: port must be an integer 0-65535");
  if (num_prop(env, argv[0], "maxBindings", &maxb) < 0 || !(maxb >= 1 && maxb <= 1000000))
    return throw_plain(env, "EINVAL", "EINVAL: maxBindings must be 1-1000000");
  if (num_prop(env, argv[0], "packetsPerSecond", &pps) < 0 || !(pps >= 0))
    return throw_plain(env, "EINVAL", "EINVAL: packetsPerSecond must be ≥ 0 (0 = unlimited)");
  if (num_prop(env, argv[0], "bytesPerSecond", &bps) < 0 || !(bps >= 0))
    return throw_plain(env, "EINVAL", "EINVAL: bytesPerSecond must be ≥ 0 (0 = unlimited)");
  if (num_prop(env, argv[0], "burstSeconds", &burst) < 0 || !(burst > 0 && burst <= 10))
    return throw_plain(env, "EINVAL", "EINVAL: burstSeconds must be in (0, 10]");

  udp_socket_t sock;
  const char *what;
  if (udp_socket_open(bind_ip, (uint16_t)port, &sock, &what) != 0)
    return what ? throw_errno(env, errno, what) : throw_plain(env, "EINVAL", "EINVAL: bind must be an IPv4 or IPv6 address");
  int fd = sock.fd, family = sock.family, gro = sock.gro;
  uint16_t bound_port = sock.port;

  relay_t *r = calloc(1, sizeof *r);
  if (!r || !(r->rx.buf = malloc((size_t)RX_MSGS * RX_BUF_BYTES))) {
    free(r);
    close(fd);
    return throw_errno(env, ENOMEM, "allocating the relay");
  }
  r->fd = fd;
  r->family = family;
  r->max_bindings = (uint32_t)maxb;
  r->pps = pps;
  r->bps = bps;
  // A burst holds at least one full GRO train (64 KiB, 64 datagrams), whatever the rate.
  r->burst_pkts = pps * burst > 64 ? pps * burst : 64;
  r->burst_bytes = bps * burst > 65536 ? bps * burst : 65536;
  r->gso_ok = gro;  // a kernel with UDP_GRO has UDP_SEGMENT too (both since 5.0)
  pthread_mutex_init(&r->lock, NULL);
  r->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  napi_value handle;
  if (r->stop_fd < 0 || handle_new(env, &RELAY_TAG, r, finalize_handle, &handle) != napi_ok) {
    if (r->stop_fd >= 0) close(r->stop_fd);
    close(fd);
    free(r->rx.buf);
    free(r);
    return throw_plain(env, "EM_NAPI", "edgemesh_relay: could not create the handle");
  }
  if (napi_add_env_cleanup_hook(env, cleanup_hook, r) == napi_ok) r->hook_added = 1;
  if (pthread_create(&r->thread, NULL, reader_main, r) != 0) {
    relay_shutdown(r);
    return throw_errno(env, EAGAIN, "starting the relay thread");
  }
  r->running = 1;
  // Named so its CPU time can be told apart from the rest of the agent (/proc/<pid>/task/*/comm).
  pthread_setname_np(r->thread, "edgemesh-relay");
  CHECK(env, napi_create_uint32(env, bound_port, &v));
  CHECK(env, napi_set_named_property(env, handle, "port", v));
  return handle;
}

// relayAddBinding(h, id, token0, token1): tokens are 32 random bytes each.
static napi_value relay_add_binding(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  uint32_t id;
  uint8_t t0[TOKEN_LEN], t1[TOKEN_LEN];
  relay_t *r = binding_call(env, info, argv, 4, "EINVAL: relayAddBinding(handle, id, token0, token1)", &id);
  if (!r) return NULL;
  if (get_token(env, argv[2], t0) || get_token(env, argv[3], t1))
    return throw_plain(env, "EINVAL", "EINVAL: tokens must be 32-byte Uint8Arrays");
  binding_t *b = calloc(1, sizeof *b);
  if (!b) return throw_errno(env, ENOMEM, "allocating a binding");
  b->id = id;
  b->created_ns = now_ns();
  for (int s = 0; s < 2; s++) {
    b->m[s].b = b;
    b->m[s].side = s;
    b->m[s].refill_ns = b->created_ns;
    b->m[s].tok_pkts = r->burst_pkts;
    b->m[s].tok_bytes = r->burst_bytes;
  }
  memcpy(b->m[0].token, t0, TOKEN_LEN);
  memcpy(b->m[1].token, t1, TOKEN_LEN);
  OPENSSL_cleanse(t0, sizeof t0);
  OPENSSL_cleanse(t1, sizeof t1);
  const char *err = NULL;
  pthread_mutex_lock(&r->lock);
  binding_t **slot = binding_slot(r, id);
  if (*slot)
    err = "EEXIST: the binding id is taken";
  else if (r->nbindings >= r->max_bindings)
    err = "ENOSPC: the relay holds maxBindings bindings";
  else {
    *slot = b;
    r->nbindings++;
  }
  pthread_mutex_unlock(&r->lock);
  if (err) {
    OPENSSL_cleanse(b, sizeof *b);
    free(b);
    return throw_plain(env, err[1] == 'E' ? "EEXIST" : "ENOSPC", err);
  }
  return NULL;
}

// relayRemoveBinding(h, id) → bool: its tokens and endpoints are forgotten at once.
static napi_value relay_remove_binding(napi_env env, napi_callback_info info) {
  napi_value argv[2], res;
  uint32_t id;
  relay_t *r = binding_call(env, info, argv, 2, "EINVAL: relayRemoveBinding(handle, id)", &id);
  if (!r) return NULL;
  pthread_mutex_lock(&r->lock);
  binding_t **slot = binding_slot(r, id), *b = *slot;
  if (b) {
    unlink_routes(r, &b->m[0]);
    unlink_routes(r, &b->m[1]);
    *slot = b->next;
    r->nbindings--;
  }
  pthread_mutex_unlock(&r->lock);
  if (b) {
    OPENSSL_cleanse(b, sizeof *b);
    free(b);
  }
  CHECK(env, napi_get_boolean(env, b != NULL, &res));
  return res;
}

static napi_value endpoint_value(napi_env env, const member_t *m) {
  napi_value o, v;
  if (!m->registered) {
    napi_get_null(env, &o);
    return o;
  }
  char ip[INET6_ADDRSTRLEN];
  uint16_t port;
  sockaddr_to_text(&m->ep, ip, &port);
  napi_create_object(env, &o);
  napi_create_string_utf8(env, ip, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, o, "ip", v);
  napi_create_uint32(env, port, &v);
  napi_set_named_property(env, o, "port", v);
  return o;
}

static void set_num(napi_env env, napi_value o, const char *k, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  napi_set_named_property(env, o, k, v);
}

// relayBinding(h, id) → { members: [{ endpoint, indexes, packets, bytes, rateDrops, halfOpenDrops,
//   allocations, lastRxAgeMs }, ...×2], createdAgeMs } | undefined
static napi_value relay_binding_info(napi_env env, napi_callback_info info) {
  napi_value argv[2], o, arr;
  uint32_t id;
  relay_t *r = binding_call(env, info, argv, 2, "EINVAL: relayBinding(handle, id)", &id);
  if (!r) return NULL;
  uint64_t now = now_ns();
  pthread_mutex_lock(&r->lock);
  binding_t *b = *binding_slot(r, id);
  if (!b) {
    pthread_mutex_unlock(&r->lock);
    napi_get_undefined(env, &o);
    return o;
  }
  binding_t copy = *b;  // N-API calls outside the lock
  pthread_mutex_unlock(&r->lock);
  napi_create_object(env, &o);
  napi_create_array_with_length(env, 2, &arr);
  for (int s = 0; s < 2; s++) {
    const member_t *m = &copy.m[s];
    napi_value mo, idx, v;
    napi_create_object(env, &mo);
    napi_set_named_property(env, mo, "endpoint", endpoint_value(env, m));
    napi_create_array_with_length(env, (size_t)m->nroutes, &idx);
    for (int i = 0; i < m->nroutes; i++) {
      napi_create_uint32(env, m->routes[i].index, &v);
      napi_set_element(env, idx, (uint32_t)i, v);
    }
    napi_set_named_property(env, mo, "indexes", idx);
    set_num(env, mo, "packets", (double)m->packets);
    set_num(env, mo, "bytes", (double)m->bytes);
    set_num(env, mo, "rateDrops", (double)m->rate_drops);
    set_num(env, mo, "halfOpenDrops", (double)m->half_open_drops);
    set_num(env, mo, "allocations", (double)m->allocations);
    set_num(env, mo, "lastRxAgeMs", m->last_rx_ns ? (double)(now - m->last_rx_ns) / 1e6 : -1);
    napi_set_element(env, arr, (uint32_t)s, mo);
  }
  OPENSSL_cleanse(&copy, sizeof copy);
  napi_set_named_property(env, o, "members", arr);
  set_num(env, o, "createdAgeMs", (double)(now - copy.created_ns) / 1e6);
  return o;
}

// relayStats(h) → { rxDatagrams, txDatagrams, txBytes, rxBatches, bindings, gso, drops: { reason: n } }
static napi_value relay_stats(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[1], o, d, v;
  if (get_args(env, info, argv, 1, &argc, 1, "EINVAL: relayStats(handle)")) return NULL;
  relay_t *r = get_relay(env, argv[0]);
  if (!r) return NULL;
  CHECK(env, napi_create_object(env, &o));
  set_num(env, o, "rxDatagrams", (double)atomic_load(&r->rx_datagrams));
  set_num(env, o, "txDatagrams", (double)atomic_load(&r->tx_datagrams));
  set_num(env, o, "txBytes", (double)atomic_load(&r->tx_bytes));
  set_num(env, o, "rxBatches", (double)atomic_load(&r->rx_batches));
  pthread_mutex_lock(&r->lock);
  uint32_t nb = r->nbindings;
  pthread_mutex_unlock(&r->lock);
  set_num(env, o, "bindings", nb);
  CHECK(env, napi_get_boolean(env, r->gso_ok, &v));
  CHECK(env, napi_set_named_property(env, o, "gso", v));
  CHECK(env, napi_create_object(env, &d));
  for (int i = 0; i < R_COUNT; i++) {
    uint64_t c = atomic_load(&r->drops[i]);
    if (c) set_num(env, d, DROP_NAMES[i], (double)c);
  }
  CHECK(env, napi_set_named_property(env, o, "drops", d));
  return o;
}

static napi_value relay_close(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[1];
  if (get_args(env, info, argv, 1, &argc, 1, "EINVAL: relayClose(handle)")) return NULL;
  void *p;
  if (!handle_unwrap(env, argv[0], &RELAY_TAG, &p))
    return throw_plain(env, "EM_BAD_HANDLE", "edgemesh_relay: not a relay handle");
  if (p) relay_shutdown(p);
  return NULL;
}

// relayAllocateDatagram(token, bindingId, member, counter: bigint, indexes: number[]) → Uint8Array(64)
// The member side's builder (the same code that checks it here).
static napi_value relay_allocate_datagram(napi_env env, napi_callback_info info) {
  size_t argc;
  napi_value argv[5], ab, out;
  if (get_args(env, info, argv, 5, &argc, 5, "EINVAL: relayAllocateDatagram(token, id, member, counter, indexes)")) return NULL;
  uint8_t token[TOKEN_LEN];
  uint32_t id, member, n = 0;
  uint64_t counter;
  bool lossless = false, is_array = false;
  if (get_token(env, argv[0], token)) return throw_plain(env, "EINVAL", "EINVAL: token must be a 32-byte Uint8Array");
  if (get_u32_arg(env, argv[1], &id)) return throw_plain(env, "EINVAL", "EINVAL: binding id must be a u32");
  if (get_u32_arg(env, argv[2], &member) || member > 1) return throw_plain(env, "EINVAL", "EINVAL: member must be 0 or 1");
  if (napi_get_value_bigint_uint64(env, argv[3], &counter, &lossless) != napi_ok || !lossless || counter == 0)
    return throw_plain(env, "EINVAL", "EINVAL: counter must be a bigint 1..2^64-1");
  if (napi_is_array(env, argv[4], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[4], &n) != napi_ok || n > MAX_INDEXES)
    return throw_plain(env, "EINVAL", "EINVAL: indexes must be an array of at most 4 u32");
  uint8_t *d;
  CHECK(env, napi_create_arraybuffer(env, ALLOC_LEN, (void **)&d, &ab));
  memset(d, 0, ALLOC_LEN);
  d[0] = MSG_ALLOCATE;
  d[1] = (uint8_t)member;
  d[2] = (uint8_t)n;
  put_le32(d + 4, id);
  put_le64(d + 8, counter);
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    uint32_t idx;
    if (napi_get_element(env, argv[4], i, &e) != napi_ok || get_u32_arg(env, e, &idx))
      return throw_plain(env, "EINVAL", "EINVAL: indexes must be u32 numbers");
    put_le32(d + 16 + 4 * i, idx);
  }
  unsigned int mac_len = 0;
  if (!HMAC(EVP_sha256(), token, TOKEN_LEN, d, ALLOC_SIGNED, d + ALLOC_SIGNED, &mac_len) || mac_len != 32)
    return throw_plain(env, "EM_CRYPTO", "edgemesh_relay: HMAC failed");
  OPENSSL_cleanse(token, sizeof token);
  CHECK(env, napi_create_typedarray(env, napi_uint8_array, ALLOC_LEN, ab, 0, &out));
  return out;
}

// Called from tun.c's module init.
napi_status edgemesh_relay_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"relayOpen", NULL, relay_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"relayAddBinding", NULL, relay_add_binding, NULL, NULL, NULL, napi_enumerable, NULL},
      {"relayRemoveBinding", NULL, relay_remove_binding, NULL, NULL, NULL, napi_enumerable, NULL},
      {"relayBinding", NULL, relay_binding_info, NULL, NULL, NULL, napi_enumerable, NULL},
      {"relayStats", NULL, relay_stats, NULL, NULL, NULL, napi_enumerable, NULL},
      {"relayClose", NULL, relay_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"relayAllocateDatagram", NULL, relay_allocate_datagram, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
