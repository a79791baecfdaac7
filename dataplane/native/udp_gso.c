// Software GSO for the UDP session engine (see udp_gso.h).
//
// Checksums are summed over native-endian 32-bit loads and folded at the end; RFC 1071's
// sum is byte-order independent, so the folded value stored back with a native 16-bit
// store is the right field. Every sum starts at an even offset of the packet.
#include "udp_gso.h"

#include <string.h>

#define PROTO_TCP 6
#define PROTO_UDP 17
#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_CWR 0x80
// Smaller segments than this are not what a TUN produces; refusing them bounds the count.
#define MIN_GSO_SIZE 64

static uint64_t sum_native(const uint8_t *p, size_t n, uint64_t acc) {
  while (n >= 4) {
    uint32_t w;
    memcpy(&w, p, 4);
    acc += w;
    p += 4;
    n -= 4;
  }
  if (n >= 2) {
    uint16_t w;
    memcpy(&w, p, 2);
    acc += w;
    p += 2;
    n -= 2;
  }
  if (n) {
    uint8_t last[2] = {p[0], 0};
    uint16_t w;
    memcpy(&w, last, 2);
    acc += w;
  }
  return acc;
}

static uint16_t fold(uint64_t acc) {
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return (uint16_t)acc;
}

static void put_csum(uint8_t *at, uint64_t acc, int udp) {
  uint16_t c = (uint16_t)~fold(acc);
  if (udp && c == 0) c = 0xffff;  // 0 means "no checksum" to UDP
  memcpy(at, &c, 2);
}

static void put16(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t pseudo_sum(const uint8_t *ip, int v6, uint8_t proto, uint32_t l4len) {
  uint8_t tail[8] = {0};
  uint64_t acc = v6 ? sum_native(ip + 8, 32, 0) : sum_native(ip + 12, 8, 0);
  if (v6) {
    put32(tail, l4len);
    tail[7] = proto;
    return sum_native(tail, 8, acc);
  }
  tail[1] = proto;
  put16(tail + 2, l4len);
  return sum_native(tail, 4, acc);
}

typedef struct {
  int v6, tcp;
  size_t ip_len, l4_len, hdr_len, mss, payload;
  uint32_t count;
} gso_info_t;

static int gso_parse(const uint8_t *vnet, const uint8_t *data, size_t len, gso_info_t *g) {
  uint8_t type = vnet[1] & 0x7f;
  uint16_t gso_size = (uint16_t)(vnet[4] | (vnet[5] << 8));  // virtio_net_hdr is little-endian here
  if (len < 20) return SEG_MALFORMED;
  int version = data[0] >> 4;
  g->tcp = type == VNET_GSO_TCPV4 || type == VNET_GSO_TCPV6;
  if (!g->tcp && type != VNET_GSO_UDP_L4) return SEG_UNSUPPORTED;
  if ((type == VNET_GSO_TCPV4 && version != 4) || (type == VNET_GSO_TCPV6 && version != 6)) return SEG_MALFORMED;
  if (version != 4 && version != 6) return SEG_MALFORMED;
  g->v6 = version == 6;
  g->ip_len = g->v6 ? 40 : (size_t)(data[0] & 0x0f) * 4;
  if (g->ip_len < 20 || len < g->ip_len + 8) return SEG_MALFORMED;
  uint8_t proto = g->v6 ? data[6] : data[9];
  if (proto != (g->tcp ? PROTO_TCP : PROTO_UDP)) return g->v6 ? SEG_UNSUPPORTED : SEG_MALFORMED;
  if (g->tcp && len < g->ip_len + 20) return SEG_MALFORMED;
  g->l4_len = g->tcp ? (size_t)(data[g->ip_len + 12] >> 4) * 4 : 8;
  g->hdr_len = g->ip_len + g->l4_len;
  if ((g->tcp && g->l4_len < 20) || len <= g->hdr_len || gso_size < MIN_GSO_SIZE) return SEG_MALFORMED;
  g->mss = gso_size;
  g->payload = len - g->hdr_len;
  g->count = (uint32_t)((g->payload + g->mss - 1) / g->mss);
  return SEG_OK;
}

int gso_segment_count(const uint8_t *vnet, const uint8_t *data, size_t len, size_t *max_len) {
  if ((vnet[1] & 0x7f) == VNET_GSO_NONE) {
    *max_len = len;
    return 1;
  }
  gso_info_t g;
  int rc = gso_parse(vnet, data, len, &g);
  if (rc != SEG_OK) return rc;
  *max_len = g.hdr_len + (g.payload < g.mss ? g.payload : g.mss);
  return (int)g.count;
}

static int complete_checksum(const uint8_t *vnet, const uint8_t *data, size_t len, const seg_sink_t *sink) {
  size_t start = (size_t)(vnet[6] | (vnet[7] << 8));
  size_t off = (size_t)(vnet[8] | (vnet[9] << 8));
  if (start < 20 || start + off + 2 > len) return SEG_CSUM_MALFORMED;
  uint8_t *p = sink->reserve(sink->ctx, len);
  if (!p) return SEG_NO_ROOM;
  memcpy(p, data, len);
  // The field holds the pseudo-header sum already (that is what "partial" means).
  uint16_t c = (uint16_t)~fold(sum_native(p + start, len - start, 0));
  if (c == 0) c = 0xffff;  // as the kernel does (CSUM_MANGLED_0)
  memcpy(p + start + off, &c, 2);
  sink->commit(sink->ctx, len);
  return SEG_OK;
}

int gso_to_plain(const uint8_t *vnet, const uint8_t *data, size_t len, const seg_sink_t *sink) {
  if ((vnet[1] & 0x7f) == VNET_GSO_NONE) {
    if (vnet[0] & VNET_F_NEEDS_CSUM) return complete_checksum(vnet, data, len, sink);
    uint8_t *p = sink->reserve(sink->ctx, len);
    if (!p) return SEG_NO_ROOM;
    memcpy(p, data, len);
    sink->commit(sink->ctx, len);
    return SEG_OK;
  }
  gso_info_t g;
  int rc = gso_parse(vnet, data, len, &g);
  if (rc != SEG_OK) return rc;
  const size_t ip = g.ip_len, hl = g.hdr_len;
  const uint32_t seq0 = g.tcp ? get32(data + ip + 4) : 0;
  const uint32_t id0 = g.v6 ? 0 : ((uint32_t)data[4] << 8) | data[5];
  const uint8_t flags0 = g.tcp ? data[ip + 13] : 0;
  const size_t csum_at = ip + (g.tcp ? 16 : 6);
  for (uint32_t i = 0; i < g.count; i++) {
    size_t from = hl + (size_t)i * g.mss;
    size_t seg_payload = len - from < g.mss ? len - from : g.mss;
    size_t seg_len = hl + seg_payload;
    uint8_t *s = sink->reserve(sink->ctx, seg_len);
    if (!s) return SEG_NO_ROOM;
    memcpy(s, data, hl);
    memcpy(s + hl, data + from, seg_payload);
    if (!g.v6) {
      put16(s + 2, (uint32_t)seg_len);
      put16(s + 4, (id0 + i) & 0xffff);
      s[10] = s[11] = 0;
      put_csum(s + 10, sum_native(s, ip, 0), 0);
    } else {
      put16(s + 4, (uint32_t)(seg_len - 40));
    }
    if (g.tcp) {
      put32(s + ip + 4, seq0 + (uint32_t)(i * g.mss));
      uint8_t f = flags0;
      if (i + 1 < g.count) f &= (uint8_t)~(TCP_FIN | TCP_PSH);
      if (i > 0) f &= (uint8_t)~TCP_CWR;
      s[ip + 13] = f;
    } else {
      put16(s + ip + 4, (uint32_t)(g.l4_len + seg_payload));
    }
    s[csum_at] = s[csum_at + 1] = 0;
    uint32_t l4 = (uint32_t)(g.l4_len + seg_payload);
    put_csum(s + csum_at, sum_native(s + ip, l4, pseudo_sum(s, g.v6, g.tcp ? PROTO_TCP : PROTO_UDP, l4)), !g.tcp);
    sink->commit(sink->ctx, seg_len);
  }
  return SEG_OK;
}
