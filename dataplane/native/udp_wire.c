// AEAD sealing/opening (OpenSSL EVP, bound at load time to the Node binary's OpenSSL) and
// the sliding replay window of the session wire format (see udp_wire.h, udp.c).
#include "udp_wire.h"

// ---- AEAD ------------------------------------------------------------------------------

const EVP_CIPHER *cipher_by_name(const char *name) {
  if (strcmp(name, "aes-256-gcm") == 0) return EVP_aes_256_gcm();
  if (strcmp(name, "chacha20-poly1305") == 0) return EVP_chacha20_poly1305();
  return NULL;
}

EVP_CIPHER_CTX *aead_new(const EVP_CIPHER *c, const uint8_t key[32], int enc) {
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (!ctx) return NULL;
  if (EVP_CipherInit_ex(ctx, c, NULL, key, NULL, enc) != 1) {
    EVP_CIPHER_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}

static void nonce_of(uint8_t nonce[12], uint64_t counter) {
  memset(nonce, 0, 4);
  put_le64(nonce + 4, counter);
}

// Seals in place: hdr[0..16) is the AAD, hdr+16 holds len plaintext bytes, the tag follows.
int aead_seal(EVP_CIPHER_CTX *ctx, uint8_t *hdr, size_t len, uint64_t counter) {
  uint8_t nonce[12];
  int outl = 0;
  nonce_of(nonce, counter);
  uint8_t *p = hdr + HDR_LEN;
  if (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce, 1) != 1) return -1;
  if (EVP_CipherUpdate(ctx, NULL, &outl, hdr, HDR_LEN) != 1) return -1;
  if (len > 0 && EVP_CipherUpdate(ctx, p, &outl, p, (int)len) != 1) return -1;
  if (EVP_CipherFinal_ex(ctx, p + len, &outl) != 1) return -1;
  return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, p + len) == 1 ? 0 : -1;
}

// Opens dgram (header, ciphertext, tag) into out; 0 when authentic.
int aead_open(EVP_CIPHER_CTX *ctx, const uint8_t *dgram, size_t len, uint64_t counter, uint8_t *out) {
  uint8_t nonce[12];
  int outl = 0;
  size_t clen = len - OVERHEAD;
  nonce_of(nonce, counter);
  if (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce, 0) != 1) return -1;
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, (void *)(dgram + len - TAG_LEN)) != 1) return -1;
  if (EVP_CipherUpdate(ctx, NULL, &outl, dgram, HDR_LEN) != 1) return -1;
  if (clen > 0 && EVP_CipherUpdate(ctx, out, &outl, dgram + HDR_LEN, (int)clen) != 1) return -1;
  return EVP_CipherFinal_ex(ctx, out + clen, &outl) == 1 ? 0 : -1;
}

// ---- replay window (RFC 6479 style, as WireGuard's) -------------------------------------

bool replay_check(const replay_t *r, uint64_t counter) {
  uint64_t c = counter + 1;  // stored shifted so that 0 means "nothing yet"
  if (c > r->last) return true;
  if (r->last - c >= REPLAY_BITS - 64) return false;  // older than the window
  return !(r->bitmap[(c >> 6) & (REPLAY_WORDS - 1)] & (1ull << (c & 63)));
}

void replay_mark(replay_t *r, uint64_t counter) {
  uint64_t c = counter + 1;
  uint64_t index = c >> 6;
  if (c > r->last) {
    uint64_t current = r->last >> 6;
    uint64_t diff = index - current;
    if (diff > REPLAY_WORDS) diff = REPLAY_WORDS;
    for (uint64_t i = 1; i <= diff; i++) r->bitmap[(current + i) & (REPLAY_WORDS - 1)] = 0;
    r->last = c;
  }
  r->bitmap[index & (REPLAY_WORDS - 1)] |= 1ull << (c & 63);
}

