// See udp_socket.h.
#define _GNU_SOURCE
#include "udp_socket.h"

#include <errno.h>
#include <unistd.h>

#include "sockaddr_util.h"

int udp_socket_open(const char *bind_ip, uint16_t port, udp_socket_t *out, const char **what) {
  struct sockaddr_storage ss;
  socklen_t sl;
  *what = NULL;
  int family = sockaddr_from_text(bind_ip, port, &ss, &sl);
  if (family < 0) return -1;
  int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    *what = "socket";
    return -1;
  }
  int zero = 0, one = 1, big = 8 * 1024 * 1024;
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);  // '::' takes IPv4 too
  // Big buffers absorb bursts between batches; FORCE passes rmem_max when we may (root).
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) < 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) < 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);  // the socket-overflow drop counter
  // Optional: without it, one datagram per message.
  int gro = setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof one) == 0;
  // The tunnel relies on path MTU for inner packets; the outer packets never fragment.
  int pmtu = family == AF_INET ? IP_PMTUDISC_PROBE : IPV6_PMTUDISC_PROBE;
  if (family == AF_INET)
    setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu);
  else
    setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &pmtu, sizeof pmtu);
  if (bind(fd, (struct sockaddr *)&ss, sl) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    *what = "bind";
    return -1;
  }
  struct sockaddr_storage bound;
  socklen_t bl = sizeof bound;
  memset(&bound, 0, sizeof bound);
  bound.ss_family = (sa_family_t)family;
  getsockname(fd, (struct sockaddr *)&bound, &bl);
  out->fd = fd;
  out->family = family;
  out->gro = gro;
  out->port = sockaddr_port(&bound);
  return 0;
}
