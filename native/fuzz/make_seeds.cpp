// Writes the fuzzers' seed corpora with our own writer (never copies fixture files):
//   make_seeds <dir>   ->  <dir>/gguf/*.gguf  (tiny llama / qwen2 models in several weight types,
//                          a metadata file with every value type, a few-tensor k-quant file)
//                          <dir>/sampling/*, <dir>/engine/*  (a few byte strings)
//                          <dir>/peft/*  (PEFT adapters for fuzz_peft's model: config + safetensors)
// Models are valid for Model::load so the fuzzer starts deep inside the binder, and kept to a few
// KiB so mutations stay fast.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "quant/quant.h"

using namespace llmserve;
namespace fs = std::filesystem;

namespace {

std::vector<uint8_t> tensor_bytes(GgmlType t, int64_t ne0, int64_t rows, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(ne0));
  const size_t rs = row_size(t, ne0);
  std::vector<uint8_t> out(rs * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : x) v = d(rng);
    quantize_row(t, x.data(), out.data() + static_cast<size_t>(r) * rs, ne0);
  }
  return out;
}

struct Shape {
  std::string arch = "llama";
  int64_t dim = 32, layers = 1, heads = 2, kv_heads = 1, ffn = 32, vocab = 8, ctx = 64;
  GgmlType type = GgmlType::F32;
  bool tied = false, biases = false, yarn = false, rope_freqs = false;
  uint32_t alignment = 32;
};

Status write_model(const Shape& s, const std::string& path) {
  GgufWriter w;
  const std::string a = s.arch + ".";
  w.set_str("general.architecture", s.arch);
  w.set_str("general.name", "fuzz-seed");
  if (s.alignment != 32) w.set_u32("general.alignment", s.alignment);
  w.set_u32(a + "embedding_length", (uint32_t)s.dim);
  w.set_u32(a + "block_count", (uint32_t)s.layers);
  w.set_u32(a + "feed_forward_length", (uint32_t)s.ffn);
  w.set_u32(a + "context_length", (uint32_t)s.ctx);
  w.set_u32(a + "attention.head_count", (uint32_t)s.heads);
  w.set_u32(a + "attention.head_count_kv", (uint32_t)s.kv_heads);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_f32(a + "rope.freq_base", 10000.0f);
  const int64_t hd = s.dim / s.heads;
  w.set_u32(a + "rope.dimension_count", (uint32_t)hd);
  if (s.yarn) {
    w.set_str(a + "rope.scaling.type", "yarn");
    w.set_f32(a + "rope.scaling.factor", 4.0f);
    w.set_u32(a + "rope.scaling.original_context_length", 32);
    w.set_f32(a + "rope.scaling.yarn_log_multiplier", 0.1f);
  }
  // A small tokenizer section, as real files carry one.
  std::vector<std::string> toks;
  std::vector<float> scores;
  std::vector<int32_t> types;
  for (int64_t i = 0; i < s.vocab; ++i) {
    toks.push_back(i == 0 ? "<unk>" : i == 1 ? "<s>" : i == 2 ? "</s>" : "\xe2\x96\x81t" + std::to_string(i));
    scores.push_back(-(float)i);
    types.push_back(i == 0 ? 2 : i < 3 ? 3 : 1);
  }
  w.set_str("tokenizer.ggml.model", "llama");
  w.set_arr_str("tokenizer.ggml.tokens", toks);
  w.set_arr_f32("tokenizer.ggml.scores", scores);
  w.set_arr_i32("tokenizer.ggml.token_type", types);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  w.set_bool("tokenizer.ggml.add_bos_token", true);

  uint32_t seed = 1;
  auto mat = [&](const std::string& name, int64_t n_in, int64_t n_out) {
    const GgmlType t = n_in % type_traits(s.type).block_size == 0 ? s.type : GgmlType::F32;
    return w.add_tensor(name, t, {n_in, n_out}, tensor_bytes(t, n_in, n_out, seed++));
  };
  auto vec = [&](const std::string& name, int64_t n) {
    return w.add_tensor(name, GgmlType::F32, {n}, tensor_bytes(GgmlType::F32, n, 1, seed++));
  };
  const int64_t nq = s.heads * hd, nkv = s.kv_heads * hd;
  LLMS_RETURN_IF_ERROR(mat("token_embd.weight", s.dim, s.vocab));
  LLMS_RETURN_IF_ERROR(vec("output_norm.weight", s.dim));
  if (!s.tied) LLMS_RETURN_IF_ERROR(mat("output.weight", s.dim, s.vocab));
  if (s.rope_freqs) LLMS_RETURN_IF_ERROR(vec("rope_freqs.weight", hd / 2));
  for (int64_t il = 0; il < s.layers; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    LLMS_RETURN_IF_ERROR(vec(p + "attn_norm.weight", s.dim));
    LLMS_RETURN_IF_ERROR(mat(p + "attn_q.weight", s.dim, nq));
    LLMS_RETURN_IF_ERROR(mat(p + "attn_k.weight", s.dim, nkv));
    LLMS_RETURN_IF_ERROR(mat(p + "attn_v.weight", s.dim, nkv));
    LLMS_RETURN_IF_ERROR(mat(p + "attn_output.weight", nq, s.dim));
    if (s.biases) {
      LLMS_RETURN_IF_ERROR(vec(p + "attn_q.bias", nq));
      LLMS_RETURN_IF_ERROR(vec(p + "attn_k.bias", nkv));
      LLMS_RETURN_IF_ERROR(vec(p + "attn_v.bias", nkv));
    }
    LLMS_RETURN_IF_ERROR(vec(p + "ffn_norm.weight", s.dim));
    LLMS_RETURN_IF_ERROR(mat(p + "ffn_gate.weight", s.dim, s.ffn));
    LLMS_RETURN_IF_ERROR(mat(p + "ffn_up.weight", s.dim, s.ffn));
    LLMS_RETURN_IF_ERROR(mat(p + "ffn_down.weight", s.ffn, s.dim));
  }
  w.set_alignment(s.alignment);
  return w.write(path);
}

// Every metadata value type, nested arrays included, plus two tensors in k-quant formats.
Status write_metadata_file(const std::string& path) {
  GgufWriter w;
  w.set_u32("u32", 4000000000u);
  w.set_i32("i32", -5);
  w.set_u64("u64", 1ull << 60);
  w.set_f32("f32", 0.5f);
  w.set_bool("bool", true);
  w.set_str("str", "h\xc3\xa9llo");
  w.set_arr_str("arr.str", {"a", "",
                            "\xe2\x96\x81"
                            "b"});
  w.set_arr_f32("arr.f32", {1.0f, -2.0f});
  w.set_arr_i32("arr.i32", {7, -8, 9});
  GgufValue v;
  v.type = GgufType::INT8;
  v.i = -3;
  w.set_value("i8", v);
  v = {};
  v.type = GgufType::UINT16;
  v.u = 65535;
  w.set_value("u16", v);
  v = {};
  v.type = GgufType::INT64;
  v.i = -(1ll << 50);
  w.set_value("i64", v);
  v = {};
  v.type = GgufType::FLOAT64;
  v.f = -2.25;
  w.set_value("f64", v);
  GgufValue inner;
  inner.type = GgufType::ARRAY;
  inner.arr_type = GgufType::STRING;
  inner.arr_str = {"x", "yz"};
  GgufValue outer;
  outer.type = GgufType::ARRAY;
  outer.arr_type = GgufType::ARRAY;
  outer.arr_len = 1;
  outer.arr_nested = {inner};
  w.set_value("arr.nested", outer);
  LLMS_RETURN_IF_ERROR(w.add_tensor("k4", GgmlType::Q4_K, {256, 1}, tensor_bytes(GgmlType::Q4_K, 256, 1, 9)));
  LLMS_RETURN_IF_ERROR(w.add_tensor("k6", GgmlType::Q6_K, {256, 1}, tensor_bytes(GgmlType::Q6_K, 256, 1, 10)));
  LLMS_RETURN_IF_ERROR(w.add_tensor("h", GgmlType::F16, {4, 2, 1, 1}, tensor_bytes(GgmlType::F16, 4, 2, 11)));
  LLMS_RETURN_IF_ERROR(w.add_tensor("bh", GgmlType::BF16, {2, 1, 2}, tensor_bytes(GgmlType::BF16, 2, 2, 12)));
  return w.write(path);
}

bool write_bytes(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream o(p, std::ios::binary);
  o.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  return static_cast<bool>(o);
}

// A fuzz_peft input: [u16 n][n bytes of adapter_config.json][safetensors image] holding LoRA pairs
// for the modules of fuzz_peft's model (dim 32, 2 layers, 2 heads of 16, 1 KV head, ffn 32, vocab 300).
std::vector<uint8_t> peft_seed(const std::string& config, const std::vector<std::string>& modules, int64_t r,
                               const std::string& dtype, bool lm_head) {
  struct Dims {
    const char* name;
    int64_t n_in, n_out;
  };
  const Dims kDims[] = {{"self_attn.q_proj", 32, 32}, {"self_attn.k_proj", 32, 16}, {"self_attn.v_proj", 32, 16},
                        {"self_attn.o_proj", 32, 32}, {"mlp.gate_proj", 32, 32},    {"mlp.up_proj", 32, 32},
                        {"mlp.down_proj", 32, 32}};
  const size_t eb = dtype == "F32" ? 4 : 2;
  std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
  std::vector<uint8_t> data;
  std::mt19937 rng(3);
  auto add = [&](const std::string& name, int64_t rows, int64_t cols) {
    const size_t begin = data.size();
    for (int64_t k = 0; k < rows * cols; ++k) {
      const float v = static_cast<float>(static_cast<int>(rng() % 64) - 32) / 256.0f;
      uint32_t bits = 0;
      std::memcpy(&bits, &v, 4);
      if (eb == 4) {
        for (int b = 0; b < 4; ++b) data.push_back(static_cast<uint8_t>(bits >> (8 * b)));
      } else {
        const uint16_t h = dtype == "BF16" ? static_cast<uint16_t>(bits >> 16) : fp32_to_fp16(v);
        data.push_back(static_cast<uint8_t>(h)), data.push_back(static_cast<uint8_t>(h >> 8));
      }
    }
    header += ",\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":[" + std::to_string(rows) + "," +
              std::to_string(cols) + "],\"data_offsets\":[" + std::to_string(begin) + "," +
              std::to_string(data.size()) + "]}";
  };
  auto pair = [&](const std::string& module, int64_t n_in, int64_t n_out) {
    add("base_model.model." + module + ".lora_A.weight", r, n_in);
    add("base_model.model." + module + ".lora_B.weight", n_out, r);
  };
  for (int il = 0; il < 2; ++il)
    for (const Dims& d : kDims)
      for (const auto& m : modules)
        if (std::string(d.name).find(m) != std::string::npos)
          pair("model.layers." + std::to_string(il) + "." + d.name, d.n_in, d.n_out);
  if (lm_head) pair("lm_head", 32, 300);
  header += "}";
  std::vector<uint8_t> out = {static_cast<uint8_t>(config.size()), static_cast<uint8_t>(config.size() >> 8)};
  out.insert(out.end(), config.begin(), config.end());
  const uint64_t n = header.size();
  for (int b = 0; b < 8; ++b) out.push_back(static_cast<uint8_t>(n >> (8 * b)));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds <corpus dir>\n");
    return 2;
  }
  const fs::path root(argv[1]);
  for (const char* d : {"gguf", "sampling", "engine", "peft"}) fs::create_directories(root / d);
  int failed = 0;
  auto check = [&](const Status& st, const std::string& what) {
    if (!st) {
      std::fprintf(stderr, "make_seeds: %s: %s\n", what.c_str(), st.message.c_str());
      ++failed;
    }
  };
  struct Named {
    const char* name;
    Shape s;
  };
  std::vector<Named> models;
  models.push_back({"llama_f32", Shape{}});
  {
    Shape s;
    s.type = GgmlType::Q8_0;
    models.push_back({"llama_q8_0", s});
  }
  {
    Shape s;
    s.type = GgmlType::Q4_0;
    s.tied = true;
    s.rope_freqs = true;
    models.push_back({"llama_q4_0_tied", s});
  }
  {
    Shape s;
    s.type = GgmlType::F16;
    s.layers = 2;
    s.alignment = 64;
    models.push_back({"llama_f16_2layers", s});
  }
  {
    Shape s;
    s.type = GgmlType::BF16;
    s.heads = 4;
    s.kv_heads = 2;
    models.push_back({"llama_bf16_gqa", s});
  }
  {
    Shape s;
    s.arch = "qwen2";
    s.biases = true;
    s.yarn = true;
    models.push_back({"qwen2_f32_yarn", s});
  }
  for (const auto& m : models)
    check(write_model(m.s, (root / "gguf" / (std::string(m.name) + ".gguf")).string()), m.name);
  check(write_metadata_file((root / "gguf" / "metadata_all_types.gguf").string()), "metadata");

  // Sampling / engine seeds: the targets read their inputs as a little-endian field stream (see
  // fuzz_sampling.cpp / fuzz_engine.cpp); any bytes are valid, these just start at typical values.
  std::mt19937 rng(7);
  for (int i = 0; i < 8; ++i) {
    std::vector<uint8_t> b(64 + 32 * i);
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    if (!write_bytes(root / "sampling" / ("random_" + std::to_string(i)), b)) ++failed;
    if (!write_bytes(root / "engine" / ("random_" + std::to_string(i)), b)) ++failed;
  }
  std::vector<uint8_t> zeros(128, 0);
  if (!write_bytes(root / "sampling" / "zeros", zeros)) ++failed;
  if (!write_bytes(root / "engine" / "zeros", zeros)) ++failed;
  // PEFT seeds: every projection in F32 with a rank_pattern override; BF16 attention + lm_head with a
  // regex target and use_rslora; F16 MLP with exclude_modules and layers_to_transform.
  const std::vector<std::string> all = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  const std::pair<const char*, std::vector<uint8_t>> peft[] = {
      {"all_f32", peft_seed(R"({"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":["q_proj","k_proj",)"
                            R"("v_proj","o_proj","gate_proj","up_proj","down_proj"],"rank_pattern":{"q_proj":2}})",
                            all, 2, "F32", false)},
      {"attn_bf16", peft_seed(R"({"peft_type":"LORA","r":4,"lora_alpha":8,"use_rslora":true,)"
                              R"("target_modules":".*\\.(q|k|v|o)_proj|lm_head","alpha_pattern":{"^lm_head":2}})",
                              {"q_proj", "k_proj", "v_proj", "o_proj"}, 4, "BF16", true)},
      {"mlp_f16", peft_seed(R"({"r":1,"lora_alpha":1,"target_modules":["gate_proj","up_proj","down_proj"],)"
                            R"("exclude_modules":["nothing"],"layers_to_transform":[0,1],"bias":"none"})",
                            {"gate_proj", "up_proj", "down_proj"}, 1, "F16", false)},
  };
  for (const auto& [name, bytes] : peft)
    if (!write_bytes(root / "peft" / name, bytes)) ++failed;
  std::printf("make_seeds: wrote seeds to %s (%d failures)\n", root.string().c_str(), failed);
  return failed ? 1 : 0;
}
