// The 2:4 sparse format and kernels (model/sparse24.h), with f16 and q8_0 values: encode/decode
// round trip (exact for f16 values; decoded q8_0 values re-encode exactly), the AVX2 / AVX-512
// kernels bit-identical to the scalar reference on odd shapes, the reference close to a double dot
// of the decoded row, batch and thread invariance of the driver, and a whole model: a 2:4 file in
// the sparse format gives the logits of the dense f32 model with the same values.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "compress/prune.h"
#include "compress/quantize.h"
#include "gguf/gguf.h"
#include "isa/isa.h"
#include "kv/kv_cache.h"
#include "model/forward.h"
#include "model/matmul.h"
#include "model/sparse24.h"
#include "model_test_util.h"
#include "quant/gemm.h"
#include "quant/quant.h"
#include "synth/synth.h"
#include "testing.h"

using namespace llmserve;

namespace {

std::string tmp_path(const std::string& name) {
  return "/tmp/llmserve_test_sparse24_" + std::to_string(static_cast<long>(::getpid())) + "_" + name;
}

// A random 2:4 matrix (some groups with fewer than 2 non-zeros) as encoded rows; dense holds the
// values the format stores (f16-exact, or the q8_0 values decoded).
struct Encoded {
  GgmlType vt = GgmlType::F16;
  std::vector<uint8_t> vals;
  std::vector<uint8_t> idx;
  std::vector<float> dense;  // [n_out, n_in]
  Sparse24Matrix view(int64_t n_in, int64_t n_out) const { return {vals.data(), idx.data(), n_in, n_out, vt}; }
};

Encoded random_matrix(int64_t n_in, int64_t n_out, uint32_t seed, GgmlType vt = GgmlType::F16) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Encoded e;
  e.vt = vt;
  const size_t vb = sparse24_values_row_bytes(vt, n_in);
  const int64_t ib = sparse24_index_bytes_per_row(n_in);
  e.dense.assign(static_cast<size_t>(n_in * n_out), 0.0f);
  e.vals.resize(vb * static_cast<size_t>(n_out));
  e.idx.resize(static_cast<size_t>(ib * n_out));
  std::vector<float> scratch(static_cast<size_t>(n_in / 2));
  for (int64_t r = 0; r < n_out; ++r) {
    float* w = e.dense.data() + r * n_in;
    for (int64_t g = 0; g < n_in; g += 4) {
      const int a = static_cast<int>(rng() % 4), b = static_cast<int>(rng() % 4);  // b == a: one non-zero
      w[g + a] = fp16_to_fp32(fp32_to_fp16(nd(rng)));
      w[g + b] = fp16_to_fp32(fp32_to_fp16(nd(rng)));
    }
    CHECK(sparse24_encode_row(vt, w, n_in, e.vals.data() + static_cast<size_t>(r) * vb, e.idx.data() + r * ib,
                              scratch.data()));
    if (vt != GgmlType::F16)
      sparse24_decode_row(vt, e.vals.data() + static_cast<size_t>(r) * vb, e.idx.data() + r * ib, n_in, w);
  }
  return e;
}

std::vector<float> random_x(int64_t n, int64_t n_in, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<float> x(static_cast<size_t>(n * n_in));
  for (float& v : x) v = u(rng);
  return x;
}

}  // namespace

TEST(sparse24_round_trip_exact) {
  for (int64_t n_in : {4, 12, 64, 100}) {
    const Encoded e = random_matrix(n_in, 3, 7);
    std::vector<float> back(static_cast<size_t>(n_in));
    for (int64_t r = 0; r < 3; ++r) {
      sparse24_decode_row(GgmlType::F16, e.vals.data() + r * n_in,
                          e.idx.data() + r * sparse24_index_bytes_per_row(n_in), n_in, back.data());
      CHECK(std::memcmp(back.data(), e.dense.data() + r * n_in, static_cast<size_t>(n_in) * 4) == 0);
    }
  }
  // q8_0 values: the decoded row is 2:4 and encodes to bytes that decode to itself (not always the
  // same bytes: a kept value rounded to 0 may move to another zero position); each value is within
  // half a step of the original (d / 2, d = amax / 127 of its block of 32, rounded to f16).
  for (int64_t n_in : {64, 192}) {
    const Encoded e = random_matrix(n_in, 3, 8, GgmlType::Q8_0);
    const Encoded f = random_matrix(n_in, 3, 8);  // the same draws, f16 values
    const size_t vb = sparse24_values_row_bytes(GgmlType::Q8_0, n_in);
    CHECK_EQ(vb, static_cast<size_t>(n_in / 64 * 34));
    std::vector<uint8_t> v2(vb), i2(static_cast<size_t>(sparse24_index_bytes_per_row(n_in)));
    std::vector<float> scratch(static_cast<size_t>(n_in / 2)), back(static_cast<size_t>(n_in));
    for (int64_t r = 0; r < 3; ++r) {
      const float* w = e.dense.data() + r * n_in;
      CHECK(sparse24_encode_row(GgmlType::Q8_0, w, n_in, v2.data(), i2.data(), scratch.data()));
      sparse24_decode_row(GgmlType::Q8_0, v2.data(), i2.data(), n_in, back.data());
      CHECK(std::memcmp(back.data(), w, static_cast<size_t>(n_in) * 4) == 0);
      float amax = 0;
      for (int64_t j = 0; j < n_in; ++j) amax = std::max(amax, std::fabs(f.dense[static_cast<size_t>(r * n_in + j)]));
      for (int64_t j = 0; j < n_in; ++j) {
        const float a = f.dense[static_cast<size_t>(r * n_in + j)];
        CHECK(std::fabs(a - w[j]) <= amax / 254.0f + amax / 1024.0f);
        if (a == 0.0f) CHECK(w[j] == 0.0f);
      }
    }
  }
  // Three non-zeros in a group are not 2:4.
  const float bad[8] = {1, 2, 3, 0, 0, 0, 0, 0};
  uint8_t v[8];
  uint8_t i[1];
  float scratch[4];
  CHECK(!sparse24_encode_row(GgmlType::F16, bad, 8, v, i, scratch));
  // An all-zero group keeps two zero positions (0 and 1); a single non-zero at 3 pairs with 0.
  const float one[8] = {0, 0, 0, 5, 0, 0, 0, 0};
  CHECK(sparse24_encode_row(GgmlType::F16, one, 8, v, i, scratch));
  CHECK_EQ(int(i[0]), (0 << 0) | (3 << 2) | (0 << 4) | (1 << 6));
  CHECK(sparse24_value(GgmlType::F16, v, 1) == 5.0f);
}

namespace {
// Each token of x prepared as the dense q8_0 path prepares it (int8 q, then f32 scales).
std::vector<uint8_t> prepare_q8(const std::vector<float>& x, int64_t n, int64_t n_in, size_t* stride) {
  *stride = gemm_act_row_bytes(GgmlType::Q8_0, n_in);
  std::vector<uint8_t> act(*stride * static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t)
    gemm_prepare_act(GgmlType::Q8_0, x.data() + t * n_in, n_in, act.data() + static_cast<size_t>(t) * *stride);
  return act;
}
}  // namespace

TEST(sparse24_kernels_equal_reference_on_odd_shapes) {
  const bool avx2 = cpu_supports(Isa::Avx2), avx512 = cpu_supports(Isa::Avx512);
  if (!avx2) std::fprintf(stderr, "  (no AVX2 on this CPU: only the reference runs)\n");
  for (const GgmlType vt : {GgmlType::F16, GgmlType::Q8_0})
    for (int64_t n_in : {4, 28, 32, 36, 64, 68, 128, 132, 192, 260, 320}) {
      if (!sparse24_value_type_ok(vt, n_in)) continue;
      for (int64_t n_out : {1, 5, 17}) {
        for (int64_t n : {1, 3, 7}) {
          const Encoded e = random_matrix(n_in, n_out, static_cast<uint32_t>(n_in * 131 + n_out * 7 + n), vt);
          std::vector<float> x = random_x(n, n_in, static_cast<uint32_t>(n_in + n));
          std::vector<float> bias(static_cast<size_t>(n_out));
          for (int64_t r = 0; r < n_out; ++r) bias[static_cast<size_t>(r)] = 0.25f * static_cast<float>(r);
          const int64_t ldy = n_out + 3;
          std::vector<float> ref(static_cast<size_t>(n * ldy), -1.0f), got = ref;
          const Sparse24Matrix w = e.view(n_in, n_out);
          size_t stride = 0;
          std::vector<uint8_t> act;
          if (vt == GgmlType::Q8_0) {
            act = prepare_q8(x, n, n_in, &stride);
            sparse24_q8_gemm_ref(w, act.data(), stride, n, 0, n_out, bias.data(), ref.data(), ldy);
            // The reference multiplies the int8 activations: compare with those, dequantized.
            for (int64_t t = 0; t < n; ++t) {
              const uint8_t* a = act.data() + static_cast<size_t>(t) * stride;
              for (int64_t j = 0; j < n_in; ++j)
                x[static_cast<size_t>(t * n_in + j)] =
                    static_cast<float>(static_cast<int8_t>(a[j])) * reinterpret_cast<const float*>(a + n_in)[j / 32];
            }
          } else {
            sparse24_gemm_ref(w, x.data(), n, 0, n_out, bias.data(), ref.data(), ldy);
          }
          // The reference against a double dot of the dense row.
          for (int64_t t = 0; t < n; ++t) {
            for (int64_t r = 0; r < n_out; ++r) {
              double d = bias[static_cast<size_t>(r)], mag = 0;
              for (int64_t j = 0; j < n_in; ++j) {
                const double p =
                    double(e.dense[static_cast<size_t>(r * n_in + j)]) * x[static_cast<size_t>(t * n_in + j)];
                d += p;
                mag += std::fabs(p);
              }
              CHECK(std::fabs(ref[static_cast<size_t>(t * ldy + r)] - d) <= 1e-5 * (mag + 1));
            }
          }
          const auto run = [&](Sparse24Kernel f16, Sparse24Q8Kernel q8) {
            std::fill(got.begin(), got.end(), -1.0f);
            if (vt == GgmlType::Q8_0) q8(w, act.data(), stride, n, 0, n_out, bias.data(), got.data(), ldy);
            else f16(w, x.data(), n, 0, n_out, bias.data(), got.data(), ldy);
            CHECK(std::memcmp(got.data(), ref.data(), got.size() * 4) == 0);
          };
          if (avx2) run(sparse24_gemm_avx2, sparse24_q8_gemm_avx2);
          // (sparse24_q8_kernels_equal_reference_on_hostile_encodings says when AVX-512 / VBMI are absent.)
          if (avx512) run(sparse24_gemm_avx512, sparse24_q8_gemm_avx512);
          if (avx512 && cpu_has_avx512vbmi()) run(sparse24_gemm_avx512, sparse24_q8_gemm_avx512vbmi);
        }
      }
    }
}

// q8_0 values a file may hold that the compressor never writes: -128 weight bytes, any 2-bit
// positions (unsorted, repeated), arbitrary finite scales. Every kernel keeps the reference's bits.
TEST(sparse24_q8_kernels_equal_reference_on_hostile_encodings) {
  const bool avx2 = cpu_supports(Isa::Avx2), avx512 = cpu_supports(Isa::Avx512);
  const bool vbmi = avx512 && cpu_has_avx512vbmi();
  if (!avx512) std::fprintf(stderr, "  (no AVX-512 on this CPU: its kernels are not compared)\n");
  else if (!vbmi) std::fprintf(stderr, "  (no AVX-512 VBMI on this CPU: its kernel is not compared)\n");
  std::mt19937 rng(5);
  for (int64_t n_in : {64, 192, 256}) {
    const int64_t n_out = 7, n = 5, ldy = n_out;
    const size_t vb = sparse24_values_row_bytes(GgmlType::Q8_0, n_in);
    std::vector<uint8_t> vals(vb * n_out), idx(static_cast<size_t>(sparse24_index_bytes_per_row(n_in) * n_out));
    for (auto& b : vals) b = static_cast<uint8_t>(rng() % 4 == 0 ? 0x80 : rng());  // many -128
    for (auto& b : idx) b = static_cast<uint8_t>(rng());
    for (size_t blk = 0; blk < vals.size(); blk += 34) {  // finite f16 scales
      const uint16_t d =
          fp32_to_fp16(std::ldexp(static_cast<float>(rng() % 1000 + 1), -10 - static_cast<int>(rng() % 8)));
      std::memcpy(vals.data() + blk, &d, 2);
    }
    std::vector<float> x = random_x(n, n_in, 9);
    for (size_t i = 0; i < x.size(); i += 7) x[i] = i % 2 ? 2.0f : -2.0f;  // activations at +-127 after quantizing
    size_t stride = 0;
    const std::vector<uint8_t> act = prepare_q8(x, n, n_in, &stride);
    const Sparse24Matrix w{vals.data(), idx.data(), n_in, n_out, GgmlType::Q8_0};
    std::vector<float> ref(static_cast<size_t>(n * ldy)), got(ref.size());
    sparse24_q8_gemm_ref(w, act.data(), stride, n, 0, n_out, nullptr, ref.data(), ldy);
    for (float v : ref) CHECK(std::isfinite(v));
    const auto run = [&](Sparse24Q8Kernel k) {
      std::fill(got.begin(), got.end(), -1.0f);
      k(w, act.data(), stride, n, 0, n_out, nullptr, got.data(), ldy);
      CHECK(std::memcmp(got.data(), ref.data(), got.size() * 4) == 0);
    };
    if (avx2) run(sparse24_q8_gemm_avx2);
    if (avx512) run(sparse24_q8_gemm_avx512);
    if (vbmi) run(sparse24_q8_gemm_avx512vbmi);
  }
}

TEST(sparse24_matmul_batch_and_thread_invariant) {
  for (const GgmlType vt : {GgmlType::F16, GgmlType::Q8_0}) {
    const int64_t n_in = vt == GgmlType::F16 ? 200 : 320, n_out = 70, n = 9;
    const Encoded e = random_matrix(n_in, n_out, 3, vt);
    const std::vector<float> x = random_x(n, n_in, 4);
    std::vector<float> all(static_cast<size_t>(n * n_out)), one(static_cast<size_t>(n_out));
    ThreadPool p1(1), p3(3);
    // Through matmul, as the model runs it (q8_0 values share the prepared int8 activations there).
    MatrixView mv;
    mv.data = e.vals.data(), mv.type = vt, mv.n_in = n_in, mv.n_out = n_out;
    mv.row_bytes = sparse24_values_row_bytes(vt, n_in), mv.s24_idx = e.idx.data();
    MatmulTask task{&mv, nullptr, all.data(), n_out};
    matmul(&task, 1, x.data(), n, p3);
    for (int64_t t = 0; t < n; ++t) {
      task.y = one.data();
      matmul(&task, 1, x.data() + t * n_in, 1, p1);
      CHECK(std::memcmp(one.data(), all.data() + t * n_out, static_cast<size_t>(n_out) * 4) == 0);
    }
    // sparse24_matmul alone (it prepares q8_0's int8 activations itself) gives the same bits.
    std::vector<float> direct(all.size(), -1.0f);
    sparse24_matmul(e.view(n_in, n_out), x.data(), n, nullptr, direct.data(), n_out, p3);
    CHECK(std::memcmp(direct.data(), all.data(), all.size() * 4) == 0);
  }
}

// The same 2:4 zeros run as llmserve's sparse format and as a dense f32 model: same greedy tokens,
// logits equal within f32 rounding (the two sum in different orders).
TEST(sparse24_model_equals_dense_with_same_zeros) {
  // f16 values: the sparse format stores them exactly.
  const SynthOptions so = llmserve_test::small_synth_options(GgmlType::F16, 9);
  const std::string in = tmp_path("in.gguf"), dense16 = tmp_path("dense16.gguf"), dense32 = tmp_path("dense32.gguf"),
                    sparse = tmp_path("sparse.gguf");
  CHECK(synth_model(so, in).is_ok());
  PruneOptions o;
  o.two_four = true;
  CHECK(prune_model(in, dense16, o, nullptr, {}, nullptr, nullptr).is_ok());
  o.sparse_format = true;
  CHECK(prune_model(in, sparse, o, nullptr, {}, nullptr, nullptr).is_ok());
  QuantizeOptions q;
  q.type = "f32";
  CHECK(quantize_model(dense16, dense32, q, {}, nullptr, nullptr).is_ok());
  auto md = llmserve_test::load_model(dense32);
  auto ms = llmserve_test::load_model(sparse);
  CHECK(md && ms);
  if (!md || !ms) return;
  CHECK(ms->weights().layers[0].ffn_down.s24_idx != nullptr);
  CHECK(md->weights().layers[0].ffn_down.s24_idx == nullptr);
  // Rounding only: each matmul agrees with a double dot within 1e-5 (the kernel test), and two
  // layers of attention and SwiGLU on random weights amplify that to ~2e-4 of the largest logit.
  llmserve_test::check_same_function(*md, *ms, {1, 17, 42, 99, 5, 64, 3, 120}, "sparse vs dense f32 logits");
  for (const std::string& p : {in, dense16, dense32, sparse}) ::unlink(p.c_str());
}

namespace {
// A copy of the file at in with every 2:4 sparse pair expanded into a dense NAME holding the values
// the format stores (zeros elsewhere): f32 for f16 values; for q8_0 values a q8_0 matrix, exactly
// (each 32-column block takes the scale of the 32 kept values its 16 belong to).
void expand_sparse24(const std::string& in, const std::string& out) {
  std::unique_ptr<GgufFile> f;
  CHECK(GgufFile::open(in, &f).is_ok());
  GgufWriter w;
  for (const auto& [key, value] : f->metadata()) w.set_value(key, value);
  const std::string vs = kSparse24ValuesSuffix, is = kSparse24IndexSuffix;
  for (const GgufTensorInfo& t : f->tensors()) {
    const auto ends = [&t](const std::string& s) {
      return t.name.size() > s.size() && t.name.compare(t.name.size() - s.size(), s.size(), s) == 0;
    };
    if (ends(is)) continue;
    if (!ends(vs)) {
      CHECK(w.add_tensor(t.name, t.type, std::vector<int64_t>(t.ne, t.ne + t.n_dims),
                         std::vector<uint8_t>(t.data, t.data + t.nbytes))
                .is_ok());
      continue;
    }
    const std::string base = t.name.substr(0, t.name.size() - vs.size());
    const GgufTensorInfo* ti = f->find_tensor(base + is);
    const int64_t n_in = t.ne[0] * 2, n_out = t.ne[1];
    const bool q8 = t.type == GgmlType::Q8_0;
    const size_t rs = q8 ? row_size(GgmlType::Q8_0, n_in) : static_cast<size_t>(n_in) * 4;
    std::vector<uint8_t> dense(rs * static_cast<size_t>(n_out), 0);
    std::vector<float> row(static_cast<size_t>(n_in));
    for (int64_t r = 0; r < n_out; ++r) {
      const uint8_t* v = t.data + static_cast<size_t>(r) * sparse24_values_row_bytes(t.type, n_in);
      const uint8_t* id = ti->data + r * sparse24_index_bytes_per_row(n_in);
      uint8_t* out = dense.data() + static_cast<size_t>(r) * rs;
      if (!q8) {
        sparse24_decode_row(t.type, v, id, n_in, reinterpret_cast<float*>(out));
        continue;
      }
      for (int64_t k = 0; k < n_in / 2; ++k) {
        const int64_t col = 4 * (k / 2) + ((id[k / 4] >> (2 * (k % 4))) & 3);
        uint8_t* blk = out + (col / 32) * 34;
        std::memcpy(blk, v + (k / 32) * 34, 2);  // the kept block's scale
        blk[2 + col % 32] = v[(k / 32) * 34 + 2 + k % 32];
      }
      dequantize_row(GgmlType::Q8_0, out, row.data(), n_in);
      std::vector<float> want(static_cast<size_t>(n_in));
      sparse24_decode_row(t.type, v, id, n_in, want.data());
      CHECK(std::memcmp(row.data(), want.data(), want.size() * 4) == 0);
    }
    CHECK(w.add_tensor(base, q8 ? GgmlType::Q8_0 : GgmlType::F32, {n_in, n_out}, std::move(dense)).is_ok());
  }
  CHECK(w.write(out).is_ok());
}
}  // namespace

// q8_0 values (auto for a q8_0 input): the sparse model equals the dense q8_0 model holding the
// same values (both run on the same int8 activations), and its file holds them as q8_0.
TEST(sparse24_q8_0_model_equals_dense_with_same_values) {
  SynthOptions so = llmserve_test::small_synth_options(GgmlType::Q8_0, 11);
  so.ffn = 192;  // q8_0 values need rows of a multiple of 64 (ffn_down's n_in)
  const std::string in = tmp_path("q8in.gguf"), sparse = tmp_path("q8sparse.gguf"), dense = tmp_path("q8dense.gguf");
  CHECK(synth_model(so, in).is_ok());
  PruneOptions o;
  o.two_four = true;
  o.sparse_format = true;
  PruneResult res;
  CHECK(prune_model(in, sparse, o, nullptr, {}, nullptr, &res).is_ok());
  CHECK(!res.tensors.empty());
  for (const PrunedTensor& t : res.tensors) CHECK(t.type == GgmlType::Q8_0);
  expand_sparse24(sparse, dense);
  auto md = llmserve_test::load_model(dense);
  auto ms = llmserve_test::load_model(sparse);
  CHECK(md && ms);
  if (!md || !ms) return;
  CHECK(ms->weights().layers[0].ffn_down.s24_idx != nullptr);
  CHECK(ms->weights().layers[0].ffn_down.type == GgmlType::Q8_0);
  llmserve_test::check_same_function(*md, *ms, {1, 17, 42, 99, 5, 64, 3, 120}, "q8_0 sparse vs dense q8_0 logits");
  // An explicit f16 choice overrides auto; q8_0 on rows that are not a multiple of 64 is refused.
  o.values = Sparse24Values::F16;
  CHECK(prune_model(in, sparse, o, nullptr, {}, nullptr, &res).is_ok());
  for (const PrunedTensor& t : res.tensors) CHECK(t.type == GgmlType::F16);
  so.ffn = 160;
  CHECK(synth_model(so, in).is_ok());
  o.values = Sparse24Values::Q8_0;
  const Status st = prune_model(in, sparse, o, nullptr, {}, nullptr, nullptr);
  CHECK(st.code == Code::InvalidArgument);
  CHECK(st.message.find("multiple of 64") != std::string::npos);
  for (const std::string& p : {in, sparse, dense}) ::unlink(p.c_str());
}

// phi3 fuses gate and up into one ffn_up matrix that the model splits into row views: a 2:4
// sparse one must split its positions with its values (the views once read the gate's positions
// for the up rows).
TEST(sparse24_fused_phi3_matrix_splits_with_its_positions) {
  SynthOptions so = llmserve_test::small_synth_options(GgmlType::F16, 12);
  so.arch = "phi3";
  const std::string in = tmp_path("phi3in.gguf"), sparse = tmp_path("phi3sparse.gguf"),
                    dense = tmp_path("phi3dense.gguf");
  CHECK(synth_model(so, in).is_ok());
  PruneOptions o;
  o.two_four = true;
  o.sparse_format = true;
  o.patterns = {"ffn_up"};
  CHECK(prune_model(in, sparse, o, nullptr, {}, nullptr, nullptr).is_ok());
  expand_sparse24(sparse, dense);
  auto md = llmserve_test::load_model(dense);
  auto ms = llmserve_test::load_model(sparse);
  CHECK(md && ms);
  if (!md || !ms) return;
  CHECK(ms->weights().layers[0].ffn_up.s24_idx != nullptr);
  llmserve_test::check_same_function(*md, *ms, {1, 17, 42, 99, 5, 64, 3, 120}, "phi3 sparse vs dense f32 logits");
  // The same for CSR (its row pointers move with the rows): 90% unstructured, CSR against dense zeros.
  PruneOptions u;
  u.ratio = 0.9;
  u.patterns = {"ffn_up"};
  CHECK(prune_model(in, dense, u, nullptr, {}, nullptr, nullptr).is_ok());
  u.csr_format = true;
  CHECK(prune_model(in, sparse, u, nullptr, {}, nullptr, nullptr).is_ok());
  auto cd = llmserve_test::load_model(dense);
  auto cs = llmserve_test::load_model(sparse);
  CHECK(cd && cs);
  if (!cd || !cs) return;
  CHECK(cs->weights().layers[0].ffn_up.is_csr());
  llmserve_test::check_same_function(*cd, *cs, {1, 17, 42, 99, 5, 64, 3, 120}, "phi3 CSR vs dense logits");
  for (const std::string& p : {in, sparse, dense}) ::unlink(p.c_str());
}

// A 2:4 pair with value or position types the format does not allow is a typed error naming it.
TEST(sparse24_loader_refuses_bad_value_and_position_types) {
  const SynthOptions so = llmserve_test::small_synth_options(GgmlType::F16, 13);
  const std::string in = tmp_path("badin.gguf"), sparse = tmp_path("badsparse.gguf"), bad = tmp_path("bad.gguf");
  CHECK(synth_model(so, in).is_ok());
  PruneOptions o;
  o.two_four = true;
  o.sparse_format = true;
  o.patterns = {"blk.0.ffn_up.weight"};
  CHECK(prune_model(in, sparse, o, nullptr, {}, nullptr, nullptr).is_ok());
  const auto retype = [&](const std::string& which, GgmlType type) {
    std::unique_ptr<GgufFile> f;
    CHECK(GgufFile::open(sparse, &f).is_ok());
    GgufWriter w;
    for (const auto& [key, value] : f->metadata()) w.set_value(key, value);
    for (const GgufTensorInfo& t : f->tensors()) {
      std::vector<int64_t> ne(t.ne, t.ne + t.n_dims);
      if (t.name != which) {
        CHECK(w.add_tensor(t.name, t.type, ne, std::vector<uint8_t>(t.data, t.data + t.nbytes)).is_ok());
        continue;
      }
      if (type == GgmlType::F16 && t.type == GgmlType::I8) ne[0] /= 2;  // the same bytes as f16
      uint64_t bytes = row_size(type, ne[0]);
      for (size_t d = 1; d < ne.size(); ++d) bytes *= static_cast<uint64_t>(ne[d]);
      CHECK(w.add_tensor(t.name, type, ne, std::vector<uint8_t>(bytes, 0)).is_ok());
    }
    CHECK(w.write(bad).is_ok());
    Status st;
    CHECK(!llmserve_test::load_model(bad, &st));
    return st;
  };
  const Status q4 = retype("blk.0.ffn_up.weight.s24v", GgmlType::Q4_0);
  CHECK(q4.code == Code::UnsupportedType);
  CHECK(q4.message.find("must hold f16 values, or q8_0 values") != std::string::npos);
  CHECK(q4.message.find("blk.0.ffn_up.weight") != std::string::npos);
  const Status pos = retype("blk.0.ffn_up.weight.s24i", GgmlType::F16);
  CHECK(!pos.is_ok());
  CHECK(pos.message.find("blk.0.ffn_up.weight") != std::string::npos);
  for (const std::string& p : {in, sparse, bad}) ::unlink(p.c_str());
}
