// Kernels of model/ops.cpp (attention, SwiGLU, the shared exp, the KV Hadamard rotation): each
// dispatched (AVX2) version bit for bit against its scalar reference, and both against a
// straightforward double-precision computation.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "attention/attention.h"
#include "kv/kv_rotation.h"
#include "math/fast_exp.h"
#include "model/model_config.h"
#include "model/ops.h"
#include "quant/quant.h"
#include "testing.h"

using namespace llmserve;

namespace {
bool same_bits(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * 4) == 0; }
}  // namespace

TEST(ops_hadamard_rotation) {
  // The fast transform equals H x with H[i][j] = (-1)^popcount(i & j) / sqrt(n) per block, and H H = I.
  uint32_t seed = 7;
  for (int64_t n : {64, 128, 256}) {
    std::vector<float> x(3 * n), y;
    for (auto& v : x) seed = seed * 1664525u + 1013904223u, v = float((seed >> 8) & 0xFFFF) / 32768.0f - 1.0f;
    y = x;
    hadamard_blocks_f32(y.data(), 3 * n, n);
    double err = 0, back = 0;
    for (int64_t b = 0; b < 3; ++b)
      for (int64_t i = 0; i < n; ++i) {
        double want = 0;
        for (int64_t j = 0; j < n; ++j) want += (__builtin_popcountll(i & j) & 1 ? -1.0 : 1.0) * x[b * n + j];
        err = std::max(err, std::fabs(want / std::sqrt(double(n)) - y[b * n + i]));
      }
    hadamard_blocks_f32(y.data(), 3 * n, n);
    for (int64_t i = 0; i < 3 * n; ++i) back = std::max(back, double(std::fabs(y[i] - x[i])));
    CHECK(err < 1e-5);
    CHECK(back < 1e-5);
  }
  // Which caches rotate, and by how much (llama.cpp's choice).
  ModelConfig c;
  c.head_dim = 64;
  CHECK(kv_rotation(c.head_dim, GgmlType::Q8_0).k == 64 && kv_rotation(c.head_dim, GgmlType::Q8_0).v == 64);
  CHECK(kv_rotation(c.head_dim, GgmlType::F16).k == 0 && kv_rotation(c.head_dim, GgmlType::F16).v == 0);
  c.head_dim = 128;
  CHECK(kv_rotation(c.head_dim, GgmlType::Q8_0).k == 128 && kv_rotation(c.head_dim, GgmlType::Q8_0).v == 64);
  c.head_dim = 96;
  CHECK(kv_rotation(c.head_dim, GgmlType::Q8_0).k == 0 && kv_rotation(c.head_dim, GgmlType::Q8_0).v == 0);
}

TEST(ops_rms_norm_dispatch_matches_reference) {
  // The SIMD path (8 or 4 rows side by side, one double lane per row) gives the scalar reference's
  // bits for every row count (8-row groups, a 4-row group, 1-3 rows left) and width (d % 4 != 0),
  // in place too; rows differ in scale by orders of magnitude so a lane mixup shows.
  for (int64_t d : {1, 3, 4, 7, 128, 130, 1024}) {
    for (int64_t n : {1, 3, 4, 5, 8, 11, 12, 19}) {
      std::vector<float> x(static_cast<size_t>(n * d)), w(static_cast<size_t>(d));
      for (int64_t i = 0; i < d; ++i) w[i] = 0.5f + float(i % 11) * 0.1f;
      for (int64_t t = 0; t < n; ++t)
        for (int64_t i = 0; i < d; ++i)
          x[t * d + i] = std::ldexp(float((t * 131 + i * 7) % 23) - 11.3f, static_cast<int>(t % 5) * 3 - 6);
      std::vector<float> a(x.size()), b(x.size()), c = x;
      rms_norm_f32_ref(x.data(), w.data(), a.data(), n, d, 1e-6f);
      rms_norm_f32(x.data(), w.data(), b.data(), n, d, 1e-6f);
      rms_norm_f32(c.data(), w.data(), c.data(), n, d, 1e-6f);
      CHECK(same_bits(a.data(), b.data(), n * d));
      CHECK(same_bits(a.data(), c.data(), n * d));
    }
  }
}

TEST(ops_swiglu_dispatch_matches_reference) {
  // Bit-identical to the scalar reference (odd lengths, extreme inputs), and within a few ulp of
  // silu computed in double precision.
  for (int64_t n : {1, 7, 8, 61, 1000}) {
    std::vector<float> g(n), u(n);
    for (int64_t i = 0; i < n; ++i) g[i] = (float(i % 97) - 48.0f) * 0.37f, u[i] = 1.0f - float(i % 13) * 0.11f;
    if (n > 8) g[3] = 95.0f, g[4] = -95.0f, g[5] = 0.0f, g[6] = -0.0f;
    std::vector<float> a = g, b = g;
    swiglu_f32_ref(a.data(), u.data(), n);
    swiglu_f32(b.data(), u.data(), n);
    CHECK(same_bits(a.data(), b.data(), n));
    for (int64_t i = 0; i < n; ++i) {
      const double want = double(g[i]) / (1.0 + std::exp(-double(g[i]))) * u[i];
      CHECK(std::fabs(a[i] - want) <= 1e-6 * std::max(1.0, std::fabs(want)));
    }
  }
}

TEST(ops_fast_exp_matches_expf) {
  // Within 2 ulp of libm's expf over the range attention uses, exact at 0, 0 below FLT_MIN.
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    const double want = std::exp(static_cast<double>(x)), got = fast_exp(x);
    worst = std::max(worst, std::fabs(got - want) / want);
  }
  CHECK(worst <= 2.5e-7);
  CHECK_EQ(fast_exp(0.0f), 1.0f);
  CHECK_EQ(fast_exp(-INFINITY), 0.0f);
  CHECK_EQ(fast_exp(-90.0f), 0.0f);
  CHECK(std::isinf(fast_exp(89.0f)));
  CHECK(std::isnan(fast_exp(NAN)));
}

TEST(ops_attention_group_dispatch_matches_reference) {
  // Random K/V/q through a shuffled block table: the dispatched kernel (AVX2 where available)
  // equals the scalar reference bit for bit, for f16, f32 and q8_0 caches, GQA groups of 1, 3 and 8
  // heads, lengths across tile boundaries and head sizes that do and do not fill whole vectors;
  // a head's result does not depend on the heads it is grouped with, nor on paging; and it is
  // close to attention computed in double precision.
  uint32_t seed = 99;
  auto rnd = [&] {
    seed = seed * 1664525u + 1013904223u;
    return static_cast<float>((seed >> 8) & 0xFFFF) / 32768.0f - 1.0f;
  };
  for (GgmlType kvt : {GgmlType::F16, GgmlType::F32, GgmlType::Q8_0}) {
    const GgmlType qt = type_traits(kvt).vec_dot_type;
    const std::vector<int64_t> hds =
        kvt == GgmlType::Q8_0 ? std::vector<int64_t>{32, 64, 128} : std::vector<int64_t>{8, 13, 64, 128};
    for (int64_t hd : hds) {
      for (int64_t n_q : {1, 3, 8}) {
        for (int64_t len : {1, 31, 77}) {
          // Rows of 3 KV heads; the group reads the second.
          const int64_t n_kv = 3, bs = 7, nb = (len + bs - 1) / bs;
          const size_t row = row_size(kvt, n_kv * hd), head_off = row_size(kvt, hd);
          std::vector<float> kf(len * n_kv * hd), vf(len * n_kv * hd);
          for (auto& x : kf) x = rnd() * 3.0f;
          for (auto& x : vf) x = rnd();
          std::vector<uint8_t> k(len * row), v(len * row);
          for (int64_t j = 0; j < len; ++j) {
            quantize_row(kvt, kf.data() + j * n_kv * hd, k.data() + j * row, n_kv * hd);
            quantize_row(kvt, vf.data() + j * n_kv * hd, v.data() + j * row, n_kv * hd);
          }
          std::vector<int32_t> table(nb);
          for (int64_t b = 0; b < nb; ++b) table[b] = static_cast<int32_t>((b * 5 + 3) % nb);
          if (nb % 5 == 0)
            for (int64_t b = 0; b < nb; ++b) table[b] = static_cast<int32_t>(nb - 1 - b);
          std::vector<uint8_t> kp(nb * bs * row), vp(kp.size());
          for (int64_t j = 0; j < len; ++j) {
            const size_t dst = (size_t(table[j / bs]) * bs + j % bs) * row;
            std::memcpy(kp.data() + dst, k.data() + j * row, row);
            std::memcpy(vp.data() + dst, v.data() + j * row, row);
          }
          const size_t q_stride = (row_size(qt, hd) + 63) / 64 * 64;
          std::vector<float> qf(n_q * hd);
          for (auto& x : qf) x = rnd();
          std::vector<uint8_t> q(n_q * q_stride);
          for (int64_t h = 0; h < n_q; ++h) quantize_row(qt, qf.data() + h * hd, q.data() + h * q_stride, hd);
          std::vector<float> work(attention_group_work_floats(n_q, hd) + 16);
          float* w = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(work.data()) + 63) & ~uintptr_t(63));
          const float scale = 1.0f / std::sqrt(float(hd));
          auto group = [&](const uint8_t* kb, const uint8_t* vb, const int32_t* blocks, int64_t block_size, int64_t h0,
                           int64_t count, float* out, int64_t begin = 0, float softcap = 0.0f) {
            AttnGroup a{kb + head_off,
                        vb + head_off,
                        blocks,
                        block_size,
                        row,
                        size_t(block_size) * row,
                        kvt,
                        q.data() + h0 * q_stride,
                        q_stride,
                        count,
                        begin,
                        len,
                        hd,
                        softcap != 0.0f ? scale / softcap : scale,
                        softcap,
                        out,
                        hd,
                        w};
            return a;
          };
          std::vector<float> out_ref(n_q * hd), out_fast(n_q * hd), out_one(hd), out_flat(n_q * hd);
          attention_group_ref(group(kp.data(), vp.data(), table.data(), bs, 0, n_q, out_ref.data()));
          attention_group(group(kp.data(), vp.data(), table.data(), bs, 0, n_q, out_fast.data()));
          CHECK(same_bits(out_ref.data(), out_fast.data(), n_q * hd));
          for (int64_t h = 0; h < n_q; ++h) {
            attention_group(group(kp.data(), vp.data(), table.data(), bs, h, 1, out_one.data()));
            CHECK(same_bits(out_one.data(), out_ref.data() + h * hd, hd));
          }
          const int32_t one_block = 0;
          attention_group_ref(group(k.data(), v.data(), &one_block, len, 0, n_q, out_flat.data()));
          CHECK(same_bits(out_ref.data(), out_flat.data(), n_q * hd));
          // Against double precision on the stored (rounded) K, V and q.
          std::vector<float> kd(len * hd), vd(len * hd), qd(hd), tmp(n_kv * hd);
          for (int64_t j = 0; j < len; ++j) {
            dequantize_row(kvt, k.data() + j * row, tmp.data(), n_kv * hd);
            std::copy(tmp.begin() + hd, tmp.begin() + 2 * hd, kd.begin() + j * hd);
            dequantize_row(kvt, v.data() + j * row, tmp.data(), n_kv * hd);
            std::copy(tmp.begin() + hd, tmp.begin() + 2 * hd, vd.begin() + j * hd);
          }
          double err = 0;
          for (int64_t h = 0; h < n_q; ++h) {
            dequantize_row(qt, q.data() + h * q_stride, qd.data(), hd);
            std::vector<double> p(len);
            double mx = -1e300, sum = 0;
            for (int64_t j = 0; j < len; ++j) {
              double s = 0;
              for (int64_t d = 0; d < hd; ++d) s += double(kd[j * hd + d]) * qd[d];
              p[j] = s * scale, mx = std::max(mx, p[j]);
            }
            for (auto& x : p) x = std::exp(x - mx), sum += x;
            for (int64_t d = 0; d < hd; ++d) {
              double o = 0;
              for (int64_t j = 0; j < len; ++j) o += p[j] * vd[j * hd + d];
              err = std::max(err, std::fabs(o / sum - out_ref[h * hd + d]));
            }
          }
          // f16: ggml's f16 accumulator; q8_0: the score's quantized q.
          const double tol = kvt == GgmlType::F32 ? 1e-5 : 5e-3;
          if (err > tol)
            std::fprintf(stderr, "  %s hd=%lld n_q=%lld len=%lld: max err %.3g\n", type_traits(kvt).name, (long long)hd,
                         (long long)n_q, (long long)len, err);
          CHECK(err <= tol);
          // Sliding window (keys [begin, len)) and gemma2's logit soft-capping: the SIMD kernel
          // keeps the reference's bits, and both match double precision over the window.
          for (const int64_t begin : {int64_t(1), len / 2, len - 1}) {
            if (begin < 1 || begin >= len) continue;
            const float cap = 0.75f;
            std::vector<float> w_ref(n_q * hd), w_fast(n_q * hd);
            attention_group_ref(group(kp.data(), vp.data(), table.data(), bs, 0, n_q, w_ref.data(), begin, cap));
            attention_group(group(kp.data(), vp.data(), table.data(), bs, 0, n_q, w_fast.data(), begin, cap));
            CHECK(same_bits(w_ref.data(), w_fast.data(), n_q * hd));
            double werr = 0;
            for (int64_t h = 0; h < n_q; ++h) {
              dequantize_row(qt, q.data() + h * q_stride, qd.data(), hd);
              std::vector<double> p(len, 0.0);
              double mx = -1e300, sum = 0;
              for (int64_t j = begin; j < len; ++j) {
                double s = 0;
                for (int64_t d = 0; d < hd; ++d) s += double(kd[j * hd + d]) * qd[d];
                p[j] = cap * std::tanh(s * scale / cap), mx = std::max(mx, p[j]);
              }
              for (int64_t j = begin; j < len; ++j) p[j] = std::exp(p[j] - mx), sum += p[j];
              for (int64_t d = 0; d < hd; ++d) {
                double o = 0;
                for (int64_t j = begin; j < len; ++j) o += p[j] * vd[j * hd + d];
                werr = std::max(werr, std::fabs(o / sum - w_ref[h * hd + d]));
              }
            }
            CHECK(werr <= tol);
          }
        }
      }
    }
  }
}
