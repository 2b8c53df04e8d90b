// quantize (native/core/compress): the per-tensor recipe against a table derived from llama.cpp's
// rules; the whole output against llama.cpp's own llama_model_quantize and every tensor's bytes
// against ggml_quantize_chunk (node-llama-cpp's shared libraries, loaded with dlopen; skipped with
// a message when absent); round-trip error per type; metadata kept; cancel, overwrite and bad
// input.
#include <dirent.h>
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "compress/quantize.h"
#include "compress/recipe.h"
#include "gguf/gguf.h"
#include "llama_oracle.h"
#include "synth/synth.h"
#include "testing.h"

using namespace llmserve;

namespace {

using T = GgmlType;

std::string tmp_path(const std::string& name) {
  return "/tmp/llmserve_test_quantize_" + std::to_string(static_cast<long>(::getpid())) + "_" + name;
}

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

// Files in /tmp whose name starts with `prefix` (temp files a failed write must not leave).
int count_with_prefix(const std::string& prefix) {
  int n = 0;
  const std::string base = prefix.substr(prefix.find_last_of('/') + 1);
  if (DIR* d = ::opendir("/tmp")) {
    while (dirent* e = ::readdir(d))
      if (std::strncmp(e->d_name, base.c_str(), base.size()) == 0) ++n;
    ::closedir(d);
  }
  return n;
}

std::unique_ptr<GgufFile> open_ok(const std::string& path) {
  std::unique_ptr<GgufFile> f;
  Status st = GgufFile::open(path, &f);
  if (!st.is_ok()) std::fprintf(stderr, "  open %s: %s\n", path.c_str(), st.message.c_str());
  CHECK(st.is_ok());
  return f;
}

// A llama model with GQA 4, 8 layers (so use_more_bits picks layers 0, 3, 6, 7) and ffn 352
// (ffn_down rows do not fit a 256 block: the fallbacks).
std::string synth_f32(const std::string& name, const std::string& arch = "llama", bool tied = false) {
  SynthOptions o;
  o.arch = arch;
  o.dim = 256;
  o.layers = 8;
  o.heads = 8;
  o.kv_heads = 2;
  o.ffn = 352;
  o.context = 256;
  o.vocab_size = 320;
  o.tied_output = tied;
  o.seed = 11;
  const std::string p = tmp_path(name);
  Status st = synth_model(o, p);
  CHECK(st.is_ok());
  return p;
}

RecipeTensor rt(const std::string& name, int64_t ne0, int64_t ne1) {
  RecipeTensor t;
  t.name = name;
  t.ne[0] = ne0;
  t.ne[1] = ne1;
  return t;
}

// The tensors of a llama model, in file order.
std::vector<RecipeTensor> llama_tensors(int layers, int64_t dim, int64_t ffn, bool with_output) {
  std::vector<RecipeTensor> v = {rt("token_embd.weight", dim, 320), rt("output_norm.weight", dim, 1)};
  if (with_output) v.push_back(rt("output.weight", dim, 320));
  for (int i = 0; i < layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    for (const char* n : {"attn_q", "attn_output"}) v.push_back(rt(b + n + ".weight", dim, dim));
    for (const char* n : {"attn_k", "attn_v"}) v.push_back(rt(b + n + ".weight", dim, dim / 4));
    for (const char* n : {"ffn_gate", "ffn_up"}) v.push_back(rt(b + n + ".weight", dim, ffn));
    v.push_back(rt(b + "ffn_down.weight", ffn, dim));
    v.push_back(rt(b + "attn_norm.weight", dim, 1));
    v.push_back(rt(b + "ffn_norm.weight", dim, 1));
  }
  return v;
}

std::map<std::string, T> plan_by_name(const char* mix, const RecipeModel& m, const std::vector<RecipeTensor>& ts) {
  const QuantMix* q = find_quant_mix(mix);
  CHECK(q != nullptr);
  std::map<std::string, T> out;
  if (!q) return out;
  const std::vector<T> plan = plan_tensor_types(*q, m, ts);
  for (size_t i = 0; i < ts.size(); ++i) out[ts[i].name] = plan[i];
  return out;
}

#define CHECK_TYPE(plan, tensor, want)                                                                          \
  do {                                                                                                          \
    const T _got = (plan)[tensor];                                                                              \
    if (_got != (want)) {                                                                                       \
      std::fprintf(stderr, "  %s:%d: %s is %s, expected %s\n", __FILE__, __LINE__, std::string(tensor).c_str(), \
                   type_traits(_got).name, type_traits(want).name);                                             \
      ++::lt::failures();                                                                                       \
    }                                                                                                           \
  } while (0)

}  // namespace

// The table below is llama.cpp's rules worked out by hand for an 8-layer GQA-4 model:
// use_more_bits(i, 8) holds for layers 0, 3, 6, 7 (i < 1, i >= 7, (i - 1) % 3 == 2).
TEST(quantize_recipe_table_k_mixes) {
  RecipeModel m;
  m.n_layer = 8;
  m.n_head = 8;
  m.n_head_kv = 2;
  const auto ts = llama_tensors(8, 256, 512, true);
  const bool more[8] = {true, false, false, true, false, false, true, true};
  auto q4km = plan_by_name("q4_k_m", m, ts);
  auto q5km = plan_by_name("q5_k_m", m, ts);
  auto q3km = plan_by_name("q3_k_m", m, ts);
  auto q3kl = plan_by_name("q3_k_l", m, ts);
  auto q4ks = plan_by_name("q4_k_s", m, ts);
  auto q2k = plan_by_name("q2_k", m, ts);
  auto iq4 = plan_by_name("iq4_xs", m, ts);
  for (auto* p : {&q4km, &q5km, &q3km, &q3kl, &q4ks, &q2k, &iq4}) {
    CHECK_TYPE(*p, "output.weight", T::Q6_K);
    CHECK_TYPE(*p, "output_norm.weight", T::F32);
  }
  CHECK_TYPE(q4km, "token_embd.weight", T::Q4_K);
  CHECK_TYPE(q2k, "token_embd.weight", T::Q2_K);
  for (int i = 0; i < 8; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    CHECK_TYPE(q4km, b + "attn_v.weight", more[i] ? T::Q6_K : T::Q4_K);
    CHECK_TYPE(q4km, b + "ffn_down.weight", more[i] ? T::Q6_K : T::Q4_K);
    CHECK_TYPE(q4km, b + "attn_q.weight", T::Q4_K);
    CHECK_TYPE(q4km, b + "attn_k.weight", T::Q4_K);
    CHECK_TYPE(q4km, b + "attn_output.weight", T::Q4_K);
    CHECK_TYPE(q4km, b + "ffn_up.weight", T::Q4_K);
    CHECK_TYPE(q4km, b + "ffn_norm.weight", T::F32);
    CHECK_TYPE(q5km, b + "attn_v.weight", more[i] ? T::Q6_K : T::Q5_K);
    CHECK_TYPE(q5km, b + "ffn_down.weight", more[i] ? T::Q6_K : T::Q5_K);
    CHECK_TYPE(q3km, b + "attn_v.weight", i < 2 ? T::Q5_K : T::Q4_K);
    CHECK_TYPE(q3km, b + "ffn_down.weight", T::Q4_K);  // i < 8/16 never holds
    CHECK_TYPE(q3km, b + "attn_output.weight", T::Q4_K);
    CHECK_TYPE(q3km, b + "ffn_gate.weight", T::Q3_K);
    CHECK_TYPE(q3kl, b + "attn_v.weight", T::Q5_K);
    CHECK_TYPE(q3kl, b + "ffn_down.weight", T::Q5_K);
    CHECK_TYPE(q3kl, b + "attn_output.weight", T::Q5_K);
    CHECK_TYPE(q4ks, b + "attn_v.weight", i < 4 ? T::Q5_K : T::Q4_K);
    CHECK_TYPE(q4ks, b + "ffn_down.weight", i < 1 ? T::Q5_K : T::Q4_K);
    CHECK_TYPE(q2k, b + "attn_v.weight", T::Q4_K);  // GQA 4
    CHECK_TYPE(q2k, b + "ffn_down.weight", T::Q3_K);
    CHECK_TYPE(q2k, b + "attn_output.weight", T::Q3_K);
    CHECK_TYPE(q2k, b + "attn_q.weight", T::Q2_K);
    CHECK_TYPE(iq4, b + "attn_v.weight", T::Q5_K);  // GQA 4
    CHECK_TYPE(iq4, b + "ffn_down.weight", i < 1 ? T::Q5_K : T::IQ4_XS);
  }
  // Without GQA, q2_k's attn_v is Q3_K and iq4_xs's stays IQ4_XS; a 70B model lifts Q3_K/Q4_K to Q5_K.
  m.n_head_kv = 8;
  auto q2k_mha = plan_by_name("q2_k", m, ts);
  auto iq4_mha = plan_by_name("iq4_xs", m, ts);
  CHECK_TYPE(q2k_mha, "blk.5.attn_v.weight", T::Q3_K);
  CHECK_TYPE(iq4_mha, "blk.5.attn_v.weight", T::IQ4_XS);
  m.is_70b = true;
  auto q2k_70b = plan_by_name("q2_k", m, ts);
  CHECK_TYPE(q2k_70b, "blk.5.attn_v.weight", T::Q5_K);
}

TEST(quantize_recipe_tied_legacy_float_and_fallbacks) {
  RecipeModel m;
  m.n_layer = 4;
  m.n_head = 8;
  m.n_head_kv = 8;
  // Tied embeddings: token_embd takes output's Q6_K; legacy mixes keep their type elsewhere.
  const auto tied = llama_tensors(4, 256, 512, false);
  auto q4_0 = plan_by_name("q4_0", m, tied);
  CHECK_TYPE(q4_0, "token_embd.weight", T::Q6_K);
  CHECK_TYPE(q4_0, "blk.0.ffn_down.weight", T::Q4_0);  // Q4_1 only with an imatrix
  auto q8 = plan_by_name("q8_0", m, tied);
  CHECK_TYPE(q8, "token_embd.weight", T::Q8_0);
  auto f16 = plan_by_name("f16", m, tied);
  CHECK_TYPE(f16, "token_embd.weight", T::F16);
  CHECK_TYPE(f16, "blk.1.attn_v.weight", T::F16);
  CHECK_TYPE(f16, "blk.1.attn_norm.weight", T::F32);
  // Rows of 96: k-quants fall back (Q4_K -> Q5_0, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0, IQ4_XS ->
  // IQ4_NL); output of a mix whose block does not fit is Q8_0; rows of 40 fit nothing: F16.
  const auto odd = llama_tensors(4, 96, 40, true);
  auto km = plan_by_name("q4_k_m", m, odd);
  CHECK_TYPE(km, "blk.1.attn_q.weight", T::Q5_0);
  CHECK_TYPE(km, "blk.2.attn_v.weight", T::Q8_0);  // Q6_K (use_more_bits(2, 4)) -> Q8_0
  CHECK_TYPE(km, "blk.1.attn_v.weight", T::Q5_0);
  CHECK_TYPE(km, "output.weight", T::Q8_0);
  CHECK_TYPE(km, "blk.1.ffn_down.weight", T::F16);  // ne0 = 40
  auto q2 = plan_by_name("q2_k", m, odd);
  CHECK_TYPE(q2, "blk.1.attn_q.weight", T::Q4_0);
  CHECK_TYPE(q2, "blk.1.attn_output.weight", T::Q4_0);  // Q3_K -> Q4_0
  auto xs = plan_by_name("iq4_xs", m, odd);
  CHECK_TYPE(xs, "blk.1.attn_q.weight", T::IQ4_NL);
  CHECK(fallback_type(T::Q5_K, 96) == T::Q5_1);
  CHECK(fallback_type(T::Q8_0, 40) == T::F16);
  CHECK(fallback_type(T::Q4_K, 512) == T::Q4_K);
  CHECK(find_quant_mix("q4_k") == find_quant_mix("q4_k_m"));
  CHECK(find_quant_mix("q7_0") == nullptr);
}

namespace {

using oracle::libs;
using LlamaQuantizeParams = oracle::QuantizeParams;

Status quantize_file(const std::string& in, const std::string& out, const char* type, QuantizeResult* res = nullptr,
                     int threads = 2) {
  QuantizeOptions o;
  o.type = type;
  o.threads = threads;
  QuantizeResult r;
  Status s = quantize_model(in, out, o, {}, nullptr, &r);
  if (res) *res = r;
  return s;
}

}  // namespace

// Every tensor our quantizer writes is ggml_quantize_chunk's bytes for the type we chose, on the
// same f32 rows (what llama-quantize calls), for every mix.
TEST(quantize_bytes_equal_ggml_quantize_chunk) {
  if (!libs().quantize_chunk) {
    std::printf("  (skipped: %s)\n", libs().why_not.c_str());
    return;
  }
  const std::string in = synth_f32("chunk_in.gguf");
  auto src = open_ok(in);
  if (!src) return;
  for (const QuantMix& mix : quant_mixes()) {
    const std::string out = tmp_path(std::string("chunk_") + mix.name + ".gguf");
    Status st = quantize_file(in, out, mix.name);
    CHECK(st.is_ok());
    auto q = open_ok(out);
    if (!q) continue;
    int64_t mismatched = 0;
    for (const GgufTensorInfo& t : q->tensors()) {
      const GgufTensorInfo* s = src->find_tensor(t.name);
      CHECK(s != nullptr);
      if (!s) continue;
      const int64_t rows = t.n_elements() / t.ne[0];
      std::vector<uint8_t> want(t.nbytes);
      const size_t n = libs().quantize_chunk(static_cast<int>(t.type), reinterpret_cast<const float*>(s->data),
                                             want.data(), 0, rows, t.ne[0], nullptr);
      if (n != t.nbytes || std::memcmp(want.data(), t.data, t.nbytes) != 0) {
        std::fprintf(stderr, "  %s %s (%s): bytes differ from ggml_quantize_chunk\n", mix.name, t.name.c_str(),
                     type_traits(t.type).name);
        ++mismatched;
      }
    }
    CHECK_EQ(mismatched, int64_t(0));
    std::remove(out.c_str());
  }
  std::remove(in.c_str());
}

// The whole recipe and the bytes against llama.cpp itself: llama_model_quantize on the same input
// (llama: untied, GQA 4; qwen2: tied output, biases) must give every tensor the same type and bytes,
// and the same metadata keys with the same general.file_type.
TEST(quantize_equals_llama_model_quantize) {
  if (!libs().model_quantize || !libs().default_params) {
    std::printf("  (skipped: libllama with llama_model_quantize not found%s)\n",
                libs().why_not.empty() ? "" : (": " + libs().why_not).c_str());
    return;
  }
  for (const char* arch : {"llama", "qwen2"}) {
    const std::string in = synth_f32(std::string("oracle_in_") + arch + ".gguf", arch, std::string(arch) == "qwen2");
    for (const QuantMix& mix : quant_mixes()) {
      const std::string ours = tmp_path(std::string("ours_") + mix.name + ".gguf");
      const std::string theirs = tmp_path(std::string("theirs_") + mix.name + ".gguf");
      CHECK(quantize_file(in, ours, mix.name).is_ok());
      LlamaQuantizeParams p = libs().default_params();
      p.nthread = 2;
      p.ftype = mix.ftype;
      CHECK_EQ(libs().model_quantize(in.c_str(), theirs.c_str(), &p), 0u);
      auto a = open_ok(ours);
      auto b = open_ok(theirs);
      if (!a || !b) continue;
      CHECK_EQ(a->tensors().size(), b->tensors().size());
      int bad = 0;
      for (const GgufTensorInfo& t : a->tensors()) {
        const GgufTensorInfo* u = b->find_tensor(t.name);
        if (!u || u->type != t.type || u->nbytes != t.nbytes || std::memcmp(u->data, t.data, t.nbytes) != 0) {
          std::fprintf(stderr, "  %s %s %s: ours %s, llama.cpp %s%s\n", arch, mix.name, t.name.c_str(),
                       type_traits(t.type).name, u ? type_traits(u->type).name : "(absent)",
                       u && u->type == t.type ? " (bytes differ)" : "");
          ++bad;
        }
      }
      CHECK_EQ(bad, 0);
      CHECK_EQ(a->metadata().size(), b->metadata().size());
      for (const auto& [key, v] : b->metadata()) CHECK(a->find(key) != nullptr);
      int64_t fa = -1, fb = -2;
      bool found = false;
      CHECK(a->get_int("general.file_type", &fa, &found).is_ok());
      CHECK(b->get_int("general.file_type", &fb, &found).is_ok());
      CHECK_EQ(fa, fb);
      CHECK_EQ(fa, int64_t(mix.ftype));
      std::remove(ours.c_str());
      std::remove(theirs.c_str());
    }
    std::remove(in.c_str());
  }
}

// Round-trip error of each type on the synth weights (roughly normal): the relative RMS error
// ||dequantize(quantize(w)) - w|| / ||w|| of every converted matrix stays under the type's bound.
// The bounds are about 1.3x the worst tensor measured here (README's Quantize section lists them); a
// wrong scale, a dropped bit or a shifted nibble moves the error far past them.
TEST(quantize_round_trip_error_within_bounds) {
  const std::string in = synth_f32("rt_in.gguf");
  auto src = open_ok(in);
  if (!src) return;
  const std::map<std::string, double> bound = {
      {"f32", 0.0},     {"f16", 4e-4},    {"bf16", 3e-3},     {"q8_0", 7.2e-3},  {"q6_k", 2.4e-2},
      {"q5_1", 5e-2},   {"q5_0", 5.7e-2}, {"q5_k_s", 5e-2},   {"q4_1", 1.05e-1}, {"q4_0", 1.15e-1},
      {"iq4_nl", 1e-1}, {"iq4_xs", 1e-1}, {"q4_k_s", 9.5e-2}, {"q3_k_s", 2e-1},  {"q2_k", 4e-1},
  };
  for (const auto& [name, b] : bound) {
    const std::string out = tmp_path("rt_" + name + ".gguf");
    QuantizeResult res;
    CHECK(quantize_file(in, out, name.c_str(), &res).is_ok());
    auto q = open_ok(out);
    if (!q) continue;
    double worst = 0;
    std::string worst_name;
    for (const GgufTensorInfo& t : q->tensors()) {
      if (t.type == T::F32 && name != "f32") continue;  // not converted (norms)
      const GgufTensorInfo* s = src->find_tensor(t.name);
      const int64_t ne0 = t.ne[0], rows = t.n_elements() / ne0;
      std::vector<float> y(static_cast<size_t>(ne0));
      double e2 = 0, x2 = 0;
      for (int64_t r = 0; r < rows; ++r) {
        dequantize_row(t.type, t.data + r * row_size(t.type, ne0), y.data(), ne0);
        const float* x = reinterpret_cast<const float*>(s->data) + r * ne0;
        for (int64_t k = 0; k < ne0; ++k) {
          e2 += (double(y[k]) - x[k]) * (double(y[k]) - x[k]);
          x2 += double(x[k]) * x[k];
        }
      }
      const double rel = std::sqrt(e2 / x2);
      if (rel > worst) {
        worst = rel;
        worst_name = t.name + " (" + type_traits(t.type).name + ")";
      }
    }
    std::printf("  %-7s worst relative RMS error %.3g (%s), bound %.3g\n", name.c_str(), worst, worst_name.c_str(), b);
    CHECK(worst <= b);
    std::remove(out.c_str());
  }
  std::remove(in.c_str());
}

// Every metadata key of the input is in the output with the same value (the tokenizer arrays
// included), but general.file_type (the mix's llama_ftype) and general.quantization_version (2).
TEST(quantize_keeps_metadata_and_tokenizer) {
  const std::string in = synth_f32("meta_in.gguf");
  const std::string out = tmp_path("meta_out.gguf");
  QuantizeResult res;
  CHECK(quantize_file(in, out, "q4_k_m", &res).is_ok());
  CHECK_EQ(res.ftype, 15);
  auto a = open_ok(in);
  auto b = open_ok(out);
  if (!a || !b) return;
  CHECK_EQ(b->metadata().size(), a->metadata().size() + (a->find("general.quantization_version") ? 0 : 1));
  for (const auto& [key, v] : a->metadata()) {
    const GgufValue* w = b->find(key);
    CHECK(w != nullptr);
    if (!w || key == "general.file_type") continue;
    CHECK(w->type == v.type);
    CHECK(w->s == v.s);
    CHECK_EQ(w->arr_len, v.arr_len);
    CHECK(w->arr_str == v.arr_str);
    if (v.arr_data && w->arr_data)
      CHECK(std::memcmp(v.arr_data, w->arr_data, v.arr_len * gguf_scalar_size(v.arr_type)) == 0);
    CHECK(w->u == v.u && w->i == v.i && w->f == v.f);
  }
  CHECK(b->find("tokenizer.ggml.tokens") != nullptr);
  CHECK_EQ(b->find("general.file_type")->as_int(), int64_t(15));
  CHECK_EQ(b->find("general.quantization_version")->as_int(), int64_t(2));
  // Tensor data starts aligned, in the order of the input.
  for (size_t i = 0; i < b->tensors().size(); ++i) {
    CHECK_EQ(b->tensors()[i].offset % b->alignment(), uint64_t(0));
    CHECK(b->tensors()[i].name == a->tensors()[i].name);
  }
  std::remove(in.c_str());
  std::remove(out.c_str());
}

// Output independent of the thread count; cancel leaves neither the output nor a temp file.
TEST(quantize_threads_and_cancel) {
  const std::string in = synth_f32("cancel_in.gguf");
  const std::string o1 = tmp_path("threads1.gguf"), o4 = tmp_path("threads4.gguf");
  CHECK(quantize_file(in, o1, "q4_k_m", nullptr, 1).is_ok());
  CHECK(quantize_file(in, o4, "q4_k_m", nullptr, 4).is_ok());
  std::ifstream f1(o1, std::ios::binary), f4(o4, std::ios::binary);
  const std::string b1((std::istreambuf_iterator<char>(f1)), {}), b4((std::istreambuf_iterator<char>(f4)), {});
  CHECK(!b1.empty() && b1 == b4);
  const std::string out = tmp_path("cancelled.gguf");
  std::atomic<bool> cancel{false};
  double last = -1;
  bool monotone = true;
  QuantizeOptions o;
  o.type = "q8_0";
  Status st = quantize_model(
      in, out, o,
      [&](double f) {
        monotone = monotone && f >= last;
        last = f;
        if (f > 0.3) cancel = true;  // mid-way: some tensors are already written
      },
      &cancel, nullptr);
  CHECK(st.code == Code::Cancelled);
  CHECK(monotone && last > 0.3 && last < 1.0);
  CHECK(!exists(out));
  CHECK_EQ(count_with_prefix(out), 0);
  // A finished run reports 1.
  last = -1;
  CHECK(quantize_model(
            in, out, o, [&](double f) { last = f; }, nullptr, nullptr)
            .is_ok());
  CHECK_EQ(last, 1.0);
  for (const auto& p : {in, o1, o4, out}) std::remove(p.c_str());
}

TEST(quantize_refuses_bad_input_and_its_own_input) {
  const std::string in = synth_f32("bad_in.gguf");
  std::ifstream fin(in, std::ios::binary);
  const std::string before((std::istreambuf_iterator<char>(fin)), {});
  // The input itself, by the same path, a hard link or a symlink: refused, input untouched.
  const std::string hard = tmp_path("hard.gguf"), sym = tmp_path("sym.gguf");
  CHECK(::link(in.c_str(), hard.c_str()) == 0);
  CHECK(::symlink(in.c_str(), sym.c_str()) == 0);
  for (const std::string& out : {in, hard, sym}) {
    Status st = quantize_file(in, out, "q8_0");
    CHECK(st.code == Code::InvalidArgument);
    CHECK(st.message.find("refusing to overwrite the input") != std::string::npos);
  }
  std::ifstream fin2(in, std::ios::binary);
  CHECK(std::string((std::istreambuf_iterator<char>(fin2)), {}) == before);
  // Unknown type: the message lists the valid ones.
  Status st = quantize_file(in, tmp_path("x.gguf"), "q7_k");
  CHECK(st.code == Code::InvalidArgument);
  CHECK(st.message.find("q4_k_m") != std::string::npos && st.message.find("iq4_xs") != std::string::npos);
  // Missing, not GGUF, truncated.
  CHECK(quantize_file(tmp_path("missing.gguf"), tmp_path("x.gguf"), "q8_0").code == Code::FileNotFound);
  const std::string junk = tmp_path("junk.gguf"), cut = tmp_path("cut.gguf");
  std::ofstream(junk, std::ios::binary) << "this is not a gguf file at all";
  std::ofstream(cut, std::ios::binary) << before.substr(0, before.size() / 3);
  CHECK(quantize_file(junk, tmp_path("x.gguf"), "q8_0").code == Code::NotGguf);
  CHECK(quantize_file(cut, tmp_path("x.gguf"), "q8_0").code == Code::GgufTruncated);
  // An output folder that does not exist: Io, nothing left behind.
  CHECK(quantize_file(in, "/tmp/llmserve_no_such_dir_quantize/x.gguf", "q8_0").code == Code::Io);
  CHECK(!exists(tmp_path("x.gguf")));
  for (const auto& p : {in, hard, sym, junk, cut}) std::remove(p.c_str());
}

// GgufWriter's streamed tensors (what quantize writes through): bytes from fill land at the
// tensor's offset; a fill that puts too few bytes is Internal, too many or an error of its own
// aborts; every failure leaves neither the file nor a temp file.
TEST(gguf_writer_streamed_tensors) {
  const std::string p = tmp_path("streamed.gguf");
  GgufWriter w;
  w.set_str("general.architecture", "llama");
  CHECK(w.add_tensor("a", T::F32, {8}, std::vector<uint8_t>(32, 1)).is_ok());
  CHECK(w.add_tensor_info("b", T::Q8_0, {64, 2}).is_ok());
  CHECK(w.add_tensor_info("b", T::Q8_0, {64}).code == Code::InvalidArgument);  // duplicate
  CHECK(w.add_tensor_info("c", T::Q8_0, {40}).code == Code::BadShape);         // not a block multiple
  const size_t nb = 2 * row_size(T::Q8_0, 64);
  auto fill_with = [&](size_t n, Status s) {
    return [n, s](size_t i, const GgufWriter::ByteSink& put) {
      CHECK_EQ(i, size_t(1));
      std::vector<uint8_t> bytes(n, 7);
      if (!put(bytes.data(), bytes.size())) return make_error(Code::Io, "put refused");
      return s;
    };
  };
  CHECK(w.write(p, fill_with(nb - 1, Status::ok())).code == Code::Internal);
  CHECK(w.write(p, fill_with(nb + 1, Status::ok())).code == Code::Io);
  CHECK(w.write(p, fill_with(nb, make_error(Code::Cancelled, "stop"))).code == Code::Cancelled);
  CHECK(w.write(p).code == Code::InvalidArgument);  // no fill for a streamed tensor
  CHECK(!exists(p));
  CHECK_EQ(count_with_prefix(p), 0);
  CHECK(w.write(p, fill_with(nb, Status::ok())).is_ok());
  auto f = open_ok(p);
  if (!f) return;
  const GgufTensorInfo* b = f->find_tensor("b");
  CHECK(b != nullptr && b->nbytes == nb && b->type == T::Q8_0);
  if (b) CHECK(b->data[0] == 7 && b->data[nb - 1] == 7);
  CHECK_EQ(f->find_tensor("a")->data[0], uint8_t(1));
  std::remove(p.c_str());
}
