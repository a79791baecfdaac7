// Test and bench hooks of the UDP engine, exported beside it: the C segmentation as JS sees
// it (checked against dataplane/segmentation.ts) and the AEADs' ns per byte.
#define _GNU_SOURCE
#include <errno.h>
#include <node_api.h>
#include <stdlib.h>
#include <string.h>

#define EM_MODULE "edgemesh_udp"
#include "native_util.h"
#include "udp_gso.h"
#include "udp_wire.h"

typedef struct {
  uint8_t *buf;
  size_t used, cap;
  uint32_t lens[4096];
  uint32_t n;
} plain_sink_t;

static uint8_t *plain_reserve(void *ctx, size_t len) {
  plain_sink_t *p = ctx;
  if (p->n >= 4096 || p->used + len > p->cap) return NULL;
  return p->buf + p->used;
}

static void plain_commit(void *ctx, size_t len) {
  plain_sink_t *p = ctx;
  p->lens[p->n++] = (uint32_t)len;
  p->used += len;
}

// segment(vnet, data) → Uint8Array[] of plain packets, or a string naming the refusal.
static napi_value udp_segment(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out, v;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t *vnet, *data;
  size_t vl, dl;
  if (argc < 2 || get_bytes(env, argv[0], &vnet, &vl) || get_bytes(env, argv[1], &data, &dl) || vl != 10)
    return throw_plain(env, "EINVAL", "EINVAL: segment(vnet: 10 bytes, data)");
  plain_sink_t *p = calloc(1, sizeof *p);
  if (!p) return throw_plain(env, "ENOMEM", "ENOMEM: segment");
  p->cap = dl + 4096 * 120;
  p->buf = malloc(p->cap);
  seg_sink_t sink = {plain_reserve, plain_commit, p};
  int rc = p->buf ? gso_to_plain(vnet, data, dl, &sink) : SEG_NO_ROOM;
  if (rc != SEG_OK) {
    const char *why = rc == SEG_UNSUPPORTED ? "gso-unsupported"
                      : rc == SEG_CSUM_MALFORMED ? "csum-malformed"
                      : rc == SEG_NO_ROOM        ? "no-room"
                                                 : "gso-malformed";
    free(p->buf);
    free(p);
    CHECK(env, napi_create_string_utf8(env, why, NAPI_AUTO_LENGTH, &out));
    return out;
  }
  CHECK(env, napi_create_array_with_length(env, p->n, &out));
  size_t off = 0;
  for (uint32_t i = 0; i < p->n; i++) {
    void *mem;
    napi_value ab;
    CHECK(env, napi_create_arraybuffer(env, p->lens[i], &mem, &ab));
    memcpy(mem, p->buf + off, p->lens[i]);
    off += p->lens[i];
    CHECK(env, napi_create_typedarray(env, napi_uint8_array, p->lens[i], ab, 0, &v));
    CHECK(env, napi_set_element(env, out, i, v));
  }
  free(p->buf);
  free(p);
  return out;
}

// cryptoBench(cipher, size, iterations) → { sealNsPerByte, openNsPerByte } with Node's OpenSSL.
static napi_value udp_crypto_bench(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], o, v;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char name[32] = {0};
  size_t nl;
  uint32_t size, iters;
  if (argc < 3 || napi_get_value_string_utf8(env, argv[0], name, sizeof name, &nl) != napi_ok ||
      get_u32_arg(env, argv[1], &size) || get_u32_arg(env, argv[2], &iters) || size < 1 || size > 65000 || iters < 1)
    return throw_plain(env, "EINVAL", "EINVAL: cryptoBench(cipher, size 1-65000, iterations)");
  const EVP_CIPHER *c = cipher_by_name(name);
  if (!c) return throw_plain(env, "EINVAL", "EINVAL: unknown cipher");
  uint8_t key[32] = {1, 2, 3};
  uint8_t *buf = calloc(1, size + OVERHEAD), *out = calloc(1, size + OVERHEAD);
  EVP_CIPHER_CTX *tx = aead_new(c, key, 1), *rx = aead_new(c, key, 0);
  int failed = !buf || !out || !tx || !rx;
  uint64_t t0 = now_ns();
  for (uint32_t i = 0; i < iters && !failed; i++) failed = aead_seal(tx, buf, size, i) != 0;
  uint64_t t1 = now_ns();
  for (uint32_t i = 0; i < iters && !failed; i++) {
    aead_seal(tx, buf, size, i);  // fresh tag for this counter
    failed = aead_open(rx, buf, size + OVERHEAD, i, out) != 0;
  }
  uint64_t t2 = now_ns();
  EVP_CIPHER_CTX_free(tx);
  EVP_CIPHER_CTX_free(rx);
  free(buf);
  free(out);
  if (failed) return throw_plain(env, "EM_CRYPTO", "EM_CRYPTO: benchmark seal/open failed");
  double bytes = (double)size * iters;
  CHECK(env, napi_create_object(env, &o));
  CHECK(env, napi_create_double(env, (double)(t1 - t0) / bytes, &v));
  CHECK(env, napi_set_named_property(env, o, "sealNsPerByte", v));
  // The open loop also sealed: subtract the sealing time measured above.
  CHECK(env, napi_create_double(env, ((double)(t2 - t1) - (double)(t1 - t0)) / bytes, &v));
  CHECK(env, napi_set_named_property(env, o, "openNsPerByte", v));
  return o;
}

napi_status edgemesh_udp_tools_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"udpSegment", NULL, udp_segment, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpCryptoBench", NULL, udp_crypto_bench, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
