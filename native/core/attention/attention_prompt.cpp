// attention_prompt: the scalar reference of the prompt-row arithmetic (attention.h) and the
// dispatch to its SIMD kernels (attention_prompt_tiled.h, built into attention_avx2.cpp and
// attention_avx512.cpp).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../isa/isa.h"
#include "../math/fast_exp.h"
#include "attention.h"

namespace llmserve {

size_t attention_prompt_work_floats(int64_t n_rows, int64_t hd) {
  const size_t hdp = static_cast<size_t>((hd + 15) / 16 * 16), T = kAttnTile;
  const size_t rp = static_cast<size_t>((n_rows + 15) / 16 * 16);
  // scores [T][rp] | weights [rp / 8][T][8] | ms [rp] | acc [rows][hdp] | V tile [T][hdp] |
  // K tile [T][hdp] | queries transposed [hd][rp] | 16 spare
  return 2 * T * rp + rp + rp * hdp + 2 * T * hdp + static_cast<size_t>(hd) * rp + 16;
}

void attention_prompt_ref(const AttnGroup& a) {
  const int64_t hd = a.hd, T = kAttnTile;
  const size_t hdp = static_cast<size_t>((hd + 15) / 16 * 16);
  float* acc = a.work;
  float* krow = acc + hdp;
  float* vrow = krow + hdp;
  float s[kAttnTile];
  auto row_f32 = [&](const uint8_t* src, float* dst) {
    if (a.kv_type == GgmlType::F32) std::memcpy(dst, src, static_cast<size_t>(hd) * 4);
    else dequantize_row(a.kv_type, src, dst, hd);
  };
  for (int64_t i = 0; i < a.n_tok; ++i) {
    const int64_t begin = a.row_begin(i), len = a.len + i;
    for (int64_t h = 0; h < a.n_q; ++h) {
      const float* q = reinterpret_cast<const float*>(a.q + (i * a.n_q + h) * a.q_stride);
      for (int64_t d = 0; d < hd; ++d) acc[d] = 0.0f;
      float M = -INFINITY, S = 0.0f;
      for (int64_t t0 = begin / T * T; t0 < len; t0 += T) {
        const int64_t lo = std::max(t0, begin), hi = std::min(t0 + T, len);
        float m = M;
        for (int64_t j = lo; j < hi; ++j) {
          row_f32(a.k + attn_row_offset(a, j), krow);
          float x = 0.0f;
          for (int64_t d = 0; d < hd; ++d) x = fmaf(q[d], krow[d], x);
          x = x * a.scale;
          if (a.softcap != 0.0f) x = a.softcap * tanhf(x);
          s[j - t0] = x;
          if (x > m) m = x;
        }
        if (m > M) {
          const float ms = fast_exp(M - m);
          S = S * ms;
          for (int64_t d = 0; d < hd; ++d) acc[d] = acc[d] * ms;
          M = m;
        }
        for (int64_t j = lo; j < hi; ++j) {
          const float p = fast_exp(s[j - t0] - M);
          S = S + p;
          row_f32(a.v + attn_row_offset(a, j), vrow);
          for (int64_t d = 0; d < hd; ++d) acc[d] = fmaf(vrow[d], p, acc[d]);
        }
      }
      const float S_inv = S == 0.0f ? 0.0f : 1.0f / S;
      float* out = a.out + i * a.out_tok_stride + h * a.out_stride;
      for (int64_t d = 0; d < hd; ++d) out[d] = acc[d] * S_inv;
    }
  }
}

namespace {
using AttnFn = void (*)(const AttnGroup&);
AttnFn pick_attention_prompt() {
#if defined(LLMSERVE_X86)
  if (active_isa() >= Isa::Avx512) return attention_prompt_avx512;
  if (active_isa() >= Isa::Avx2) return attention_prompt_avx2;
#endif
  return attention_prompt_ref;
}
}  // namespace

void attention_prompt(const AttnGroup& a) {
  // The SIMD kernels keep per-row state in kMaxAttnGroup-long stack arrays (as attention_group).
  if (a.n_q * a.n_tok > kMaxAttnGroup) return attention_prompt_ref(a);
  pick_attention_prompt()(a);
}

}  // namespace llmserve
