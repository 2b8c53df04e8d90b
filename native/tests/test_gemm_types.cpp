// GEMM tests of the weight types added after the first seven (Q4_1, Q5_0, Q5_1, IQ4_NL, Q5_K,
// Q3_K, Q2_K, IQ4_XS), beyond the shared ones of test_matmul.cpp (batch invariance, ISAs bit-identical,
// vec_dot_ref tolerance), which list these types too:
// - exact integer sums: with every f16/f32 scale 1.0 (sub-block scales, mins and weight bytes
//   random) and small activations, every partial sum is an integer below 2^24, so every table's
//   GEMM, packed or not, must return exactly vec_dot_ref's value; this checks each kernel's unpacking
//   of nibbles, fifth/third bits, grids and scales on arbitrary bytes;
// - the packed layout written by each ISA's packer equals the scalar packer's bytes.
#include <cstring>
#include <random>
#include <vector>

#include "gemm_test_util.h"
#include "quant/gemm.h"
#include "quant/gemm_impl.h"
#include "quant/quant.h"
#include "quant/quant_impl.h"
#include "testing.h"

using namespace llmserve;
using llmserve::quant::KernelTable;

namespace {

using Bytes = std::vector<uint8_t>;

const GgmlType kNewTypes[] = {GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::IQ4_NL,
                              GgmlType::Q5_K, GgmlType::Q3_K, GgmlType::Q2_K, GgmlType::IQ4_XS};

std::vector<const KernelTable*> all_tables() {
  std::vector<const KernelTable*> v = {&quant::ref_kernels()};
  if (auto* t = quant::avx2_kernels()) v.push_back(t);
  if (auto* t = quant::avx_vnni_kernels()) v.push_back(t);
  if (auto* t = quant::avx512_kernels()) v.push_back(t);
  return v;
}

void put16(uint8_t* p, float v) {
  const uint16_t h = fp32_to_fp16(v);
  std::memcpy(p, &h, 2);
}

// Byte offsets of a block's f16 scale fields set to `one` (d, and m / dmin where the type has one).
std::vector<std::pair<size_t, float>> scale_fields(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_1:
    case GgmlType::Q5_1: return {{0, 1.0f}, {2, -3.0f}};  // d, m
    case GgmlType::Q5_0:
    case GgmlType::IQ4_NL:
    case GgmlType::IQ4_XS: return {{0, 1.0f}};
    case GgmlType::Q5_K: return {{0, 1.0f}, {2, 1.0f}};    // d, dmin
    case GgmlType::Q2_K: return {{80, 1.0f}, {82, 1.0f}};  // d, dmin
    case GgmlType::Q3_K: return {{108, 1.0f}};
    default: return {};
  }
}

// Prepared activation row (gemm_impl.h layout) from quantized blocks, written independently of
// gemm_prepare_act.
Bytes prepared_from_blocks(GgmlType wt, const Bytes& xq, int64_t n_in) {
  const GgmlType vt = type_traits(wt).vec_dot_type;
  Bytes p(gemm_act_row_bytes(wt, n_in), 0);
  const int64_t nb = n_in / 32;
  if (vt == GgmlType::Q8_K) {
    std::memcpy(p.data(), xq.data(), xq.size());
    gemm_test::put_q8_K_sums32(xq.data(), n_in / 256, p.data() + xq.size());
  } else if (vt == GgmlType::Q8_0) {
    const auto* b = reinterpret_cast<const quant::BlockQ8_0*>(xq.data());
    for (int64_t i = 0; i < nb; ++i) {
      std::memcpy(p.data() + 32 * i, b[i].qs, 32);
      int32_t s = 0;
      for (int j = 0; j < 32; ++j) s += b[i].qs[j];
      const float d = fp16_to_fp32(b[i].d);
      const int32_t c4 = -8 * s, c128 = -128 * s;
      std::memcpy(p.data() + nb * 32 + 4 * i, &d, 4);
      std::memcpy(p.data() + nb * 36 + 4 * i, &c4, 4);
      std::memcpy(p.data() + nb * 40 + 4 * i, &c128, 4);
    }
  } else {  // Q8_1
    const auto* b = reinterpret_cast<const quant::BlockQ8_1*>(xq.data());
    for (int64_t i = 0; i < nb; ++i) {
      std::memcpy(p.data() + 32 * i, b[i].qs, 32);
      const float d = fp16_to_fp32(b[i].d), s = fp16_to_fp32(b[i].s);
      std::memcpy(p.data() + nb * 32 + 4 * i, &d, 4);
      std::memcpy(p.data() + nb * 36 + 4 * i, &s, 4);
    }
  }
  return p;
}

// A token's activation blocks with d = 1 and values in [-lim, lim] (s / bsums consistent).
Bytes small_activation(GgmlType vt, int64_t n_in, int lim, std::mt19937& rng) {
  Bytes q(row_size(vt, n_in), 0);
  auto rnd = [&] { return static_cast<int8_t>(static_cast<int>(rng() % (2 * lim + 1)) - lim); };
  if (vt == GgmlType::Q8_K) {
    auto* b = reinterpret_cast<quant::BlockQ8_K*>(q.data());
    for (int64_t i = 0; i < n_in / 256; ++i) {
      b[i].d = 1.0f;
      for (int j = 0; j < 256; ++j) b[i].qs[j] = rnd();
      for (int g = 0; g < 16; ++g) {
        int s = 0;
        for (int l = 0; l < 16; ++l) s += b[i].qs[16 * g + l];
        b[i].bsums[g] = static_cast<int16_t>(s);
      }
    }
  } else if (vt == GgmlType::Q8_0) {
    auto* b = reinterpret_cast<quant::BlockQ8_0*>(q.data());
    for (int64_t i = 0; i < n_in / 32; ++i) {
      put16(reinterpret_cast<uint8_t*>(&b[i].d), 1.0f);
      for (int j = 0; j < 32; ++j) b[i].qs[j] = rnd();
    }
  } else {
    auto* b = reinterpret_cast<quant::BlockQ8_1*>(q.data());
    for (int64_t i = 0; i < n_in / 32; ++i) {
      put16(reinterpret_cast<uint8_t*>(&b[i].d), 1.0f);
      int s = 0;
      for (int j = 0; j < 32; ++j) s += (b[i].qs[j] = rnd());
      put16(reinterpret_cast<uint8_t*>(&b[i].s), static_cast<float>(s));  // |s| <= 2048: exact
    }
  }
  return q;
}

}  // namespace

TEST(gemm_new_types_exact_integer_sums_equal_vec_dot_ref) {
  std::mt19937 rng(11);
  for (GgmlType t : kNewTypes) {
    if (!gemm_supported(t)) continue;
    const GgmlType vt = type_traits(t).vec_dot_type;
    const int64_t bs = type_traits(t).block_size, nb = bs == 32 ? 7 : 3, n_in = nb * bs, n_out = 37, n = 11;
    const size_t rb = row_size(t, n_in), ts = type_traits(t).type_size;
    Bytes w(rb * n_out);
    for (auto& b : w) b = static_cast<uint8_t>(rng());
    for (int64_t r = 0; r < n_out; ++r)
      for (int64_t b = 0; b < nb; ++b)
        for (auto [off, v] : scale_fields(t)) put16(w.data() + r * rb + b * ts + off, v);
    // Activation magnitudes keep every partial sum of vec_dot_ref below 2^24.
    const int lim = t == GgmlType::Q4_1 || t == GgmlType::Q5_1 ? 60 : bs == 32 ? 127 : t == GgmlType::IQ4_XS ? 2 : 8;
    std::vector<Bytes> xq;
    Bytes act;
    const size_t stride = gemm_act_row_bytes(t, n_in);
    for (int64_t k = 0; k < n; ++k) {
      xq.push_back(small_activation(vt, n_in, lim, rng));
      const Bytes p = prepared_from_blocks(t, xq.back(), n_in);
      act.insert(act.end(), p.begin(), p.end());
    }
    Bytes packed(gemm_packed_bytes(t, n_in, n_out));
    gemm_pack(t, w.data(), rb, n_in, n_out, packed.data());
    for (const KernelTable* k : all_tables()) {
      int bad = 0;
      for (const uint8_t* pk : {static_cast<const uint8_t*>(nullptr), static_cast<const uint8_t*>(packed.data())}) {
        std::vector<float> y(n * n_out, NAN);
        GemmArgs a;
        a.type = t;
        a.n_in = n_in;
        a.w = w.data();
        a.row_bytes = rb;
        a.packed = pk;
        a.r0 = 0;
        a.r1 = n_out;
        a.act = act.data();
        a.act_stride = stride;
        a.n = n;
        a.y = y.data();
        a.ldy = n_out;
        k->gemm[quant::idx(t)](a);
        for (int64_t tok = 0; tok < n; ++tok)
          for (int64_t r = 0; r < n_out; ++r)
            bad += y[tok * n_out + r] != vec_dot_ref(t, n_in, w.data() + r * rb, xq[tok].data());
      }
      if (bad) std::fprintf(stderr, "  %s exact %s: %d outputs differ\n", k->isa, type_traits(t).name, bad);
      CHECK_EQ(bad, 0);
    }
  }
}

TEST(gemm_new_types_packers_write_the_reference_bytes) {
  std::mt19937 rng(13);
  for (GgmlType t : kNewTypes) {
    const int64_t nb = 3, n_in = nb * type_traits(t).block_size;
    const size_t rb = row_size(t, n_in);
    Bytes w(rb * 16);
    for (auto& b : w) b = static_cast<uint8_t>(rng());
    const size_t bytes = quant::gemm_pack_record_bytes(t) * nb;
    CHECK(bytes > 0);
    for (int nr : {16, 11}) {
      Bytes want(bytes, 0x11);
      quant::gemm_pack_group_ref(t, w.data(), rb, nr, nb, want.data());
      for (const KernelTable* k : all_tables()) {
        Bytes got(bytes, 0x22);
        k->pack_group(t, w.data(), rb, nr, nb, got.data());
        if (got != want) std::fprintf(stderr, "  %s pack %s rows=%d differs\n", k->isa, type_traits(t).name, nr);
        CHECK(got == want);
      }
    }
  }
}

TEST(gemm_prepare_act_q8_K_rows_carry_the_32_element_sums) {
  // The prepared Q8_K row is quantize_row's blocks followed by each sub-block's 32-element sum
  // (gemm_impl.h), which the Q4_K / Q5_K kernels read for their min terms.
  std::mt19937 rng(17);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::IQ4_XS}) {
    const int64_t n_in = 3 * 256;
    std::vector<float> x(n_in);
    for (auto& v : x) v = nd(rng);
    x[5] = 40.0f;  // a block whose largest value maps to -128 (quantize_row's iscale = -128 / max)
    Bytes xq(row_size(GgmlType::Q8_K, n_in));
    quantize_row(GgmlType::Q8_K, x.data(), xq.data(), n_in);
    const Bytes want = prepared_from_blocks(t, xq, n_in);
    CHECK_EQ(want.size(), gemm_act_row_bytes(t, n_in));
    Bytes got(want.size(), 0xAB);
    gemm_prepare_act(t, x.data(), n_in, got.data());
    CHECK(got == want);
  }
}
