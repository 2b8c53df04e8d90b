// AVX2 + FMA + F16C version of attention_row_ref (compiled with -mavx2 -mfma -mf16c; only called
// after ops.cpp has checked the CPU). Bit-identical to the reference: the same fused multiply-adds
// per element, the same round-to-nearest-even f16 conversions, the same scalar softmax bookkeeping.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "../quant/quant.h"
#include "ops.h"

namespace llmserve {

namespace {
inline float h2f(uint16_t h) { return _cvtsh_ss(h); }
inline uint16_t f2h(float f) { return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT)); }
inline __m256 load_h8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline void store_h8(uint16_t* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}
}  // namespace

// a: see AttnRow (ops.h)
void attention_row_avx2(const AttnRow& a) {
  const GgmlType kv_type = a.f16 ? GgmlType::F16 : GgmlType::F32;
  const int64_t hd = a.hd, hd8 = hd & ~int64_t(7);
  float* acc32 = static_cast<float*>(a.acc);
  uint16_t* acc16 = static_cast<uint16_t*>(a.acc);
  if (a.f16) std::memset(acc16, 0, hd * 2); else std::memset(acc32, 0, hd * 4);
  float M = -INFINITY, S = 0.0f;
  for (int64_t j = 0; j < a.len; ++j) {
    const size_t off = attn_row_offset(a, j);
    const uint8_t* kj = a.k + off;
    const uint8_t* vj = a.v + off;
    const float s = vec_dot(kv_type, hd, kj, a.q) * a.scale;
    const float Mold = M;
    float ms = 1.0f, vs = 1.0f;
    if (s > M) {
      M = s;
      ms = expf(Mold - M);
      const __m256 m8 = _mm256_set1_ps(ms);
      int64_t d = 0;
      if (a.f16) {
        for (; d < hd8; d += 8) store_h8(acc16 + d, _mm256_mul_ps(load_h8(acc16 + d), m8));
        for (; d < hd; ++d) acc16[d] = f2h(h2f(acc16[d]) * ms);
      } else {
        for (; d < hd8; d += 8) _mm256_storeu_ps(acc32 + d, _mm256_mul_ps(_mm256_loadu_ps(acc32 + d), m8));
        for (; d < hd; ++d) acc32[d] *= ms;
      }
    } else {
      vs = expf(s - M);
    }
    const __m256 v8 = _mm256_set1_ps(vs);
    int64_t d = 0;
    if (a.f16) {
      const uint16_t* v = reinterpret_cast<const uint16_t*>(vj);
      for (; d < hd8; d += 8)
        store_h8(acc16 + d, _mm256_fmadd_ps(load_h8(v + d), v8, load_h8(acc16 + d)));
      for (; d < hd; ++d) acc16[d] = f2h(__builtin_fmaf(h2f(v[d]), vs, h2f(acc16[d])));
    } else {
      const float* v = reinterpret_cast<const float*>(vj);
      for (; d < hd8; d += 8)
        _mm256_storeu_ps(acc32 + d, _mm256_fmadd_ps(_mm256_loadu_ps(v + d), v8, _mm256_loadu_ps(acc32 + d)));
      for (; d < hd; ++d) acc32[d] = __builtin_fmaf(v[d], vs, acc32[d]);
    }
    S = __builtin_fmaf(S, ms, vs);
  }
  const float S_inv = S == 0.0f ? 0.0f : 1.0f / S;
  for (int64_t d = 0; d < hd; ++d) a.out[d] = (a.f16 ? h2f(acc16[d]) : acc32[d]) * S_inv;
}

}  // namespace llmserve
