// model/lowrank: the batched low-rank (multi-LoRA) update. The AVX2 and AVX-512 passes equal the scalar
// references bit for bit; the references equal a double-precision product within f32 rounding;
// a row's result does not depend on the other rows, the groups or the thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "isa/isa.h"
#include "model/lowrank.h"
#include "quant/quant.h"
#include "testing.h"
#include "threadpool/thread_pool.h"

using namespace llmserve;

namespace {

struct Factors {
  std::vector<float> a, bt;  // f32 values (exactly the stored values when f16 or q8_0)
  std::vector<uint16_t> ah, bth;
  std::vector<uint8_t> aq, btq;  // q8_0 rows
  LowRankFactors f;
};

// Q8_0: n_in and n_out multiples of 32; a and bt then hold the dequantized values (d·q, exact).
Factors make_factors(int64_t r, int64_t n_in, int64_t n_out, LowRankType type, float scale, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, 0.05f);
  Factors F;
  const bool f16 = type == LowRankType::F16;
  F.a.resize(static_cast<size_t>(r * n_in));
  F.bt.resize(static_cast<size_t>(r * n_out));
  for (float& v : F.a) v = f16 ? fp16_to_fp32(fp32_to_fp16(d(g))) : d(g);
  for (float& v : F.bt) v = f16 ? fp16_to_fp32(fp32_to_fp16(d(g))) : d(g);
  if (f16) {
    for (float v : F.a) F.ah.push_back(fp32_to_fp16(v));
    for (float v : F.bt) F.bth.push_back(fp32_to_fp16(v));
  }
  auto quantize = [r](std::vector<float>& v, std::vector<uint8_t>& q, int64_t n) {
    const size_t rb = row_size(GgmlType::Q8_0, n);
    q.resize(static_cast<size_t>(r) * rb);
    for (int64_t k = 0; k < r; ++k) {
      quantize_row_weights(GgmlType::Q8_0, v.data() + k * n, q.data() + static_cast<size_t>(k) * rb, n);
      dequantize_row(GgmlType::Q8_0, q.data() + static_cast<size_t>(k) * rb, v.data() + k * n, n);
    }
  };
  if (type == LowRankType::Q8_0) quantize(F.a, F.aq, n_in), quantize(F.bt, F.btq, n_out);
  const bool q8 = type == LowRankType::Q8_0;
  F.f.a = f16 ? static_cast<const void*>(F.ah.data()) : q8 ? static_cast<const void*>(F.aq.data()) : F.a.data();
  F.f.bt = f16 ? static_cast<const void*>(F.bth.data()) : q8 ? static_cast<const void*>(F.btq.data()) : F.bt.data();
  F.f.type = type, F.f.r = r, F.f.scale = scale;
  return F;
}

std::vector<float> randv(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

}  // namespace

TEST(lowrank_simd_equals_scalar_reference_bitwise) {
  if (!cpu_supports(Isa::Avx2)) {
    std::printf("  (no AVX2 here: skipped)\n");
    return;
  }
  const bool avx512 = cpu_supports(Isa::Avx512);
  if (!avx512) std::printf("  (no AVX-512 here: AVX2 only)\n");
  for (LowRankType type : {LowRankType::F16, LowRankType::F32, LowRankType::Q8_0})
    for (int64_t r : {1, 8, 13, 64})
      for (int64_t n_out : {7, 40, 256, 300}) {
        // q8_0 rows hold whole blocks of 32, and its column ranges start at multiples of 8
        const bool q8 = type == LowRankType::Q8_0;
        // f16 / f32 with odd ranks: rows of 131, not a multiple of 8 (the A kernels' scalar tail)
        const int64_t n_in = q8 ? 160 : r % 2 ? 131 : 136;
        if (q8) n_out = (n_out + 31) / 32 * 32;
        Factors F = make_factors(r, n_in, n_out, type, 0.7f, static_cast<uint32_t>(r * 31 + n_out));
        // 7 rows: one block of four and three single rows in the AVX2 kernel; 3 rows: the AVX-512 A
        // kernel's few-row path (up to four rank pairs side by side)
        for (const int64_t nx : {int64_t(7), int64_t(3)}) {
          const auto x = randv(static_cast<size_t>(nx * n_in), 3);
          std::vector<float> t1(static_cast<size_t>(nx * r)), t2(t1.size());
          std::vector<const float*> xs;
          std::vector<float*> p1, p2;
          for (int64_t i = 0; i < nx; ++i) {
            xs.push_back(x.data() + i * n_in);
            p1.push_back(t1.data() + i * r), p2.push_back(t2.data() + i * r);
          }
          lowrank_a_ref(F.f, xs.data(), nx, n_in, 0, r, p1.data());
          lowrank_a_avx2(F.f, xs.data(), nx, n_in, 0, r, p2.data());
          CHECK(std::memcmp(t1.data(), t2.data(), t1.size() * 4) == 0);
          if (avx512) {
            std::fill(t2.begin(), t2.end(), 0.0f);
            lowrank_a_avx512(F.f, xs.data(), nx, n_in, 0, r, p2.data());  // odd r: a last single rank
            CHECK(std::memcmp(t1.data(), t2.data(), t1.size() * 4) == 0);
          }
          // 7 rows (a block of four, three single rows); a column range that starts off a multiple
          // of 8, as a task boundary would not, but may; q8_0 also from a block boundary (32), where
          // AVX-512 single rows over 256+ columns stream their Bt rows (b_row_stream_q8)
          for (const int64_t j0 : q8 ? std::vector<int64_t>{8, 32} : std::vector<int64_t>{3}) {
            if (j0 >= n_out) continue;
            auto y1 = randv(static_cast<size_t>(nx * n_out), 4), y2 = y1;
            std::vector<const float*> tp;
            std::vector<float*> q1, q2;
            for (int64_t i = 0; i < nx; ++i) {
              tp.push_back(t1.data() + i * r);
              q1.push_back(y1.data() + i * n_out), q2.push_back(y2.data() + i * n_out);
            }
            lowrank_b_ref(F.f, tp.data(), q1.data(), nx, n_out, j0, n_out);
            lowrank_b_avx2(F.f, tp.data(), q2.data(), nx, n_out, j0, n_out);
            CHECK(std::memcmp(y1.data(), y2.data(), y1.size() * 4) == 0);
            if (avx512) {
              auto y3 = randv(static_cast<size_t>(nx * n_out), 4);
              std::vector<float*> q3;
              for (int64_t i = 0; i < nx; ++i) q3.push_back(y3.data() + i * n_out);
              lowrank_b_avx512(F.f, tp.data(), q3.data(), nx, n_out, j0, n_out);
              CHECK(std::memcmp(y1.data(), y3.data(), y1.size() * 4) == 0);
            }
            const auto y0 = randv(static_cast<size_t>(nx * n_out), 4);
            CHECK(y1[0] == y0[0] && y1[static_cast<size_t>(j0 - 1)] == y0[static_cast<size_t>(j0 - 1)] &&
                  y1[static_cast<size_t>(j0)] != y0[static_cast<size_t>(j0)]);  // only [j0, n_out) was written
          }
        }
      }
}

// The delta's add (y + u·scale, product and sum each rounded): the SIMD versions per lane equal the
// scalar loop, tails included; an fma there would differ in the last bit of many elements.
TEST(lowrank_add_scaled_simd_equals_scalar_bitwise) {
  if (!cpu_supports(Isa::Avx2)) {
    std::printf("  (no AVX2 here: skipped)\n");
    return;
  }
  for (const int64_t n : {1, 7, 8, 15, 16, 17, 33, 256, 5632 + 5}) {
    const auto u = randv(static_cast<size_t>(n), 11), y0 = randv(static_cast<size_t>(n), 12);
    auto ref = y0, v2 = y0, v5 = y0, fused = y0;
    const float scale = 0.3f;  // not a power of two: the product rounds
    lowrank_add_scaled_ref(ref.data(), u.data(), n, scale);
    lowrank_add_scaled_avx2(v2.data(), u.data(), n, scale);
    CHECK(std::memcmp(ref.data(), v2.data(), ref.size() * 4) == 0);
    if (cpu_supports(Isa::Avx512)) {
      v5.push_back(123.0f);  // the masked tail must not write past n
      lowrank_add_scaled_avx512(v5.data(), u.data(), n, scale);
      CHECK(std::memcmp(ref.data(), v5.data(), ref.size() * 4) == 0);
      CHECK(v5.back() == 123.0f);
    }
    for (int64_t j = 0; j < n; ++j)
      fused[static_cast<size_t>(j)] = std::fma(u[static_cast<size_t>(j)], scale, y0[static_cast<size_t>(j)]);
    if (n >= 256) CHECK(std::memcmp(ref.data(), fused.data(), ref.size() * 4) != 0);  // the test can tell
  }
}

TEST(lowrank_reference_matches_double_precision_product) {
  for (LowRankType type : {LowRankType::F16, LowRankType::Q8_0}) {
    const int64_t r = 16, n_in = 64, n_out = 64;
    Factors F = make_factors(r, n_in, n_out, type, 0.5f, 9);
    const auto x = randv(static_cast<size_t>(n_in), 10);
    std::vector<float> t(static_cast<size_t>(r));
    const float* xp = x.data();
    float* tp = t.data();
    lowrank_a_ref(F.f, &xp, 1, n_in, 0, r, &tp);
    auto y = randv(static_cast<size_t>(n_out), 11);
    const auto y0 = y;
    const float* tc = t.data();
    float* yp = y.data();
    lowrank_b_ref(F.f, &tc, &yp, 1, n_out, 0, n_out);
    double worst = 0;
    for (int64_t j = 0; j < n_out; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < r; ++k) {
        double tk = 0;
        for (int64_t i = 0; i < n_in; ++i)
          tk += static_cast<double>(F.a[static_cast<size_t>(k * n_in + i)]) * x[static_cast<size_t>(i)];
        acc += tk * F.bt[static_cast<size_t>(k * n_out + j)];
      }
      worst = std::max(worst, std::fabs(y0[static_cast<size_t>(j)] + 0.5 * acc - y[static_cast<size_t>(j)]));
    }
    std::printf("  %s: max |ref - double| = %.3g\n", type == LowRankType::Q8_0 ? "q8_0" : "f16", worst);
    CHECK(worst < 1e-5);
  }
}

// Three adapters (f16, q8_0, f32) over 10 interleaved rows (and rows with none): every row equals that row alone
// through its own adapter, with 1 and 3 threads.
TEST(lowrank_apply_rows_independent_of_groups_and_threads) {
  const int64_t n_in = 96, n_out = 224, rows = 10;
  Factors F[3] = {make_factors(4, n_in, n_out, LowRankType::F16, 1.0f, 1),
                  make_factors(8, n_in, n_out, LowRankType::Q8_0, 0.25f, 2),
                  make_factors(64, n_in, n_out, LowRankType::F32, 2.0f, 3)};
  const int which[rows] = {0, 1, 2, -1, 0, 0, 2, 1, -1, 0};
  const auto x = randv(static_cast<size_t>(rows * n_in), 5);
  const auto y0 = randv(static_cast<size_t>(rows * (n_out + 5)), 6);  // ldy > n_out
  const int64_t ldy = n_out + 5;
  std::vector<int64_t> idx[3];
  for (int64_t i = 0; i < rows; ++i)
    if (which[i] >= 0) idx[which[i]].push_back(i);
  for (int threads : {1, 3}) {
    ThreadPool pool(threads);
    auto y = y0;
    LowRankGroup gs[3];
    for (int g = 0; g < 3; ++g) gs[g] = {F[g].f, idx[g].data(), static_cast<int64_t>(idx[g].size())};
    lowrank_apply(gs, 3, x.data(), n_in, y.data(), ldy, n_out, pool);
    for (int64_t i = 0; i < rows; ++i) {
      std::vector<float> alone(y0.begin() + i * ldy, y0.begin() + (i + 1) * ldy);
      if (which[i] >= 0) {
        const int64_t zero = 0;
        LowRankGroup one{F[which[i]].f, &zero, 1};
        ThreadPool p1(1);
        lowrank_apply(&one, 1, x.data() + i * n_in, n_in, alone.data(), ldy, n_out, p1);
      }
      CHECK(std::memcmp(alone.data(), y.data() + i * ldy, static_cast<size_t>(ldy) * 4) == 0);
      // the update mattered where there is an adapter, and nothing past n_out was written
      if (which[i] >= 0) CHECK(std::fabs(alone[0] - y0[static_cast<size_t>(i * ldy)]) > 0);
      CHECK(y[static_cast<size_t>(i * ldy + n_out)] == y0[static_cast<size_t>(i * ldy + n_out)]);
    }
  }
}
