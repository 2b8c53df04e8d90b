#include "forward_ref.h"

#include <algorithm>
#include <cmath>

#include "quant/quant.h"

namespace llmserve {

namespace {
using Vec = std::vector<double>;

Vec dequant_row(const MatrixView& m, int64_t r) {
  std::vector<float> f(static_cast<size_t>(m.n_in));
  dequantize_row(m.type, m.row(r), f.data(), m.n_in);
  return Vec(f.begin(), f.end());
}

const MatvecHook* g_hook = nullptr;  // forward_ref_all's on_matvec while it runs (single-threaded tests)

// y = W x + b   (x: [n_in] -> y: [n_out])
Vec matvec(const MatrixView& m, const float* bias, const Vec& x) {
  if (g_hook && *g_hook) (*g_hook)(m, x);
  Vec y(static_cast<size_t>(m.n_out));
  for (int64_t r = 0; r < m.n_out; ++r) {
    const Vec w = dequant_row(m, r);
    double s = 0;
    for (int64_t i = 0; i < m.n_in; ++i) s += w[i] * x[i];
    y[r] = s + (bias ? bias[r] : 0.0);
  }
  return y;
}

// x / sqrt(mean(x^2) + eps) * w
Vec rms_norm(const Vec& x, const float* w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double sc = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * sc * w[i];
  return y;
}

// v[off, off + n) <- rms_norm(v[off, off + n)) * w
void head_norm(Vec& v, int64_t off, int64_t n, const float* w, double eps) {
  const Vec y = rms_norm(Vec(v.begin() + off, v.begin() + off + n), w, eps);
  std::copy(y.begin(), y.end(), v.begin() + off);
}

// Mixture of experts: softmax over the router's logits, the n_expert_used most probable experts
// (ties: lower index), their probabilities renormalised to sum 1, the weighted sum of their SwiGLU
// FFNs, all in double.
Vec moe_ffn(const ModelConfig& c, const LayerWeights& L, const Vec& xn) {
  Vec p = matvec(L.ffn_gate_inp, nullptr, xn);
  const double mx = *std::max_element(p.begin(), p.end());
  double sum = 0;
  for (double& v : p) sum += (v = std::exp(v - mx));
  for (double& v : p) v /= sum;
  std::vector<int64_t> idx(p.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int64_t>(i);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
  double wsum = 0;
  for (int64_t j = 0; j < c.n_expert_used; ++j) wsum += p[idx[j]];
  Vec y(static_cast<size_t>(c.n_embd), 0.0);
  for (int64_t j = 0; j < c.n_expert_used; ++j) {
    const size_t e = static_cast<size_t>(idx[j]);
    Vec g = matvec(L.gate_exps[e], nullptr, xn);
    const Vec u = matvec(L.up_exps[e], nullptr, xn);
    for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
    const Vec d = matvec(L.down_exps[e], nullptr, g);
    for (size_t i = 0; i < y.size(); ++i) y[i] += p[e] / wsum * d[i];
  }
  return y;
}

// Rotates each head of v ([heads * head_dim]) for position pos.
// Local (sliding-window) layers use their own base and scale.
void rope(const ModelConfig& c, const float* freq_factors, Vec& v, int64_t heads, int64_t pos, bool local) {
  const double base = local ? c.rope_freq_base_swa : c.rope_freq_base;
  const double scale = local ? c.rope_freq_scale_swa : c.rope_freq_scale;
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < c.n_rot / 2; ++i) {
      double theta = pos * std::pow(base, -2.0 * i / double(c.n_rot));
      theta *= scale;
      if (freq_factors) theta /= freq_factors[i];
      // NORM rotates dims (2i, 2i+1); NEOX rotates (i, i + n_rot/2).
      const bool neox = c.rope_type == 2;
      double& x0 = v[h * c.head_dim + (neox ? i : 2 * i)];
      double& x1 = v[h * c.head_dim + (neox ? i + c.n_rot / 2 : 2 * i + 1)];
      // ggml multiplies cos and sin by attn_factor (rope.scaling.attn_factor; phi3 LongRoPE).
      const double mscale = c.yarn_ext_factor == 0.0f ? c.yarn_attn_factor : 1.0;
      const double r0 = (x0 * std::cos(theta) - x1 * std::sin(theta)) * mscale;
      const double r1 = (x0 * std::sin(theta) + x1 * std::cos(theta)) * mscale;
      x0 = r0;
      x1 = r1;
    }
  }
}

// The residual stream after the last layer, every token (on_matvec sees each product's input).
std::vector<Vec> final_residual(const Model& model, const std::vector<int32_t>& tokens,
                                const MatvecHook& on_matvec = {}) {
  const ModelConfig& c = model.config();
  const ModelWeights& W = model.weights();
  const int64_t T = static_cast<int64_t>(tokens.size()), E = c.n_embd, HD = c.head_dim;
  g_hook = &on_matvec;
  std::vector<Vec> x(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) x[t] = dequant_row(W.tok_embd, tokens[t]);
  if (c.embd_scale)  // gemma
    for (Vec& r : x)
      for (double& v : r) v *= std::sqrt(double(E));
  for (int64_t il = 0; il < c.n_layer; ++il) {
    const LayerWeights& L = W.layers[static_cast<size_t>(il)];
    const bool local = c.is_swa(il);
    std::vector<Vec> Q(T), K(T), V(T);
    for (int64_t t = 0; t < T; ++t) {
      const Vec xn = rms_norm(x[t], L.attn_norm, c.rms_eps);
      Q[t] = matvec(L.wq, L.bq, xn);
      K[t] = matvec(L.wk, L.bk, xn);
      V[t] = matvec(L.wv, L.bv, xn);
      // qwen3: each head of Q and K RMS-normalised over its head_dim values before RoPE.
      for (int64_t h = 0; L.attn_q_norm && h < c.n_head; ++h) head_norm(Q[t], h * HD, HD, L.attn_q_norm, c.rms_eps);
      for (int64_t h = 0; L.attn_k_norm && h < c.n_head_kv; ++h) head_norm(K[t], h * HD, HD, L.attn_k_norm, c.rms_eps);
      rope(c, W.rope_freqs, Q[t], c.n_head, t, local);
      rope(c, W.rope_freqs, K[t], c.n_head_kv, t, local);
    }
    for (int64_t t = 0; t < T; ++t) {
      Vec att(static_cast<size_t>(c.n_embd_q()), 0.0);
      for (int64_t h = 0; h < c.n_head; ++h) {
        const int64_t kh = h / c.n_gqa();
        // Keys in (t - n_swa, t] on local layers, [0, t] elsewhere.
        const int64_t j0 = local ? std::max<int64_t>(0, t - c.n_swa + 1) : 0;
        Vec s(static_cast<size_t>(t + 1), 0.0);
        double mx = -INFINITY, sum = 0;
        for (int64_t j = j0; j <= t; ++j) {
          double d = 0;
          for (int64_t i = 0; i < HD; ++i) d += Q[t][h * HD + i] * K[j][kh * HD + i];
          // gemma: Q pre-scaled by q_scale; gemma2: soft-capped scores.
          s[j] = c.q_scale != 0.0f ? d * c.q_scale : d / std::sqrt(double(HD));
          if (c.attn_softcap != 0.0f) s[j] = c.attn_softcap * std::tanh(s[j] / c.attn_softcap);
          mx = std::max(mx, s[j]);
        }
        for (int64_t j = j0; j <= t; ++j) sum += (s[j] = std::exp(s[j] - mx));
        for (int64_t j = j0; j <= t; ++j)
          for (int64_t i = 0; i < HD; ++i) att[h * HD + i] += s[j] / sum * V[j][kh * HD + i];
      }
      Vec o = matvec(L.wo, L.bo, att);
      if (L.attn_post_norm) o = rms_norm(o, L.attn_post_norm, c.rms_eps);
      for (int64_t i = 0; i < E; ++i) x[t][i] += o[i];
      const Vec xn = rms_norm(x[t], L.ffn_norm, c.rms_eps);
      if (c.is_moe()) {
        const Vec d = moe_ffn(c, L, xn);
        for (int64_t i = 0; i < E; ++i) x[t][i] += d[i];
        continue;
      }
      Vec g = matvec(L.ffn_gate, L.ffn_gate_b, xn);
      const Vec u = matvec(L.ffn_up, L.ffn_up_b, xn);
      for (size_t i = 0; i < g.size(); ++i) {
        // GELU, tanh approximation (gemma), or SiLU.
        const double gl = 0.5 * g[i] * (1.0 + std::tanh(0.7978845608028654 * g[i] * (1.0 + 0.044715 * g[i] * g[i])));
        g[i] = (c.geglu ? gl : g[i] / (1.0 + std::exp(-g[i]))) * u[i];
      }
      Vec d = matvec(L.ffn_down, L.ffn_down_b, g);
      if (L.ffn_post_norm) d = rms_norm(d, L.ffn_post_norm, c.rms_eps);
      for (int64_t i = 0; i < E; ++i) x[t][i] += d[i];
    }
  }
  g_hook = nullptr;
  return x;
}

// output_norm, the output matrix, and the final soft-cap (gemma) of one residual row.
Vec logits_of(const Model& model, const Vec& x) {
  const ModelWeights& W = model.weights();
  const ModelConfig& c = model.config();
  Vec logits = matvec(W.output, nullptr, rms_norm(x, W.output_norm, c.rms_eps));
  if (c.final_softcap != 0.0f)
    for (double& l : logits) l = c.final_softcap * std::tanh(l / c.final_softcap);
  return logits;
}
}  // namespace

std::vector<double> forward_ref(const Model& model, const std::vector<int32_t>& tokens) {
  if (tokens.empty()) return {};
  const std::vector<Vec> x = final_residual(model, tokens);
  return logits_of(model, x.back());
}

std::vector<std::vector<double>> forward_ref_hidden(const Model& model, const std::vector<int32_t>& tokens) {
  std::vector<std::vector<double>> out;
  for (const Vec& r : final_residual(model, tokens))
    out.push_back(rms_norm(r, model.weights().output_norm, model.config().rms_eps));
  return out;
}

std::vector<std::vector<double>> forward_ref_all(const Model& model, const std::vector<int32_t>& tokens,
                                                 const MatvecHook& on_matvec) {
  std::vector<std::vector<double>> out;
  for (const Vec& r : final_residual(model, tokens, on_matvec)) out.push_back(logits_of(model, r));
  return out;
}

}  // namespace llmserve
