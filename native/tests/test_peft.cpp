// PEFT adapter loading (lora/peft.cpp, json, pattern, safetensors): the strict JSON reader, the
// linear-time Python-re subset used for PEFT's module patterns, hostile safetensors headers, and
// LoraAdapter::from_peft's mapping: which lora_B rows the llama q/k permutation moves (and that
// qwen2 is left alone), and the per-module scale from rank_pattern / alpha_pattern / use_rslora.
// The end-to-end check (PEFT adapter == merged model, typed errors through the API) is
// test/native/peft.test.ts.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "lora/json.h"
#include "lora/lora.h"
#include "lora/pattern.h"
#include "lora/safetensors.h"
#include "model/model.h"
#include "synth/synth.h"
#include "testing.h"

using namespace llmserve;

namespace {

Status json(const std::string& text, JsonValue* v = nullptr) {
  JsonValue tmp;
  return parse_json(text, "test.json", v ? v : &tmp);
}

bool matches(const std::string& pattern, const std::string& s) {
  Pattern p;
  Status st = Pattern::compile(pattern, "test", &p);
  if (!st) std::fprintf(stderr, "  compile '%s': %s\n", pattern.c_str(), st.message.c_str());
  CHECK(st.is_ok());
  return p.full_match(s);
}

// A safetensors image: 8-byte header length, header, data.
std::vector<uint8_t> image(const std::string& header, const std::vector<uint8_t>& data, uint64_t len_override = 0) {
  std::vector<uint8_t> b(8 + header.size() + data.size());
  const uint64_t n = len_override ? len_override : header.size();
  std::memcpy(b.data(), &n, 8);
  std::memcpy(b.data() + 8, header.data(), header.size());
  if (!data.empty()) std::memcpy(b.data() + 8 + header.size(), data.data(), data.size());
  return b;
}

Status parse_image(const std::vector<uint8_t>& img, std::unique_ptr<SafetensorsFile>* out = nullptr) {
  std::unique_ptr<SafetensorsFile> f;
  Status st = SafetensorsFile::parse(img.data(), img.size(), "t.safetensors", out ? out : &f);
  return st;
}

void expect(const Status& st, Code code, const std::string& mention) {
  if (st.code != code || st.message.find(mention) == std::string::npos)
    std::fprintf(stderr, "  got %s '%s', expected %s mentioning '%s'\n", code_name(st.code), st.message.c_str(),
                 code_name(code), mention.c_str());
  CHECK(st.code == code);
  CHECK(st.message.find(mention) != std::string::npos);
}

std::unique_ptr<Model> synth_base(const std::string& arch) {
  const std::string p =
      "/tmp/llmserve_test_peft_" + std::to_string(static_cast<long>(::getpid())) + "_" + arch + ".gguf";
  SynthOptions o;
  o.arch = arch, o.type = GgmlType::F32, o.layers = 2, o.heads = 4, o.kv_heads = 2, o.context = 256;
  o.vocab_size = 320, o.seed = 5, o.dim = 64, o.ffn = 96;
  CHECK(synth_model(o, p).is_ok());
  std::unique_ptr<GgufFile> f;
  CHECK(GgufFile::open(p, &f).is_ok());
  std::remove(p.c_str());  // the mapping stays valid
  std::unique_ptr<Model> m;
  CHECK(Model::load(std::shared_ptr<GgufFile>(std::move(f)), &m).is_ok());
  return m;
}

// A PEFT pair for module m with A = [r, n_in], B = [n_out, r] f32, element (row, col) = tag + row
// + col / 1000 (so a row's origin can be read back from its values).
struct PeftImage {
  std::string header = "{";
  std::vector<uint8_t> data;
  void add(const std::string& name, int64_t rows, int64_t cols, float tag) {
    const size_t begin = data.size();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const float v = tag + static_cast<float>(r) + static_cast<float>(c) / 1000.0f;
        const auto* p = reinterpret_cast<const uint8_t*>(&v);
        data.insert(data.end(), p, p + 4);
      }
    header += std::string(header.size() > 1 ? "," : "") + "\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[" +
              std::to_string(rows) + "," + std::to_string(cols) + "],\"data_offsets\":[" + std::to_string(begin) + "," +
              std::to_string(data.size()) + "]}";
  }
  void pair(const std::string& module, int64_t r, int64_t n_in, int64_t n_out) {
    add("base_model.model." + module + ".lora_A.weight", r, n_in, 0.0f);
    add("base_model.model." + module + ".lora_B.weight", n_out, r, 100.0f);
  }
  std::shared_ptr<const SafetensorsFile> file() {
    bytes = image(header + "}", data);
    std::unique_ptr<SafetensorsFile> f;
    CHECK(SafetensorsFile::parse(bytes.data(), bytes.size(), "adapter_model.safetensors", &f).is_ok());
    return std::shared_ptr<const SafetensorsFile>(std::move(f));
  }
  std::vector<uint8_t> bytes;
};

float at(const MatrixView& m, int64_t row, int64_t col) {
  CHECK(m.type == GgmlType::F32);
  float v = 0;
  std::memcpy(&v, m.row(row) + col * 4, 4);
  return v;
}

}  // namespace

TEST(json_reads_strictly_and_refuses_bad_text) {
  JsonValue v;
  CHECK(
      json(R"( {"a": [1, 2.5, -3, true, false, null], "b": "x\u00e9\ud83d\ude00\n", "big": 18446744073709551615} )", &v)
          .is_ok());
  CHECK(v.kind == JsonValue::Kind::Object);
  CHECK(v.get("a")->items.size() == 6);
  CHECK(v.get("a")->items[0].is_uint && v.get("a")->items[0].uint == 1);
  CHECK(!v.get("a")->items[1].is_uint && v.get("a")->items[1].number == 2.5);
  CHECK(!v.get("a")->items[2].is_uint);
  CHECK(v.get("a")->items[3].boolean && !v.get("a")->items[4].boolean);
  CHECK(v.get("b")->str == "x\xc3\xa9\xf0\x9f\x98\x80\n");
  CHECK(v.get("big")->is_uint && v.get("big")->uint == UINT64_MAX);  // exact, not through a double
  CHECK(json("18446744073709551616", &v).is_ok() && !v.is_uint);     // one more: a number, not a uint
  for (const char* bad :
       {"",   "{",     "[1,]", "{\"a\":1,}", "{\"a\" 1}",   "{a:1}",    "'x'",   "01",  "1.",   "-",
        "1e", "1e999", "NaN",  "\"\\x\"",    "\"\\ud800\"", "\"a\nb\"", "\"abc", "tru", "{} x", "{\"a\":1,\"a\":2}"}) {
    Status st = json(bad);
    if (st.code != Code::InvalidArgument) std::fprintf(stderr, "  accepted bad JSON: %s\n", bad);
    CHECK(st.code == Code::InvalidArgument);
    CHECK(st.message.find("test.json is not valid JSON") != std::string::npos);
  }
  // Depth and size caps: a deep text fails cleanly (no stack overflow).
  expect(json(std::string(100000, '[')), Code::InvalidArgument, "nesting depth");
  JsonLimits lim;
  lim.max_values = 3;
  expect(parse_json("[1,2,3]", "t", &v, lim), Code::InvalidArgument, "number of values");
  lim = JsonLimits();
  lim.max_string_bytes = 4;
  expect(parse_json("\"abcdefgh\"", "t", &v, lim), Code::InvalidArgument, "length of a string");
}

TEST(pattern_matches_module_names_like_python_re) {
  const std::string q = "model.layers.3.self_attn.q_proj";
  CHECK(matches("model\\.layers\\.3\\.self_attn\\.q_proj", q));
  CHECK(matches(".*\\.(q|k|v)_proj", q));
  CHECK(!matches(".*\\.(k|v)_proj", q));
  CHECK(matches("model\\.layers\\.[0-3]\\.self_attn\\.[qk]_proj", q));
  CHECK(!matches("model\\.layers\\.[^3]\\.self_attn\\.q_proj", q));
  CHECK(matches("model\\.layers\\.\\d+\\.\\w+\\.q_proj", q));
  CHECK(matches("(?:.*\\.)?(?:q_proj)", q));  // rank_pattern key "q_proj"
  CHECK(!matches("(?:.*\\.)?(?:proj)", q));   // a key matches whole name parts only
  CHECK(matches("(?:.*\\.)?(?:^model\\.layers\\.3\\.self_attn\\.q_proj)", q));
  CHECK(!matches("(?:.*\\.)?(?:^layers\\.3\\.self_attn\\.q_proj)", q));  // ^ anchors at the start
  CHECK(matches("a{2,3}b?", "aaa") && !matches("a{2,3}", "aaaa") && matches("a{2}", "aa"));
  CHECK(matches("x{,2}", "") && matches("a{x", "a{x"));  // '{' without a count is a literal (Python)
  CHECK(matches("(?P<n>ab)*c", "ababc") && matches("a*?b", "aab") && matches("[]a]+", "]a]"));
  CHECK(matches("a|b|", "") && !matches("q_proj", "q_proj2") && !matches("q_proj", "xq_proj"));
  CHECK(matches("\\x41\\.", "A.") && matches("[a\\-z]+", "a-z") && matches(".", "x") && !matches(".", "\n"));
  for (const char* bad : {"(a", "a)", "*a", "a**", "a*+", "(?=a)", "(?i)a", "(a)\\1", "\\b", "[a", "[z-a]", "a{5,2}",
                          "a{2000}", "\\", "(?<n>a)"}) {
    Pattern p;
    Status st = Pattern::compile(bad, "target_modules", &p);
    if (st.code != Code::InvalidArgument) std::fprintf(stderr, "  accepted bad pattern: %s\n", bad);
    CHECK(st.code == Code::InvalidArgument);
    CHECK(st.message.find("target_modules") != std::string::npos);
    CHECK(!p.full_match("a"));
  }
  Pattern p;
  expect(Pattern::compile("(a{1000}){1000}", "k", &p), Code::InvalidArgument, "too large");
}

TEST(pattern_matching_time_is_linear_no_backtracking) {
  // Exponential for a backtracking engine (std::regex, Python re): (a+)+b on a run of a's.
  Pattern p;
  CHECK(Pattern::compile("(a+)+b|(a|aa)*c", "t", &p).is_ok());
  const std::string s(4000, 'a');
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(!p.full_match(s));
  CHECK(p.full_match(s + "c"));
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (ms > 500) std::fprintf(stderr, "  took %.0f ms\n", ms);
  CHECK(ms < 500);
}

TEST(safetensors_refuses_hostile_files) {
  const std::vector<uint8_t> d8(8, 0);
  const std::string ok = R"({"__metadata__":{"format":"pt"},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::unique_ptr<SafetensorsFile> f;
  CHECK(parse_image(image(ok, d8), &f).is_ok());
  CHECK(f->tensors().size() == 1 && f->tensors()[0].name == "x" && f->tensors()[0].nbytes() == 8);
  CHECK(f->metadata().size() == 1 && f->metadata()[0].second == "pt");
  CHECK(parse_image(image("{}", {})).is_ok());  // no tensors: valid here (the LoRA loader refuses it)
  auto bad = [&](const std::vector<uint8_t>& img, Code code, const std::string& mention) {
    expect(parse_image(img), code, mention);
  };
  bad({1, 2, 3}, Code::InvalidArgument, "fewer than the 8-byte header length");
  bad(image(ok, d8, uint64_t(1) << 62), Code::InvalidArgument, "only");  // header length past the end
  bad(image(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", d8), Code::InvalidArgument,
      "outside the data section");
  std::vector<uint8_t> huge = image("{}", std::vector<uint8_t>(SafetensorsFile::kMaxHeaderBytes + 16, ' '),
                                    SafetensorsFile::kMaxHeaderBytes + 1);
  huge[8] = '{';
  bad(huge, Code::InvalidArgument, "over llmserve's limit");
  bad(image("[1]", {}), Code::InvalidArgument, "not a JSON object");
  bad(image("{\"x\":", {}), Code::InvalidArgument, "not valid JSON");
  const std::string t2 = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)";
  bad(image(t2 + R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", std::vector<uint8_t>(12)),
      Code::InvalidArgument, "overlapping");
  bad(image(t2 + R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})", std::vector<uint8_t>(20)),
      Code::InvalidArgument, "gap");
  bad(image(ok, std::vector<uint8_t>(12)), Code::InvalidArgument, "cover 8 bytes of a data section of 12");
  bad(image(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", d8), Code::InvalidArgument, "need 3 x 4");
  bad(image(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", d8), Code::InvalidArgument,
      "outside the data section");
  bad(image(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", d8),
      Code::InvalidArgument, "more elements than the file has bytes");
  bad(image(R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", d8), Code::InvalidArgument,
      "not a non-negative integer");
  bad(image(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", d8), Code::InvalidArgument, "data_offsets");
  bad(image(R"({"x":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", d8), Code::UnsupportedType, "'x'");
  bad(image(R"({"x":{"shape":[2],"data_offsets":[0,8]}})", d8), Code::InvalidArgument, "no string dtype");
  bad(image(R"({"__metadata__":{"a":1}})", {}), Code::InvalidArgument, "not a string");
  bad(image(
          R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
          d8),
      Code::InvalidArgument, "duplicate key");
}

TEST(peft_permutes_llama_q_k_lora_b_rows_and_leaves_qwen2_alone) {
  for (const char* arch : {"llama", "qwen2"}) {
    auto m = synth_base(arch);
    CHECK(m != nullptr);
    if (!m) continue;
    const ModelConfig& c = m->config();
    PeftImage img;
    const int64_t r = 4, n = c.n_embd, nq = c.n_embd_q(), nkv = c.n_embd_kv();
    img.pair("model.layers.1.self_attn.q_proj", r, n, nq);
    img.pair("model.layers.1.self_attn.k_proj", r, n, nkv);
    img.pair("model.layers.1.self_attn.v_proj", r, n, nkv);
    const std::string cfg =
        R"({"peft_type":"LORA","r":4,"lora_alpha":8,"target_modules":["q_proj","k_proj","v_proj"]})";
    std::unique_ptr<LoraAdapter> a;
    Status st = LoraAdapter::from_peft(img.file(), cfg, "t", *m, 1.0f, &a);
    if (!st) std::fprintf(stderr, "  %s: %s\n", arch, st.message.c_str());
    CHECK(st.is_ok());
    if (!a) continue;
    CHECK(a->n_pairs() == 3);
    CHECK(a->pair(0, Proj::Q) == nullptr && a->pair(1, Proj::O) == nullptr);
    const bool llama = std::string(arch) == "llama";
    for (Proj p : {Proj::Q, Proj::K, Proj::V}) {
      const LoraPair* pr = a->pair(1, p);
      CHECK(pr != nullptr);
      if (!pr) continue;
      CHECK(pr->a.n_in == n && pr->a.n_out == r && pr->b.n_in == r);
      CHECK_NEAR(pr->scale, 2.0, 1e-7);
      // A is never permuted: row k holds k.
      for (int64_t k = 0; k < r; ++k) CHECK_NEAR(at(pr->a, k, 1), k + 0.001, 1e-6);
      // B's GGUF row g came from HF row src(g): heads of hd rows, pairs (i, i + hd/2) interleaved.
      const int64_t heads = p == Proj::Q ? c.n_head : c.n_head_kv, hd = pr->b.n_out / heads;
      for (int64_t g = 0; g < pr->b.n_out; ++g) {
        const int64_t h = g / hd, i = (g % hd) / 2, j = g % 2;
        const int64_t src = (llama && p != Proj::V) ? h * hd + j * (hd / 2) + i : g;
        CHECK_NEAR(at(pr->b, g, 0), 100.0 + static_cast<double>(src), 1e-3);
      }
    }
  }
}

TEST(peft_scale_follows_rank_pattern_alpha_pattern_and_rslora) {
  auto m = synth_base("llama");
  CHECK(m != nullptr);
  if (!m) return;
  const ModelConfig& c = m->config();
  PeftImage img;
  img.pair("model.layers.0.self_attn.v_proj", 4, c.n_embd, c.n_embd_kv());
  img.pair("model.layers.1.self_attn.v_proj", 2, c.n_embd, c.n_embd_kv());
  img.pair("model.layers.0.mlp.down_proj", 4, c.n_ff, c.n_embd);
  auto file = img.file();
  auto load = [&](const std::string& cfg, float scale, std::unique_ptr<LoraAdapter>* a) {
    return LoraAdapter::from_peft(file, cfg, "t", *m, scale, a);
  };
  std::unique_ptr<LoraAdapter> a;
  // First matching key wins, in file order; a key matches whole dotted name parts.
  Status st = load(R"({"r":4,"lora_alpha":16,"target_modules":["v_proj","down_proj"],
      "rank_pattern":{"layers.1.self_attn.v_proj":2,"v_proj":4},
      "alpha_pattern":{"down_proj":2,"proj":1000,"^model.layers.0.self_attn.v_proj":6}})",
                   0.5f, &a);
  if (!st) std::fprintf(stderr, "  %s\n", st.message.c_str());
  CHECK(st.is_ok());
  if (a) {
    CHECK_NEAR(a->pair(1, Proj::V)->scale, 0.5 * 16 / 2, 1e-6);  // r 2: the first key, not "v_proj"
    CHECK_NEAR(a->pair(0, Proj::V)->scale, 0.5 * 6 / 4, 1e-6);   // alpha 6: "proj" is not a name part
    CHECK_NEAR(a->pair(0, Proj::Down)->scale, 0.5 * 2 / 4, 1e-6);
  }
  a.reset();
  CHECK(load(R"({"r":4,"lora_alpha":16,"use_rslora":true,"target_modules":".*(v|down)_proj",
      "rank_pattern":{"model.layers.1.self_attn.v_proj":2}})",
             1.0f, &a)
            .is_ok());
  if (a) {
    CHECK_NEAR(a->pair(0, Proj::V)->scale, 16 / 2.0, 1e-6);  // alpha / sqrt(4)
    CHECK_NEAR(a->pair(1, Proj::V)->scale, 16 / std::sqrt(2.0), 1e-5);
  }
  // The rank in the weights must be the config's.
  expect(load(R"({"r":4,"target_modules":["v_proj","down_proj"]})", 1.0f, &a), Code::BadShape, "r = 4");
}
