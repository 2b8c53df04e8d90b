// The f32 training products (train/train_gemm.h): the AVX2 and AVX-512 kernels and their blocked,
// threaded drivers against the scalar reference loops of train_ops.cpp, bit for bit, on odd shapes
// that cross every block edge (tokens past 64, outputs past 64, columns past 512 with a k % 8 tail,
// rows past 16 and 256), with zero coefficients (the references skip them), on 1 and 2 threads.
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "isa/isa.h"
#include "testing.h"
#include "train/train_gemm.h"
#include "train/train_ops.h"

using namespace llmserve;

namespace {

std::vector<float> rnd(size_t n, uint32_t seed, double zero_share = 0.0) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<float> v(n);
  for (float& x : v) x = u(g) < zero_share ? 0.0f : d(g);
  return v;
}

bool same(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Shape {
  int64_t n, k, m;
};

// The three products at `tier` (0: the reference loops) on `pool`.
struct Out {
  std::vector<float> nt, nn, tn;
};
Out products(int tier, const Shape& s, ThreadPool& pool) {
  train_gemm_set_tier_for_testing(tier);
  const auto x = rnd(static_cast<size_t>(s.n * s.k), 1), w = rnd(static_cast<size_t>(s.m * s.k), 2);
  const auto dy = rnd(static_cast<size_t>(s.n * s.m), 3, 0.2);  // a fifth zeros: the skipped terms
  Out o;
  o.nt.assign(static_cast<size_t>(s.n * s.m), -1.0f);
  mm_nt(x.data(), w.data(), s.n, s.k, s.m, o.nt.data(), pool);
  o.nn = rnd(static_cast<size_t>(s.n * s.k), 4);  // accumulates into what is there
  mm_nn_acc(dy.data(), w.data(), s.n, s.m, s.k, o.nn.data(), pool);
  o.tn = rnd(static_cast<size_t>(s.m * s.k), 5);
  mm_tn_acc(dy.data(), x.data(), s.n, s.m, s.k, o.tn.data(), pool);
  train_gemm_set_tier_for_testing(-1);
  return o;
}

}  // namespace

TEST(train_gemm_simd_equals_scalar_reference_bitwise) {
  // The tiers this run may use (LLMSERVE_FORCE_SCALAR / LLMSERVE_KERNELS cap them).
  if (active_isa() < Isa::Avx2) {
    std::printf("  (no AVX2 kernels in this run: skipped)\n");
    return;
  }
  std::vector<int> tiers{1};
  if (active_isa() >= Isa::Avx512) tiers.push_back(2);
  ThreadPool p1(1), p2(2);
  for (const Shape& s : {Shape{1, 1, 1}, Shape{3, 7, 5}, Shape{5, 8, 3}, Shape{70, 523, 67}, Shape{37, 19, 300},
                         Shape{9, 1031, 13}, Shape{66, 64, 129}}) {
    const Out ref = products(0, s, p1);
    for (int tier : tiers)
      for (ThreadPool* p : {&p1, &p2}) {
        const Out got = products(tier, s, *p);
        CHECK(same(got.nt, ref.nt));
        CHECK(same(got.nn, ref.nn));
        CHECK(same(got.tn, ref.tn));
        if (!same(got.nt, ref.nt) || !same(got.nn, ref.nn) || !same(got.tn, ref.tn))
          std::printf("  tier %d, %d threads, n %lld k %lld m %lld differs\n", tier, p->size(),
                      static_cast<long long>(s.n), static_cast<long long>(s.k), static_cast<long long>(s.m));
      }
  }
}

TEST(train_gemm_tier_follows_the_cpu_and_the_override) {
  train_gemm_set_tier_for_testing(-1);
  CHECK(train_gemm_tier() == static_cast<int>(active_isa()));
  train_gemm_set_tier_for_testing(0);
  CHECK(train_gemm_tier() == 0);
  train_gemm_set_tier_for_testing(5);  // never above what the CPU has
  CHECK(train_gemm_tier() == static_cast<int>(active_isa()));
  train_gemm_set_tier_for_testing(-1);
}
