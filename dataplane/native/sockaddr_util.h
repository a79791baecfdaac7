// Endpoint text ↔ sockaddr conversions of the UDP engine (udp.c) and the relay (relay.c).
// JS hands endpoints over as IP text and a port; the sockets speak sockaddr. IPv4 peers of
// a dual-stack ('::') socket appear as v4-mapped IPv6 addresses: they go out as text in
// their IPv4 form, and IPv4 text given for such a socket becomes v4-mapped.
#ifndef EDGEMESH_SOCKADDR_UTIL_H
#define EDGEMESH_SOCKADDR_UTIL_H
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

// A bind address: IPv4 or IPv6 text (port may be 0). Returns its family, or -1.
int sockaddr_from_text(const char *ip, uint16_t port, struct sockaddr_storage *ss, socklen_t *len);
// A destination for a socket of `family`: IPv4 text becomes v4-mapped on an AF_INET6
// socket, IPv6 text is refused on an AF_INET one, port must be 1-65535. 0 or -1.
int sockaddr_for_family(int family, const char *ip, uint32_t port, struct sockaddr_storage *ss, socklen_t *len);
// The address as text (v4-mapped shown as IPv4) and the port in host order.
void sockaddr_to_text(const struct sockaddr_storage *ss, char ip[INET6_ADDRSTRLEN], uint16_t *port);
// The port in host order (AF_INET or AF_INET6).
uint16_t sockaddr_port(const struct sockaddr_storage *ss);
#endif
