// A factored model (compress/factorize.h -> model/factored.h) runs like the dense model that holds
// the same U·V + S: same greedy tokens, logits equal within f32 rounding; bad options are typed
// errors and write nothing; a corrupt residual index is refused at load.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "compress/factorize.h"
#include "gguf/gguf.h"
#include "kv/kv_cache.h"
#include "model/factored.h"
#include "model/forward.h"
#include "model_test_util.h"
#include "quant/quant.h"
#include "synth/synth.h"
#include "testing.h"
#include "train/lora_train.h"

using namespace llmserve;

namespace {

float elem(const GgufTensorInfo& t, int64_t i) {
  return t.type == GgmlType::F16 ? fp16_to_fp32(reinterpret_cast<const uint16_t*>(t.data)[i])
                                 : reinterpret_cast<const float*>(t.data)[i];
}

// The factored file at in with every factored matrix multiplied out into a dense f32 NAME, written to out.
bool densify(const std::string& in, const std::string& out) {
  std::unique_ptr<GgufFile> f;
  if (!GgufFile::open(in, &f).is_ok()) return false;
  GgufWriter w;
  for (const auto& [k, v] : f->metadata()) w.set_value(k, v);
  std::vector<const GgufTensorInfo*> src;
  std::vector<std::vector<float>> dense;
  const std::string vs = kLowRankVSuffix;
  for (const GgufTensorInfo& t : f->tensors()) {
    const std::string& nm = t.name;
    if (nm.size() > vs.size() && nm.compare(nm.size() - vs.size(), vs.size(), vs) == 0) {
      const std::string base = nm.substr(0, nm.size() - vs.size());
      const GgufTensorInfo* ut = f->find_tensor(base + kLowRankUtSuffix);
      const int64_t n_in = t.ne[0], r = t.ne[1], n_out = ut->ne[0];
      std::vector<float> d(static_cast<size_t>(n_in * n_out), 0.0f);
      for (int64_t o = 0; o < n_out; ++o)
        for (int64_t j = 0; j < n_in; ++j) {
          double s = 0;
          for (int64_t k = 0; k < r; ++k) s += double(elem(*ut, k * n_out + o)) * elem(t, k * n_in + j);
          d[o * n_in + j] = static_cast<float>(s);
        }
      if (const GgufTensorInfo* p = f->find_tensor(base + kSparsePtrSuffix)) {
        const auto* ptr = reinterpret_cast<const int32_t*>(p->data);
        const auto* col = reinterpret_cast<const int32_t*>(f->find_tensor(base + kSparseColSuffix)->data);
        const GgufTensorInfo* val = f->find_tensor(base + kSparseValSuffix);
        for (int64_t o = 0; o < n_out; ++o)
          for (int32_t e = ptr[o]; e < ptr[o + 1]; ++e) d[o * n_in + col[e]] += elem(*val, e);
      }
      if (!w.add_tensor_info(base, GgmlType::F32, {n_in, n_out}).is_ok()) return false;
      src.push_back(nullptr);
      dense.push_back(std::move(d));
      continue;
    }
    if (nm.find(".lr_") != std::string::npos || nm.find(".sp_") != std::string::npos) continue;
    if (!w.add_tensor_info(nm, t.type, std::vector<int64_t>(t.ne, t.ne + t.n_dims)).is_ok()) return false;
    src.push_back(&t);
    dense.emplace_back();
  }
  return w
      .write(out,
             [&](size_t i, const GgufWriter::ByteSink& put) {
               const bool ok = src[i] ? put(src[i]->data, src[i]->nbytes)
                                      : put(reinterpret_cast<const uint8_t*>(dense[i].data()), dense[i].size() * 4);
               return ok ? Status::ok() : make_error(Code::Io, "write");
             })
      .is_ok();
}

SynthOptions small_model() {
  SynthOptions so = llmserve_test::small_synth_options(GgmlType::F32, 21);
  so.ffn = 90;  // ffn_down rows of 90, not a multiple of 8: the low-rank kernels' scalar tail
  return so;
}

}  // namespace

TEST(factored_model_equals_dense_model_holding_uv_plus_s) {
  const std::string in = llmserve_test::synth_to(small_model(), "lr_in.gguf");
  for (const double sparse : {0.0, 0.05}) {
    const std::string fac = llmserve_test::tmp_path("lr_fac.gguf"), dense = llmserve_test::tmp_path("lr_dense.gguf");
    LowRankOptions o;
    o.rank = 12;
    o.sparse = sparse;
    o.threads = 2;
    LowRankResult res;
    const Status st = lowrank_model(in, fac, o, nullptr, {}, nullptr, &res);
    CHECK(st.is_ok());
    if (!st.is_ok()) {
      std::fprintf(stderr, "  %s\n", st.message.c_str());
      return;
    }
    CHECK_EQ(res.tensors.size(), size_t(14));
    for (const auto& t : res.tensors) CHECK(t.factored && t.rank == 12 && t.bytes < t.dense_bytes);
    CHECK(densify(fac, dense));
    auto mf = llmserve_test::load_model(fac);
    auto md = llmserve_test::load_model(dense);
    CHECK(mf && md);
    if (!mf || !md) return;
    CHECK_EQ(mf->weights().layers[1].ffn_down.lr_rank, int64_t(12));
    CHECK((mf->weights().layers[1].ffn_down.sp_ptr != nullptr) == (sparse > 0));
    char what[64];
    std::snprintf(what, sizeof what, "factored (sparse %.2f) vs dense U·V+S", sparse);
    llmserve_test::check_same_function(*md, *mf, {1, 17, 42, 99, 5, 64, 3, 120, 7}, what);
  }
}

TEST(lowrank_bad_options_are_refused_before_any_work) {
  SynthOptions so = small_model();
  const std::string in = llmserve_test::synth_to(so, "lr_bad.gguf");
  const std::string out = llmserve_test::tmp_path("lr_bad_out.gguf");
  struct Case {
    LowRankOptions o;
    const char* needle;
  };
  std::vector<Case> cases;
  auto add = [&](auto set, const char* needle) {
    LowRankOptions o;
    o.patterns = {"attn_*"};
    set(o);
    cases.push_back({o, needle});
  };
  add([](LowRankOptions& o) { o.rank = 0; }, "either a rank");
  add([](LowRankOptions& o) { o.rank = 4, o.energy = 0.9; }, "either a rank");
  add([](LowRankOptions& o) { o.energy = 1.5; }, "energy must be in (0, 1]");
  add([](LowRankOptions& o) { o.rank = 65; }, "above min(n_in, n_out)");
  add([](LowRankOptions& o) { o.rank = 4, o.sparse = 1.0; }, "in [0, 1)");
  add([](LowRankOptions& o) { o.rank = 4, o.patterns = {"attn_qq"}; }, "'attn_qq' matches no layer matrix");
  add([](LowRankOptions& o) { o.rank = 4, o.activation_aware = true; }, "calibration");
  for (const Case& c : cases) {
    const Status st = lowrank_model(in, out, c.o, nullptr, {}, nullptr, nullptr);
    CHECK(st.code == Code::InvalidArgument);
    if (st.message.find(c.needle) == std::string::npos)
      std::fprintf(stderr, "  expected '%s' in: %s\n", c.needle, st.message.c_str());
    CHECK(st.message.find(c.needle) != std::string::npos);
    CHECK(::access(out.c_str(), F_OK) != 0);
  }
}

TEST(lowrank_corrupt_residual_is_refused_at_load) {
  const std::string in = llmserve_test::synth_to(small_model(), "lr_c_in.gguf");
  const std::string fac = llmserve_test::tmp_path("lr_c.gguf");
  LowRankOptions o;
  o.rank = 8;
  o.sparse = 0.02;
  o.patterns = {"blk.0.ffn_up.weight"};
  CHECK(lowrank_model(in, fac, o, nullptr, {}, nullptr, nullptr).is_ok());
  // Point the first column index past the row.
  std::unique_ptr<GgufFile> f;
  CHECK(GgufFile::open(fac, &f).is_ok());
  const GgufTensorInfo* c = f->find_tensor(std::string("blk.0.ffn_up.weight") + kSparseColSuffix);
  CHECK(c != nullptr);
  if (!c) return;
  const long off = static_cast<long>(f->data_offset() + c->offset);
  f.reset();
  FILE* fp = std::fopen(fac.c_str(), "r+b");
  CHECK(fp != nullptr);
  if (!fp) return;
  const int32_t bad = 1 << 20;
  std::fseek(fp, off, SEEK_SET);
  std::fwrite(&bad, 4, 1, fp);
  std::fclose(fp);
  Status st;
  auto m = llmserve_test::load_model(fac, &st);
  CHECK(!m);
  CHECK(st.code == Code::GgufCorrupt);
}

// The whole model over one batch, token by token and in uneven chunks, 1-3 threads: byte-identical
// logits (a factored matrix with a residual in every projection).
TEST(factored_model_batch_invariant) {
  SynthOptions so = small_model();
  so.heads = 2;  // head_dim 32: a q8_0 KV cache needs rows of whole blocks
  so.kv_heads = 1;
  const std::string in = llmserve_test::synth_to(so, "lr_bi_in.gguf");
  const std::string fac = llmserve_test::tmp_path("lr_bi.gguf");
  LowRankOptions o;
  o.rank = 8;
  o.sparse = 0.03;
  CHECK(lowrank_model(in, fac, o, nullptr, {}, nullptr, nullptr).is_ok());
  auto m = llmserve_test::load_model(fac);
  CHECK(m != nullptr);
  if (!m) return;
  CHECK(m->weights().layers[0].wq.lr_rank == 8 && m->weights().layers[0].wq.sp_ptr != nullptr);
  llmserve_test::check_batch_invariance(*m);
}

// Training reads dense rows of the frozen matrices: a factored model is refused with a typed error.
TEST(finetune_refuses_a_factored_model) {
  const std::string in = llmserve_test::synth_to(small_model(), "lr_ft_in.gguf");
  const std::string fac = llmserve_test::tmp_path("lr_ft.gguf");
  LowRankOptions o;
  o.rank = 8;
  o.patterns = {"ffn_up"};
  CHECK(lowrank_model(in, fac, o, nullptr, {}, nullptr, nullptr).is_ok());
  auto m = llmserve_test::load_model(fac);
  CHECK(m != nullptr);
  if (!m) return;
  LoraSet<float> l;
  CHECK(lora_zeros(m->config(), 2, 4.0, kAllBlockProjs, &l).is_ok());
  const std::vector<int32_t> toks = {1, 5, 9, 13}, labels = {5, 9, 13, -1};
  double nll = 0;
  ThreadPool pool(1);
  const Status st = lora_loss_grad<float>(*m, l, toks.data(), labels.data(), 4, 1.0, &nll, nullptr, pool);
  CHECK(st.code == Code::InvalidArgument);
  CHECK(st.message.find("low-rank factored") != std::string::npos);
}
