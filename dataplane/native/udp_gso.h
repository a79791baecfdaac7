// Software GSO for the UDP session engine: cuts a TUN super-packet (TCPv4/TCPv6/UDP-L4 with
// a virtio_net_hdr) into wire-sized packets with complete headers, or completes a partial
// (NEEDS_CSUM) checksum. The rules are the kernel's tcp_gso_segment/__udp_gso_segment and
// those of dataplane/segmentation.ts (the TypeScript path, checked against this one in the
// unit tests): sequence numbers advance by gso_size, IPv4 ids increment, FIN/PSH only on
// the last segment, CWR only on the first, every length and checksum recomputed.
#ifndef EDGEMESH_UDP_GSO_H
#define EDGEMESH_UDP_GSO_H
#include <stddef.h>
#include <stdint.h>

#define VNET_F_NEEDS_CSUM 1
#define VNET_GSO_NONE 0
#define VNET_GSO_TCPV4 1
#define VNET_GSO_TCPV6 4
#define VNET_GSO_UDP_L4 5

// Where segments go: reserve() returns room for one plain packet of `len` bytes (or NULL
// when full), commit() keeps it. The sealer reserves inside its datagram buffer, so each
// segment is built exactly where it is encrypted in place.
typedef struct {
  uint8_t *(*reserve)(void *ctx, size_t len);
  void (*commit)(void *ctx, size_t len);
  void *ctx;
} seg_sink_t;

enum {
  SEG_OK = 0,
  SEG_UNSUPPORTED = -1,   // a GSO kind a TUN never produces (UFO)
  SEG_MALFORMED = -2,     // headers that do not describe the packet
  SEG_CSUM_MALFORMED = -3,
  SEG_NO_ROOM = -4,       // the sink ran out of room (the caller checked it would not)
};

// Segments needed for one packet, or a negative SEG_* value; *max_len gets the largest one.
int gso_segment_count(const uint8_t *vnet, const uint8_t *data, size_t len, size_t *max_len);
// Writes the plain packet(s) for one (vnet, data) into the sink. Never writes into data.
int gso_to_plain(const uint8_t *vnet, const uint8_t *data, size_t len, const seg_sink_t *sink);
#endif
