// Tests for the batched GEMM (native/core/quant/gemm*.cpp) and matmul (native/core/model/matmul.cpp):
// - batch invariance: every (token, row) output is bit-identical for n = 1, 2, 3, 7, 33, 64 tokens,
//   any token offset, any row range / tile split, packed or unpacked weights, 1-3 threads;
// - quantized types: scalar, AVX2 and AVX-512 GEMMs agree bit for bit (same canonical formula),
//   and equal vec_dot_ref exactly when every partial sum is an exact integer; Q8_0 equals an
//   independent scalar spelling of its canonical formula (one fma per block) bit for bit;
// - all types: within 1e-5 * sum|w_i x_i| of vec_dot_ref on the same converted activations;
// - prepared activations hold exactly quantize_row(vec_dot_type)'s values;
// - LLMSERVE_FORCE_SCALAR=1: matmul goes through the scalar GEMM and still agrees.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gemm_test_util.h"
#include "model/matmul.h"
#include "quant/gemm.h"
#include "quant/gemm_impl.h"
#include "quant/quant.h"
#include "quant/quant_impl.h"
#include "testing.h"

using namespace llmserve;
using llmserve::quant::KernelTable;

namespace {

using Bytes = std::vector<uint8_t>;

const GgmlType kGemmTypes[] = {GgmlType::Q4_0,   GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::F16,
                               GgmlType::BF16,   GgmlType::F32,  GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                               GgmlType::IQ4_NL, GgmlType::Q5_K, GgmlType::Q3_K, GgmlType::Q2_K, GgmlType::IQ4_XS};

bool is_quantized(GgmlType t) { return type_traits(t).block_size > 1; }

// Gaussian activations with a few large outliers (as real hidden states have).
std::vector<float> act_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  for (size_t i = 0; i < n; i += 97) v[i] *= 20.0f;
  return v;
}

struct Matrix {
  GgmlType type;
  int64_t n_in, n_out;
  size_t row_bytes;
  Bytes data;
  const uint8_t* row(int64_t r) const { return data.data() + r * row_bytes; }
};

Matrix random_matrix(GgmlType t, int64_t n_in, int64_t n_out, uint32_t seed) {
  Matrix m{t, n_in, n_out, row_size(t, n_in), {}};
  m.data.resize(m.row_bytes * static_cast<size_t>(n_out));
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<float> row(static_cast<size_t>(n_in));
  for (int64_t r = 0; r < n_out; ++r) {
    for (auto& v : row) v = dist(rng);
    quantize_row_ref(t, row.data(), m.data.data() + r * m.row_bytes, n_in);
  }
  return m;
}

struct Acts {
  size_t stride;
  Bytes data;             // prepared rows
  std::vector<Bytes> xq;  // the same tokens as quantize_row_ref(vec_dot_type) rows
  std::vector<std::vector<float>> xf;
};

Acts make_acts(GgmlType wt, int64_t n_in, int64_t n, uint32_t seed) {
  Acts a;
  a.stride = gemm_act_row_bytes(wt, n_in);
  a.data.assign(a.stride * static_cast<size_t>(n), 0xCD);
  const GgmlType vt = type_traits(wt).vec_dot_type;
  for (int64_t t = 0; t < n; ++t) {
    a.xf.push_back(act_values(static_cast<size_t>(n_in), seed + static_cast<uint32_t>(t)));
    gemm_prepare_act(wt, a.xf.back().data(), n_in, a.data.data() + t * a.stride);
    Bytes q(row_size(vt, n_in));
    quantize_row_ref(vt, a.xf.back().data(), q.data(), n_in);
    a.xq.push_back(std::move(q));
  }
  return a;
}

// Output [n, n_out] of one GEMM call over tokens [t0, t0 + n) and rows [r0, r1) with table k
// (nullptr: the dispatched gemm()); outputs outside the rows stay NaN.
std::vector<float> run_gemm(const KernelTable* k, const Matrix& w, const Acts& acts, int64_t t0, int64_t n, int64_t r0,
                            int64_t r1, const uint8_t* packed = nullptr, const float* bias = nullptr) {
  std::vector<float> y(static_cast<size_t>(n * w.n_out), NAN);
  GemmArgs a;
  a.type = w.type;
  a.n_in = w.n_in;
  a.w = w.data.data();
  a.row_bytes = w.row_bytes;
  a.packed = packed;
  a.r0 = r0;
  a.r1 = r1;
  a.act = acts.data.data() + t0 * acts.stride;
  a.act_stride = acts.stride;
  a.n = n;
  a.bias = bias;
  a.y = y.data();
  a.ldy = w.n_out;
  if (k) k->gemm[quant::idx(w.type)](a);
  else gemm(a);
  return y;
}

std::vector<const KernelTable*> all_tables() {
  std::vector<const KernelTable*> v = {&quant::ref_kernels()};
  if (auto* t = quant::avx2_kernels()) v.push_back(t);
  if (auto* t = quant::avx_vnni_kernels()) v.push_back(t);
  if (auto* t = quant::avx512_kernels()) v.push_back(t);
  return v;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

int64_t n_in_for(GgmlType t, int variant) {
  const int64_t bs = type_traits(type_traits(t).vec_dot_type).block_size;
  if (bs == 1) return variant == 0 ? 100 : variant == 1 ? 257 : 512;
  return bs * (variant == 0 ? 1 : variant == 1 ? 3 : 8);
}

double abs_dot(GgmlType t, const uint8_t* w, const Bytes& xq, int64_t n) {
  std::vector<float> a(static_cast<size_t>(n)), b(static_cast<size_t>(n));
  dequantize_row_ref(t, w, a.data(), n);
  dequantize_row_ref(type_traits(t).vec_dot_type, xq.data(), b.data(), n);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::fabs(static_cast<double>(a[i]) * b[i]);
  return s;
}

}  // namespace

TEST(gemm_prepared_activations_hold_vec_dot_type_values) {
  for (GgmlType t : kGemmTypes) {
    const int64_t n_in = n_in_for(t, 2);
    Acts a = make_acts(t, n_in, 3, 5);
    CHECK(a.stride % 64 == 0);
    const GgmlType vt = type_traits(t).vec_dot_type;
    for (int tok = 0; tok < 3; ++tok) {
      const uint8_t* p = a.data.data() + tok * a.stride;
      std::vector<float> want(static_cast<size_t>(n_in));
      dequantize_row_ref(vt, a.xq[tok].data(), want.data(), n_in);
      if (vt == GgmlType::Q8_0) {
        const int64_t nb = n_in / 32;
        const auto* blk = reinterpret_cast<const quant::BlockQ8_0*>(a.xq[tok].data());
        bool ok = true;
        for (int64_t b = 0; b < nb; ++b) {
          ok &= std::memcmp(p + 32 * b, blk[b].qs, 32) == 0;
          float d;
          int32_t c4, s = 0;
          std::memcpy(&d, p + nb * 32 + 4 * b, 4);
          std::memcpy(&c4, p + nb * 36 + 4 * b, 4);
          for (int j = 0; j < 32; ++j) s += blk[b].qs[j];
          int32_t c128;
          std::memcpy(&c128, p + nb * 40 + 4 * b, 4);
          ok &= d == fp16_to_fp32(blk[b].d) && c4 == -8 * s && c128 == -128 * s;
        }
        // Zero padding up to the 64-byte stride.
        for (size_t i = static_cast<size_t>(nb) * 44; i < a.stride; ++i) ok &= p[i] == 0;
        CHECK(ok);
      } else if (vt == GgmlType::Q8_1) {
        const int64_t nb = n_in / 32;
        const auto* blk = reinterpret_cast<const quant::BlockQ8_1*>(a.xq[tok].data());
        bool ok = true;
        for (int64_t b = 0; b < nb; ++b) {
          float d, sx;
          std::memcpy(&d, p + nb * 32 + 4 * b, 4);
          std::memcpy(&sx, p + nb * 36 + 4 * b, 4);
          ok &= std::memcmp(p + 32 * b, blk[b].qs, 32) == 0 && d == fp16_to_fp32(blk[b].d) &&
                sx == fp16_to_fp32(blk[b].s);
        }
        for (size_t i = static_cast<size_t>(nb) * 40; i < a.stride; ++i) ok &= p[i] == 0;
        CHECK(ok);
      } else if (vt == GgmlType::Q8_K) {
        CHECK(std::memcmp(p, a.xq[tok].data(), a.xq[tok].size()) == 0);
      } else {
        CHECK(std::memcmp(p, want.data(), want.size() * 4) == 0);
      }
    }
  }
}

TEST(gemm_matches_vec_dot_ref_within_tolerance) {
  // Integer block sums are exact; f32 accumulation order differs from vec_dot_ref (FMA per block,
  // or 16/8-lane accumulators for float weights): 1e-5 relative to sum|w_i x_i|.
  for (const KernelTable* k : all_tables()) {
    for (GgmlType t : kGemmTypes) {
      for (int v = 0; v < 3; ++v) {
        const int64_t n_in = n_in_for(t, v), n_out = 37, n = 5;
        Matrix w = random_matrix(t, n_in, n_out, 100 + v);
        Acts acts = make_acts(t, n_in, n, 200 + v);
        std::vector<float> y = run_gemm(k, w, acts, 0, n, 0, n_out);
        int bad = 0;
        for (int64_t tok = 0; tok < n; ++tok)
          for (int64_t r = 0; r < n_out; ++r) {
            const float ref = vec_dot_ref(t, n_in, w.row(r), acts.xq[tok].data());
            const double tol = 1e-5 * abs_dot(t, w.row(r), acts.xq[tok], n_in) + 1e-6;
            if (!(std::fabs(double(y[tok * n_out + r]) - ref) <= tol)) ++bad;
          }
        if (bad)
          std::fprintf(stderr, "  %s gemm %s n_in=%lld: %d outputs off\n", k->isa, type_traits(t).name, (long long)n_in,
                       bad);
        CHECK_EQ(bad, 0);
      }
    }
  }
}

TEST(gemm_batch_invariance_bit_exact) {
  // For each table: output (token, row) from a call over n tokens starting anywhere equals the
  // n = 1 result bit for bit; so do row sub-ranges and the packed layout. The n = 1 results
  // themselves equal the scalar reference (vec_dot_ref + bias, within the tolerance of
  // gemm_matches_vec_dot_ref_within_tolerance), so a GEMM that is wrong the same way at every
  // batch size fails here too.
  const int64_t kN[] = {1, 2, 3, 7, 33, 64};
  for (const KernelTable* k : all_tables()) {
    for (GgmlType t : kGemmTypes) {
      const int64_t n_in = n_in_for(t, 1), n_out = 37, total = 70;
      Matrix w = random_matrix(t, n_in, n_out, 7);
      Acts acts = make_acts(t, n_in, total, 9);
      std::vector<float> bias(n_out);
      for (int64_t r = 0; r < n_out; ++r) bias[r] = 0.01f * static_cast<float>(r) - 0.1f;
      // Reference: each token alone.
      std::vector<float> single(static_cast<size_t>(total * n_out));
      int off_ref = 0;
      for (int64_t tok = 0; tok < total; ++tok) {
        std::vector<float> y = run_gemm(k, w, acts, tok, 1, 0, n_out, nullptr, bias.data());
        std::memcpy(&single[tok * n_out], y.data(), n_out * 4);
        for (int64_t r = 0; r < n_out; ++r) {
          const double ref = double(vec_dot_ref(t, n_in, w.row(r), acts.xq[tok].data())) + bias[r];
          const double tol = 1e-5 * abs_dot(t, w.row(r), acts.xq[tok], n_in) + 1e-6 + 1e-7 * std::fabs(ref);
          if (!(std::fabs(double(y[r]) - ref) <= tol)) ++off_ref;
        }
      }
      if (off_ref)
        std::fprintf(stderr, "  %s %s: %d n=1 outputs off the scalar reference\n", k->isa, type_traits(t).name,
                     off_ref);
      CHECK_EQ(off_ref, 0);
      Bytes packed;
      if (gemm_packable(t)) {
        packed.resize(gemm_packed_bytes(t, n_in, n_out));
        gemm_pack(t, w.data.data(), w.row_bytes, n_in, n_out, packed.data());
      }
      int bad = 0;
      for (int64_t n : kN) {
        for (int64_t t0 : {int64_t(0), total - n}) {
          std::vector<float> y = run_gemm(k, w, acts, t0, n, 0, n_out, nullptr, bias.data());
          // Two row ranges split at a group boundary, and one at an odd row (unpacked only).
          std::vector<float> y2 = run_gemm(k, w, acts, t0, n, 0, 16, nullptr, bias.data());
          std::vector<float> y3 = run_gemm(k, w, acts, t0, n, 16, n_out, nullptr, bias.data());
          std::vector<float> y4 = run_gemm(k, w, acts, t0, n, 5, 22, nullptr, bias.data());
          std::vector<float> yp;
          if (!packed.empty()) yp = run_gemm(k, w, acts, t0, n, 16, n_out, packed.data(), bias.data());
          for (int64_t tok = 0; tok < n; ++tok)
            for (int64_t r = 0; r < n_out; ++r) {
              const float want = single[(t0 + tok) * n_out + r];
              const size_t i = static_cast<size_t>(tok * n_out + r);
              if (!same_bits(y[i], want)) ++bad;
              if (!same_bits(r < 16 ? y2[i] : y3[i], want)) ++bad;
              if (r >= 5 && r < 22 && !same_bits(y4[i], want)) ++bad;
              if (r < 5 || r >= 22) bad += !std::isnan(y4[i]);
              if (!yp.empty() && r >= 16 && !same_bits(yp[i], want)) ++bad;
            }
        }
      }
      if (bad) std::fprintf(stderr, "  %s %s: %d outputs differ from n=1\n", k->isa, type_traits(t).name, bad);
      CHECK_EQ(bad, 0);
    }
  }
}

TEST(gemm_many_tokens_tiled_path_bit_exact) {
  // Over 64 tokens the SIMD drivers sweep batches of packed groups with blocks of tokens sized to
  // L2 (a block is ~128-256 KiB of activations: 28-56 tokens of a 4096-wide row). Every (token,
  // row) must still be the n = 1 result, packed or not, for every block boundary and the last
  // partial block and group.
  for (const KernelTable* k : all_tables()) {
    for (GgmlType t : {GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K}) {
      const int64_t n_in = 4096, n_out = 45, n = 131;
      Matrix w = random_matrix(t, n_in, n_out, 11);
      Acts acts = make_acts(t, n_in, n, 13);
      Bytes packed(gemm_packed_bytes(t, n_in, n_out));
      gemm_pack(t, w.data.data(), w.row_bytes, n_in, n_out, packed.data());
      const std::vector<float> y = run_gemm(k, w, acts, 0, n, 0, n_out);
      const std::vector<float> yp = run_gemm(k, w, acts, 0, n, 0, n_out, packed.data());
      int bad = 0;
      for (int64_t tok = 0; tok < n; tok += 1) {
        const std::vector<float> one = run_gemm(k, w, acts, tok, 1, 0, n_out);
        for (int64_t r = 0; r < n_out; ++r) {
          const size_t i = static_cast<size_t>(tok * n_out + r);
          bad += !same_bits(y[i], one[static_cast<size_t>(r)]);
          bad += !same_bits(yp[i], one[static_cast<size_t>(r)]);
        }
      }
      if (bad) std::fprintf(stderr, "  %s %s: %d outputs differ from n=1\n", k->isa, type_traits(t).name, bad);
      CHECK_EQ(bad, 0);
    }
  }
}

TEST(gemm_quantized_types_identical_across_isas) {
  // Same canonical formula (exact int sums, fma per block in block order) on every ISA.
  const auto tables = all_tables();
  for (GgmlType t : kGemmTypes) {
    if (!is_quantized(t)) continue;
    const int64_t n_in = n_in_for(t, 2), n_out = 40, n = 9;
    Matrix w = random_matrix(t, n_in, n_out, 31);
    Acts acts = make_acts(t, n_in, n, 32);
    std::vector<float> ref = run_gemm(tables[0], w, acts, 0, n, 0, n_out);
    for (size_t i = 1; i < tables.size(); ++i) {
      std::vector<float> y = run_gemm(tables[i], w, acts, 0, n, 0, n_out);
      int bad = 0;
      for (size_t j = 0; j < y.size(); ++j) bad += !same_bits(y[j], ref[j]);
      if (bad) std::fprintf(stderr, "  %s vs scalar %s: %d outputs differ\n", tables[i]->isa, type_traits(t).name, bad);
      CHECK_EQ(bad, 0);
    }
  }
}

TEST(gemm_q8_0_equals_its_canonical_formula) {
  // Q8_0 canonical order, written out here from the raw blocks and quantize_row_ref's activation
  // blocks (not the prepared rows): per block sumi = exact sum of w x over 32 elements, then
  // acc = fma(float(sumi), f32(d_w * d_x), acc) in block order; y = acc + bias. Every ISA's GEMM,
  // packed or not, must give these bits for odd shapes, 1..33 tokens and raw weight bytes -128.
  std::mt19937 rng(17);
  for (int64_t nb : {int64_t(1), int64_t(3), int64_t(37)}) {
    const int64_t n_in = 32 * nb, n_out = 37, total = 33;
    Matrix w = random_matrix(GgmlType::Q8_0, n_in, n_out, 90 + static_cast<uint32_t>(nb));
    for (int64_t r = 0; r < n_out; ++r)
      for (int64_t b = 0; b < nb; ++b) {
        auto* blk = reinterpret_cast<quant::BlockQ8_0*>(w.data.data() + r * w.row_bytes) + b;
        for (int j = 0; j < 32; ++j)
          if (rng() % 5 == 0) blk->qs[j] = -128;
          else if (rng() % 7 == 0) blk->qs[j] = 127;
      }
    Acts acts = make_acts(GgmlType::Q8_0, n_in, total, 93 + static_cast<uint32_t>(nb));
    std::vector<float> bias(n_out);
    for (int64_t r = 0; r < n_out; ++r) bias[r] = 0.03f * static_cast<float>(r) - 0.5f;
    std::vector<float> want(static_cast<size_t>(total * n_out));
    for (int64_t t = 0; t < total; ++t)
      for (int64_t r = 0; r < n_out; ++r) {
        const auto* wb = reinterpret_cast<const quant::BlockQ8_0*>(w.row(r));
        const auto* xb = reinterpret_cast<const quant::BlockQ8_0*>(acts.xq[t].data());
        float acc = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
          int32_t sumi = 0;
          for (int j = 0; j < 32; ++j) sumi += int32_t(wb[b].qs[j]) * int32_t(xb[b].qs[j]);
          const float d = fp16_to_fp32(wb[b].d) * fp16_to_fp32(xb[b].d);
          acc = std::fma(static_cast<float>(sumi), d, acc);
        }
        want[t * n_out + r] = acc + bias[r];
      }
    Bytes packed(gemm_packed_bytes(GgmlType::Q8_0, n_in, n_out));
    gemm_pack(GgmlType::Q8_0, w.data.data(), w.row_bytes, n_in, n_out, packed.data());
    for (const KernelTable* k : all_tables()) {
      int bad = 0;
      for (int64_t n : {int64_t(1), int64_t(2), int64_t(5), int64_t(9), int64_t(13), total}) {
        const int64_t t0 = total - n;
        std::vector<float> y = run_gemm(k, w, acts, t0, n, 0, n_out, nullptr, bias.data());
        std::vector<float> yp = run_gemm(k, w, acts, t0, n, 0, n_out, packed.data(), bias.data());
        for (int64_t t = 0; t < n; ++t)
          for (int64_t r = 0; r < n_out; ++r) {
            const float v = want[(t0 + t) * n_out + r];
            bad += !same_bits(y[t * n_out + r], v) + !same_bits(yp[t * n_out + r], v);
          }
      }
      if (bad)
        std::fprintf(stderr, "  %s q8_0 nb=%lld vs canonical formula: %d outputs differ\n", k->isa, (long long)nb, bad);
      CHECK_EQ(bad, 0);
    }
  }
}

TEST(gemm_exact_integer_sums_equal_vec_dot_ref) {
  // Scales of 1.0 and small activations: every partial sum is an integer below 2^24, so the GEMM
  // must return exactly vec_dot_ref's value (checks the integer block sums of every kernel,
  // including raw weight bytes quantize_row would never produce, e.g. Q8_0 -128, Q6_K scale -128).
  std::mt19937 rng(3);
  for (const KernelTable* k : all_tables()) {
    for (GgmlType t : {GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K}) {
      const GgmlType vt = type_traits(t).vec_dot_type;
      const int64_t nb = 3, n_in = nb * type_traits(t).block_size, n_out = 19, n = 3;
      Matrix w{t, n_in, n_out, row_size(t, n_in), {}};
      w.data.resize(w.row_bytes * n_out);
      for (auto& b : w.data) b = static_cast<uint8_t>(rng());
      const uint16_t one = fp32_to_fp16(1.0f);
      for (int64_t r = 0; r < n_out; ++r)
        for (int64_t b = 0; b < nb; ++b) {
          uint8_t* blk = w.data.data() + r * w.row_bytes + b * type_traits(t).type_size;
          if (t == GgmlType::Q4_0 || t == GgmlType::Q8_0 || t == GgmlType::Q4_K) std::memcpy(blk, &one, 2);
          if (t == GgmlType::Q4_K) std::memcpy(blk + 2, &one, 2);
          if (t == GgmlType::Q6_K) std::memcpy(blk + 208, &one, 2);
        }
      Acts acts;
      acts.stride = gemm_act_row_bytes(t, n_in);
      acts.data.assign(acts.stride * n, 0);
      const int lim = t == GgmlType::Q6_K ? 2 : t == GgmlType::Q4_K ? 8 : 127;
      for (int64_t tok = 0; tok < n; ++tok) {
        Bytes q(row_size(vt, n_in), 0);
        uint8_t* p = acts.data.data() + tok * acts.stride;
        for (int64_t b = 0; b < nb; ++b) {
          if (vt == GgmlType::Q8_0) {
            auto* blk = reinterpret_cast<quant::BlockQ8_0*>(q.data()) + b;
            blk->d = one;
            int32_t s = 0;
            for (int j = 0; j < 32; ++j) {
              blk->qs[j] = static_cast<int8_t>(static_cast<int>(rng() % (2 * lim + 1)) - lim);
              s += blk->qs[j];
            }
            std::memcpy(p + 32 * b, blk->qs, 32);
            const float d = 1.0f;
            const int32_t c4 = -8 * s, c128 = -128 * s;
            std::memcpy(p + nb * 32 + 4 * b, &d, 4);
            std::memcpy(p + nb * 36 + 4 * b, &c4, 4);
            std::memcpy(p + nb * 40 + 4 * b, &c128, 4);
          } else {
            auto* blk = reinterpret_cast<quant::BlockQ8_K*>(q.data()) + b;
            blk->d = 1.0f;
            for (int j = 0; j < 256; ++j)
              blk->qs[j] = static_cast<int8_t>(static_cast<int>(rng() % (2 * lim + 1)) - lim);
            for (int g = 0; g < 16; ++g) {
              int s = 0;
              for (int l = 0; l < 16; ++l) s += blk->qs[16 * g + l];
              blk->bsums[g] = static_cast<int16_t>(s);
            }
          }
        }
        if (vt == GgmlType::Q8_K) {
          std::memcpy(p, q.data(), q.size());
          gemm_test::put_q8_K_sums32(q.data(), nb, p + q.size());
        }
        acts.xq.push_back(q);
      }
      std::vector<float> y = run_gemm(k, w, acts, 0, n, 0, n_out);
      int bad = 0;
      for (int64_t tok = 0; tok < n; ++tok)
        for (int64_t r = 0; r < n_out; ++r)
          bad += y[tok * n_out + r] != vec_dot_ref(t, n_in, w.row(r), acts.xq[tok].data());
      if (bad) std::fprintf(stderr, "  %s exact %s: %d outputs differ\n", k->isa, type_traits(t).name, bad);
      CHECK_EQ(bad, 0);
    }
  }
}

TEST(gemm_simd_packers_write_the_reference_bytes) {
  // Full and partial groups, several blocks; every ISA's packer against gemm_pack_group_ref.
  for (GgmlType t : {GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K}) {
    const int64_t n_in = 3 * type_traits(t).block_size, nb = 3;
    Matrix w = random_matrix(t, n_in, 16, 77);
    // Raw bytes too (scales and values quantize_row would not produce).
    std::mt19937 rng(5);
    for (size_t i = 0; i < w.data.size() / 2; ++i) w.data[i] = static_cast<uint8_t>(rng());
    const size_t bytes = quant::gemm_pack_record_bytes(t) * nb;
    for (int nr : {16, 11}) {
      Bytes want(bytes, 0x11);
      quant::gemm_pack_group_ref(t, w.data.data(), w.row_bytes, nr, nb, want.data());
      for (const KernelTable* k : all_tables()) {
        Bytes got(bytes, 0x22);
        k->pack_group(t, w.data.data(), w.row_bytes, nr, nb, got.data());
        if (got != want) std::fprintf(stderr, "  %s pack %s rows=%d differs\n", k->isa, type_traits(t).name, nr);
        CHECK(got == want);
      }
    }
  }
}

TEST(gemm_rejects_bad_arguments_safely) {
  Matrix w = random_matrix(GgmlType::Q4_0, 64, 4, 1);
  Acts acts = make_acts(GgmlType::Q4_0, 64, 1, 1);
  std::vector<float> y(4, 7.0f);
  GemmArgs a;
  a.type = GgmlType::Q4_0;
  a.n_in = 48;  // not a multiple of 32
  a.w = w.data.data();
  a.row_bytes = w.row_bytes;
  a.r0 = 0;
  a.r1 = 4;
  a.act = acts.data.data();
  a.act_stride = acts.stride;
  a.n = 1;
  a.y = y.data();
  a.ldy = 4;
  gemm(a);
  CHECK(y[0] == 7.0f);
  a.n_in = 64;
  a.type = static_cast<GgmlType>(39);  // mxfp4: known (block 32) but unsupported
  gemm(a);
  CHECK(y[0] == 7.0f);
  CHECK_EQ(gemm_act_row_bytes(a.type, 64), size_t(0));
  CHECK_EQ(gemm_packed_bytes(GgmlType::F16, 64, 4), size_t(0));
}

namespace {

struct MatmulRun {
  std::vector<float> y0, y1;
};

// Two tasks (different types sharing or not sharing a vec_dot type) over n tokens.
MatmulRun run_matmul(const MatrixView& a, const MatrixView& b, const float* bias_a, const std::vector<float>& x,
                     int64_t n, int threads) {
  ThreadPool pool(threads);
  MatmulRun out;
  out.y0.assign(static_cast<size_t>(n * a.n_out), NAN);
  out.y1.assign(static_cast<size_t>(n * b.n_out), NAN);
  MatmulTask tasks[2] = {{&a, bias_a, out.y0.data(), a.n_out}, {&b, nullptr, out.y1.data(), b.n_out}};
  matmul(tasks, 2, x.data(), n, pool);
  return out;
}

MatrixView view(const Matrix& m) {
  MatrixView v;
  v.data = m.data.data();
  v.type = m.type;
  v.n_in = m.n_in;
  v.n_out = m.n_out;
  v.row_bytes = m.row_bytes;
  return v;
}

}  // namespace

TEST(matmul_batch_and_thread_invariance_bit_exact) {
  const int64_t n_in = 512, total = 40;
  const std::pair<GgmlType, GgmlType> pairs[] = {{GgmlType::Q4_0, GgmlType::Q8_0},  {GgmlType::Q4_K, GgmlType::Q6_K},
                                                 {GgmlType::F16, GgmlType::Q4_0},   {GgmlType::BF16, GgmlType::F32},
                                                 {GgmlType::Q4_1, GgmlType::Q5_K},  // Q8_1 and Q8_K rows
                                                 {GgmlType::IQ4_NL, GgmlType::Q5_1}};
  for (auto [ta, tb] : pairs) {
    Matrix ma = random_matrix(ta, n_in, 53, 11), mb = random_matrix(tb, n_in, 130, 12);
    MatrixView va = view(ma), vb = view(mb);
    std::vector<float> bias(53);
    for (size_t i = 0; i < bias.size(); ++i) bias[i] = 0.5f - 0.02f * static_cast<float>(i);
    std::vector<float> x;
    for (int64_t t = 0; t < total; ++t) {
      std::vector<float> r = act_values(n_in, 300 + static_cast<uint32_t>(t));
      x.insert(x.end(), r.begin(), r.end());
    }
    // Every token alone, one thread.
    std::vector<float> s0, s1;
    for (int64_t t = 0; t < total; ++t) {
      std::vector<float> xt(x.begin() + t * n_in, x.begin() + (t + 1) * n_in);
      MatmulRun r = run_matmul(va, vb, bias.data(), xt, 1, 1);
      s0.insert(s0.end(), r.y0.begin(), r.y0.end());
      s1.insert(s1.end(), r.y1.begin(), r.y1.end());
    }
    int bad = 0;
    for (int threads : {1, 2, 3}) {
      for (int64_t n : {int64_t(1), int64_t(7), total}) {
        std::vector<float> xs(x.end() - n * n_in, x.end());  // the last n tokens
        MatmulRun r = run_matmul(va, vb, bias.data(), xs, n, threads);
        const int64_t t0 = total - n;
        for (int64_t t = 0; t < n; ++t) {
          for (int64_t i = 0; i < 53; ++i) bad += !same_bits(r.y0[t * 53 + i], s0[(t0 + t) * 53 + i]);
          for (int64_t i = 0; i < 130; ++i) bad += !same_bits(r.y1[t * 130 + i], s1[(t0 + t) * 130 + i]);
        }
      }
    }
    // With load-time packed copies on the views: still the same bits.
    {
      MatrixView pa = va, pb = vb;
      std::vector<uint8_t> bufa(packed_bytes(va) + 64), bufb(packed_bytes(vb) + 64);
      auto aligned = [](std::vector<uint8_t>& b) {
        return b.data() + (64 - reinterpret_cast<uintptr_t>(b.data()) % 64) % 64;
      };
      CHECK(pack_matrix(&pa, aligned(bufa)) == gemm_packable(ta));
      CHECK(pack_matrix(&pb, aligned(bufb)) == gemm_packable(tb));
      CHECK((pa.packed != nullptr) == gemm_packable(ta));
      MatmulRun r = run_matmul(pa, pb, bias.data(), x, total, 2);
      for (int64_t i = 0; i < total * 53; ++i) bad += !same_bits(r.y0[i], s0[i]);
      for (int64_t i = 0; i < total * 130; ++i) bad += !same_bits(r.y1[i], s1[i]);
    }
    if (bad)
      std::fprintf(stderr, "  matmul %s+%s: %d outputs differ\n", type_traits(ta).name, type_traits(tb).name, bad);
    CHECK_EQ(bad, 0);
    // And the bias really was added (against vec_dot_ref, within tolerance).
    Acts acts = make_acts(ta, n_in, 1, 0);
    std::vector<float> x0(x.begin(), x.begin() + n_in);
    Bytes xq(row_size(type_traits(ta).vec_dot_type, n_in));
    quantize_row_ref(type_traits(ta).vec_dot_type, x0.data(), xq.data(), n_in);
    const double want = vec_dot_ref(ta, n_in, ma.row(3), xq.data()) + bias[3];
    CHECK_NEAR(s0[3], want, 1e-5 * abs_dot(ta, ma.row(3), xq, n_in) + 1e-5);
  }
}

TEST(matmul_forced_scalar_agrees) {
  const char* prev = std::getenv("LLMSERVE_FORCE_SCALAR");
  const std::string saved = prev ? prev : "";
  const int64_t n_in = 512, n = 5;
  for (auto [ta, tb] : {std::pair{GgmlType::Q4_0, GgmlType::Q6_K}, std::pair{GgmlType::F16, GgmlType::Q4_K}}) {
    Matrix ma = random_matrix(ta, n_in, 33, 21), mb = random_matrix(tb, n_in, 20, 22);
    MatrixView va = view(ma), vb = view(mb);
    std::vector<float> x;
    for (int64_t t = 0; t < n; ++t) {
      std::vector<float> r = act_values(n_in, 400 + static_cast<uint32_t>(t));
      x.insert(x.end(), r.begin(), r.end());
    }
    unsetenv("LLMSERVE_FORCE_SCALAR");
    quant::reset_dispatch_for_testing();
    MatmulRun fast = run_matmul(va, vb, nullptr, x, n, 2);
    setenv("LLMSERVE_FORCE_SCALAR", "1", 1);
    quant::reset_dispatch_for_testing();
    CHECK(std::string(kernel_isa()) == "scalar");
    MatmulRun slow = run_matmul(va, vb, nullptr, x, n, 2);
    int bad = 0;
    for (size_t i = 0; i < fast.y0.size(); ++i) {
      if (is_quantized(ta)) bad += !same_bits(fast.y0[i], slow.y0[i]);
      else bad += !(std::fabs(fast.y0[i] - slow.y0[i]) <= 1e-4 * (1 + std::fabs(slow.y0[i])));
    }
    for (size_t i = 0; i < fast.y1.size(); ++i) bad += !same_bits(fast.y1[i], slow.y1[i]);
    if (bad)
      std::fprintf(stderr, "  forced scalar %s+%s: %d outputs differ\n", type_traits(ta).name, type_traits(tb).name,
                   bad);
    CHECK_EQ(bad, 0);
  }
  if (prev) setenv("LLMSERVE_FORCE_SCALAR", saved.c_str(), 1);
  else unsetenv("LLMSERVE_FORCE_SCALAR");
  quant::reset_dispatch_for_testing();
}

// matmul's q8 rows (what a LoRA delta on the same x reads next) are gemm_prepare_act(Q8_0)'s bytes,
// whether a task prepared them (Q4_0: the same vec_dot type) or matmul made them apart (Q4_K, F16),
// and the products keep their bits when they are asked for.
TEST(matmul_q8_rows_are_the_q8_0_gemm_activations) {
  const int64_t n_in = 256, n = 5;
  std::vector<float> x;
  for (int64_t t = 0; t < n; ++t) {
    std::vector<float> r = act_values(n_in, 900 + static_cast<uint32_t>(t));
    x.insert(x.end(), r.begin(), r.end());
  }
  const size_t stride = gemm_act_row_bytes(GgmlType::Q8_0, n_in);
  std::vector<uint8_t> want(stride * n);
  for (int64_t t = 0; t < n; ++t) gemm_prepare_act(GgmlType::Q8_0, x.data() + t * n_in, n_in, want.data() + t * stride);
  for (GgmlType wt : {GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::F16}) {
    Matrix m = random_matrix(wt, n_in, 40, 21);
    MatrixView v = view(m);
    ThreadPool pool(2);
    std::vector<float> y(static_cast<size_t>(n * 40)), y_plain(y.size());
    MatmulTask task{&v, nullptr, y.data(), 40};
    PreparedQ8 q8;
    matmul(&task, 1, x.data(), n, pool, &q8);
    CHECK(q8.data != nullptr);
    CHECK_EQ(q8.stride, stride);
    bool same = q8.data != nullptr;
    for (int64_t t = 0; same && t < n; ++t)
      same = std::memcmp(q8.data + t * q8.stride, want.data() + t * stride, stride) == 0;
    CHECK(same);
    task.y = y_plain.data();
    matmul(&task, 1, x.data(), n, pool);
    CHECK(std::memcmp(y.data(), y_plain.data(), y.size() * 4) == 0);
  }
  // Rows of 48 values hold no whole q8_0 blocks: nothing to give.
  Matrix m = random_matrix(GgmlType::F32, 48, 8, 22);
  MatrixView v = view(m);
  ThreadPool pool(1);
  std::vector<float> y(8);
  MatmulTask task{&v, nullptr, y.data(), 8};
  PreparedQ8 q8{reinterpret_cast<const uint8_t*>(&y), 1};
  matmul(&task, 1, x.data(), 1, pool, &q8);
  CHECK(q8.data == nullptr && q8.stride == 0);
}

// One token against packed matrices of 1-4 blocks per row (a rank-32/64 LoRA factor B [n_out, r]
// runs a loop of its own over the 16-row groups): every tier gives the scalar GEMM's bits, with a
// partial last group, from a group boundary inside the matrix, and with a bias (the general path).
TEST(gemm_one_token_few_blocks_packed_identical_across_isas) {
  const auto tables = all_tables();
  int checked = 0;
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::IQ4_NL, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q4_K,
                     GgmlType::Q6_K}) {
    for (int64_t nb : {1, 2, 3, 4, 5}) {
      const int64_t n_in = type_traits(t).block_size * nb, n_out = 200;  // 12 full groups and 8 rows
      Matrix w = random_matrix(t, n_in, n_out, 40 + static_cast<uint32_t>(nb));
      Bytes packed(gemm_packed_bytes(t, n_in, n_out));
      gemm_pack(t, w.data.data(), w.row_bytes, n_in, n_out, packed.data());
      Acts acts = make_acts(t, n_in, 1, 50 + static_cast<uint32_t>(nb));
      std::vector<float> bias(static_cast<size_t>(n_out));
      for (size_t i = 0; i < bias.size(); ++i) bias[i] = 0.01f * static_cast<float>(i);
      for (const float* b : {static_cast<const float*>(nullptr), static_cast<const float*>(bias.data())})
        for (int64_t r0 : {int64_t(0), int64_t(32)}) {
          const std::vector<float> ref = run_gemm(tables[0], w, acts, 0, 1, r0, n_out, nullptr, b);
          for (const KernelTable* k : tables) {
            const std::vector<float> y = run_gemm(k, w, acts, 0, 1, r0, n_out, packed.data(), b);
            int bad = 0;
            for (int64_t r = r0; r < n_out; ++r)
              bad += !same_bits(y[static_cast<size_t>(r)], ref[static_cast<size_t>(r)]);
            for (int64_t r = 0; r < r0; ++r) bad += !std::isnan(y[static_cast<size_t>(r)]);  // rows before r0 untouched
            if (bad)
              std::fprintf(stderr, "  %s %s nb %lld: %d outputs differ\n", k->isa, type_traits(t).name,
                           static_cast<long long>(nb), bad);
            CHECK_EQ(bad, 0);
            ++checked;
          }
        }
    }
  }
  CHECK(checked >= 7 * 5 * 2 * 2);
}

// Prefetcher::part<P>(b, j): a kernel that prefetches a record in P slices as it reads it must
// still fetch exactly block b's bytes (operator()(b)): slices in order, each starting where the
// last ended, whole lines from the block's start, none larger than ceil(step / P) rounded up to a
// line, and the last ending at the block's end (or at `bytes` for a short last block).
template <int P>
static int check_prefetch_slices(size_t bytes, int64_t nb) {
  const quant::Prefetcher pf(reinterpret_cast<const uint8_t*>(uintptr_t(1) << 20), bytes, nb);
  const size_t sub_max = (pf.step + P * 64 - 1) / (P * 64) * 64;
  int bad = 0;
  for (int64_t b = 0; b < nb; ++b) {
    const size_t begin = std::min(pf.step * static_cast<size_t>(b), bytes);
    const size_t end = std::min(pf.step * static_cast<size_t>(b + 1), bytes);
    size_t at = begin;
    for (int j = 0; j < P; ++j) {
      const auto [lo, hi] = pf.slice<P>(b, j);
      if (lo != at || hi < lo || hi - lo > sub_max) ++bad;
      if (lo < hi && (lo - begin) % 64 != 0) ++bad;
      at = hi;
    }
    if (at != end) ++bad;
  }
  return bad;
}

TEST(gemm_prefetch_slices_cover_each_block_exactly) {
  // Q4_K and Q6_K groups of 16 records (4096 wide), a record not a multiple of 64 bytes, a
  // range that ends inside its last block, one block.
  for (auto [bytes, nb] : {std::pair<size_t, int64_t>{quant::kPackQ4_K * 16, 16},
                           {quant::kPackQ6_K * 16, 16},
                           {2400 * 3, 3},
                           {1000, 3},
                           {100, 1},
                           {5000, 7}}) {
    CHECK_EQ(check_prefetch_slices<8>(bytes, nb), 0);
    CHECK_EQ(check_prefetch_slices<16>(bytes, nb), 0);
  }
  // The spread is real: a Q4_K record's 37 lines go out 5 per slice, not in one slice.
  const quant::Prefetcher pf(reinterpret_cast<const uint8_t*>(uintptr_t(1) << 20), quant::kPackQ4_K * 16, 16);
  const auto [lo, hi] = pf.slice<8>(3, 0);
  CHECK_EQ(hi - lo, size_t(320));
}
