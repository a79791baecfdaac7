// The UDP socket plumbing of the session engine (udp.c) and the relay (relay.c): both open
// the same kind of socket (big buffers, drop counter, GRO, no fragmentation) and move
// datagrams the same way, recvmmsg() with UDP_GRO in, sendmmsg() with UDP_SEGMENT out.
// The per-datagram pieces are static inline: they run on the receive path of both, and a
// call into another object file there would cost what the batching saves.
#ifndef EDGEMESH_UDP_SOCKET_H
#define EDGEMESH_UDP_SOCKET_H
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

// Older libc headers lack the UDP offload socket options (Linux 4.18 / 5.0).
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

// Receive batches: RX_MSGS messages per recvmmsg(), each up to a full GRO train.
#define RX_MSGS 32
#define RX_BUF_BYTES 65536
// Datagrams per UDP_SEGMENT message (the kernel's limit is 64, or 128 on newer kernels).
#define UDP_GSO_MAX_SEGS 64

typedef struct {
  int fd;
  int family;     // of the bind address: AF_INET, or AF_INET6 (dual-stack)
  int gro;        // UDP_GRO accepted (the kernel then has UDP_SEGMENT too: both since 5.0)
  uint16_t port;  // the bound port (the one the kernel chose for port 0)
} udp_socket_t;

// Opens a non-blocking UDP socket bound to bind_ip:port, tuned for the tunnel (8 MiB
// buffers, SO_RXQ_OVFL, UDP_GRO, path MTU probing so outer packets never fragment, IPv6
// sockets dual-stack). Returns 0, or -1: with *what NULL when bind_ip is not an IP address,
// else with errno set and *what naming the call that failed ("socket", "bind").
int udp_socket_open(const char *bind_ip, uint16_t port, udp_socket_t *out, const char **what);

// recvmmsg() scratch space. buf (RX_MSGS * RX_BUF_BYTES) is the owner's to allocate.
typedef struct {
  uint8_t *buf;
  struct mmsghdr msgs[RX_MSGS];
  struct iovec iov[RX_MSGS];
  struct sockaddr_storage from[RX_MSGS];
  uint8_t ctrl[RX_MSGS][CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(uint32_t))];
} udp_rx_batch_t;

static inline uint8_t *udp_rx_data(const udp_rx_batch_t *rx, int i) { return rx->buf + (size_t)i * RX_BUF_BYTES; }

// Points the first `want` messages at their buffers again (recvmmsg() overwrote the lengths).
static inline void udp_rx_prepare(udp_rx_batch_t *rx, int want) {
  for (int i = 0; i < want; i++) {
    rx->iov[i].iov_base = udp_rx_data(rx, i);
    rx->iov[i].iov_len = RX_BUF_BYTES;
    memset(&rx->msgs[i].msg_hdr, 0, sizeof rx->msgs[i].msg_hdr);
    rx->msgs[i].msg_hdr.msg_name = &rx->from[i];
    rx->msgs[i].msg_hdr.msg_namelen = sizeof rx->from[i];
    rx->msgs[i].msg_hdr.msg_iov = &rx->iov[i];
    rx->msgs[i].msg_hdr.msg_iovlen = 1;
    rx->msgs[i].msg_hdr.msg_control = rx->ctrl[i];
    rx->msgs[i].msg_hdr.msg_controllen = sizeof rx->ctrl[i];
  }
}

// Reads one received message's control data. Returns the size of the datagrams a GRO train
// holds (all but the last; `len` when the kernel did not coalesce). *overflowed gets how
// many datagrams the socket dropped since the previous report (SO_RXQ_OVFL is cumulative;
// last_overflow keeps the previous value).
static inline size_t udp_rx_cmsgs(struct msghdr *m, size_t len, atomic_uint *last_overflow, uint32_t *overflowed) {
  size_t seg = len;
  *overflowed = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
    if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
      int g;
      memcpy(&g, CMSG_DATA(c), sizeof g);
      if (g > 0) seg = (size_t)g;
    } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
      uint32_t o;
      memcpy(&o, CMSG_DATA(c), sizeof o);
      uint32_t prev = atomic_exchange(last_overflow, o);
      if (o > prev) *overflowed += o - prev;
    }
  }
  return seg;
}

// Room for one UDP_SEGMENT control message.
typedef uint8_t udp_gso_cmsg_t[CMSG_SPACE(sizeof(uint16_t))];

// Makes m one UDP_SEGMENT message: the kernel cuts its payload into `seg`-byte datagrams.
static inline void udp_tx_set_gso(struct msghdr *m, udp_gso_cmsg_t ctrl, uint16_t seg) {
  m->msg_control = ctrl;
  m->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
  struct cmsghdr *c = CMSG_FIRSTHDR(m);
  c->cmsg_level = SOL_UDP;
  c->cmsg_type = UDP_SEGMENT;
  c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
  memcpy(CMSG_DATA(c), &seg, sizeof seg);
}
#endif
