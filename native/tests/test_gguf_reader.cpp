// GGUF reader: every value type, arrays, alignment, and robustness against truncated/corrupt bytes.
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "testing.h"

using namespace llmserve;

namespace {

// A tiny hand-rolled encoder, independent of GgufWriter, so the reader is tested against the spec.
struct Enc {
  std::vector<uint8_t> b;
  template <typename T> void put(T v) { uint8_t t[sizeof(T)]; std::memcpy(t, &v, sizeof(T)); b.insert(b.end(), t, t + sizeof(T)); }
  void str(const std::string& s) { put<uint64_t>(s.size()); b.insert(b.end(), s.begin(), s.end()); }
  void key(const std::string& k, GgufType t) { str(k); put<uint32_t>((uint32_t)t); }
  void pad(size_t a) { while (b.size() % a) b.push_back(0); }
};

std::vector<uint8_t> sample_file(uint32_t version = 3) {
  Enc e;
  e.put<uint32_t>(0x46554747);
  e.put<uint32_t>(version);
  e.put<uint64_t>(2);   // tensors
  e.put<uint64_t>(16);  // kvs
  e.key("u8", GgufType::UINT8); e.put<uint8_t>(200);
  e.key("i8", GgufType::INT8); e.put<int8_t>(-100);
  e.key("u16", GgufType::UINT16); e.put<uint16_t>(60000);
  e.key("i16", GgufType::INT16); e.put<int16_t>(-30000);
  e.key("u32", GgufType::UINT32); e.put<uint32_t>(4000000000u);
  e.key("i32", GgufType::INT32); e.put<int32_t>(-2000000000);
  e.key("f32", GgufType::FLOAT32); e.put<float>(1.5f);
  e.key("bool", GgufType::BOOL); e.put<uint8_t>(1);
  e.key("str", GgufType::STRING); e.str("héllo");
  e.key("u64", GgufType::UINT64); e.put<uint64_t>(1ULL << 40);
  e.key("i64", GgufType::INT64); e.put<int64_t>(-(1LL << 40));
  e.key("f64", GgufType::FLOAT64); e.put<double>(-2.25);
  e.key("arr_i32", GgufType::ARRAY); e.put<uint32_t>((uint32_t)GgufType::INT32); e.put<uint64_t>(3);
  e.put<int32_t>(7); e.put<int32_t>(-8); e.put<int32_t>(9);
  e.key("arr_str", GgufType::ARRAY); e.put<uint32_t>((uint32_t)GgufType::STRING); e.put<uint64_t>(2); e.str("a"); e.str("▁b");
  e.key("arr_nested", GgufType::ARRAY); e.put<uint32_t>((uint32_t)GgufType::ARRAY); e.put<uint64_t>(1);
  e.put<uint32_t>((uint32_t)GgufType::FLOAT32); e.put<uint64_t>(2); e.put<float>(0.5f); e.put<float>(0.25f);
  e.key("general.alignment", GgufType::UINT32); e.put<uint32_t>(64);
  // tensors: "w" f32 [4, 2] at 0; "q" q8_0 [32, 1] at 64
  e.str("w"); e.put<uint32_t>(2); e.put<int64_t>(4); e.put<int64_t>(2); e.put<uint32_t>(0); e.put<uint64_t>(0);
  e.str("q"); e.put<uint32_t>(1); e.put<int64_t>(32); e.put<uint32_t>(8); e.put<uint64_t>(64);
  e.pad(64);
  for (int i = 0; i < 8; ++i) e.put<float>((float)i);
  e.pad(64);
  for (int i = 0; i < 34; ++i) e.put<uint8_t>((uint8_t)i);
  return e.b;
}

}  // namespace

TEST(gguf_reader_all_value_types) {
  auto bytes = sample_file();
  std::unique_ptr<GgufFile> f;
  Status s = GgufFile::parse(bytes.data(), bytes.size(), &f);
  CHECK(s.is_ok());
  if (!s) { std::fprintf(stderr, "%s\n", s.message.c_str()); return; }
  CHECK_EQ(f->version(), 3u);
  CHECK_EQ(f->metadata().size(), (size_t)16);
  CHECK_EQ(f->find("u8")->as_int(), 200);
  CHECK_EQ(f->find("i8")->as_int(), -100);
  CHECK_EQ(f->find("u16")->as_int(), 60000);
  CHECK_EQ(f->find("i16")->as_int(), -30000);
  CHECK_EQ(f->find("u32")->as_int(), 4000000000LL);
  CHECK_EQ(f->find("i32")->as_int(), -2000000000LL);
  CHECK_NEAR(f->find("f32")->as_double(), 1.5, 0);
  CHECK_EQ(f->find("bool")->as_int(), 1);
  CHECK(f->find("str")->s == "héllo");
  CHECK_EQ(f->find("u64")->u, 1ULL << 40);
  CHECK_EQ(f->find("i64")->i, -(1LL << 40));
  CHECK_NEAR(f->find("f64")->as_double(), -2.25, 0);
  const GgufValue* a = f->find("arr_i32");
  CHECK_EQ(a->arr_len, 3u);
  CHECK_EQ(a->arr_int(1), -8);
  CHECK_EQ(a->arr_int(2), 9);
  const GgufValue* as = f->find("arr_str");
  CHECK_EQ(as->arr_str.size(), (size_t)2);
  CHECK(as->arr_str[1] == "▁b");
  const GgufValue* an = f->find("arr_nested");
  CHECK_EQ(an->arr_nested.size(), (size_t)1);
  CHECK_NEAR(an->arr_nested[0].arr_double(1), 0.25, 0);
  CHECK_EQ(f->alignment(), 64u);
  CHECK(f->find("missing") == nullptr);
  int64_t iv = 0; bool found = false;
  CHECK(!f->get_int("str", &iv, &found).is_ok());  // wrong type is an error, not a crash
  CHECK(f->get_int("u16", &iv, &found).is_ok() && found && iv == 60000);
}

TEST(gguf_reader_tensors_and_alignment) {
  auto bytes = sample_file();
  std::unique_ptr<GgufFile> f;
  CHECK(GgufFile::parse(bytes.data(), bytes.size(), &f).is_ok());
  if (!f) return;
  CHECK_EQ(f->tensors().size(), (size_t)2);
  const GgufTensorInfo* w = f->find_tensor("w");
  CHECK(w != nullptr);
  CHECK_EQ(f->data_offset() % 64, 0u);
  CHECK_EQ(w->nbytes, 32u);
  float v5;
  std::memcpy(&v5, w->data + 5 * 4, 4);
  CHECK_NEAR(v5, 5.0, 0);
  const GgufTensorInfo* q = f->find_tensor("q");
  CHECK(q->type == GgmlType::Q8_0);
  CHECK_EQ(q->nbytes, 34u);
  CHECK_EQ(q->data[33], 33);
}

TEST(gguf_reader_v2_accepted_other_versions_rejected) {
  auto v2 = sample_file(2);
  std::unique_ptr<GgufFile> f;
  CHECK(GgufFile::parse(v2.data(), v2.size(), &f).is_ok());
  auto v4 = sample_file(4);
  Status s = GgufFile::parse(v4.data(), v4.size(), &f);
  CHECK(s.code == Code::UnsupportedVersion);
  auto bad = sample_file();
  bad[0] = 'X';
  CHECK(GgufFile::parse(bad.data(), bad.size(), &f).code == Code::NotGguf);
}

TEST(gguf_reader_every_truncation_is_an_error) {
  auto bytes = sample_file();
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);  // exact-size buffer: ASan-visible overreads
    std::unique_ptr<GgufFile> f;
    Status s = GgufFile::parse(cut.data(), cut.size(), &f);
    if (s.is_ok()) { std::fprintf(stderr, "  prefix %zu parsed\n", n); CHECK(false); break; }
    CHECK(s.code == Code::GgufTruncated || s.code == Code::NotGguf);
  }
}

TEST(gguf_reader_random_corruption_never_crashes) {
  auto bytes = sample_file();
  std::mt19937 rng(1234);
  int ok = 0, err = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    auto b = bytes;
    int flips = 1 + (int)(rng() % 4);
    for (int k = 0; k < flips; ++k) b[8 + rng() % (b.size() - 8)] ^= (uint8_t)(1u << (rng() % 8));
    std::unique_ptr<GgufFile> f;
    Status s = GgufFile::parse(b.data(), b.size(), &f);
    if (s.is_ok()) {
      ++ok;
      for (auto& t : f->tensors()) CHECK(t.data >= b.data() && t.data + t.nbytes <= b.data() + b.size());
    } else {
      ++err;
      CHECK(!s.message.empty());
    }
  }
  CHECK(err > 0);
}

TEST(gguf_reader_huge_counts_rejected_without_allocating) {
  Enc e;
  e.put<uint32_t>(0x46554747); e.put<uint32_t>(3);
  e.put<uint64_t>(0); e.put<uint64_t>(1);
  e.key("tokens", GgufType::ARRAY); e.put<uint32_t>((uint32_t)GgufType::STRING); e.put<uint64_t>(1ULL << 60);
  std::unique_ptr<GgufFile> f;
  CHECK(GgufFile::parse(e.b.data(), e.b.size(), &f).code == Code::GgufTruncated);
  Enc g;
  g.put<uint32_t>(0x46554747); g.put<uint32_t>(3);
  g.put<uint64_t>(~0ULL); g.put<uint64_t>(~0ULL);
  CHECK(GgufFile::parse(g.b.data(), g.b.size(), &f).code == Code::GgufTruncated);
}

TEST(gguf_reader_tensor_outside_file) {
  auto bytes = sample_file();
  // Drop the tail so tensor "q" extends past the end.
  bytes.resize(bytes.size() - 10);
  std::unique_ptr<GgufFile> f;
  Status s = GgufFile::parse(bytes.data(), bytes.size(), &f);
  CHECK(s.code == Code::GgufTruncated);
  CHECK(s.message.find("'q'") != std::string::npos);
}

TEST(gguf_reader_open_errors) {
  std::unique_ptr<GgufFile> f;
  CHECK(GgufFile::open("/nonexistent/x.gguf", &f).code == Code::FileNotFound);
  CHECK(GgufFile::open("/tmp", &f).code == Code::Io);
}
