// The CSR format and kernels (model/csr.h): the AVX2 / AVX-512 kernels and the threaded driver
// bit-identical to the scalar reference on odd shapes (empty rows, rows of 1..8k+r entries, f16
// and f32 values, accumulate and bias), the reference close to a double evaluation, batch and
// thread invariance, `compress --format csr` round trip (every kept value exact, every pruned one
// absent), the CSR-pruned model against the dense model with the same zeros, and the executor's
// dense fallback above kCsrMaxDensity.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu_executor.h"
#include "compress/prune.h"
#include "compress/quantize.h"
#include "gguf/gguf.h"
#include "isa/isa.h"
#include "kv/kv_cache.h"
#include "model/csr.h"
#include "model/factored.h"
#include "model/forward.h"
#include "model_test_util.h"
#include "quant/quant.h"
#include "synth/synth.h"
#include "testing.h"

using namespace llmserve;

namespace {

std::string tmp_path(const std::string& name) {
  return "/tmp/llmserve_test_csr_" + std::to_string(static_cast<long>(::getpid())) + "_" + name;
}

// A random CSR matrix: row i holds (i * 7 + seed) % (max_per_row + 1) entries (so empty rows, rows
// under 8, and rows of 8k + r), at random ascending columns, values exact in f16.
struct Csr {
  std::vector<int32_t> ptr, col;
  std::vector<uint16_t> v16;
  std::vector<float> v32;
  CsrMatrix view(int64_t n_in, int64_t n_out, bool f32) const {
    CsrMatrix m;
    m.ptr = ptr.data(), m.col = col.data(), m.n_in = n_in, m.n_out = n_out, m.f32 = f32;
    m.val = f32 ? static_cast<const void*>(v32.data()) : v16.data();
    return m;
  }
};

Csr random_csr(int64_t n_in, int64_t n_out, int64_t max_per_row, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Csr c;
  c.ptr.push_back(0);
  std::vector<int32_t> cols(static_cast<size_t>(n_in));
  for (int64_t i = 0; i < n_out; ++i) {
    const int64_t k = std::min<int64_t>(n_in, (i * 7 + seed) % (max_per_row + 1));
    for (int64_t j = 0; j < n_in; ++j) cols[static_cast<size_t>(j)] = static_cast<int32_t>(j);
    std::shuffle(cols.begin(), cols.end(), rng);
    std::sort(cols.begin(), cols.begin() + k);
    for (int64_t j = 0; j < k; ++j) {
      c.col.push_back(cols[static_cast<size_t>(j)]);
      const uint16_t h = fp32_to_fp16(nd(rng));
      c.v16.push_back(h);
      c.v32.push_back(fp16_to_fp32(h));
    }
    c.ptr.push_back(static_cast<int32_t>(c.col.size()));
  }
  return c;
}

std::vector<float> random_x(int64_t n, int64_t n_in, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<float> x(static_cast<size_t>(n * n_in));
  for (float& v : x) v = u(rng);
  return x;
}

// Runs fn with the kernels capped at `kernels` ("scalar", "avx2" or "" for the best).
template <class F>
void with_kernels(const char* kernels, F fn) {
  if (*kernels) ::setenv("LLMSERVE_KERNELS", kernels, 1);
  else ::unsetenv("LLMSERVE_KERNELS");
  reset_isa_for_testing();
  fn();
  ::unsetenv("LLMSERVE_KERNELS");
  reset_isa_for_testing();
}

}  // namespace

// Every kernel (the AVX2 and AVX-512 GEMVs, the 8-, 16- and 32-token tiles) directly against the reference:
// bit-identical, since each keeps the reference's 8 lanes, fma order and reduction tree.
TEST(csr_kernels_bit_identical_to_reference) {
  int cases = 0;
  for (const int64_t n_in : {1, 7, 33, 100}) {
    for (const int64_t n_out : {1, 5, 37}) {
      for (const int64_t per_row : {3, 19, 40}) {
        const Csr c = random_csr(n_in, n_out, per_row, static_cast<uint32_t>(n_in * 131 + n_out + per_row));
        for (const bool f32 : {false, true}) {
          const CsrMatrix w = c.view(n_in, n_out, f32);
          std::vector<float> bias(static_cast<size_t>(n_out));
          for (size_t i = 0; i < bias.size(); ++i) bias[i] = 0.25f * static_cast<float>(i % 5) - 0.5f;
          for (const bool acc : {false, true}) {
            for (const bool with_bias : {false, true}) {
              const float* b = with_bias ? bias.data() : nullptr;
              const int64_t n = 21, ldy = n_out + 3;
              const std::vector<float> x = random_x(n, n_in, static_cast<uint32_t>(n_out + per_row));
              std::vector<float> ref(static_cast<size_t>(n * ldy)), got;
              for (size_t i = 0; i < ref.size(); ++i) ref[i] = 0.125f * static_cast<float>(i % 7);
              got = ref;
              csr_gemm_ref(w, x.data(), n, 0, n_out, b, acc, ref.data(), ldy);
              if (cpu_supports(Isa::Avx2)) {
                std::vector<float> g = got;
                for (int64_t t = 0; t < n; ++t)
                  csr_gemv_avx2(w, x.data() + t * n_in, 0, n_out, b, acc, g.data() + t * ldy);
                CHECK(std::memcmp(g.data(), ref.data(), ref.size() * 4) == 0);
                if (cpu_supports(Isa::Avx512)) {
                  g = got;
                  for (int64_t t = 0; t < n; ++t)
                    csr_gemv_avx512(w, x.data() + t * n_in, 0, n_out, b, acc, g.data() + t * ldy);
                  CHECK(std::memcmp(g.data(), ref.data(), ref.size() * 4) == 0);
                }
                for (const int64_t T : {int64_t{8}, int64_t{16}, int64_t{32}}) {
                  if (T > 8 && !cpu_supports(Isa::Avx512)) continue;
                  g = got;
                  std::vector<float> xt(static_cast<size_t>(n_in * T));
                  for (int64_t t0 = 0; t0 < n; t0 += T) {
                    const int64_t nt = std::min(T, n - t0);
                    csr_transpose_tile(x.data(), n_in, t0, nt, T, xt.data());
                    const CsrTileKernel k = T == 8 ? csr_tile8_avx2 : T == 16 ? csr_tile16_avx512 : csr_tile32_avx512;
                    k(w, xt.data(), nt, 0, n_out, b, acc, g.data() + t0 * ldy, ldy);
                  }
                  CHECK(std::memcmp(g.data(), ref.data(), ref.size() * 4) == 0);
                }
              }
              ++cases;
            }
          }
        }
      }
    }
  }
  CHECK(cases > 0);
}

// The reference against a double evaluation: the lane split only reorders an f32 sum.
TEST(csr_reference_close_to_double) {
  const int64_t n_in = 300, n_out = 29, n = 3;
  const Csr c = random_csr(n_in, n_out, 150, 5);
  const CsrMatrix w = c.view(n_in, n_out, false);
  const std::vector<float> x = random_x(n, n_in, 6);
  std::vector<float> y(static_cast<size_t>(n * n_out));
  csr_gemm_ref(w, x.data(), n, 0, n_out, nullptr, false, y.data(), n_out);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < n_out; ++i) {
      double want = 0, mag = 0;
      for (int32_t e = c.ptr[i]; e < c.ptr[i + 1]; ++e) {
        want += double(c.v32[e]) * x[t * n_in + c.col[e]];
        mag += std::fabs(double(c.v32[e]) * x[t * n_in + c.col[e]]);
      }
      // f32 summation of <= 150 terms: relative error within ~150 ulps of the magnitude sum.
      CHECK(std::fabs(y[t * n_out + i] - want) <= 2e-5 * mag + 1e-6);
    }
}

// csr_matmul on every ISA tier and 1-3 threads: bit-identical to the reference, and each token's
// row the same whether it runs alone, in a batch of 45 (tile tails) or of 2 (the GEMV path).
TEST(csr_matmul_batch_and_thread_invariant) {
  const int64_t n_in = 77, n_out = 53, n = 45;  // 45: a 32-token tile and a partial one
  const Csr c = random_csr(n_in, n_out, 30, 11);
  const std::vector<float> x = random_x(n, n_in, 12);
  for (const bool f32 : {false, true}) {
    const CsrMatrix w = c.view(n_in, n_out, f32);
    std::vector<float> ref(static_cast<size_t>(n * n_out));
    csr_gemm_ref(w, x.data(), n, 0, n_out, nullptr, false, ref.data(), n_out);
    for (const char* k : {"scalar", "avx2", ""}) {
      with_kernels(k, [&] {
        for (const int threads : {1, 3}) {
          ThreadPool pool(threads);
          std::vector<float> all(ref.size()), one(static_cast<size_t>(n_out)), two(static_cast<size_t>(2 * n_out));
          csr_matmul(w, x.data(), n, nullptr, false, all.data(), n_out, pool);
          CHECK(std::memcmp(all.data(), ref.data(), ref.size() * 4) == 0);
          for (int64_t t = 0; t < n; ++t) {
            csr_matmul(w, x.data() + t * n_in, 1, nullptr, false, one.data(), n_out, pool);
            CHECK(std::memcmp(one.data(), ref.data() + t * n_out, static_cast<size_t>(n_out) * 4) == 0);
          }
          csr_matmul(w, x.data() + 5 * n_in, 2, nullptr, false, two.data(), n_out, pool);
          CHECK(std::memcmp(two.data(), ref.data() + 5 * n_out, static_cast<size_t>(2 * n_out) * 4) == 0);
        }
      });
    }
  }
}

namespace {

SynthOptions small_model() {
  SynthOptions so;
  so.dim = 64;
  so.layers = 2;
  so.heads = 4;
  so.kv_heads = 2;
  so.ffn = 168;  // not a multiple of 16: row tiles and token tiles have tails
  so.context = 64;
  so.vocab_size = 320;
  so.type = GgmlType::F16;  // f16 values: CSR stores them exactly
  so.seed = 21;
  return so;
}

// Copies the GGUF file at in to out, passing each tensor's bytes through edit(name, bytes).
template <class F>
bool copy_with(const std::string& in, const std::string& out, F edit) {
  std::unique_ptr<GgufFile> f;
  if (!GgufFile::open(in, &f).is_ok()) return false;
  GgufWriter w;
  for (const auto& [k, v] : f->metadata()) w.set_value(k, v);
  for (const GgufTensorInfo& t : f->tensors())
    if (!w.add_tensor_info(t.name, t.type, std::vector<int64_t>(t.ne, t.ne + t.n_dims)).is_ok()) return false;
  std::vector<uint8_t> buf;
  return w
      .write(out,
             [&](size_t i, const GgufWriter::ByteSink& put) {
               const GgufTensorInfo& t = f->tensors()[i];
               buf.assign(t.data, t.data + t.nbytes);
               edit(t.name, buf);
               return put(buf.data(), buf.size()) ? Status::ok() : make_error(Code::Io, "write");
             })
      .is_ok();
}

}  // namespace

// A hostile CSR file (a column out of range, columns out of order, row pointers past nnz) is
// refused at load with ERR_GGUF_CORRUPT naming the matrix, never read out of bounds.
TEST(csr_corrupt_file_is_a_typed_error) {
  const std::string in = tmp_path("c_in.gguf"), csr = tmp_path("c_csr.gguf"), bad = tmp_path("c_bad.gguf");
  CHECK(synth_model(small_model(), in).is_ok());
  PruneOptions o;
  o.ratio = 0.9;
  o.csr_format = true;
  CHECK(prune_model(in, csr, o, nullptr, {}, nullptr, nullptr).is_ok());
  CHECK(llmserve_test::load_model(csr) != nullptr);
  const std::string target = "blk.1.ffn_down.weight";
  const auto put32 = [](std::vector<uint8_t>& b, size_t i, int32_t v) { std::memcpy(b.data() + 4 * i, &v, 4); };
  const std::vector<std::pair<std::string, std::function<void(std::vector<uint8_t>&)>>> cases = {
      {kSparseColSuffix, [&](std::vector<uint8_t>& b) { put32(b, 5, 100000); }},   // column beyond n_in
      {kSparseColSuffix, [&](std::vector<uint8_t>& b) { put32(b, 1, 0); }},        // not ascending
      {kSparsePtrSuffix, [&](std::vector<uint8_t>& b) { put32(b, 3, 1 << 30); }},  // pointer past nnz
  };
  for (const auto& c : cases) {
    // Plain references, not a structured binding: clang 14 (the sanitizer build) cannot capture those.
    const std::string& suffix = c.first;
    const auto& edit = c.second;
    CHECK(copy_with(csr, bad, [&](const std::string& name, std::vector<uint8_t>& b) {
      if (name == target + suffix) edit(b);
    }));
    std::unique_ptr<Model> m;
    std::unique_ptr<GgufFile> f;
    CHECK(GgufFile::open(bad, &f).is_ok());
    if (!f) continue;
    const Status st = Model::load(std::shared_ptr<GgufFile>(std::move(f)), &m);
    CHECK(st.code == Code::GgufCorrupt);
    CHECK(st.message.find(target) != std::string::npos);
  }
  for (const std::string& p : {in, csr, bad}) ::unlink(p.c_str());
}

// dense -> CSR -> dense: each CSR row decodes to the dense pruned file's row exactly (kept values
// bit-exact, pruned ones absent), every row holds n_in - floor(ratio * n_in) entries.
TEST(csr_prune_round_trip_exact) {
  const std::string in = tmp_path("rt_in.gguf"), dense = tmp_path("rt_dense.gguf"), csr = tmp_path("rt_csr.gguf");
  CHECK(synth_model(small_model(), in).is_ok());
  PruneOptions o;
  o.ratio = 0.7;
  CHECK(prune_model(in, dense, o, nullptr, {}, nullptr, nullptr).is_ok());
  o.csr_format = true;
  PruneResult res;
  CHECK(prune_model(in, csr, o, nullptr, {}, nullptr, &res).is_ok());
  CHECK_EQ(res.tensors.size(), size_t{14});
  std::unique_ptr<GgufFile> fd, fc;
  CHECK(GgufFile::open(dense, &fd).is_ok() && GgufFile::open(csr, &fc).is_ok());
  if (!fd || !fc) return;
  CHECK(fc->find_tensor("blk.0.ffn_down.weight") == nullptr);
  int checked = 0;
  for (const PrunedTensor& pt : res.tensors) {
    const GgufTensorInfo* d = fd->find_tensor(pt.name);
    const GgufTensorInfo* p = fc->find_tensor(pt.name + kSparsePtrSuffix);
    const GgufTensorInfo* c = fc->find_tensor(pt.name + kSparseColSuffix);
    const GgufTensorInfo* v = fc->find_tensor(pt.name + kSparseValSuffix);
    CHECK(d && p && c && v);
    if (!d || !p || !c || !v) continue;
    CHECK(v->type == GgmlType::F16);
    const int64_t n_in = d->ne[0], n_out = d->ne[1];
    CsrMatrix m;
    m.ptr = reinterpret_cast<const int32_t*>(p->data), m.col = reinterpret_cast<const int32_t*>(c->data);
    m.val = v->data, m.n_in = n_in, m.n_out = n_out;
    CHECK(csr_valid(m.ptr, m.col, n_out, n_in, c->ne[0]));
    const int64_t kept = n_in - static_cast<int64_t>(std::floor(0.7 * static_cast<double>(n_in)));
    CHECK_EQ(c->ne[0], kept * n_out);
    std::vector<float> row(static_cast<size_t>(n_in)), want(static_cast<size_t>(n_in));
    for (int64_t i = 0; i < n_out; ++i) {
      csr_decode_row(m, i, row.data());
      dequantize_row(d->type, d->data + static_cast<size_t>(i) * row_size(d->type, n_in), want.data(), n_in);
      CHECK(std::memcmp(row.data(), want.data(), static_cast<size_t>(n_in) * 4) == 0);
      CHECK_EQ(m.ptr[i + 1] - m.ptr[i], kept);
      ++checked;
    }
  }
  CHECK(checked > 0);
  for (const std::string& p : {in, dense, csr}) ::unlink(p.c_str());
}

// Bad options are refused before anything is written.
TEST(csr_prune_refuses_bad_options) {
  const std::string in = tmp_path("bad_in.gguf"), out = tmp_path("bad_out.gguf");
  CHECK(synth_model(small_model(), in).is_ok());
  PruneOptions o;
  o.csr_format = true;
  o.two_four = true;
  Status st = prune_model(in, out, o, nullptr, {}, nullptr, nullptr);
  CHECK(st.code == Code::InvalidArgument);
  CHECK(st.message.find("CSR") != std::string::npos);
  o.two_four = false;
  o.ratio = 1.5;
  CHECK(prune_model(in, out, o, nullptr, {}, nullptr, nullptr).code == Code::InvalidArgument);
  CHECK(::access(out.c_str(), F_OK) != 0);
  ::unlink(in.c_str());
}

// The same zeros run as CSR and as a dense f32 model: same greedy tokens, logits equal within f32
// rounding (the two sum in different orders). Model::load runs CSR at any density; the executor's
// fallback is tested below.
TEST(csr_model_equals_dense_with_same_zeros) {
  const std::string in = tmp_path("m_in.gguf"), dense16 = tmp_path("m_dense16.gguf"),
                    dense32 = tmp_path("m_dense32.gguf"), csr = tmp_path("m_csr.gguf");
  CHECK(synth_model(small_model(), in).is_ok());
  PruneOptions o;
  o.ratio = 0.6;
  CHECK(prune_model(in, dense16, o, nullptr, {}, nullptr, nullptr).is_ok());
  o.csr_format = true;
  CHECK(prune_model(in, csr, o, nullptr, {}, nullptr, nullptr).is_ok());
  QuantizeOptions q;
  q.type = "f32";
  CHECK(quantize_model(dense16, dense32, q, {}, nullptr, nullptr).is_ok());
  auto md = llmserve_test::load_model(dense32);
  auto mc = llmserve_test::load_model(csr);
  CHECK(md && mc);
  if (!md || !mc) return;
  CHECK(mc->weights().layers[1].ffn_down.is_csr() && mc->weights().layers[0].wq.is_csr());
  CHECK(!md->weights().layers[1].ffn_down.is_csr());
  const int64_t V = md->config().n_vocab;
  for (const char* k : {"scalar", ""}) {
    with_kernels(k, [&] {
      ThreadPool pool(2);
      KvCacheOptions ko;
      ko.n_ctx = 32;
      ko.type = GgmlType::F32;
      std::unique_ptr<KvCache> kd, kc;
      CHECK(KvCache::create(kv_shape(md->config()), ko, &kd).is_ok());
      CHECK(KvCache::create(kv_shape(mc->config()), ko, &kc).is_ok());
      std::vector<int32_t> toks = {1, 17, 42, 99, 5, 64, 3, 120, 7, 250, 11};
      std::vector<float> ld, lc;
      CHECK(forward(*md, *kd, toks.data(), static_cast<int64_t>(toks.size()), true, &ld, pool).is_ok());
      CHECK(forward(*mc, *kc, toks.data(), static_cast<int64_t>(toks.size()), true, &lc, pool).is_ok());
      CHECK_EQ(ld.size(), lc.size());
      double max_diff = 0, max_abs = 0;
      for (size_t i = 0; i < ld.size(); ++i) {
        max_diff = std::max(max_diff, double(std::fabs(ld[i] - lc[i])));
        max_abs = std::max(max_abs, double(std::fabs(ld[i])));
      }
      std::fprintf(stderr, "  csr vs dense f32 logits (%s): max |diff| %.3g (max |logit| %.3g)\n", *k ? k : "best",
                   max_diff, max_abs);
      // Rounding only (as the 2:4 model test): a wrong value or column moves logits by O(1).
      CHECK(max_diff <= 1e-3 * (max_abs + 1));
      for (size_t t = 0; t < toks.size(); ++t) {
        const float* a = ld.data() + t * V;
        const float* b = lc.data() + t * V;
        CHECK_EQ(std::max_element(a, a + V) - a, std::max_element(b, b + V) - b);
      }
    });
  }
  for (const std::string& p : {in, dense16, dense32, csr}) ::unlink(p.c_str());
}

// The executor runs CSR at 10% density and expands 50% density to dense (kCsrMaxDensity), and says so.
TEST(csr_executor_dense_fallback_by_density) {
  const std::string in = tmp_path("x_in.gguf"), sparse = tmp_path("x_90.gguf"), half = tmp_path("x_50.gguf");
  CHECK(synth_model(small_model(), in).is_ok());
  PruneOptions o;
  o.csr_format = true;
  o.ratio = 0.9;
  CHECK(prune_model(in, sparse, o, nullptr, {}, nullptr, nullptr).is_ok());
  o.ratio = 0.5;
  CHECK(prune_model(in, half, o, nullptr, {}, nullptr, nullptr).is_ok());
  ExecutorOptions xo;
  xo.n_ctx = 64;
  std::unique_ptr<CpuExecutor> xs, xh;
  CHECK(CpuExecutor::load(sparse, xo, nullptr, &xs).is_ok());
  CHECK(CpuExecutor::load(half, xo, nullptr, &xh).is_ok());
  if (!xs || !xh) return;
  CHECK_EQ(xs->csr_sparse_matrices(), int64_t{14});
  CHECK_EQ(xs->csr_dense_matrices(), int64_t{0});
  CHECK_EQ(xh->csr_sparse_matrices(), int64_t{0});
  CHECK_EQ(xh->csr_dense_matrices(), int64_t{14});
  for (const std::string& p : {in, sparse, half}) ::unlink(p.c_str());
}

// A matrix holding a value beyond f16's range keeps f32 values (exact), the others f16; the f32
// CSR matrix loads and runs (y = CSR·x on the f32 values).
TEST(csr_prune_keeps_f32_values_beyond_f16_range) {
  SynthOptions so = small_model();
  so.type = GgmlType::F32;
  const std::string in = tmp_path("big_in.gguf"), big = tmp_path("big_src.gguf"), csr = tmp_path("big_csr.gguf");
  CHECK(synth_model(so, in).is_ok());
  // Copy with blk.0.ffn_up.weight[0][3] = 1e6 (kept: the largest magnitude of its row).
  CHECK(copy_with(in, big, [](const std::string& name, std::vector<uint8_t>& b) {
    const float v = 1e6f;
    if (name == "blk.0.ffn_up.weight") std::memcpy(b.data() + 3 * 4, &v, 4);
  }));
  PruneOptions o;
  o.ratio = 0.5;
  o.csr_format = true;
  PruneResult res;
  CHECK(prune_model(big, csr, o, nullptr, {}, nullptr, &res).is_ok());
  int f32_tensors = 0;
  for (const PrunedTensor& t : res.tensors) {
    CHECK(t.type == (t.name == "blk.0.ffn_up.weight" ? GgmlType::F32 : GgmlType::F16));
    f32_tensors += t.type == GgmlType::F32;
  }
  CHECK_EQ(f32_tensors, 1);
  std::unique_ptr<GgufFile> fc;
  CHECK(GgufFile::open(csr, &fc).is_ok());
  if (!fc) return;
  const GgufTensorInfo* v = fc->find_tensor(std::string("blk.0.ffn_up.weight") + kSparseValSuffix);
  const GgufTensorInfo* c = fc->find_tensor(std::string("blk.0.ffn_up.weight") + kSparseColSuffix);
  CHECK(v && c && v->type == GgmlType::F32);
  if (!v || !c) return;
  bool found = false;  // row 0 keeps column 3 with the exact value
  const int64_t kept = so.dim - static_cast<int64_t>(std::floor(0.5 * static_cast<double>(so.dim)));
  for (int64_t e = 0; e < kept; ++e)
    if (reinterpret_cast<const int32_t*>(c->data)[e] == 3) found = reinterpret_cast<const float*>(v->data)[e] == 1e6f;
  CHECK(found);
  auto m = llmserve_test::load_model(csr);
  CHECK(m != nullptr);
  if (!m) return;
  CHECK(m->weights().layers[0].ffn_up.is_csr() && m->weights().layers[0].ffn_up.sp_f32);
  CHECK(!m->weights().layers[0].ffn_gate.sp_f32);
  ThreadPool pool(2);
  KvCacheOptions ko;
  ko.n_ctx = 16;
  ko.type = GgmlType::F32;
  std::unique_ptr<KvCache> kv;
  CHECK(KvCache::create(kv_shape(m->config()), ko, &kv).is_ok());
  std::vector<int32_t> toks = {1, 2, 3};
  std::vector<float> logits;
  CHECK(forward(*m, *kv, toks.data(), 3, true, &logits, pool).is_ok());
  CHECK(!logits.empty());
  for (const std::string& p : {in, big, csr}) ::unlink(p.c_str());
}
