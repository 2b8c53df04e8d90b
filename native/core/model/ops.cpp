#include "ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../quant/quant.h"

namespace llmserve {

namespace {
constexpr size_t kAlign = 64;
// Multiply-adds below which splitting a job across threads costs more than it saves.
constexpr int64_t kMinChunkWork = 1 << 16;
size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }
}  // namespace


void rms_norm_f32(const float* x, const float* w, float* y, int64_t n, int64_t d, float eps) {
  for (int64_t t = 0; t < n; ++t) {
    const float* xr = x + t * d;
    float* yr = y + t * d;
    double sum = 0.0;
    for (int64_t i = 0; i < d; ++i) sum += static_cast<double>(xr[i] * xr[i]);
    const float mean = static_cast<float>(sum / static_cast<double>(d));
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < d; ++i) yr[i] = (xr[i] * scale) * w[i];
  }
}


void swiglu_f32(float* g, const float* u, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    const float x = g[i];
    g[i] = (x / (1.0f + expf(-x))) * u[i];
  }
}

namespace {
// ggml's YaRN helpers (ggml.c / ggml-cpu ops.cpp).
float rope_yarn_corr_dim(int n_dims, int n_ctx_orig, float n_rot, float base) {
  return n_dims * logf(n_ctx_orig / (n_rot * 2 * (float)M_PI)) / (2 * logf(base));
}
float rope_yarn_ramp(float low, float high, int i0) {
  const float y = (i0 / 2 - low) / std::max(0.001f, high - low);
  return 1 - std::min(1.0f, std::max(0.0f, y));
}
}  // namespace

void rope_cache_f32(const ModelConfig& c, const float* freq_factors, int64_t pos0, int64_t n,
                    float* cache) {
  const int n_dims = static_cast<int>(c.n_rot);
  const float theta_scale = powf(c.rope_freq_base, -2.0f / n_dims);
  float corr_dims[2] = {0, 0};
  if (c.yarn_ext_factor != 0.0f) {
    const int n_ctx_orig = static_cast<int>(c.rope_n_ctx_orig);
    const float start =
        floorf(rope_yarn_corr_dim(n_dims, n_ctx_orig, c.yarn_beta_fast, c.rope_freq_base));
    const float end =
        ceilf(rope_yarn_corr_dim(n_dims, n_ctx_orig, c.yarn_beta_slow, c.rope_freq_base));
    corr_dims[0] = std::max(0.0f, start);
    corr_dims[1] = std::min(static_cast<float>(n_dims - 1), end);
  }
  const float freq_scale = c.rope_freq_scale, ext_factor = c.yarn_ext_factor;
  for (int64_t t = 0; t < n; ++t) {
    float* row = cache + t * c.n_rot;
    float theta = static_cast<float>(pos0 + t);
    for (int i0 = 0; i0 < n_dims; i0 += 2) {
      const float ff = freq_factors ? freq_factors[i0 / 2] : 1.0f;
      const float theta_extrap = theta / ff;
      const float theta_interp = freq_scale * theta_extrap;
      float th = theta_interp;
      float mscale = c.yarn_attn_factor;
      if (ext_factor != 0.0f) {
        const float ramp_mix = rope_yarn_ramp(corr_dims[0], corr_dims[1], i0) * ext_factor;
        th = theta_interp * (1 - ramp_mix) + theta_extrap * ramp_mix;
        mscale *= 1.0f + 0.1f * logf(1.0f / freq_scale);
      }
      row[i0 + 0] = cosf(th) * mscale;
      row[i0 + 1] = sinf(th) * mscale;
      theta *= theta_scale;
    }
  }
}

void rope_apply_f32(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int rope_type,
                    const float* cache_row) {
  const bool neox = rope_type == 2;
  const int64_t off = neox ? n_rot / 2 : 1;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* xh = x + h * head_dim;
    for (int64_t i0 = 0; i0 < n_rot; i0 += 2) {
      const float cos_t = cache_row[i0], sin_t = cache_row[i0 + 1];
      float* p = xh + (neox ? i0 / 2 : i0);
      const float x0 = p[0], x1 = p[off];
      p[0] = x0 * cos_t - x1 * sin_t;
      p[off] = x0 * sin_t + x1 * cos_t;
    }
  }
}

void kv_store(KvPool& kv, int64_t layer, const int32_t* blocks, int64_t pos, const float* k, const float* v) {
  const int64_t d = kv.n_embd_kv();
  const int64_t blk = blocks[pos / kv.block_size()], slot = pos % kv.block_size();
  if (kv.f16()) {
    quantize_row(GgmlType::F16, k, kv.k_row(layer, blk, slot), d);
    quantize_row(GgmlType::F16, v, kv.v_row(layer, blk, slot), d);
  } else {
    std::memcpy(kv.k_row(layer, blk, slot), k, static_cast<size_t>(d) * 4);
    std::memcpy(kv.v_row(layer, blk, slot), v, static_cast<size_t>(d) * 4);
  }
}

size_t attention_scratch_bytes(int64_t head_dim) {
  return 2 * align_up(static_cast<size_t>(head_dim) * 4);
}

void attention_row_ref(const AttnRow& a) {
  const GgmlType kv_type = a.f16 ? GgmlType::F16 : GgmlType::F32;
  const int64_t hd = a.hd;
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
    if (s > M) {  // new maximum: rescale the accumulator by expf(Mold - M)
      M = s;
      ms = expf(Mold - M);
      if (a.f16) {
        for (int64_t d = 0; d < hd; ++d) acc16[d] = fp32_to_fp16(fp16_to_fp32(acc16[d]) * ms);
      } else {
        for (int64_t d = 0; d < hd; ++d) acc32[d] *= ms;
      }
    } else {
      vs = expf(s - M);
    }
    if (a.f16) {
      const uint16_t* v = reinterpret_cast<const uint16_t*>(vj);
      for (int64_t d = 0; d < hd; ++d)
        acc16[d] = fp32_to_fp16(fmaf(fp16_to_fp32(v[d]), vs, fp16_to_fp32(acc16[d])));
    } else {
      const float* v = reinterpret_cast<const float*>(vj);
      for (int64_t d = 0; d < hd; ++d) acc32[d] = fmaf(v[d], vs, acc32[d]);
    }
    S = fmaf(S, ms, vs);
  }
  const float S_inv = S == 0.0f ? 0.0f : 1.0f / S;
  for (int64_t d = 0; d < hd; ++d) a.out[d] = (a.f16 ? fp16_to_fp32(acc16[d]) : acc32[d]) * S_inv;
}

namespace {
using AttnRowFn = void (*)(const AttnRow&);
AttnRowFn pick_attention_row() {
#if defined(LLMSERVE_X86)
  if (std::strcmp(kernel_isa(), "scalar") != 0 && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
    return attention_row_avx2;
  }
#endif
  return attention_row_ref;
}
}  // namespace

void attention_row(const AttnRow& a) {
  static const AttnRowFn fn = pick_attention_row();
  fn(a);
}

void attention_f32(const ModelConfig& c, KvPool& kv, int64_t layer, const float* q, const BatchLayout& bl,
                   int64_t r0, int64_t m, float* out, uint8_t* scratch, ThreadPool& pool) {
  const int64_t hd = c.head_dim, n_head = c.n_head, n_gqa = c.n_gqa(), nq = c.n_embd_q();
  const size_t per_thread = attention_scratch_bytes(hd);
  const float scale = 1.0f / sqrtf(static_cast<float>(hd));
  const bool f16 = kv.f16();
  const size_t es = kv.elem_size();
  const uint8_t* k_layer = kv.k_layer(layer);
  const uint8_t* v_layer = kv.v_layer(layer);
  // Work per (token, head) grows with its position; estimate with the mean.
  int64_t total_len = 0;
  for (int64_t t = r0; t < r0 + m; ++t) total_len += bl.pos[t] + 1;
  const int64_t mean_len = std::max<int64_t>(1, total_len / std::max<int64_t>(1, m));
  pool.parallel_for_chunked(m * n_head, [&](int64_t b, int64_t e, int slot) {
    uint8_t* base = scratch + static_cast<size_t>(slot) * per_thread;
    uint8_t* q_conv = base + align_up(static_cast<size_t>(hd) * 4);
    for (int64_t it = b; it < e; ++it) {
      const int64_t i = it / n_head, h = it % n_head, kvh = h / n_gqa, t = r0 + i;
      const float* qh = q + i * nq + h * hd;
      AttnRow a;
      if (f16) quantize_row(GgmlType::F16, qh, q_conv, hd);  // Q to K's vec_dot type, as ggml
      a.q = f16 ? static_cast<const void*>(q_conv) : static_cast<const void*>(qh);
      const size_t off = static_cast<size_t>(kvh * hd) * es;
      a.k = k_layer + off;
      a.v = v_layer + off;
      a.blocks = bl.blocks[t];
      a.block_size = kv.block_size();
      a.row_stride = kv.row_bytes();
      a.block_stride = kv.block_bytes();
      a.len = bl.pos[t] + 1;
      a.hd = hd;
      a.scale = scale;
      a.f16 = f16;
      a.out = out + i * nq + h * hd;
      a.acc = base;
      attention_row(a);
    }
  }, std::max<int64_t>(1, kMinChunkWork / (hd * mean_len * 2)));
}

}  // namespace llmserve
