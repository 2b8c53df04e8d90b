// attention_prompt (the prompt-row arithmetic, attention.h): the SIMD kernels this CPU runs give
// the scalar reference's bits, a call of several tokens gives each row the bits of a call of its
// own, and the reference agrees with softmax(q K^T * scale) V computed in double precision; f16
// and f32 caches, head sizes that are and are not whole vectors, GQA groups of 1-8, sliding
// windows and soft-capping, contexts across several tiles.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "attention/attention.h"
#include "attention_test_util.h"
#include "isa/isa.h"
#include "quant/quant.h"
#include "testing.h"

using namespace llmserve;
using namespace llmserve::attn_test;

TEST(attention_prompt_kernels_match_reference_and_rows_alone) {
  Rng rnd{11};
  AttnKernels kernels = {{"dispatched", attention_prompt}};
#if defined(LLMSERVE_X86)
  if (cpu_supports(Isa::Avx2)) kernels.push_back({"avx2", attention_prompt_avx2});
  if (cpu_supports(Isa::Avx512)) kernels.push_back({"avx512", attention_prompt_avx512});
#endif
  int cases = 0;
  double worst = 0.0;
  for (GgmlType kvt : {GgmlType::F16, GgmlType::F32}) {
    for (int64_t hd : {8, 13, 40, 64, 128}) {
      for (int64_t n_q : {1, 2, 3, 8}) {
        for (int64_t n_tok : {int64_t(1), int64_t(5), 64 / n_q}) {
          for (int64_t len0 : {1, 38, 70}) {
            for (int64_t window : {0, 6, 45}) {
              const float softcap = window == 6 ? 0.75f : 0.0f;
              const int64_t n_pos = len0 + n_tok - 1;
              PagedKv kv(kvt, hd, n_pos, rnd);
              const size_t q_stride = (static_cast<size_t>(hd) * 4 + 63) / 64 * 64;
              std::vector<uint8_t> q(static_cast<size_t>(n_tok * n_q) * q_stride);
              for (int64_t r = 0; r < n_tok * n_q; ++r) {
                float* qr = reinterpret_cast<float*>(q.data() + r * q_stride);
                for (int64_t d = 0; d < hd; ++d) qr[d] = rnd();
              }
              const int64_t out_tok = (n_q + 1) * hd;
              std::vector<float> work(attention_prompt_work_floats(n_tok * n_q, hd) + 16);
              float* w = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(work.data()) + 63) & ~uintptr_t(63));
              const float scale = 1.0f / std::sqrt(float(hd));
              const PagedCall call{kv, q.data(), q_stride, n_q, len0, window, scale, softcap, out_tok, w};
              const size_t n_out = static_cast<size_t>(n_tok * out_tok);
              std::vector<float> single(n_out, 0.0f), multi_ref(n_out, 0.0f);
              for (int64_t i = 0; i < n_tok; ++i) attention_prompt_ref(call(i, 1, single.data()));
              attention_prompt_ref(call(0, n_tok, multi_ref.data()));
              CHECK(same_bits(single.data(), multi_ref.data(), n_out));
              CHECK(kernels_match(kernels, call, n_tok, single, "prompt"));
              // The reference against double precision (the K/V values the cache holds).
              std::vector<float> kf(static_cast<size_t>(hd)), vf(static_cast<size_t>(hd));
              std::vector<double> acc(static_cast<size_t>(hd));
              for (int64_t i = 0; i < n_tok; ++i) {
                const int64_t len = len0 + i, begin = window > 0 ? std::max<int64_t>(0, len - window) : 0;
                for (int64_t h = 0; h < n_q; ++h) {
                  const float* qr = reinterpret_cast<const float*>(q.data() + (i * n_q + h) * q_stride);
                  std::vector<double> s;
                  double mx = -INFINITY;
                  for (int64_t j = begin; j < len; ++j) {
                    const size_t off =
                        (static_cast<size_t>(kv.table[j / kv.bs]) * kv.bs + j % kv.bs) * kv.row + row_size(kvt, hd);
                    dequantize_row(kvt, kv.k.data() + off, kf.data(), hd);
                    double x = 0.0;
                    for (int64_t d = 0; d < hd; ++d) x += double(qr[d]) * kf[d];
                    x *= scale;
                    if (softcap != 0.0f) x = softcap * std::tanh(x / softcap);
                    s.push_back(x);
                    mx = std::max(mx, x);
                  }
                  double den = 0.0;
                  std::fill(acc.begin(), acc.end(), 0.0);
                  for (int64_t j = begin; j < len; ++j) {
                    const size_t off =
                        (static_cast<size_t>(kv.table[j / kv.bs]) * kv.bs + j % kv.bs) * kv.row + row_size(kvt, hd);
                    dequantize_row(kvt, kv.v.data() + off, vf.data(), hd);
                    const double p = std::exp(s[static_cast<size_t>(j - begin)] - mx);
                    den += p;
                    for (int64_t d = 0; d < hd; ++d) acc[d] += p * vf[d];
                  }
                  const float* got = single.data() + i * out_tok + h * hd;
                  for (int64_t d = 0; d < hd; ++d) worst = std::max(worst, std::fabs(acc[d] / den - got[d]));
                }
              }
              ++cases;
            }
          }
        }
      }
    }
  }
  std::printf("  attention_prompt: %d cases, worst |ref - double| %.2e\n", cases, worst);
  CHECK(worst < 1e-5);
  CHECK(cases == 2 * 5 * 4 * 3 * 3 * 3);
}
