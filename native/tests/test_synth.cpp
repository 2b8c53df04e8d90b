// GgufWriter round trips through GgufFile, and synth_model's files (names, shapes, types,
// metadata, determinism, option validation, generated vocabulary).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "synth/synth.h"
#include "testing.h"

using namespace llmserve;

// String equality with both values printed (testing.h's CHECK_EQ prints numbers only).
#define CHECK_STR(a, b)                                                                                     \
  do {                                                                                                      \
    std::string _sa(a), _sb(b);                                                                             \
    if (_sa != _sb) {                                                                                       \
      std::fprintf(stderr, "  %s:%d: CHECK_STR(%s, %s) failed: '%s' vs '%s'\n", __FILE__, __LINE__, #a, #b, \
                   _sa.c_str(), _sb.c_str());                                                               \
      ++::lt::failures();                                                                                   \
    }                                                                                                       \
  } while (0)

namespace {

std::string tmp_path(const std::string& name) {
  return "/tmp/llmserve_test_synth_" + std::to_string(static_cast<long>(::getpid())) + "_" + name;
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::unique_ptr<GgufFile> open_ok(const std::string& path) {
  std::unique_ptr<GgufFile> f;
  Status st = GgufFile::open(path, &f);
  if (!st.is_ok()) std::fprintf(stderr, "  open %s: %s\n", path.c_str(), st.message.c_str());
  CHECK(st.is_ok());
  return f;
}

std::string str_of(const GgufValue* v) { return v ? std::string(v->s) : std::string("<missing>"); }

SynthOptions small_opts() {
  SynthOptions o;
  o.dim = 64;
  o.layers = 2;
  o.heads = 4;
  o.kv_heads = 2;
  o.ffn = 96;
  o.context = 512;
  o.vocab_size = 320;
  return o;
}

// std and mean of a F32 tensor's values.
void f32_stats(const GgufTensorInfo* t, double* mean, double* std) {
  const float* x = reinterpret_cast<const float*>(t->data);
  const int64_t n = t->n_elements();
  double s = 0, s2 = 0;
  for (int64_t i = 0; i < n; ++i) {
    s += x[i];
    s2 += double(x[i]) * x[i];
  }
  *mean = s / n;
  *std = std::sqrt(std::max(0.0, s2 / n - *mean * *mean));
}

}  // namespace

TEST(gguf_writer_roundtrip_all_value_types) {
  GgufWriter w;
  GgufValue v;
  v.type = GgufType::UINT8;
  v.u = 200;
  w.set_value("t.u8", v);
  v = {};
  v.type = GgufType::INT8;
  v.i = -100;
  w.set_value("t.i8", v);
  v = {};
  v.type = GgufType::UINT16;
  v.u = 60000;
  w.set_value("t.u16", v);
  v = {};
  v.type = GgufType::INT16;
  v.i = -30000;
  w.set_value("t.i16", v);
  w.set_u32("t.u32", 4000000000u);
  w.set_i32("t.i32", -2000000000);
  w.set_f32("t.f32", 1.25f);
  w.set_bool("t.bool", true);
  w.set_str("t.str", "héllo wörld");
  w.set_u64("t.u64", 0xFEDCBA9876543210ull);
  v = {};
  v.type = GgufType::INT64;
  v.i = -(int64_t(1) << 60);
  w.set_value("t.i64", v);
  v = {};
  v.type = GgufType::FLOAT64;
  v.f = 3.141592653589793;
  w.set_value("t.f64", v);
  w.set_arr_f32("t.arr_f32", {1.5f, -2.5f, 0.0f});
  w.set_arr_i32("t.arr_i32", {7, -8, 9, 10});
  w.set_arr_str("t.arr_str", {"a", "", "\xE2\x96\x81the"});
  const uint16_t u16s[3] = {1, 65535, 300};
  v = {};
  v.type = GgufType::ARRAY;
  v.arr_type = GgufType::UINT16;
  v.arr_len = 3;
  v.arr_data = reinterpret_cast<const uint8_t*>(u16s);
  w.set_value("t.arr_u16", v);
  const uint8_t bools[2] = {1, 0};
  v = {};
  v.type = GgufType::ARRAY;
  v.arr_type = GgufType::BOOL;
  v.arr_len = 2;
  v.arr_data = bools;
  w.set_value("t.arr_bool", v);
  // Array of two arrays: [[1, 2], ["x"]].
  const int32_t i32s[2] = {1, 2};
  GgufValue inner1;
  inner1.type = GgufType::ARRAY;
  inner1.arr_type = GgufType::INT32;
  inner1.arr_len = 2;
  inner1.arr_data = reinterpret_cast<const uint8_t*>(i32s);
  GgufValue inner2;
  inner2.type = GgufType::ARRAY;
  inner2.arr_type = GgufType::STRING;
  inner2.arr_len = 1;
  inner2.arr_str = {"x"};
  v = {};
  v.type = GgufType::ARRAY;
  v.arr_type = GgufType::ARRAY;
  v.arr_len = 2;
  v.arr_nested = {inner1, inner2};
  w.set_value("t.nested", v);
  // Empty numeric array.
  v = {};
  v.type = GgufType::ARRAY;
  v.arr_type = GgufType::FLOAT64;
  v.arr_len = 0;
  w.set_value("t.arr_empty", v);

  const std::string path = tmp_path("values.gguf");
  Status st = w.write(path);
  CHECK(st.is_ok());
  auto f = open_ok(path);
  if (!f) return;
  CHECK_EQ(f->version(), 3u);
  CHECK_EQ(f->metadata().size(), size_t(19));
  CHECK_EQ(f->tensors().size(), size_t(0));
  CHECK_STR(f->metadata()[0].first, std::string("t.u8"));  // insertion order kept
  auto get = [&](const char* k) { return f->find(k); };
  CHECK(get("t.u8") && get("t.u8")->type == GgufType::UINT8 && get("t.u8")->as_int() == 200);
  CHECK(get("t.i8") && get("t.i8")->type == GgufType::INT8 && get("t.i8")->as_int() == -100);
  CHECK(get("t.u16") && get("t.u16")->type == GgufType::UINT16 && get("t.u16")->as_int() == 60000);
  CHECK(get("t.i16") && get("t.i16")->type == GgufType::INT16 && get("t.i16")->as_int() == -30000);
  CHECK(get("t.u32") && get("t.u32")->type == GgufType::UINT32 && get("t.u32")->as_int() == 4000000000ll);
  CHECK(get("t.i32") && get("t.i32")->type == GgufType::INT32 && get("t.i32")->as_int() == -2000000000);
  CHECK(get("t.f32") && get("t.f32")->type == GgufType::FLOAT32 && get("t.f32")->as_double() == 1.25);
  CHECK(get("t.bool") && get("t.bool")->type == GgufType::BOOL && get("t.bool")->as_int() == 1);
  CHECK(get("t.str") && get("t.str")->type == GgufType::STRING);
  CHECK_STR(str_of(get("t.str")), std::string("héllo wörld"));
  CHECK(get("t.u64") && get("t.u64")->type == GgufType::UINT64 && get("t.u64")->u == 0xFEDCBA9876543210ull);
  CHECK(get("t.i64") && get("t.i64")->type == GgufType::INT64 && get("t.i64")->i == -(int64_t(1) << 60));
  CHECK(get("t.f64") && get("t.f64")->type == GgufType::FLOAT64 && get("t.f64")->f == 3.141592653589793);
  const GgufValue* a = get("t.arr_f32");
  CHECK(a && a->type == GgufType::ARRAY && a->arr_type == GgufType::FLOAT32 && a->arr_len == 3);
  if (a && a->arr_len == 3) {
    CHECK_EQ(a->arr_double(1), -2.5);
    CHECK_EQ(a->arr_double(0), 1.5);
  }
  a = get("t.arr_i32");
  CHECK(a && a->arr_type == GgufType::INT32 && a->arr_len == 4);
  if (a && a->arr_len == 4) {
    CHECK_EQ(a->arr_int(1), int64_t(-8));
    CHECK_EQ(a->arr_int(3), int64_t(10));
  }
  a = get("t.arr_str");
  CHECK(a && a->arr_type == GgufType::STRING && a->arr_str.size() == 3);
  if (a && a->arr_str.size() == 3) {
    CHECK_STR(std::string(a->arr_str[0]), std::string("a"));
    CHECK_STR(std::string(a->arr_str[1]), std::string(""));
    CHECK_STR(std::string(a->arr_str[2]), std::string("\xE2\x96\x81the"));
  }
  a = get("t.arr_u16");
  CHECK(a && a->arr_type == GgufType::UINT16 && a->arr_len == 3);
  if (a && a->arr_len == 3) CHECK_EQ(a->arr_int(1), int64_t(65535));
  a = get("t.arr_bool");
  CHECK(a && a->arr_type == GgufType::BOOL && a->arr_len == 2);
  if (a && a->arr_len == 2) {
    CHECK_EQ(a->arr_int(0), int64_t(1));
    CHECK_EQ(a->arr_int(1), int64_t(0));
  }
  a = get("t.nested");
  CHECK(a && a->arr_type == GgufType::ARRAY && a->arr_nested.size() == 2);
  if (a && a->arr_nested.size() == 2) {
    CHECK(a->arr_nested[0].arr_type == GgufType::INT32 && a->arr_nested[0].arr_len == 2);
    CHECK_EQ(a->arr_nested[0].arr_int(1), int64_t(2));
    CHECK(a->arr_nested[1].arr_type == GgufType::STRING && a->arr_nested[1].arr_str.size() == 1);
    if (a->arr_nested[1].arr_str.size() == 1) CHECK_STR(std::string(a->arr_nested[1].arr_str[0]), std::string("x"));
  }
  a = get("t.arr_empty");
  CHECK(a && a->arr_type == GgufType::FLOAT64 && a->arr_len == 0);
  std::remove(path.c_str());
}

TEST(gguf_writer_set_value_copy_is_byte_identical) {
  GgufWriter w;
  w.set_str("general.architecture", "llama");
  w.set_u32("a.u32", 5);
  w.set_arr_str("a.strs", {"one", "two", "three"});
  w.set_arr_f32("a.f32s", {0.5f, 0.25f});
  w.set_bool("a.b", false);
  const std::string p1 = tmp_path("copy1.gguf"), p2 = tmp_path("copy2.gguf");
  CHECK(w.write(p1).is_ok());
  auto f = open_ok(p1);
  if (!f) return;
  GgufWriter w2;
  for (const auto& [k, v] : f->metadata()) w2.set_value(k, v);
  CHECK(w2.write(p2).is_ok());
  CHECK(read_bytes(p1) == read_bytes(p2));
  CHECK(!read_bytes(p1).empty());
  std::remove(p1.c_str());
  std::remove(p2.c_str());
}

TEST(gguf_writer_replaces_duplicate_key) {
  GgufWriter w;
  w.set_u32("k", 1);
  w.set_str("other", "x");
  w.set_f32("k", 2.0f);  // replaces in place, type may change
  const std::string p = tmp_path("dup.gguf");
  CHECK(w.write(p).is_ok());
  auto f = open_ok(p);
  if (!f) return;
  CHECK_EQ(f->metadata().size(), size_t(2));
  CHECK_STR(f->metadata()[0].first, std::string("k"));
  CHECK(f->find("k") && f->find("k")->type == GgufType::FLOAT32 && f->find("k")->f == 2.0);
  std::remove(p.c_str());
}

TEST(gguf_writer_tensors_offsets_and_data) {
  GgufWriter w;
  w.set_str("general.architecture", "test");
  std::vector<float> a = {1, 2, 3};  // 12 bytes -> padded to 32
  std::vector<float> b(4 * 3);
  for (size_t i = 0; i < b.size(); ++i) b[i] = 0.5f * i;  // [4, 3]
  std::vector<uint8_t> c(2 * 5 * 2);                      // f16 [5, 2]
  for (size_t i = 0; i < c.size(); ++i) c[i] = static_cast<uint8_t>(i * 7 + 1);
  std::vector<uint8_t> q(34 * 3);  // q8_0 [32, 3, 1, 1]
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<uint8_t>(i);
  CHECK(w.add_tensor("a", GgmlType::F32, {3}, f32_bytes(a)).is_ok());
  CHECK(w.add_tensor("b.weight", GgmlType::F32, {4, 3}, f32_bytes(b)).is_ok());
  CHECK(w.add_tensor("c", GgmlType::F16, {5, 2}, c).is_ok());
  CHECK(w.add_tensor("q", GgmlType::Q8_0, {32, 3, 1, 1}, q).is_ok());
  const std::string p = tmp_path("tensors.gguf");
  CHECK(w.write(p).is_ok());
  auto f = open_ok(p);
  if (!f) return;
  CHECK_EQ(f->alignment(), uint64_t(32));
  CHECK_EQ(f->data_offset() % 32, uint64_t(0));
  CHECK_EQ(f->tensors().size(), size_t(4));
  if (f->tensors().size() != 4) return;
  const auto& t = f->tensors();
  CHECK_EQ(t[0].offset, uint64_t(0));
  CHECK_EQ(t[1].offset, uint64_t(32));                             // 12 -> 32
  CHECK_EQ(t[2].offset, uint64_t(96));                             // 32 + 48 -> 96 (48 padded to 64)
  CHECK_EQ(t[3].offset, uint64_t(128));                            // 96 + 20 -> 128
  CHECK_EQ(f->file_size(), size_t(f->data_offset() + 128 + 128));  // 102 bytes padded to 128
  CHECK_EQ(t[1].n_dims, 2u);
  CHECK_EQ(t[1].ne[0], int64_t(4));
  CHECK_EQ(t[1].ne[1], int64_t(3));
  CHECK(t[2].type == GgmlType::F16);
  CHECK_EQ(t[3].n_dims, 4u);
  CHECK(t[3].type == GgmlType::Q8_0);
  CHECK_EQ(t[3].nbytes, uint64_t(102));
  CHECK(std::memcmp(t[0].data, a.data(), 12) == 0);
  CHECK(std::memcmp(t[1].data, b.data(), 48) == 0);
  CHECK(std::memcmp(t[2].data, c.data(), c.size()) == 0);
  CHECK(std::memcmp(t[3].data, q.data(), q.size()) == 0);
  const GgufTensorInfo* fb = f->find_tensor("b.weight");
  CHECK(fb && reinterpret_cast<const float*>(fb->data)[5] == 2.5f);
  std::remove(p.c_str());
}

TEST(gguf_writer_custom_alignment) {
  GgufWriter w;
  w.set_alignment(64);
  CHECK(w.add_tensor("x", GgmlType::F32, {3}, f32_bytes({1, 2, 3})).is_ok());
  CHECK(w.add_tensor("y", GgmlType::F32, {2}, f32_bytes({4, 5})).is_ok());
  const std::string p = tmp_path("align64.gguf");
  CHECK(w.write(p).is_ok());
  auto f = open_ok(p);
  if (!f) return;
  CHECK_EQ(f->alignment(), uint64_t(64));
  const GgufValue* al = f->find("general.alignment");  // written so readers agree
  CHECK(al && al->type == GgufType::UINT32 && al->as_int() == 64);
  CHECK_EQ(f->data_offset() % 64, uint64_t(0));
  if (f->tensors().size() == 2) {
    CHECK_EQ(f->tensors()[1].offset, uint64_t(64));
    CHECK_EQ(reinterpret_cast<const float*>(f->tensors()[1].data)[1], 5.0f);
  }
  // The key, when set, wins over set_alignment; a non-power-of-two is refused.
  GgufWriter w2;
  w2.set_u32("general.alignment", 16);
  CHECK(w2.add_tensor("x", GgmlType::F32, {3}, f32_bytes({1, 2, 3})).is_ok());
  CHECK(w2.add_tensor("y", GgmlType::F32, {1}, f32_bytes({9})).is_ok());
  CHECK(w2.write(p).is_ok());
  f = open_ok(p);
  if (f && f->tensors().size() == 2) {
    CHECK_EQ(f->alignment(), uint64_t(16));
    CHECK_EQ(f->tensors()[1].offset, uint64_t(16));
  }
  GgufWriter w3;
  w3.set_u32("general.alignment", 24);
  Status st = w3.write(p + ".bad");
  CHECK(st.code == Code::InvalidArgument);
  GgufWriter w4;
  w4.set_u64("general.alignment", 32);  // ggml requires u32
  CHECK(w4.write(p + ".bad").code == Code::InvalidArgument);
  std::remove(p.c_str());
}

TEST(gguf_writer_add_tensor_validation) {
  GgufWriter w;
  CHECK(w.add_tensor("a", GgmlType::F32, {4}, std::vector<uint8_t>(15)).code == Code::BadShape);
  CHECK(w.add_tensor("a", GgmlType::Q8_0, {33}, std::vector<uint8_t>(36)).code == Code::BadShape);
  CHECK(w.add_tensor("a", GgmlType::Q8_0, {64, 2}, std::vector<uint8_t>(34 * 2)).code == Code::BadShape);
  CHECK(w.add_tensor("a", GgmlType::F32, {1, 1, 1, 1, 1}, std::vector<uint8_t>(4)).code == Code::BadShape);
  CHECK(w.add_tensor("a", GgmlType::F32, {}, std::vector<uint8_t>(4)).code == Code::BadShape);
  CHECK(w.add_tensor("a", GgmlType::F32, {-1}, {}).code == Code::BadShape);
  CHECK(w.add_tensor("a", static_cast<GgmlType>(77), {4}, std::vector<uint8_t>(16)).code == Code::UnsupportedType);
  CHECK(w.add_tensor(std::string(64, 'n'), GgmlType::F32, {1}, std::vector<uint8_t>(4)).code == Code::InvalidArgument);
  CHECK(w.add_tensor(std::string(63, 'n'), GgmlType::F32, {1}, std::vector<uint8_t>(4)).is_ok());
  CHECK(w.add_tensor("a", GgmlType::Q8_0, {64, 2}, std::vector<uint8_t>(34 * 4)).is_ok());
  CHECK(w.add_tensor("a", GgmlType::F32, {1}, std::vector<uint8_t>(4)).code == Code::InvalidArgument);
  Status st = w.add_tensor("z", GgmlType::F32, {4}, std::vector<uint8_t>(15));
  CHECK(st.message.find("'z'") != std::string::npos);
}

TEST(gguf_writer_io_error) {
  GgufWriter w;
  w.set_u32("k", 1);
  const std::string p = "/tmp/llmserve_no_such_dir_synth/x.gguf";
  Status st = w.write(p);
  CHECK(st.code == Code::Io);
  CHECK(st.message.find(p) != std::string::npos);
  CHECK(st.message.find(std::strerror(ENOENT)) != std::string::npos);
  // Unencodable value (bad type id) is reported at write, naming the key.
  GgufWriter w2;
  GgufValue v;
  v.type = static_cast<GgufType>(99);
  w2.set_value("bad.key", v);
  st = w2.write(tmp_path("never.gguf"));
  CHECK(st.code == Code::InvalidArgument);
  CHECK(st.message.find("bad.key") != std::string::npos);
}

// ---- synth ----

TEST(synth_llama_f32_tensors_and_metadata) {
  SynthOptions o = small_opts();
  const std::string p = tmp_path("llama_f32.gguf");
  std::vector<std::string> notes;
  Status st = synth_model(o, p, {}, &notes);
  if (!st.is_ok()) std::fprintf(stderr, "  %s\n", st.message.c_str());
  CHECK(st.is_ok());
  CHECK(notes.empty());
  auto f = open_ok(p);
  if (!f) return;
  auto u32 = [&](const std::string& k) -> int64_t {
    const GgufValue* v = f->find(k);
    if (!v || v->type != GgufType::UINT32) {
      std::fprintf(stderr, "  key %s not u32\n", k.c_str());
      return -1;
    }
    return v->as_int();
  };
  auto f32 = [&](const std::string& k) -> double {
    const GgufValue* v = f->find(k);
    if (!v || v->type != GgufType::FLOAT32) {
      std::fprintf(stderr, "  key %s not f32\n", k.c_str());
      return -1;
    }
    return v->f;
  };
  CHECK_STR(str_of(f->find("general.architecture")), std::string("llama"));
  CHECK(!str_of(f->find("general.name")).empty());
  CHECK_EQ(u32("general.file_type"), int64_t(0));
  CHECK_EQ(u32("general.alignment"), int64_t(32));
  CHECK_EQ(u32("llama.context_length"), int64_t(512));
  CHECK_EQ(u32("llama.embedding_length"), int64_t(64));
  CHECK_EQ(u32("llama.block_count"), int64_t(2));
  CHECK_EQ(u32("llama.feed_forward_length"), int64_t(96));
  CHECK_EQ(u32("llama.attention.head_count"), int64_t(4));
  CHECK_EQ(u32("llama.attention.head_count_kv"), int64_t(2));
  CHECK_EQ(u32("llama.rope.dimension_count"), int64_t(16));
  CHECK_EQ(u32("llama.vocab_size"), int64_t(320));
  CHECK_NEAR(f32("llama.rope.freq_base"), 10000.0, 0);
  CHECK_NEAR(f32("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-12);
  CHECK_STR(str_of(f->find("tokenizer.ggml.model")), std::string("llama"));
  CHECK_EQ(u32("tokenizer.ggml.bos_token_id"), int64_t(1));
  CHECK_EQ(u32("tokenizer.ggml.eos_token_id"), int64_t(2));
  CHECK_EQ(u32("tokenizer.ggml.unknown_token_id"), int64_t(0));
  const GgufValue* abos = f->find("tokenizer.ggml.add_bos_token");
  CHECK(abos && abos->type == GgufType::BOOL && abos->u == 1);
  const GgufValue* aeos = f->find("tokenizer.ggml.add_eos_token");
  CHECK(aeos && aeos->type == GgufType::BOOL && aeos->u == 0);
  const GgufValue* toks = f->find("tokenizer.ggml.tokens");
  CHECK(toks && toks->arr_type == GgufType::STRING && toks->arr_str.size() == 320);
  const GgufValue* scores = f->find("tokenizer.ggml.scores");
  CHECK(scores && scores->arr_type == GgufType::FLOAT32 && scores->arr_len == 320);
  const GgufValue* tt = f->find("tokenizer.ggml.token_type");
  CHECK(tt && tt->arr_type == GgufType::INT32 && tt->arr_len == 320);

  // Tensors: 3 globals + 9 per layer, in order, with ggml ne (ne[0] = input dim).
  struct Want {
    std::string name;
    int64_t ne0, ne1;
    bool vec;
  };
  std::vector<Want> want = {
      {"token_embd.weight", 64, 320, false}, {"output_norm.weight", 64, 1, true}, {"output.weight", 64, 320, false}};
  for (int i = 0; i < 2; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    want.push_back({b + "attn_norm.weight", 64, 1, true});
    want.push_back({b + "attn_q.weight", 64, 64, false});
    want.push_back({b + "attn_k.weight", 64, 32, false});
    want.push_back({b + "attn_v.weight", 64, 32, false});
    want.push_back({b + "attn_output.weight", 64, 64, false});
    want.push_back({b + "ffn_norm.weight", 64, 1, true});
    want.push_back({b + "ffn_gate.weight", 64, 96, false});
    want.push_back({b + "ffn_up.weight", 64, 96, false});
    want.push_back({b + "ffn_down.weight", 96, 64, false});
  }
  CHECK_EQ(f->tensors().size(), want.size());
  for (const auto& w : want) {
    const GgufTensorInfo* t = f->find_tensor(w.name);
    CHECK(t != nullptr);
    if (!t) {
      std::fprintf(stderr, "  missing %s\n", w.name.c_str());
      continue;
    }
    CHECK_EQ(t->n_dims, w.vec ? 1u : 2u);
    CHECK_EQ(t->ne[0], w.ne0);
    CHECK_EQ(t->ne[1], w.ne1);
    CHECK(t->type == GgmlType::F32);
    CHECK_EQ(t->offset % 32, uint64_t(0));
  }
  CHECK(f->find_tensor("blk.0.attn_q.bias") == nullptr);

  // Initialisation statistics.
  double mean, std;
  f32_stats(f->find_tensor("blk.1.attn_q.weight"), &mean, &std);
  CHECK_NEAR(std, 1.0 / 8.0, 0.01);  // 1/sqrt(64)
  CHECK_NEAR(mean, 0.0, 0.01);
  f32_stats(f->find_tensor("blk.0.ffn_down.weight"), &mean, &std);
  CHECK_NEAR(std, 1.0 / std::sqrt(96.0), 0.01);
  f32_stats(f->find_tensor("output.weight"), &mean, &std);
  CHECK_NEAR(std, 3.0 / 8.0, 0.02);
  f32_stats(f->find_tensor("token_embd.weight"), &mean, &std);
  CHECK_NEAR(std, 1.0, 0.02);
  f32_stats(f->find_tensor("blk.0.attn_norm.weight"), &mean, &std);
  CHECK_NEAR(mean, 1.0, 0.05);
  CHECK(std > 0.03 && std < 0.2);
  // Distinct tensors get distinct values.
  CHECK(std::memcmp(f->find_tensor("blk.0.attn_q.weight")->data, f->find_tensor("blk.1.attn_q.weight")->data, 64) != 0);
  std::remove(p.c_str());
}

TEST(synth_qwen2_biases_and_tied_output) {
  SynthOptions o = small_opts();
  o.arch = "qwen2";
  o.tied_output = true;
  o.rope_freq_base = 1000000.0f;
  o.rms_eps = 1e-6f;
  const std::string p = tmp_path("qwen2.gguf");
  CHECK(synth_model(o, p).is_ok());
  auto f = open_ok(p);
  if (!f) return;
  CHECK_STR(str_of(f->find("general.architecture")), std::string("qwen2"));
  CHECK(f->find("qwen2.embedding_length") && f->find("qwen2.embedding_length")->as_int() == 64);
  CHECK(f->find("qwen2.rope.freq_base") && f->find("qwen2.rope.freq_base")->f == 1000000.0);
  CHECK(f->find("qwen2.attention.layer_norm_rms_epsilon") &&
        std::fabs(f->find("qwen2.attention.layer_norm_rms_epsilon")->f - 1e-6) < 1e-12);
  CHECK(f->find("llama.embedding_length") == nullptr);
  CHECK(f->find_tensor("output.weight") == nullptr);
  CHECK_EQ(f->tensors().size(), size_t(2 + 2 * 12));
  for (int i = 0; i < 2; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    const GgufTensorInfo* q = f->find_tensor(b + "attn_q.bias");
    const GgufTensorInfo* k = f->find_tensor(b + "attn_k.bias");
    const GgufTensorInfo* v = f->find_tensor(b + "attn_v.bias");
    CHECK(q && q->n_dims == 1 && q->ne[0] == 64 && q->type == GgmlType::F32);
    CHECK(k && k->n_dims == 1 && k->ne[0] == 32 && k->type == GgmlType::F32);
    CHECK(v && v->n_dims == 1 && v->ne[0] == 32 && v->type == GgmlType::F32);
    if (q) {
      double mean, std;
      f32_stats(q, &mean, &std);
      CHECK(std > 0.01 && std < 0.1);
    }
  }
  // Tied: token_embd doubles as the output projection, so it has the logit scale.
  double mean, std;
  f32_stats(f->find_tensor("token_embd.weight"), &mean, &std);
  CHECK_NEAR(std, 3.0 / 8.0, 0.02);
  std::remove(p.c_str());
}

TEST(synth_types_file_type_and_fallbacks) {
  struct Case {
    GgmlType t;
    int ftype;
    GgmlType down;
  };  // ffn_down has ne[0] = ffn = 96
  const Case cases[] = {
      {GgmlType::F16, 1, GgmlType::F16},   {GgmlType::BF16, 32, GgmlType::BF16}, {GgmlType::Q8_0, 7, GgmlType::Q8_0},
      {GgmlType::Q4_0, 2, GgmlType::Q4_0}, {GgmlType::Q4_K, 15, GgmlType::Q8_0}, {GgmlType::Q6_K, 18, GgmlType::Q8_0},
  };
  // Reference F32 model with the same seed: every type holds the same values, rounded.
  SynthOptions ref = small_opts();
  ref.dim = 256;
  ref.heads = 8;
  ref.kv_heads = 2;
  ref.ffn = 96;
  ref.layers = 1;
  const std::string pref = tmp_path("types_f32.gguf");
  CHECK(synth_model(ref, pref).is_ok());
  auto fref = open_ok(pref);
  if (!fref) return;
  for (const auto& c : cases) {
    SynthOptions o = ref;
    o.type = c.t;
    const std::string p = tmp_path(std::string("types_") + type_traits(c.t).name + ".gguf");
    std::vector<std::string> notes;
    Status st = synth_model(o, p, {}, &notes);
    if (!st.is_ok()) std::fprintf(stderr, "  %s: %s\n", type_traits(c.t).name, st.message.c_str());
    CHECK(st.is_ok());
    auto f = open_ok(p);
    if (!f) continue;
    CHECK(f->find("general.file_type") && f->find("general.file_type")->as_int() == c.ftype);
    const GgufTensorInfo* q = f->find_tensor("blk.0.attn_q.weight");
    const GgufTensorInfo* d = f->find_tensor("blk.0.ffn_down.weight");
    const GgufTensorInfo* e = f->find_tensor("token_embd.weight");
    const GgufTensorInfo* n = f->find_tensor("blk.0.ffn_norm.weight");
    CHECK(q && q->type == c.t);
    CHECK(e && e->type == c.t);
    CHECK(d && d->type == c.down);
    CHECK(n && n->type == GgmlType::F32);
    CHECK_EQ(notes.size(), size_t(c.down == c.t ? 0 : 1));
    if (!notes.empty()) CHECK(notes[0].find("blk.0.ffn_down.weight") != std::string::npos);
    if (!q || !d) continue;
    CHECK_EQ(q->nbytes, uint64_t(row_size(c.t, 256) * 256));
    // Dequantized values track the f32 model's (relative error of the rounding per type).
    const double tol = c.t == GgmlType::F16    ? 1e-3
                       : c.t == GgmlType::BF16 ? 8e-3
                       : c.t == GgmlType::Q8_0 ? 0.02
                       : c.t == GgmlType::Q6_K ? 0.05
                                               : 0.2;
    for (const char* name : {"blk.0.attn_q.weight", "blk.0.ffn_down.weight"}) {
      const GgufTensorInfo* t = f->find_tensor(name);
      const GgufTensorInfo* r = fref->find_tensor(name);
      std::vector<float> row(t->ne[0]);
      dequantize_row(t->type, t->data, row.data(), t->ne[0]);
      const float* rr = reinterpret_cast<const float*>(r->data);
      double err = 0, mag = 0;
      for (int64_t i = 0; i < t->ne[0]; ++i) {
        err += (row[i] - rr[i]) * (row[i] - rr[i]);
        mag += rr[i] * rr[i];
      }
      const double rel = std::sqrt(err / mag);
      if (rel > tol) std::fprintf(stderr, "  %s %s rel err %g > %g\n", type_traits(c.t).name, name, rel, tol);
      CHECK(rel <= tol);
    }
    std::remove(p.c_str());
  }
  std::remove(pref.c_str());
}

TEST(synth_fallback_to_f16_for_odd_rows) {
  SynthOptions o = small_opts();
  o.dim = 48;
  o.heads = 4;
  o.kv_heads = 2;
  o.ffn = 64;  // 48 % 32 != 0
  o.type = GgmlType::Q4_K;
  const std::string p = tmp_path("fallback.gguf");
  std::vector<std::string> notes;
  CHECK(synth_model(o, p, {}, &notes).is_ok());
  auto f = open_ok(p);
  if (!f) return;
  CHECK(f->find_tensor("blk.0.attn_q.weight")->type == GgmlType::F16);     // 48 -> f16
  CHECK(f->find_tensor("blk.0.ffn_down.weight")->type == GgmlType::Q8_0);  // 64 -> q8_0
  CHECK_EQ(notes.size(), size_t(2 + 2 * 7));                               // every matrix falls back
  CHECK(synth_matrix_type(GgmlType::Q4_0, 48) == GgmlType::F16);
  CHECK(synth_matrix_type(GgmlType::Q4_0, 64) == GgmlType::Q4_0);
  CHECK(synth_matrix_type(GgmlType::Q6_K, 512) == GgmlType::Q6_K);
  CHECK(synth_matrix_type(GgmlType::F32, 7) == GgmlType::F32);
  std::remove(p.c_str());
}

TEST(synth_deterministic) {
  SynthOptions o = small_opts();
  o.type = GgmlType::Q8_0;
  const std::string p1 = tmp_path("det1.gguf"), p2 = tmp_path("det2.gguf"), p3 = tmp_path("det3.gguf");
  CHECK(synth_model(o, p1).is_ok());
  CHECK(synth_model(o, p2).is_ok());
  o.seed = 8;
  CHECK(synth_model(o, p3).is_ok());
  const auto b1 = read_bytes(p1), b2 = read_bytes(p2), b3 = read_bytes(p3);
  CHECK(!b1.empty());
  CHECK(b1 == b2);
  CHECK(b1.size() == b3.size());
  CHECK(b1 != b3);
  for (const auto& p : {p1, p2, p3}) std::remove(p.c_str());
}

TEST(synth_progress_reports) {
  SynthOptions o = small_opts();
  std::vector<double> seen;
  const std::string p = tmp_path("progress.gguf");
  CHECK(synth_model(o, p, [&](double x) { seen.push_back(x); }).is_ok());
  CHECK(seen.size() > 10);
  bool mono = true;
  for (size_t i = 1; i < seen.size(); ++i) mono = mono && seen[i] >= seen[i - 1];
  CHECK(mono);
  if (!seen.empty()) {
    CHECK_EQ(seen.front(), 0.0);
    CHECK_EQ(seen.back(), 1.0);
  }
  std::remove(p.c_str());
}

TEST(synth_option_validation) {
  auto err = [](SynthOptions o) {
    Status st = synth_model(o, tmp_path("invalid.gguf"));
    CHECK(st.code == Code::InvalidArgument);
    return st.message;
  };
  auto has = [](const std::string& msg, const char* word) {
    const bool ok = msg.find(word) != std::string::npos;
    if (!ok) std::fprintf(stderr, "  message '%s' lacks '%s'\n", msg.c_str(), word);
    return ok;
  };
  SynthOptions o;
  o = small_opts();
  o.arch = "gpt2";
  CHECK(has(err(o), "arch"));
  o = small_opts();
  o.dim = 0;
  CHECK(has(err(o), "dim"));
  o = small_opts();
  o.dim = -64;
  CHECK(has(err(o), "dim"));
  o = small_opts();
  o.layers = 0;
  CHECK(has(err(o), "layers"));
  o = small_opts();
  o.heads = 0;
  CHECK(has(err(o), "heads"));
  o = small_opts();
  o.kv_heads = 0;
  CHECK(has(err(o), "kv_heads"));
  o = small_opts();
  o.ffn = -1;
  CHECK(has(err(o), "ffn"));
  o = small_opts();
  o.context = 0;
  CHECK(has(err(o), "context"));
  o = small_opts();
  o.heads = 5;
  o.kv_heads = 1;
  CHECK(has(err(o), "heads"));  // 5 does not divide 64
  o = small_opts();
  o.kv_heads = 3;
  CHECK(has(err(o), "kv_heads"));  // 3 does not divide 4
  o = small_opts();
  o.dim = 60;
  o.heads = 4;
  o.kv_heads = 1;
  CHECK(has(err(o), "head dimension"));  // 15
  o = small_opts();
  o.vocab_size = 299;
  CHECK(has(err(o), "vocab_size"));
  o = small_opts();
  o.vocab_size = kSynthMaxGeneratedVocab + 1;
  CHECK(has(err(o), "vocab_size"));
  o = small_opts();
  o.type = static_cast<GgmlType>(39);  // mxfp4: a ggml type the engine does not run
  CHECK(has(err(o), "type to be one of f32, f16, bf16, q8_0, q4_0, q4_k, q6_k, q4_1"));
  o = small_opts();
  o.rope_freq_base = 0;
  CHECK(has(err(o), "rope_freq_base"));
  o = small_opts();
  o.rms_eps = -1;
  CHECK(has(err(o), "rms_eps"));
  o = small_opts();
  o.dim = 65536;
  o.heads = 64;
  o.kv_heads = 8;
  o.layers = 1024;
  o.ffn = 1 << 20;
  CHECK(has(err(o), "GiB"));
  CHECK(validate_synth_options(small_opts()).is_ok());
  // A bad vocab_from path is reported with its path, and nothing is written.
  o = small_opts();
  o.vocab_from = "/tmp/llmserve_no_such_vocab.gguf";
  Status st = synth_model(o, tmp_path("novocab.gguf"));
  CHECK(!st.is_ok());
  CHECK(st.message.find("/tmp/llmserve_no_such_vocab.gguf") != std::string::npos);
  CHECK(read_bytes(tmp_path("novocab.gguf")).empty());
}

TEST(synth_generated_vocab) {
  for (int64_t n : {300, 512, 4096, 40000}) {
    SynthVocab v = synth_generate_vocab(n);
    CHECK_EQ(int64_t(v.tokens.size()), n);
    CHECK_EQ(int64_t(v.scores.size()), n);
    CHECK_EQ(int64_t(v.types.size()), n);
    if (int64_t(v.tokens.size()) != n) continue;
    CHECK_STR(v.tokens[0], std::string("<unk>"));
    CHECK_STR(v.tokens[1], std::string("<s>"));
    CHECK_STR(v.tokens[2], std::string("</s>"));
    CHECK_EQ(v.types[0], 2);
    CHECK_EQ(v.types[1], 3);
    CHECK_EQ(v.types[2], 3);
    CHECK_STR(v.tokens[3], std::string("<0x00>"));
    CHECK_STR(v.tokens[3 + 0x0A], std::string("<0x0A>"));
    CHECK_STR(v.tokens[258], std::string("<0xFF>"));
    for (int b = 3; b < 259; ++b) CHECK_EQ(v.types[b], 6);
    std::set<std::string> seen(v.tokens.begin(), v.tokens.end());
    CHECK_EQ(int64_t(seen.size()), n);  // all distinct
    bool normal = true, decreasing = true, prefixes = true, lastchar = true;
    for (int64_t i = 259; i < n; ++i) {
      normal = normal && v.types[i] == 1 && !v.tokens[i].empty();
      if (i > 259) decreasing = decreasing && v.scores[i] < v.scores[i - 1];
      // Drop the last UTF-8 character: the prefix must be a token (reachable by merges).
      const std::string& t = v.tokens[i];
      size_t cut = t.size() - 1;
      while (cut > 0 && (static_cast<unsigned char>(t[cut]) & 0xC0) == 0x80) --cut;
      if (cut > 0) {
        prefixes = prefixes && seen.count(t.substr(0, cut));
        lastchar = lastchar && seen.count(t.substr(cut));
      }
    }
    CHECK(normal);
    CHECK(decreasing);
    CHECK(prefixes);
    CHECK(lastchar);
    CHECK_STR(v.tokens[259], std::string("\xE2\x96\x81"));  // the space piece comes first
    CHECK(seen.count("e") && seen.count("\xE2\x96\x81t"));
    if (n >= 512) CHECK(seen.count("\xE2\x96\x81the"));
    if (n >= 4096) CHECK(seen.count("\xE2\x96\x81The") && seen.count("7") && seen.count(".") && seen.count("Z"));
  }
  CHECK(synth_generate_vocab(299).tokens.empty());
  CHECK(synth_generate_vocab(kSynthMaxGeneratedVocab).tokens.size() == size_t(kSynthMaxGeneratedVocab));
}

TEST(synth_vocab_from_copies_tokenizer) {
  SynthOptions src = small_opts();
  src.vocab_size = 400;
  const std::string ps = tmp_path("vocab_src.gguf"), pd = tmp_path("vocab_dst.gguf");
  CHECK(synth_model(src, ps).is_ok());
  // Add an extra tokenizer key the copy must carry over.
  {
    auto f = open_ok(ps);
    if (!f) return;
    GgufWriter w;
    for (const auto& [k, v] : f->metadata()) w.set_value(k, v);
    w.set_arr_str("tokenizer.ggml.merges", {"a b", "c d"});
    w.set_str("tokenizer.chat_template", "{{ messages }}");
    for (const auto& t : f->tensors()) {
      std::vector<int64_t> ne(t.ne, t.ne + t.n_dims);
      CHECK(w.add_tensor(t.name, t.type, ne, std::vector<uint8_t>(t.data, t.data + t.nbytes)).is_ok());
    }
    CHECK(w.write(ps).is_ok());
  }
  SynthOptions o = small_opts();
  o.arch = "qwen2";
  o.vocab_from = ps;
  o.vocab_size = 5;  // ignored when vocab_from is set
  Status st = synth_model(o, pd);
  if (!st.is_ok()) std::fprintf(stderr, "  %s\n", st.message.c_str());
  CHECK(st.is_ok());
  auto a = open_ok(ps);
  auto b = open_ok(pd);
  if (!a || !b) return;
  int copied = 0;
  for (const auto& [k, v] : a->metadata()) {
    if (k.rfind("tokenizer.", 0) != 0) continue;
    const GgufValue* w = b->find(k);
    CHECK(w != nullptr);
    if (!w) continue;
    ++copied;
    CHECK(w->type == v.type);
    CHECK(w->arr_type == v.arr_type);
    CHECK(w->arr_str.size() == v.arr_str.size());
    CHECK(w->arr_len == v.arr_len);
    CHECK(w->u == v.u);
    CHECK(w->s == v.s);
    if (v.arr_data && w->arr_data && v.arr_len)
      CHECK(std::memcmp(v.arr_data, w->arr_data, v.arr_len * gguf_scalar_size(v.arr_type)) == 0);
    for (size_t i = 0; i < v.arr_str.size() && i < w->arr_str.size(); ++i) CHECK(v.arr_str[i] == w->arr_str[i]);
  }
  CHECK_EQ(copied, 11);
  CHECK(b->find("qwen2.vocab_size") && b->find("qwen2.vocab_size")->as_int() == 400);
  const GgufTensorInfo* e = b->find_tensor("token_embd.weight");
  CHECK(e && e->ne[1] == 400);
  const GgufTensorInfo* out = b->find_tensor("output.weight");
  CHECK(out && out->ne[1] == 400);
  std::remove(ps.c_str());
  std::remove(pd.c_str());
}
