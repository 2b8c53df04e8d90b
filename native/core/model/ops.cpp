#include "ops.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "../isa/isa.h"
#include "../math/fast_exp.h"
#include "../quant/quant.h"

namespace llmserve {

void rms_norm_f32(const float* x, const float* w, float* y, int64_t n, int64_t d, float eps) {
#if defined(LLMSERVE_X86)
  if (active_isa() >= Isa::Avx2) return rms_norm_f32_avx2(x, w, y, n, d, eps);
#endif
  rms_norm_f32_ref(x, w, y, n, d, eps);
}

void rms_norm_f32_ref(const float* x, const float* w, float* y, int64_t n, int64_t d, float eps) {
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

void swiglu_f32(float* g, const float* u, int64_t count) {
#if defined(LLMSERVE_X86)
  if (active_isa() >= Isa::Avx2) return swiglu_f32_avx2(g, u, count);
#endif
  swiglu_f32_ref(g, u, count);
}

namespace {
// ggml's 64K-entry GELU table over every f16 value (ggml_cpu_init), built once.
struct GeluTable {
  uint16_t v[1 << 16];
  GeluTable() {
    constexpr float kA = 0.044715f, kS = 0.79788456080286535587989211986876f;
    for (uint32_t i = 0; i < (1u << 16); ++i) {
      const float x = fp16_to_fp32(static_cast<uint16_t>(i));
      v[i] = fp32_to_fp16(0.5f * x * (1.0f + tanhf(kS * x * (1.0f + kA * x * x))));
    }
  }
};
const GeluTable& gelu_table() {
  static const GeluTable t;  // thread-safe one-time init
  return t;
}
}  // namespace

void geglu_f32(float* g, const float* u, int64_t count) {
  const uint16_t* t = gelu_table().v;
  for (int64_t i = 0; i < count; ++i) {
    const float x = g[i];
    if (x <= -10.0f) g[i] = 0.0f;
    else if (x >= 10.0f) g[i] = x * u[i];
    else g[i] = fp16_to_fp32(t[fp32_to_fp16(x)]) * u[i];
  }
}

void softcap_f32(float* x, int64_t count, float cap) {
  const float inv = 1.0f / cap;
  for (int64_t i = 0; i < count; ++i) x[i] = tanhf(x[i] * inv) * cap;
}

namespace {
// ggml's YaRN helpers (ggml.c / ggml-cpu ops.cpp).
float rope_yarn_corr_dim(int n_dims, int n_ctx_orig, float n_rot, float base) {
  return n_dims * logf(n_ctx_orig / (n_rot * 2 * std::numbers::pi_v<float>)) / (2 * logf(base));
}
float rope_yarn_ramp(float low, float high, int i0) {
  const float y = (i0 / 2 - low) / std::max(0.001f, high - low);
  return 1 - std::min(1.0f, std::max(0.0f, y));
}
}  // namespace

void rope_cache_f32(const ModelConfig& c, const float* freq_factors, int64_t pos0, int64_t n, float* cache) {
  const int n_dims = static_cast<int>(c.n_rot);
  const float theta_scale = powf(c.rope_freq_base, -2.0f / n_dims);
  float corr_dims[2] = {0, 0};
  if (c.yarn_ext_factor != 0.0f) {
    const int n_ctx_orig = static_cast<int>(c.rope_n_ctx_orig);
    const float start = floorf(rope_yarn_corr_dim(n_dims, n_ctx_orig, c.yarn_beta_fast, c.rope_freq_base));
    const float end = ceilf(rope_yarn_corr_dim(n_dims, n_ctx_orig, c.yarn_beta_slow, c.rope_freq_base));
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

void rope_apply_f32(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int rope_type, const float* cache_row) {
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

}  // namespace llmserve
