/* SipHash-2-4 with a 64-bit output (Aumasson and Bernstein, "SipHash: a fast short-input PRF",
 * 2012), for BPF programs, which cannot call OpenSSL: the same function as OpenSSL's EVP_MAC
 * "SIPHASH" with size 8 (tandem::SynCookie reads its 8 output bytes little-endian, which is the
 * value returned here). Key: 16 bytes, k0 and k1 little-endian. `len` is at most
 * TANDEM_SIPHASH_MAX; the loops are bounded for the verifier. Tested against OpenSSL on vectors
 * (tests/unit/syncookie_bpf_test.cc).
 */
#ifndef TANDEM_SIPHASH_BPF_H
#define TANDEM_SIPHASH_BPF_H

#define TANDEM_SIPHASH_MAX 64

#define TSIP_ROTL(x, b) (__u64)(((x) << (b)) | ((x) >> (64 - (b))))
#define TSIP_ROUND                                                      \
  do {                                                                  \
    v0 += v1; v1 = TSIP_ROTL(v1, 13); v1 ^= v0; v0 = TSIP_ROTL(v0, 32); \
    v2 += v3; v3 = TSIP_ROTL(v3, 16); v3 ^= v2;                         \
    v0 += v3; v3 = TSIP_ROTL(v3, 21); v3 ^= v0;                         \
    v2 += v1; v1 = TSIP_ROTL(v1, 17); v1 ^= v2; v2 = TSIP_ROTL(v2, 32); \
  } while (0)

static __always_inline __u64 tsip_le64(const __u8* p) {
  return (__u64)p[0] | ((__u64)p[1] << 8) | ((__u64)p[2] << 16) | ((__u64)p[3] << 24) |
         ((__u64)p[4] << 32) | ((__u64)p[5] << 40) | ((__u64)p[6] << 48) | ((__u64)p[7] << 56);
}

/* m: a buffer of TANDEM_SIPHASH_MAX bytes, of which the first len count. */
static __always_inline __u64 tandem_siphash24(const __u8* m, __u32 len, const __u8* key) {
  const __u64 k0 = tsip_le64(key);
  const __u64 k1 = tsip_le64(key + 8);
  __u64 v0 = 0x736f6d6570736575ull ^ k0;
  __u64 v1 = 0x646f72616e646f6dull ^ k1;
  __u64 v2 = 0x6c7967656e657261ull ^ k0;
  __u64 v3 = 0x7465646279746573ull ^ k1;
  if (len > TANDEM_SIPHASH_MAX) len = TANDEM_SIPHASH_MAX;
  const __u32 full = len / 8;
#pragma clang loop unroll(full)
  for (__u32 b = 0; b < TANDEM_SIPHASH_MAX / 8; b++) {
    if (b < full) {
      const __u64 mi = tsip_le64(m + 8 * b);
      v3 ^= mi;
      TSIP_ROUND;
      TSIP_ROUND;
      v0 ^= mi;
    }
  }
  __u64 last = (__u64)(len & 0xff) << 56;
  const __u32 tail = len & 7;
#pragma clang loop unroll(full)
  for (__u32 i = 0; i < 7; i++) {
    if (i < tail) last |= (__u64)m[(8 * full + i) & (TANDEM_SIPHASH_MAX - 1)] << (8 * i);
  }
  v3 ^= last;
  TSIP_ROUND;
  TSIP_ROUND;
  v0 ^= last;
  v2 ^= 0xff;
  TSIP_ROUND;
  TSIP_ROUND;
  TSIP_ROUND;
  TSIP_ROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

#endif /* TANDEM_SIPHASH_BPF_H */
