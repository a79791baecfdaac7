// See sockaddr_util.h. Only the JS thread calls these (open, endpoints, stats): not on the
// datagram path.
#include "sockaddr_util.h"

#include <string.h>

static socklen_t fill_v4(struct sockaddr_storage *ss, struct in_addr a, uint16_t port) {
  struct sockaddr_in *s = (void *)ss;
  s->sin_family = AF_INET;
  s->sin_port = htons(port);
  s->sin_addr = a;
  return sizeof *s;
}

static socklen_t fill_v6(struct sockaddr_storage *ss, const struct in6_addr *a, uint16_t port) {
  struct sockaddr_in6 *s = (void *)ss;
  s->sin6_family = AF_INET6;
  s->sin6_port = htons(port);
  s->sin6_addr = *a;
  return sizeof *s;
}

int sockaddr_from_text(const char *ip, uint16_t port, struct sockaddr_storage *ss, socklen_t *len) {
  struct in_addr a4;
  struct in6_addr a6;
  memset(ss, 0, sizeof *ss);
  if (inet_pton(AF_INET, ip, &a4) == 1) {
    *len = fill_v4(ss, a4, port);
    return AF_INET;
  }
  if (inet_pton(AF_INET6, ip, &a6) == 1) {
    *len = fill_v6(ss, &a6, port);
    return AF_INET6;
  }
  return -1;
}

int sockaddr_for_family(int family, const char *ip, uint32_t port, struct sockaddr_storage *ss, socklen_t *len) {
  struct in_addr a4;
  struct in6_addr a6;
  if (port == 0 || port > 65535) return -1;
  memset(ss, 0, sizeof *ss);
  if (inet_pton(AF_INET, ip, &a4) == 1) {
    if (family == AF_INET) {
      *len = fill_v4(ss, a4, (uint16_t)port);
    } else {
      memset(&a6, 0, sizeof a6);
      a6.s6_addr[10] = a6.s6_addr[11] = 0xff;
      memcpy(a6.s6_addr + 12, &a4, 4);
      *len = fill_v6(ss, &a6, (uint16_t)port);
    }
    return 0;
  }
  if (inet_pton(AF_INET6, ip, &a6) == 1 && family == AF_INET6) {
    *len = fill_v6(ss, &a6, (uint16_t)port);
    return 0;
  }
  return -1;
}

void sockaddr_to_text(const struct sockaddr_storage *ss, char ip[INET6_ADDRSTRLEN], uint16_t *port) {
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const void *)ss;
    inet_ntop(AF_INET, &a->sin_addr, ip, INET6_ADDRSTRLEN);
    *port = ntohs(a->sin_port);
  } else {
    const struct sockaddr_in6 *a = (const void *)ss;
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr))
      inet_ntop(AF_INET, a->sin6_addr.s6_addr + 12, ip, INET6_ADDRSTRLEN);
    else
      inet_ntop(AF_INET6, &a->sin6_addr, ip, INET6_ADDRSTRLEN);
    *port = ntohs(a->sin6_port);
  }
}

uint16_t sockaddr_port(const struct sockaddr_storage *ss) {
  return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
                                        : ((const struct sockaddr_in6 *)ss)->sin6_port);
}
