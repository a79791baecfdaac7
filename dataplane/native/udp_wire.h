// The session wire format's constants, cryptography and replay window, shared by the UDP
// engine (udp.c), its test/bench helpers (udp_tools.c) and the relay (relay.c). The format
// itself is described at the top of udp.c (sessions) and relay.c (allocate).
#ifndef EDGEMESH_UDP_WIRE_H
#define EDGEMESH_UDP_WIRE_H
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

// The wire format is little-endian and these helpers copy host order straight through.
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the UDP session wire helpers assume a little-endian host (x86-64, arm64)"
#endif

// Datagram types (byte 0). 4 and 5 are sealed session datagrams (udp.c); 6 is the relay's
// allocate datagram (relay.c builds and checks it; udp.c only checks the type before sending
// one). The relay forwards 4 and 5 without opening them, so both sides must agree on these.
#define MSG_DATA 4
#define MSG_CONTROL 5
#define MSG_ALLOCATE 6
// The relay allocate datagram: 32 signed bytes, then their HMAC-SHA256 (layout in relay.c).
#define ALLOC_LEN 64
#define ALLOC_SIGNED 32

#define HDR_LEN 16
#define TAG_LEN 16
#define OVERHEAD (HDR_LEN + TAG_LEN)
#define REPLAY_BITS 2048
#define REPLAY_WORDS (REPLAY_BITS / 64)

typedef struct {
  uint64_t last;  // highest counter accepted + 1 (0 = none yet)
  uint64_t bitmap[REPLAY_WORDS];
} replay_t;

static inline void put_le32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }  // x86/arm64: little-endian
static inline void put_le64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint32_t get_le32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
static inline uint64_t get_le64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

// aes-256-gcm or chacha20-poly1305; NULL for anything else.
const EVP_CIPHER *cipher_by_name(const char *name);
// A context keyed for sealing (enc = 1) or opening (enc = 0); NULL on failure.
EVP_CIPHER_CTX *aead_new(const EVP_CIPHER *c, const uint8_t key[32], int enc);
// Seals in place: hdr[0..16) is the AAD, hdr+16 holds len plaintext bytes, the tag follows.
int aead_seal(EVP_CIPHER_CTX *ctx, uint8_t *hdr, size_t len, uint64_t counter);
// Opens dgram (header, ciphertext, tag) into out; 0 when authentic. Writes out before the tag checks.
int aead_open(EVP_CIPHER_CTX *ctx, const uint8_t *dgram, size_t len, uint64_t counter, uint8_t *out);
// Whether counter is new to the window (does not change it).
bool replay_check(const replay_t *r, uint64_t counter);
// Records counter as seen (after its datagram authenticated).
void replay_mark(replay_t *r, uint64_t counter);
#endif
