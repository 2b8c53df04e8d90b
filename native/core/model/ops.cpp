#include "ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#if defined(LLMSERVE_X86)
#include <cpuid.h>
#endif

#include "../quant/quant.h"
#include "ops_exp.h"

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


void swiglu_f32_ref(float* g, const float* u, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    const float x = g[i];
    g[i] = (x / (1.0f + fast_exp(-x))) * u[i];
  }
}

namespace {
#if defined(LLMSERVE_X86)
// __builtin_cpu_supports("f16c") needs gcc or clang >= 16 (clang 14 rejects the string at compile
// time); CPUID leaf 1, ECX bit 29 says the same with every compiler.
bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
#endif

bool use_avx2_ops() {
#if defined(LLMSERVE_X86)
  return std::strcmp(kernel_isa(), "scalar") != 0 && __builtin_cpu_supports("avx2") &&
         __builtin_cpu_supports("fma") && cpu_has_f16c();
#else
  return false;
#endif
}
}  // namespace

void swiglu_f32(float* g, const float* u, int64_t count) {
#if defined(LLMSERVE_X86)
  static const bool avx2 = use_avx2_ops();
  if (avx2) return swiglu_f32_avx2(g, u, count);
#endif
  swiglu_f32_ref(g, u, count);
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
  quantize_row(kv.type(), k, kv.k_row(layer, blk, slot), d);
  quantize_row(kv.type(), v, kv.v_row(layer, blk, slot), d);
}

void hadamard_blocks_f32(float* x, int64_t count, int64_t n) {
  const float scale = static_cast<float>(1.0 / static_cast<double>(sqrtf(static_cast<float>(n))));
  for (int64_t off = 0; off + n <= count; off += n) {
    float* p = x + off;
    for (int64_t h = 1; h < n; h <<= 1) {
      for (int64_t i = 0; i < n; i += 2 * h) {
        for (int64_t j = i; j < i + h; ++j) {
          const float a = p[j], b = p[j + h];
          p[j] = a + b;
          p[j + h] = a - b;
        }
      }
    }
    for (int64_t j = 0; j < n; ++j) p[j] *= scale;
  }
}

KvRotation kv_rotation(const ModelConfig& c, GgmlType kv_type) {
  KvRotation r;
  if (kv_type != GgmlType::Q8_0 || c.head_dim % 64 != 0) return r;
  int64_t n = 64;
  while (c.head_dim % (2 * n) == 0) n *= 2;
  r.k = n;
  r.v = 64;
  return r;
}

namespace {
size_t q_row_bytes(GgmlType kv_type, int64_t hd) {
  return align_up(row_size(type_traits(kv_type).vec_dot_type, hd));
}
}  // namespace

size_t attention_group_work_floats(int64_t n_q, int64_t hd) {
  const size_t hdp = static_cast<size_t>((hd + 15) / 16 * 16), T = kAttnTile, nq = static_cast<size_t>(n_q);
  // scores [n_q][T] | ms [T] | vs [T] | acc [n_q][hdp] | V tile [T][hdp] | K tile [T][hdp] |
  // queries [n_q][hdp] | 16 spare
  return nq * T + 2 * T + 2 * nq * hdp + 2 * T * hdp + 16;
}

size_t attention_scratch_bytes(const ModelConfig& c, GgmlType kv_type) {
  return align_up(attention_group_work_floats(c.n_gqa(), c.head_dim) * 4) +
         static_cast<size_t>(c.n_gqa()) * q_row_bytes(kv_type, c.head_dim);
}

void attention_group_ref(const AttnGroup& a) {
  const int64_t hd = a.hd;
  const bool f16 = a.kv_type == GgmlType::F16;
  float* acc = a.work;
  float* vrow = a.work + ((hd + 15) / 16 * 16);
  auto round16 = [](float x) { return fp16_to_fp32(fp32_to_fp16(x)); };
  for (int64_t h = 0; h < a.n_q; ++h) {
    const uint8_t* q = a.q + h * a.q_stride;
    for (int64_t d = 0; d < hd; ++d) acc[d] = 0.0f;
    float M = -INFINITY, S = 0.0f;
    for (int64_t j = 0; j < a.len; ++j) {
      const size_t off = attn_row_offset(a, j);
      const float s = vec_dot(a.kv_type, hd, a.k + off, q) * a.scale;
      float ms = 1.0f, vs = 1.0f;
      if (s > M) {  // new maximum: the accumulator is rescaled by exp(Mold - M)
        ms = fast_exp(M - s);
        M = s;
      } else {
        vs = fast_exp(s - M);
      }
      if (a.kv_type == GgmlType::F32) std::memcpy(vrow, a.v + off, static_cast<size_t>(hd) * 4);
      else dequantize_row(a.kv_type, a.v + off, vrow, hd);
      for (int64_t d = 0; d < hd; ++d) {
        float x = acc[d] * ms;
        if (f16) x = round16(x);
        x = fmaf(vrow[d], vs, x);
        acc[d] = f16 ? round16(x) : x;
      }
      S = fmaf(S, ms, vs);
    }
    const float S_inv = S == 0.0f ? 0.0f : 1.0f / S;
    float* out = a.out + h * a.out_stride;
    for (int64_t d = 0; d < hd; ++d) out[d] = acc[d] * S_inv;
  }
}

namespace {
using AttnGroupFn = void (*)(const AttnGroup&);
AttnGroupFn pick_attention_group() {
#if defined(LLMSERVE_X86)
  if (use_avx2_ops()) return attention_group_avx2;
#endif
  return attention_group_ref;
}
}  // namespace

void attention_group(const AttnGroup& a) {
  static const AttnGroupFn fn = pick_attention_group();
  // The SIMD kernel keeps per-head state in kMaxAttnGroup-long stack arrays. Model configs are
  // limited at load (read_model_config); any other caller with a larger group gets the reference
  // kernel rather than a stack overflow.
  if (a.n_q > kMaxAttnGroup) return attention_group_ref(a);
  fn(a);
}

void attention_f32(const ModelConfig& c, KvPool& kv, int64_t layer, const float* q, const BatchLayout& bl,
                   int64_t r0, int64_t m, float* out, uint8_t* scratch, ThreadPool& pool) {
  const int64_t hd = c.head_dim, n_gqa = c.n_gqa(), n_kv = c.n_head_kv, nq = c.n_embd_q();
  const GgmlType kv_type = kv.type(), q_type = type_traits(kv_type).vec_dot_type;
  const size_t per_thread = attention_scratch_bytes(c, kv_type);
  const size_t work_bytes = align_up(attention_group_work_floats(n_gqa, hd) * 4);
  const size_t q_stride = q_row_bytes(kv_type, hd);
  const float scale = 1.0f / sqrtf(static_cast<float>(hd));
  const uint8_t* k_layer = kv.k_layer(layer);
  const uint8_t* v_layer = kv.v_layer(layer);
  // Work per (token, KV head) grows with its position; estimate with the mean.
  int64_t total_len = 0;
  for (int64_t t = r0; t < r0 + m; ++t) total_len += bl.pos[t] + 1;
  const int64_t mean_len = std::max<int64_t>(1, total_len / std::max<int64_t>(1, m));
  pool.parallel_for_chunked(m * n_kv, [&](int64_t b, int64_t e, int slot) {
    uint8_t* base = scratch + static_cast<size_t>(slot) * per_thread;
    uint8_t* q_conv = base + work_bytes;
    for (int64_t it = b; it < e; ++it) {
      const int64_t i = it / n_kv, g = it % n_kv, t = r0 + i;
      const float* qg = q + i * nq + g * n_gqa * hd;
      // Q to K's vec_dot type, as ggml (f32: a copy).
      for (int64_t h = 0; h < n_gqa; ++h) quantize_row(q_type, qg + h * hd, q_conv + h * q_stride, hd);
      AttnGroup a;
      const size_t off = kv.head_offset(g, hd);
      a.k = k_layer + off;
      a.v = v_layer + off;
      a.blocks = bl.blocks[t];
      a.block_size = kv.block_size();
      a.row_stride = kv.row_bytes();
      a.block_stride = kv.block_bytes();
      a.kv_type = kv_type;
      a.q = q_conv;
      a.q_stride = q_stride;
      a.n_q = n_gqa;
      a.len = bl.pos[t] + 1;
      a.hd = hd;
      a.scale = scale;
      a.out = out + i * nq + g * n_gqa * hd;
      a.out_stride = hd;
      a.work = reinterpret_cast<float*>(base);
      attention_group(a);
    }
  }, std::max<int64_t>(1, kMinChunkWork / (n_gqa * hd * mean_len * 2)));
}

}  // namespace llmserve
