// Low-rank factorization (compress/svd.h, compress/factorize.h) and the factored format
// (model/factored.h): the SVD recovers a constructed low-rank matrix exactly (both routes),
// energy truncation picks the rank the spectrum dictates, the factored kernels are bit-identical
// to their scalar reference on odd shapes and batch / thread invariant, a factored model gives the
// logits of a dense model holding U·V + S, and bad options are refused before any work.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "compress/factorize.h"
#include "compress/svd.h"
#include "gguf/gguf.h"
#include "kv/kv_cache.h"
#include "model/factored.h"
#include "model/forward.h"
#include "model/lowrank.h"
#include "model_test_util.h"
#include "quant/quant.h"
#include "synth/synth.h"
#include "testing.h"

using namespace llmserve;

namespace {

std::vector<double> randn(int64_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<double> d(0.0, 1.0);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = d(g);
  return v;
}

// A = B·C with B [m, r], C [r, n]: rank r.
std::vector<double> low_rank(int64_t m, int64_t n, int64_t r, uint32_t seed) {
  const std::vector<double> b = randn(m * r, seed), c = randn(r * n, seed + 1);
  std::vector<double> a(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t k = 0; k < r; ++k)
      for (int64_t j = 0; j < n; ++j) a[i * n + j] += b[i * r + k] * c[k * n + j];
  return a;
}

double rel_recon_error(const std::vector<double>& a, int64_t m, int64_t n, const SvdResult& s, int64_t k) {
  double err = 0, nrm = 0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double x = 0;
      for (int64_t q = 0; q < k; ++q) x += s.u[i * s.k + q] * s.s[q] * s.vt[q * n + j];
      err += (a[i * n + j] - x) * (a[i * n + j] - x);
      nrm += a[i * n + j] * a[i * n + j];
    }
  return std::sqrt(err / nrm);
}

}  // namespace

TEST(svd_recovers_a_low_rank_matrix_exactly) {
  // (m, n, r): wide and tall on the exact route, and sizes where the randomized route runs.
  const int64_t shapes[][3] = {{37, 53, 5}, {61, 29, 4}, {150, 120, 6}, {96, 200, 3}};
  for (const auto& sh : shapes) {
    const int64_t m = sh[0], n = sh[1], r = sh[2];
    const std::vector<double> a = low_rank(m, n, r, static_cast<uint32_t>(m * 7 + n));
    SvdResult s;
    truncated_svd(a.data(), m, n, r, &s);
    CHECK_EQ(s.k, r);
    const double e = rel_recon_error(a, m, n, s, r);
    CHECK(e < 1e-9);
    for (int64_t q = 0; q + 1 < r; ++q) CHECK(s.s[q] >= s.s[q + 1] && s.s[q + 1] > 0);
    // U's columns orthonormal.
    for (int64_t p = 0; p < r; ++p)
      for (int64_t q = 0; q < r; ++q) {
        double d = 0;
        for (int64_t i = 0; i < m; ++i) d += s.u[i * r + p] * s.u[i * r + q];
        CHECK(std::fabs(d - (p == q ? 1.0 : 0.0)) < 1e-9);
      }
    // Asking for more than the rank: the extra singular values are zero (below the Gram route's
    // resolution, ~1.5e-8 of the largest, they are rounding noise and dropped).
    SvdResult more;
    truncated_svd(a.data(), m, n, r + 2, &more);
    CHECK(more.s[r] < 1e-6 * more.s[0]);
    CHECK(rel_recon_error(a, m, n, more, r + 2) < 1e-9);
    // One rank short: the error is the dropped singular value's share, not ~0.
    SvdResult less;
    truncated_svd(a.data(), m, n, r - 1, &less);
    const double want = s.s[r - 1] / std::sqrt([&] {
                          double t = 0;
                          for (int64_t q = 0; q < r; ++q) t += s.s[q] * s.s[q];
                          return t;
                        }());
    CHECK(std::fabs(rel_recon_error(a, m, n, less, r - 1) - want) < 1e-6);
  }
}

TEST(svd_full_rank_reproduces_a_random_matrix) {
  const int64_t m = 24, n = 40;
  const std::vector<double> a = randn(m * n, 5);
  SvdResult s;
  truncated_svd(a.data(), m, n, m, &s);
  CHECK(rel_recon_error(a, m, n, s, m) < 1e-12);
}

TEST(factorize_energy_truncation_picks_the_rank_of_the_spectrum) {
  // W = sum_k sigma_k u_k v_kᵀ with orthonormal u, v (Gram-Schmidt of random vectors).
  const int64_t m = 48, n = 64, K = 10;
  const double sigma[K] = {10, 7, 5, 3, 2, 1.5, 1, 0.5, 0.25, 0.1};
  auto orth = [](int64_t len, uint32_t seed) {
    std::vector<double> q = randn(K * len, seed);
    for (int64_t i = 0; i < K; ++i) {
      for (int64_t j = 0; j < i; ++j) {
        double d = 0;
        for (int64_t c = 0; c < len; ++c) d += q[i * len + c] * q[j * len + c];
        for (int64_t c = 0; c < len; ++c) q[i * len + c] -= d * q[j * len + c];
      }
      double nr = 0;
      for (int64_t c = 0; c < len; ++c) nr += q[i * len + c] * q[i * len + c];
      for (int64_t c = 0; c < len; ++c) q[i * len + c] /= std::sqrt(nr);
    }
    return q;
  };
  const std::vector<double> u = orth(m, 11), v = orth(n, 12);
  std::vector<float> w(static_cast<size_t>(m * n), 0.0f);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double x = 0;
      for (int64_t k = 0; k < K; ++k) x += sigma[k] * u[k * m + i] * v[k * n + j];
      w[i * n + j] = static_cast<float>(x);
    }
  double total = 0;
  for (double s : sigma) total += s * s;
  for (double e : {0.5, 0.8, 0.95, 0.99, 0.999}) {
    int64_t want = 0;
    double kept = 0;
    while (kept < e * total) kept += sigma[want] * sigma[want], ++want;
    LowRankOptions o;
    o.energy = e;
    Factorization f;
    factorize_matrix(w.data(), m, n, o, nullptr, 0, &f);
    CHECK_EQ(f.r, want);
    CHECK(std::fabs(f.energy - kept / total) < 1e-4);  // the f32 input moves it slightly
    // The reconstruction error is the dropped energy (plus f16 rounding of the factors).
    CHECK(std::fabs(f.rel_error - std::sqrt(1 - kept / total)) < 3e-3);
  }
  // A sparse residual of 5% only lowers the error, and holds 5% of the entries.
  LowRankOptions o;
  o.rank = 3;
  Factorization plain, with_s;
  factorize_matrix(w.data(), m, n, o, nullptr, 0, &plain);
  o.sparse = 0.05;
  factorize_matrix(w.data(), m, n, o, nullptr, 0, &with_s);
  CHECK_EQ(static_cast<int64_t>(with_s.col.size()), static_cast<int64_t>(std::llround(0.05 * m * n)));
  CHECK(with_s.rel_error < plain.rel_error * 0.97);
  CHECK(csr_valid(with_s.ptr.data(), with_s.col.data(), m, n, static_cast<int64_t>(with_s.col.size())));
}

TEST(factored_kernels_match_the_scalar_reference_on_odd_shapes) {
  for (const int64_t n_in : {8, 24, 72, 13, 90}) {  // 13, 90: rows not a multiple of 8 (the scalar tail)
    for (const int64_t n_out : {1, 13, 37, 131}) {
      for (const int64_t r : {1, 3, 7}) {
        for (const bool f16 : {true, false}) {
          for (const bool residual : {false, true}) {
            std::mt19937 g(static_cast<uint32_t>(n_in * 1000 + n_out * 10 + r));
            std::uniform_real_distribution<float> d(-1, 1);
            std::vector<float> v32(static_cast<size_t>(r * n_in)), ut32(static_cast<size_t>(r * n_out));
            for (float& x : v32) x = d(g);
            for (float& x : ut32) x = d(g);
            std::vector<uint16_t> v16(v32.size()), ut16(ut32.size());
            for (size_t i = 0; i < v32.size(); ++i) v16[i] = fp32_to_fp16(v32[i]);
            for (size_t i = 0; i < ut32.size(); ++i) ut16[i] = fp32_to_fp16(ut32[i]);
            std::vector<int32_t> ptr(static_cast<size_t>(n_out + 1), 0), col;
            std::vector<uint16_t> val;
            for (int64_t i = 0; i < n_out; ++i) {
              for (int64_t j = (i * 5) % 3; residual && j < n_in; j += 3 + (i % 4)) {
                col.push_back(static_cast<int32_t>(j));
                val.push_back(fp32_to_fp16(d(g)));
              }
              ptr[i + 1] = static_cast<int32_t>(col.size());
            }
            FactoredMatrix w;
            w.v = f16 ? static_cast<const void*>(v16.data()) : v32.data();
            w.ut = f16 ? static_cast<const void*>(ut16.data()) : ut32.data();
            w.f16 = f16;
            w.r = r, w.n_in = n_in, w.n_out = n_out;
            if (residual && !col.empty()) w.sp_ptr = ptr.data(), w.sp_col = col.data(), w.sp_val = val.data();
            std::vector<float> bias(static_cast<size_t>(n_out));
            for (float& x : bias) x = d(g);
            for (const int64_t n : {1, 5}) {
              std::vector<float> x(static_cast<size_t>(n * n_in));
              for (float& e : x) e = d(g);
              const int64_t ldy = n_out + 3;
              std::vector<float> ref(static_cast<size_t>(n * ldy), 7.0f), got(ref);
              factored_matmul_ref(w, x.data(), n, bias.data(), ref.data(), ldy);
              ThreadPool pool(3);
              factored_matmul(w, x.data(), n, bias.data(), got.data(), ldy, pool);
              CHECK(std::memcmp(ref.data(), got.data(), ref.size() * 4) == 0);
              // Against a double evaluation of U·V·x + S·x + b.
              for (int64_t t = 0; t < n; ++t)
                for (int64_t o = 0; o < n_out; ++o) {
                  double want = bias[o];
                  for (int64_t k = 0; k < r; ++k) {
                    double vx = 0;
                    for (int64_t j = 0; j < n_in; ++j)
                      vx += double(f16 ? fp16_to_fp32(v16[k * n_in + j]) : v32[k * n_in + j]) * x[t * n_in + j];
                    want += vx * (f16 ? fp16_to_fp32(ut16[k * n_out + o]) : ut32[k * n_out + o]);
                  }
                  if (w.sp_ptr)
                    for (int32_t e = ptr[o]; e < ptr[o + 1]; ++e)
                      want += double(fp16_to_fp32(val[e])) * x[t * n_in + col[e]];
                  CHECK(std::fabs(ref[t * ldy + o] - want) < 1e-4 * (1 + std::fabs(want)) + 1e-4);
                }
            }
          }
        }
      }
    }
  }
}

TEST(factored_matmul_batch_and_thread_invariant) {
  const int64_t n_in = 96, n_out = 70, r = 9, n = 7;
  std::mt19937 g(3);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<uint16_t> v(static_cast<size_t>(r * n_in)), ut(static_cast<size_t>(r * n_out));
  for (auto& h : v) h = fp32_to_fp16(d(g));
  for (auto& h : ut) h = fp32_to_fp16(d(g));
  std::vector<int32_t> ptr(static_cast<size_t>(n_out + 1)), col;
  std::vector<uint16_t> val;
  for (int64_t i = 0; i < n_out; ++i) {
    for (int64_t j = i % 5; j < n_in; j += 11)
      col.push_back(static_cast<int32_t>(j)), val.push_back(fp32_to_fp16(d(g)));
    ptr[i + 1] = static_cast<int32_t>(col.size());
  }
  FactoredMatrix w{v.data(), ut.data(), true, r, n_in, n_out, ptr.data(), col.data(), val.data()};
  std::vector<float> x(static_cast<size_t>(n * n_in));
  for (float& e : x) e = d(g);
  std::vector<float> all(static_cast<size_t>(n * n_out)), one(static_cast<size_t>(n_out));
  ThreadPool p1(1), p3(3);
  factored_matmul(w, x.data(), n, nullptr, all.data(), n_out, p3);
  for (int64_t t = 0; t < n; ++t) {
    factored_matmul(w, x.data() + t * n_in, 1, nullptr, one.data(), n_out, p1);
    CHECK(std::memcmp(one.data(), all.data() + t * n_out, static_cast<size_t>(n_out) * 4) == 0);
  }
  // The SIMD tier and the forced scalar kernels agree bit for bit.
  std::vector<float> scalar(all.size());
  lowrank_force_scalar_for_testing(true);
  factored_matmul(w, x.data(), n, nullptr, scalar.data(), n_out, p3);
  lowrank_force_scalar_for_testing(false);
  CHECK(std::memcmp(scalar.data(), all.data(), all.size() * 4) == 0);
}

TEST(csr_valid_rejects_bad_indices) {
  const std::vector<int32_t> ptr = {0, 2, 3}, col = {1, 4, 0};
  CHECK(csr_valid(ptr.data(), col.data(), 2, 8, 3));
  CHECK(!csr_valid(ptr.data(), col.data(), 2, 4, 3));  // column 4 outside [0, 4)
  const std::vector<int32_t> unsorted = {4, 1, 0};
  CHECK(!csr_valid(ptr.data(), unsorted.data(), 2, 8, 3));
  const std::vector<int32_t> bad_ptr = {0, 4, 3};
  CHECK(!csr_valid(bad_ptr.data(), col.data(), 2, 8, 3));
  CHECK(!csr_valid(ptr.data(), col.data(), 2, 8, 4));  // ptr[n_out] != nnz
}

// Activation-aware: with column scales d_j the truncation minimizes ||(W - U·V)·diag(d)||, so it
// beats the plain SVD on that norm (and loses on the plain one), at the same rank.
TEST(factorize_activation_aware_minimizes_the_weighted_error) {
  const int64_t m = 40, n = 48, tokens = 10;
  const std::vector<double> g = randn(m * n, 31);
  std::vector<float> w(g.begin(), g.end());
  std::vector<double> sumsq(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    const double d = j % 6 == 0 ? 20.0 : 0.5 + 0.05 * static_cast<double>(j);  // a few loud columns
    sumsq[j] = d * d * static_cast<double>(tokens);
  }
  const auto errors = [&](const Factorization& f, double* plain, double* weighted) {
    *plain = *weighted = 0;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double x = 0;
        for (int64_t k = 0; k < f.r; ++k) x += double(f.ut[k * m + i]) * f.v[k * n + j];
        const double e = w[i * n + j] - x;
        *plain += e * e;
        *weighted += e * e * sumsq[j] / tokens;
      }
  };
  LowRankOptions o;
  o.rank = 8;
  Factorization fp, fa;
  factorize_matrix(w.data(), m, n, o, nullptr, 0, &fp);
  factorize_matrix(w.data(), m, n, o, sumsq.data(), tokens, &fa);
  double pp, pw, ap, aw;
  errors(fp, &pp, &pw);
  errors(fa, &ap, &aw);
  std::fprintf(stderr, "  plain: |E| %.3g, |E·D| %.3g; aware: |E| %.3g, |E·D| %.3g\n", std::sqrt(pp), std::sqrt(pw),
               std::sqrt(ap), std::sqrt(aw));
  CHECK(aw < 0.8 * pw);
  CHECK(ap > pp);
}
