// model/lowrank's Q8_0Gemm and Q4_0Gemm passes (llama.cpp's q8_0 / q4_0 adapter arithmetic, run by
// quant/gemm): the result equals the formula written out here from quantize_row and integer block
// sums, bit for bit, on every kernel tier, packed or raw rows, in any grouping, next to f16 groups,
// with 1 or 3 threads; and LoraAdapter::add (two matmul() calls) gives the same bits for a q8_0 or
// q4_0 adapter file.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "lora/lora.h"
#include "lora_test_util.h"
#include "model/lowrank.h"
#include "quant/gemm.h"
#include "quant/quant.h"
#include "quant/quant_impl.h"
#include "testing.h"
#include "threadpool/thread_pool.h"

using namespace llmserve;

namespace {

std::vector<float> randv(size_t n, uint32_t seed, float sd) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

// Rows of n values each in type t (q8_0 or q4_0).
std::vector<uint8_t> q_rows(GgmlType t, const std::vector<float>& v, int64_t rows, int64_t n) {
  const size_t rb = row_size(t, n);
  std::vector<uint8_t> q(static_cast<size_t>(rows) * rb);
  for (int64_t i = 0; i < rows; ++i)
    quantize_row_weights(t, v.data() + i * n, q.data() + static_cast<size_t>(i) * rb, n);
  return q;
}

// Weight j of block b as its integer: q8_0 the byte, q4_0 the nibble minus 8 (j < 16 low nibble of
// qs[j], else high nibble of qs[j - 16]).
int wq(GgmlType t, const uint8_t* row, int64_t b, int j) {
  if (t == GgmlType::Q8_0) return reinterpret_cast<const quant::BlockQ8_0*>(row)[b].qs[j];
  const quant::BlockQ4_0& q = reinterpret_cast<const quant::BlockQ4_0*>(row)[b];
  return (j < 16 ? (q.qs[j] & 0x0F) : (q.qs[j - 16] >> 4)) - 8;
}
float wd(GgmlType t, const uint8_t* row, int64_t b) {
  return fp16_to_fp32(t == GgmlType::Q8_0 ? reinterpret_cast<const quant::BlockQ8_0*>(row)[b].d
                                          : reinterpret_cast<const quant::BlockQ4_0*>(row)[b].d);
}

// dot of a q8_0 / q4_0 weight row with x quantized to q8_0 (ggml's quantize_row): per block an
// exact integer sum, then acc = fma(float(sumi), d_w * d_x, acc) in block order (quant/gemm.h).
float q_dot(GgmlType t, const uint8_t* w_row, const float* x, int64_t n) {
  std::vector<quant::BlockQ8_0> xq(static_cast<size_t>(n / 32));
  quantize_row(GgmlType::Q8_0, x, xq.data(), n);
  float acc = 0.0f;
  for (int64_t b = 0; b < n / 32; ++b) {
    int32_t sumi = 0;
    for (int j = 0; j < 32; ++j) sumi += wq(t, w_row, b, j) * xq[static_cast<size_t>(b)].qs[j];
    acc = std::fma(static_cast<float>(sumi), wd(t, w_row, b) * fp16_to_fp32(xq[static_cast<size_t>(b)].d), acc);
  }
  return acc;
}

struct GemmFactors {
  std::vector<uint8_t> a, b, a_packed, b_packed;  // A [r, n_in], B [n_out, r]
  LowRankFactors f;
  GgmlType t = GgmlType::Q8_0;
  int64_t r = 0, n_in = 0, n_out = 0;
};

GemmFactors make(int64_t r, int64_t n_in, int64_t n_out, float scale, uint32_t seed, bool packed,
                 GgmlType t = GgmlType::Q8_0) {
  GemmFactors F;
  F.t = t, F.r = r, F.n_in = n_in, F.n_out = n_out;
  F.a = q_rows(t, randv(static_cast<size_t>(r * n_in), seed, 0.05f), r, n_in);
  F.b = q_rows(t, randv(static_cast<size_t>(n_out * r), seed + 1, 0.05f), n_out, r);
  F.f.type = t == GgmlType::Q4_0 ? LowRankType::Q4_0Gemm : LowRankType::Q8_0Gemm, F.f.r = r, F.f.scale = scale;
  F.f.a = F.a.data(), F.f.b = F.b.data();
  if (packed) {
    F.a_packed.resize(gemm_packed_bytes(t, n_in, r));
    gemm_pack(t, F.a.data(), row_size(t, n_in), n_in, r, F.a_packed.data());
    F.b_packed.resize(gemm_packed_bytes(t, r, n_out));
    gemm_pack(t, F.b.data(), row_size(t, r), r, n_out, F.b_packed.data());
    F.f.a_packed = F.a_packed.data(), F.f.b_packed = F.b_packed.data();
    F.f.a = nullptr, F.f.b = nullptr;  // the packed copies alone must do
  }
  return F;
}

// y_row += scale * B q8(A q8(x_row)), as llama.cpp's q8_0 / q4_0 adapter path computes it.
void reference(const GemmFactors& F, const float* x, float* y) {
  std::vector<float> t(static_cast<size_t>(F.r));
  const size_t ra = row_size(F.t, F.n_in), rb = row_size(F.t, F.r);
  for (int64_t k = 0; k < F.r; ++k) t[static_cast<size_t>(k)] = q_dot(F.t, F.a.data() + k * ra, x, F.n_in);
  for (int64_t j = 0; j < F.n_out; ++j) {
    const float u = q_dot(F.t, F.b.data() + j * rb, t.data(), F.r);
    y[j] = y[j] + u * F.f.scale;
  }
}

}  // namespace

TEST(lowrank_q8_0_gemm_equals_llama_cpp_q8_0_formula_bitwise) {
  // n_out 200: a partial last 16-row group of B; n_in 160: 5 blocks. Rows 0..12, some without an
  // adapter, interleaved over a Q8_0Gemm adapter of rank 32, a Q8_0Gemm or Q4_0Gemm adapter of rank
  // 64 and one f16 adapter.
  const int64_t n_in = 160, n_out = 200, rows = 13, ldy = n_out + 3;
  const int which[rows] = {0, 1, 2, -1, 0, 1, 1, 2, 0, -1, 1, 0, 0};
  const auto x = randv(static_cast<size_t>(rows * n_in), 11, 1.0f);
  const auto y0 = randv(static_cast<size_t>(rows * ldy), 12, 1.0f);
  // The f16 group: A [4, n_in], Bt [4, n_out].
  std::vector<uint16_t> ah(4 * n_in), bth(4 * n_out);
  for (size_t i = 0; i < ah.size(); ++i) ah[i] = fp32_to_fp16(randv(ah.size(), 13, 0.05f)[i]);
  for (size_t i = 0; i < bth.size(); ++i) bth[i] = fp32_to_fp16(randv(bth.size(), 14, 0.05f)[i]);
  LowRankFactors f16;
  f16.a = ah.data(), f16.bt = bth.data(), f16.type = LowRankType::F16, f16.r = 4, f16.scale = 0.5f;
  int checked = 0;
  for (GgmlType t1 : {GgmlType::Q8_0, GgmlType::Q4_0})
    for (bool packed : {true, false})
      for (bool scalar : {false, true}) {
        GemmFactors G0 = make(32, n_in, n_out, 0.75f, 21, packed), G1 = make(64, n_in, n_out, 2.0f, 23, packed, t1);
        lowrank_force_scalar_for_testing(scalar);
        for (int threads : {1, 3}) {
          ThreadPool pool(threads);
          std::vector<int64_t> idx[3];
          for (int64_t i = 0; i < rows; ++i)
            if (which[i] >= 0) idx[which[i]].push_back(i);
          LowRankGroup gs[3] = {{G0.f, idx[0].data(), static_cast<int64_t>(idx[0].size())},
                                {G1.f, idx[1].data(), static_cast<int64_t>(idx[1].size())},
                                {f16, idx[2].data(), static_cast<int64_t>(idx[2].size())}};
          auto y = y0;
          lowrank_apply(gs, 3, x.data(), n_in, y.data(), ldy, n_out, pool);
          for (int64_t i = 0; i < rows; ++i) {
            std::vector<float> want(y0.begin() + i * ldy, y0.begin() + (i + 1) * ldy);
            if (which[i] == 0 || which[i] == 1) reference(which[i] == 0 ? G0 : G1, x.data() + i * n_in, want.data());
            if (which[i] == 2) {  // the f16 group is checked by test_lowrank; here: it ran, alone
              const int64_t zero = 0;
              LowRankGroup one{f16, &zero, 1};
              ThreadPool p1(1);
              lowrank_apply(&one, 1, x.data() + i * n_in, n_in, want.data(), ldy, n_out, p1);
            }
            CHECK(std::memcmp(want.data(), y.data() + i * ldy, static_cast<size_t>(ldy) * 4) == 0);
            if (which[i] >= 0) CHECK(want[5] != y0[static_cast<size_t>(i * ldy + 5)]);  // the delta is there
            ++checked;
          }
        }
        lowrank_force_scalar_for_testing(false);
      }
  CHECK(checked == 2 * 2 * 2 * 2 * rows);
}

// lowrank_elem reads a q4_0 factor's element i as dequantize_row does (nibble order, d, minus 8).
TEST(lowrank_elem_q4_0_equals_dequantize_row) {
  const int64_t n = 96;
  const auto v = randv(static_cast<size_t>(n), 41, 1.0f);
  const auto q = q_rows(GgmlType::Q4_0, v, 1, n);
  std::vector<float> want(static_cast<size_t>(n));
  dequantize_row(GgmlType::Q4_0, q.data(), want.data(), n);
  int differ = 0;
  for (int64_t i = 0; i < n; ++i) {
    CHECK(lowrank_elem(q.data(), LowRankType::Q4_0Gemm, i) == want[static_cast<size_t>(i)]);
    differ += want[static_cast<size_t>(i)] != want[static_cast<size_t>((i + 16) % n)];
  }
  CHECK(differ > n / 2);  // the values are not all alike, so a wrong nibble shows
}

// Many rows of one adapter (a prefill chunk): gemm's multi-token tiles give each row its own bits.
TEST(lowrank_q8_0_gemm_prefill_rows_equal_decode_rows) {
  const int64_t n_in = 256, n_out = 96, rows = 70;
  GemmFactors G = make(64, n_in, n_out, 1.5f, 31, true);
  const auto x = randv(static_cast<size_t>(rows * n_in), 32, 1.0f);
  const auto y0 = randv(static_cast<size_t>(rows * n_out), 33, 1.0f);
  std::vector<int64_t> all(rows);
  for (int64_t i = 0; i < rows; ++i) all[static_cast<size_t>(i)] = i;
  ThreadPool pool(2);
  auto y = y0;
  LowRankGroup g{G.f, all.data(), rows};
  lowrank_apply(&g, 1, x.data(), n_in, y.data(), n_out, n_out, pool);
  for (int64_t i = 0; i < rows; ++i) {
    std::vector<float> want(y0.begin() + i * n_out, y0.begin() + (i + 1) * n_out);
    reference(G, x.data() + i * n_in, want.data());
    CHECK(std::memcmp(want.data(), y.data() + i * n_out, static_cast<size_t>(n_out) * 4) == 0);
  }
}

// A q8_0 or q4_0 adapter file's pairs run the Q8_0Gemm / Q4_0Gemm passes (packed at load);
// LoraAdapter::add, two matmul() calls over the same rows (ggml's mul_mat, scale, add), gives the
// same bits.
TEST(lora_q8_0_and_q4_0_files_batched_equal_add_bitwise) {
  using namespace lora_test;
  const std::string base = base_path("llama");
  auto m = load_model(base);
  CHECK(m != nullptr);
  if (!m) return;
  int pairs = 0;
  ThreadPool pool(2);
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0}) {
    SynthLoraOptions o;
    o.rank = 32, o.alpha = 48.0f, o.seed = 5, o.type = t, o.targets = kAllTargets;
    std::unique_ptr<LoraAdapter> ad;
    CHECK(LoraAdapter::load(adapter_path(base, std::string("gemm_") + type_traits(t).name, o), *m, 1.0f, &ad).is_ok());
    if (!ad) continue;
    for (Proj p : {Proj::Q, Proj::V, Proj::Gate, Proj::Down}) {
      LowRankFactors f;
      CHECK(ad->low_rank(1, p, &f) && f.a_packed && f.b_packed &&
            f.type == (t == GgmlType::Q4_0 ? LowRankType::Q4_0Gemm : LowRankType::Q8_0Gemm));
      const LoraPair* pr = ad->pair(1, p);
      if (!pr) continue;
      const int64_t n_in = pr->a.n_in, n_out = pr->b.n_out, rows = 5;
      const auto x = randv(static_cast<size_t>(rows * n_in), 40 + pairs, 1.0f);
      const auto y0 = randv(static_cast<size_t>(rows * n_out), 50 + pairs, 1.0f);
      auto via_add = y0, batched = y0;
      ad->add(1, p, x.data(), rows, via_add.data(), n_out, pool);
      const int64_t pick[2] = {1, 3};  // two of the rows, as one segment
      LowRankGroup g{f, pick, 2};
      lowrank_apply(&g, 1, x.data(), n_in, batched.data(), n_out, n_out, pool);
      for (int64_t i : pick)
        CHECK(std::memcmp(via_add.data() + i * n_out, batched.data() + i * n_out, static_cast<size_t>(n_out) * 4) == 0);
      CHECK(std::memcmp(y0.data(), batched.data(), static_cast<size_t>(n_out) * 4) == 0);  // row 0 untouched
      CHECK(via_add[static_cast<size_t>(n_out + 1)] != y0[static_cast<size_t>(n_out + 1)]);
      ++pairs;
    }
  }
  CHECK(pairs == 8);
}

// Projections that share x (Q, K, V) in one lowrank_apply_jobs call: fused into one region when all
// groups are Q8_0Gemm and there are enough of them, else one lowrank_apply per job; every row
// equals the written-out formula either way.
TEST(lowrank_apply_jobs_fused_equals_the_formula) {
  // Big enough that the pool's worker takes tasks too (it reads the caller's task list).
  const int64_t n_in = 1024, rows = 6;
  const int64_t n_out[3] = {1024, 256, 1000};
  const auto x = randv(static_cast<size_t>(rows * n_in), 61, 1.0f);
  int fused_cases = 0;
  for (int n_adapters : {1, 3}) {  // 3 jobs x 1 group: 3 tasks (< 2 x 2 threads: per job); x 3: fused
    std::vector<GemmFactors> F;
    for (int j = 0; j < 3; ++j)
      for (int a = 0; a < n_adapters; ++a)
        F.push_back(make(a % 2 ? 32 : 64, n_in, n_out[j], 0.5f + static_cast<float>(a), 70 + 10 * j + a, true));
    std::vector<int64_t> idx[3];  // row i -> adapter i % n_adapters
    for (int64_t i = 0; i < rows; ++i) idx[i % n_adapters].push_back(i);
    std::vector<std::vector<float>> y0(3), y(3);
    std::vector<LowRankGroup> gs[3];
    LowRankJob jobs[3];
    for (int j = 0; j < 3; ++j) {
      y0[static_cast<size_t>(j)] = randv(static_cast<size_t>(rows * n_out[j]), 80 + j, 1.0f);
      y[static_cast<size_t>(j)] = y0[static_cast<size_t>(j)];
      for (int a = 0; a < n_adapters; ++a)
        gs[j].push_back(
            {F[static_cast<size_t>(j * n_adapters + a)].f, idx[a].data(), static_cast<int64_t>(idx[a].size())});
      jobs[j] = {gs[j].data(), n_adapters, x.data(), n_in, y[static_cast<size_t>(j)].data(), n_out[j], n_out[j]};
    }
    ThreadPool pool(2);
    // Repeated: the worker, awake after the first calls, takes tasks too.
    for (int rep = 0; rep < 20; ++rep) {
      for (int j = 0; j < 3; ++j) y[static_cast<size_t>(j)] = y0[static_cast<size_t>(j)];
      lowrank_apply_jobs(jobs, 3, pool);
    }
    fused_cases += 3 * n_adapters >= 2 * pool.size();
    for (int j = 0; j < 3; ++j)
      for (int64_t i = 0; i < rows; ++i) {
        std::vector<float> want(y0[static_cast<size_t>(j)].begin() + i * n_out[j],
                                y0[static_cast<size_t>(j)].begin() + (i + 1) * n_out[j]);
        reference(F[static_cast<size_t>(j * n_adapters + i % n_adapters)], x.data() + i * n_in, want.data());
        CHECK(std::memcmp(want.data(), y[static_cast<size_t>(j)].data() + i * n_out[j],
                          static_cast<size_t>(n_out[j]) * 4) == 0);
      }
  }
  CHECK(fused_cases == 1);
}

// The caller's q8_0 rows of x (matmul's PreparedQ8): a group of consecutive rows reads them, a
// scattered group quantizes its own. Given rows made from another x2 tell which was read: the
// consecutive group's result follows x2, the scattered one's x. Two-pass (with an f16 group next
// to them) and whole-group (fused jobs) schedules alike.
TEST(lowrank_q8_0_gemm_reads_the_callers_prepared_rows) {
  const int64_t n_in = 256, n_out = 96, rows = 8;
  const auto x = randv(static_cast<size_t>(rows * n_in), 91, 1.0f), x2 = randv(x.size(), 92, 1.0f);
  const size_t stride = gemm_act_row_bytes(GgmlType::Q8_0, n_in);
  std::vector<uint8_t> xq2(stride * rows);
  for (int64_t i = 0; i < rows; ++i)
    gemm_prepare_act(GgmlType::Q8_0, x2.data() + i * n_in, n_in, xq2.data() + i * stride);
  const auto y0 = randv(static_cast<size_t>(rows * n_out), 93, 1.0f);
  const std::vector<int64_t> consecutive = {2, 3, 4}, scattered = {0, 5, 7}, single = {6};
  std::vector<uint16_t> ah(4 * n_in, fp32_to_fp16(0.01f)), bth(4 * n_out, fp32_to_fp16(0.02f));
  LowRankFactors f16;
  f16.a = ah.data(), f16.bt = bth.data(), f16.type = LowRankType::F16, f16.r = 4, f16.scale = 1.0f;
  const int64_t f16_row = 1;
  GemmFactors G0 = make(32, n_in, n_out, 0.75f, 94, true), G1 = make(64, n_in, n_out, 1.5f, 95, true),
              G2 = make(32, n_in, n_out, 0.5f, 96, true);
  for (bool with_f16 : {true, false}) {  // two-pass schedule; 3 gemm groups on 1 thread: whole groups
    std::vector<LowRankGroup> gs = {
        {G0.f, consecutive.data(), 3}, {G1.f, scattered.data(), 3}, {G2.f, single.data(), 1}};
    if (with_f16) gs.push_back({f16, &f16_row, 1});
    ThreadPool pool(with_f16 ? 2 : 1);
    auto y = y0;
    lowrank_apply(gs.data(), static_cast<int64_t>(gs.size()), x.data(), n_in, y.data(), n_out, n_out, pool, xq2.data(),
                  stride);
    for (int64_t i = 0; i < rows; ++i) {
      if (i == f16_row) continue;
      std::vector<float> want(y0.begin() + i * n_out, y0.begin() + (i + 1) * n_out);
      const bool in0 = i >= 2 && i <= 4, in2 = i == 6;
      const GemmFactors* F = in0 ? &G0 : in2 ? &G2 : (i == 0 || i == 5 || i == 7) ? &G1 : nullptr;
      if (F) reference(*F, (F == &G1 ? x : x2).data() + i * n_in, want.data());
      CHECK(std::memcmp(want.data(), y.data() + i * n_out, static_cast<size_t>(n_out) * 4) == 0);
    }
  }
  // The jobs' fused schedule (2 jobs x 3 gemm groups >= 2 per thread), each job with the rows.
  std::vector<LowRankGroup> gs = {{G0.f, consecutive.data(), 3}, {G1.f, scattered.data(), 3}, {G2.f, single.data(), 1}};
  auto ya = y0, yb = y0;
  LowRankJob jobs[2] = {{gs.data(), 3, x.data(), n_in, ya.data(), n_out, n_out, xq2.data(), stride},
                        {gs.data(), 3, x.data(), n_in, yb.data(), n_out, n_out, xq2.data(), stride}};
  ThreadPool pool(2);
  lowrank_apply_jobs(jobs, 2, pool);
  for (int64_t i = 0; i < rows; ++i) {
    if (i == f16_row) continue;
    std::vector<float> want(y0.begin() + i * n_out, y0.begin() + (i + 1) * n_out);
    const GemmFactors* F = (i >= 2 && i <= 4) ? &G0 : i == 6 ? &G2 : &G1;
    reference(*F, (F == &G1 ? x : x2).data() + i * n_in, want.data());
    CHECK(std::memcmp(want.data(), ya.data() + i * n_out, static_cast<size_t>(n_out) * 4) == 0);
    CHECK(std::memcmp(want.data(), yb.data() + i * n_out, static_cast<size_t>(n_out) * 4) == 0);
  }
}
