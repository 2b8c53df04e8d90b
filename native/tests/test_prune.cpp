// prune (native/core/compress/prune.h, calib.h): the row criteria on hand-made rows (which entries
// stay, ties, Wanda's column weights changing the choice), globs, the checks made before any work
// (nothing written), a whole pruned file (zeros per row or per group of 4, kept values bit-equal,
// other tensors byte-equal, metadata added) and the calibration statistics (thread invariant,
// Q/K/V sharing their input, one forward pass of a chunk splitting the same as two).
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "compress/calib.h"
#include "compress/factorize.h"
#include "compress/prune.h"
#include "compress/quantize.h"
#include "gguf/gguf.h"
#include "model_test_util.h"
#include "quant/quant.h"
#include "synth/synth.h"
#include "testing.h"

using namespace llmserve;

namespace {

std::string tmp_path(const std::string& name) {
  return "/tmp/llmserve_test_prune_" + std::to_string(static_cast<long>(::getpid())) + "_" + name;
}

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

// A small llama model; ffn = 90 makes ffn_down rows (90) not divisible by 4.
std::string synth(const std::string& name, int64_t ffn = 96, GgmlType type = GgmlType::F32) {
  SynthOptions o;
  o.dim = 64;
  o.layers = 2;
  o.heads = 4;
  o.kv_heads = 2;
  o.ffn = ffn;
  o.context = 64;
  o.vocab_size = 320;
  o.type = type;
  o.seed = 5;
  const std::string p = tmp_path(name);
  CHECK(synth_model(o, p).is_ok());
  return p;
}

std::vector<float> row_f32(const GgufTensorInfo& t, int64_t r) {
  std::vector<float> out(static_cast<size_t>(t.ne[0]));
  dequantize_row(t.type, t.data + static_cast<size_t>(r) * row_size(t.type, t.ne[0]), out.data(), t.ne[0]);
  return out;
}

const GgufTensorInfo* find(const GgufFile& f, const std::string& name) {
  for (const auto& t : f.tensors())
    if (t.name == name) return &t;
  return nullptr;
}

std::vector<int32_t> calib_tokens(int64_t n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) t[static_cast<size_t>(i)] = static_cast<int32_t>((i * 37 + 11) % 128);
  return t;
}

}  // namespace

TEST(prune_row_2_4_keeps_the_two_largest_of_each_group) {
  std::vector<float> w = {0.1f, -3.0f, 2.0f, 0.5f, /**/ 4.0f, 1.0f, -1.5f, 0.2f, /**/ 1.0f, 1.0f, 1.0f, 1.0f};
  std::vector<float> s(w.size());
  prune_scores(w.data(), nullptr, static_cast<int64_t>(w.size()), s.data());
  prune_row_2_4(w.data(), s.data(), static_cast<int64_t>(w.size()));
  const std::vector<float> want = {0, -3.0f, 2.0f, 0, /**/ 4.0f, 0, -1.5f, 0, /**/ 0, 0, 1.0f, 1.0f};
  CHECK(w == want);
}

TEST(prune_row_unstructured_zeroes_the_k_smallest) {
  std::vector<float> w = {0.3f, -0.1f, 5.0f, -2.0f, 0.05f, 1.0f, 0.3f};
  std::vector<float> s(w.size());
  std::vector<int32_t> idx;
  prune_scores(w.data(), nullptr, 7, s.data());
  prune_row_unstructured(w.data(), s.data(), 7, 3, idx);
  // Zeroed: 0.05, -0.1 and the first of the two 0.3 (ties: the lower column).
  const std::vector<float> want = {0, 0, 5.0f, -2.0f, 0, 1.0f, 0.3f};
  CHECK(w == want);
}

TEST(prune_wanda_weighs_columns_by_activation_norm) {
  // Magnitude keeps columns 0 and 1; column 2's large activations make Wanda keep it instead of 1.
  std::vector<float> w = {1.0f, 0.8f, 0.5f, 0.1f};
  const std::vector<double> sumsq = {1.0, 1.0, 9.0, 1.0};
  std::vector<float> s(4);
  std::vector<float> mag = w, wanda = w;
  prune_scores(w.data(), nullptr, 4, s.data());
  prune_row_2_4(mag.data(), s.data(), 4);
  CHECK((mag == std::vector<float>{1.0f, 0.8f, 0, 0}));
  prune_scores(w.data(), sumsq.data(), 4, s.data());
  CHECK(std::fabs(s[2] - 1.5f) < 1e-6f);
  prune_row_2_4(wanda.data(), s.data(), 4);
  CHECK((wanda == std::vector<float>{1.0f, 0, 0.5f, 0}));
}

TEST(prune_glob_match) {
  CHECK(glob_match("ffn_*", "ffn_down"));
  CHECK(glob_match("blk.1.*", "blk.1.attn_q.weight"));
  CHECK(!glob_match("blk.1.*", "blk.10x"));
  CHECK(glob_match("attn_?", "attn_q"));
  CHECK(!glob_match("attn_?", "attn_output"));
  CHECK(glob_match("*", ""));
  CHECK(!glob_match("ffn_up", "ffn_up.weight"));
}

TEST(prune_bad_arguments_are_errors_before_any_work) {
  const std::string in = synth("bad_in.gguf", 90);
  const std::string out = tmp_path("bad_out.gguf");
  PruneOptions o;
  auto refused = [&](const PruneOptions& opt, const char* needle) {
    const Status st = prune_model(in, out, opt, nullptr, {}, nullptr, nullptr);
    CHECK(st.code == Code::InvalidArgument);
    if (st.message.find(needle) == std::string::npos) std::fprintf(stderr, "  message: %s\n", st.message.c_str());
    CHECK(st.message.find(needle) != std::string::npos);
    CHECK(!exists(out));
  };
  o.ratio = 0;
  refused(o, "(0, 1)");
  o.ratio = 1;
  refused(o, "(0, 1)");
  o.ratio = std::nan("");
  refused(o, "(0, 1)");
  o.ratio = 0.5;
  o.patterns = {"ffn_*", "nosuch_*"};
  refused(o, "nosuch_*");
  o.patterns = {};
  o.two_four = true;  // ffn_down rows are 90 long
  refused(o, "blk.0.ffn_down.weight");
  o.patterns = {"attn_*", "ffn_gate", "ffn_up"};  // leaving ffn_down out is fine ...
  o.method = PruneMethod::Wanda;                  // ... but Wanda needs statistics
  refused(o, "--calib");
  o.method = PruneMethod::Magnitude;
  CHECK(prune_model(in, in, o, nullptr, {}, nullptr, nullptr).code == Code::InvalidArgument);
  std::vector<std::string> sel;
  CHECK(plan_prune(in, o, &sel).is_ok());
  CHECK_EQ(sel.size(), size_t(2 * 6));
  ::unlink(in.c_str());
}

// Unstructured and 2:4, f32 and f16: the pruned tensors have the zeros the criterion asks for and
// every kept value bit-equal to the input; other tensors are copied byte for byte.
TEST(prune_model_output_zeros_and_kept_values) {
  for (GgmlType type : {GgmlType::F32, GgmlType::F16}) {
    const std::string in = synth("model_in.gguf", 96, type);
    for (bool two_four : {false, true}) {
      const std::string out = tmp_path("model_out.gguf");
      PruneOptions o;
      o.two_four = two_four;
      o.ratio = 0.3;
      o.patterns = {"ffn_*", "blk.1.attn_output.weight"};
      o.threads = 2;
      PruneResult res;
      double last = 0;
      CHECK(prune_model(
                in, out, o, nullptr, [&](double f) { last = f; }, nullptr, &res)
                .is_ok());
      CHECK(last == 1.0);
      CHECK_EQ(res.tensors.size(), size_t(2 * 3 + 1));
      std::unique_ptr<GgufFile> a, b;
      CHECK(GgufFile::open(in, &a).is_ok());
      CHECK(GgufFile::open(out, &b).is_ok());
      if (!a || !b) return;
      std::string pattern;
      bool found = false;
      CHECK(b->get_string("llmserve.prune.pattern", &pattern, &found).is_ok());
      CHECK(found && pattern == (two_four ? "2:4" : "unstructured"));
      for (const GgufTensorInfo& ta : a->tensors()) {
        const GgufTensorInfo* tb = find(*b, ta.name);
        CHECK(tb && tb->type == ta.type && tb->nbytes == ta.nbytes);
        if (!tb) continue;
        bool pruned = false;
        for (const PrunedTensor& p : res.tensors) pruned |= p.name == ta.name;
        if (!pruned) {
          CHECK(std::memcmp(ta.data, tb->data, ta.nbytes) == 0);
          continue;
        }
        const int64_t ne0 = ta.ne[0], k = static_cast<int64_t>(std::floor(0.3 * static_cast<double>(ne0)));
        for (int64_t r = 0; r < ta.ne[1]; ++r) {
          const std::vector<float> x = row_f32(ta, r), y = row_f32(*tb, r);
          float max_dropped = 0, min_kept = INFINITY;
          int64_t zeros = 0;
          for (int64_t j = 0; j < ne0; ++j) {
            if (y[j] != 0.0f) {
              CHECK(y[j] == x[j]);
              min_kept = std::min(min_kept, std::fabs(x[j]));
            } else {
              ++zeros;
              max_dropped = std::max(max_dropped, std::fabs(x[j]));
            }
            if (two_four && j % 4 == 3) {
              int kept = 0;
              float g_min_kept = INFINITY, g_max_dropped = 0;
              for (int64_t i = j - 3; i <= j; ++i) {
                if (y[i] != 0.0f) ++kept, g_min_kept = std::min(g_min_kept, std::fabs(x[i]));
                else g_max_dropped = std::max(g_max_dropped, std::fabs(x[i]));
              }
              CHECK_EQ(kept, 2);
              CHECK(g_max_dropped <= g_min_kept);
            }
          }
          if (two_four) {
            CHECK_EQ(zeros, ne0 / 2);
          } else {
            CHECK_EQ(zeros, k);
            CHECK(max_dropped <= min_kept);
          }
        }
      }
      ::unlink(out.c_str());
    }
    ::unlink(in.c_str());
  }
}

TEST(prune_calibration_statistics) {
  const std::string in = synth("calib_in.gguf");
  auto model = llmserve_test::load_model(in);
  CHECK(model != nullptr);
  if (!model) return;
  const std::vector<int32_t> tokens = calib_tokens(40);
  ActivationStats s1, s3;
  int calls = 0;
  CHECK(collect_activation_stats(
            *model, tokens, 16, 1, [&](double) { ++calls; }, nullptr, &s1)
            .is_ok());
  CHECK_EQ(calls, 3);  // chunks of 16, 16 and 8
  CHECK(collect_activation_stats(*model, tokens, 16, 3, {}, nullptr, &s3).is_ok());
  CHECK_EQ(s1.tokens, int64_t(40));
  CHECK_EQ(s1.sumsq.size(), size_t(2 * 7));
  CHECK(s1.sumsq == s3.sumsq);  // the thread count changes nothing
  const auto& q = s1.sumsq["blk.1.attn_q.weight"];
  CHECK(q == s1.sumsq["blk.1.attn_v.weight"]);  // same input
  CHECK_EQ(q.size(), size_t(64));
  CHECK_EQ(s1.sumsq["blk.0.ffn_down.weight"].size(), size_t(96));
  for (const auto& [name, v] : s1.sumsq)
    for (double x : v) CHECK(x > 0 && std::isfinite(x));
  // The sums add over chunks: running [0, 16) and [16, 32) as separate chunks of 16 gives the
  // statistics of the first 32 tokens in chunks of 16.
  ActivationStats a, b, ab;
  CHECK(collect_activation_stats(*model, std::vector<int32_t>(tokens.begin(), tokens.begin() + 16), 16, 1, {}, nullptr,
                                 &a)
            .is_ok());
  CHECK(collect_activation_stats(*model, std::vector<int32_t>(tokens.begin() + 16, tokens.begin() + 32), 16, 1, {},
                                 nullptr, &b)
            .is_ok());
  CHECK(collect_activation_stats(*model, std::vector<int32_t>(tokens.begin(), tokens.begin() + 32), 16, 1, {}, nullptr,
                                 &ab)
            .is_ok());
  const auto& d = ab.sumsq["blk.0.ffn_down.weight"];
  for (size_t j = 0; j < d.size(); ++j) {
    const double sum = a.sumsq["blk.0.ffn_down.weight"][j] + b.sumsq["blk.0.ffn_down.weight"][j];
    CHECK(std::fabs(d[j] - sum) <= 1e-9 * std::fabs(sum));
  }
  std::atomic<bool> cancel{true};
  ActivationStats c;
  CHECK(collect_activation_stats(*model, tokens, 16, 1, {}, &cancel, &c).code == Code::Cancelled);
  CHECK(collect_activation_stats(*model, {}, 16, 1, {}, nullptr, &c).code == Code::InvalidArgument);

  // Wanda with these statistics: a different choice from magnitude somewhere, and a missing entry
  // is refused.
  const std::string out_m = tmp_path("wanda_m.gguf"), out_w = tmp_path("wanda_w.gguf");
  PruneOptions o;
  o.ratio = 0.5;
  CHECK(prune_model(in, out_m, o, nullptr, {}, nullptr, nullptr).is_ok());
  o.method = PruneMethod::Wanda;
  CHECK(prune_model(in, out_w, o, &s1, {}, nullptr, nullptr).is_ok());
  std::unique_ptr<GgufFile> fm, fw;
  CHECK(GgufFile::open(out_m, &fm).is_ok() && GgufFile::open(out_w, &fw).is_ok());
  if (fm && fw) {
    const GgufTensorInfo* tm = find(*fm, "blk.0.ffn_down.weight");
    const GgufTensorInfo* tw = find(*fw, "blk.0.ffn_down.weight");
    CHECK(tm && tw && std::memcmp(tm->data, tw->data, tm->nbytes) != 0);
  }
  ActivationStats partial = s1;
  partial.sumsq.erase("blk.1.ffn_up.weight");
  ::unlink(out_w.c_str());
  CHECK(prune_model(in, out_w, o, &partial, {}, nullptr, nullptr).code == Code::InvalidArgument);
  CHECK(!exists(out_w));
  ::unlink(out_m.c_str());
  ::unlink(in.c_str());
}

// A layer matrix of a type llmserve cannot dequantize (f32 bytes retyped i32) is refused by each
// converter alike (check_convertible): UnsupportedType naming the tensor and what to do instead.
TEST(compress_converters_refuse_unconvertible_types) {
  const std::string in = synth("i32_src.gguf"), bad = tmp_path("i32.gguf"), out = tmp_path("i32_out.gguf");
  std::unique_ptr<GgufFile> f;
  CHECK(GgufFile::open(in, &f).is_ok());
  if (!f) return;
  GgufWriter w;
  for (const auto& [k, v] : f->metadata()) w.set_value(k, v);
  for (const GgufTensorInfo& t : f->tensors()) {
    const GgmlType ty = t.name == "blk.1.attn_q.weight" ? GgmlType::I32 : t.type;
    CHECK(w.add_tensor(t.name, ty, std::vector<int64_t>(t.ne, t.ne + t.n_dims),
                       std::vector<uint8_t>(t.data, t.data + t.nbytes))
              .is_ok());
  }
  CHECK(w.write(bad).is_ok());
  PruneOptions po;
  po.ratio = 0.5;
  LowRankOptions lo;
  lo.rank = 4;
  QuantizeOptions qo;
  qo.type = "q8_0";
  const std::pair<Status, const char*> runs[] = {
      {prune_model(bad, out, po, nullptr, {}, nullptr, nullptr), "; prune the f16/f32 original"},
      {lowrank_model(bad, out, lo, nullptr, {}, nullptr, nullptr), "; factor the f16/f32 original"},
      {quantize_model(bad, out, qo, {}, nullptr, nullptr), "; quantize from the f16/f32 original"},
  };
  for (const auto& [st, advice] : runs) {
    CHECK(st.code == Code::UnsupportedType);
    CHECK(st.message.find("tensor 'blk.1.attn_q.weight' has type i32, which llmserve cannot convert") !=
          std::string::npos);
    CHECK(st.message.find(advice) != std::string::npos);
    if (st.code != Code::UnsupportedType) std::fprintf(stderr, "  %s\n", st.message.c_str());
  }
  CHECK(!exists(out));
  for (const std::string& p : {in, bad}) ::unlink(p.c_str());
}
