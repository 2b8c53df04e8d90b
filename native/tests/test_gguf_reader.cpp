// GGUF reader: every value type, arrays, alignment, and robustness against truncated/corrupt bytes.
#include <sys/mman.h>

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
  template <typename T>
  void put(T v) {
    uint8_t t[sizeof(T)];
    std::memcpy(t, &v, sizeof(T));
    b.insert(b.end(), t, t + sizeof(T));
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
  void key(const std::string& k, GgufType t) {
    str(k);
    put<uint32_t>((uint32_t)t);
  }
  void pad(size_t a) {
    while (b.size() % a) b.push_back(0);
  }
};

std::vector<uint8_t> sample_file(uint32_t version = 3) {
  Enc e;
  e.put<uint32_t>(0x46554747);
  e.put<uint32_t>(version);
  e.put<uint64_t>(2);   // tensors
  e.put<uint64_t>(16);  // kvs
  e.key("u8", GgufType::UINT8);
  e.put<uint8_t>(200);
  e.key("i8", GgufType::INT8);
  e.put<int8_t>(-100);
  e.key("u16", GgufType::UINT16);
  e.put<uint16_t>(60000);
  e.key("i16", GgufType::INT16);
  e.put<int16_t>(-30000);
  e.key("u32", GgufType::UINT32);
  e.put<uint32_t>(4000000000u);
  e.key("i32", GgufType::INT32);
  e.put<int32_t>(-2000000000);
  e.key("f32", GgufType::FLOAT32);
  e.put<float>(1.5f);
  e.key("bool", GgufType::BOOL);
  e.put<uint8_t>(1);
  e.key("str", GgufType::STRING);
  e.str("héllo");
  e.key("u64", GgufType::UINT64);
  e.put<uint64_t>(1ULL << 40);
  e.key("i64", GgufType::INT64);
  e.put<int64_t>(-(1LL << 40));
  e.key("f64", GgufType::FLOAT64);
  e.put<double>(-2.25);
  e.key("arr_i32", GgufType::ARRAY);
  e.put<uint32_t>((uint32_t)GgufType::INT32);
  e.put<uint64_t>(3);
  e.put<int32_t>(7);
  e.put<int32_t>(-8);
  e.put<int32_t>(9);
  e.key("arr_str", GgufType::ARRAY);
  e.put<uint32_t>((uint32_t)GgufType::STRING);
  e.put<uint64_t>(2);
  e.str("a");
  e.str("▁b");
  e.key("arr_nested", GgufType::ARRAY);
  e.put<uint32_t>((uint32_t)GgufType::ARRAY);
  e.put<uint64_t>(1);
  e.put<uint32_t>((uint32_t)GgufType::FLOAT32);
  e.put<uint64_t>(2);
  e.put<float>(0.5f);
  e.put<float>(0.25f);
  e.key("general.alignment", GgufType::UINT32);
  e.put<uint32_t>(64);
  // tensors: "w" f32 [4, 2] at 0; "q" q8_0 [32, 1] at 64
  e.str("w");
  e.put<uint32_t>(2);
  e.put<int64_t>(4);
  e.put<int64_t>(2);
  e.put<uint32_t>(0);
  e.put<uint64_t>(0);
  e.str("q");
  e.put<uint32_t>(1);
  e.put<int64_t>(32);
  e.put<uint32_t>(8);
  e.put<uint64_t>(64);
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
  if (!s) {
    std::fprintf(stderr, "%s\n", s.message.c_str());
    return;
  }
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
  int64_t iv = 0;
  bool found = false;
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
    if (s.is_ok()) {
      std::fprintf(stderr, "  prefix %zu parsed\n", n);
      CHECK(false);
      break;
    }
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
  e.put<uint32_t>(0x46554747);
  e.put<uint32_t>(3);
  e.put<uint64_t>(0);
  e.put<uint64_t>(1);
  e.key("tokens", GgufType::ARRAY);
  e.put<uint32_t>((uint32_t)GgufType::STRING);
  e.put<uint64_t>(1ULL << 60);
  std::unique_ptr<GgufFile> f;
  CHECK(GgufFile::parse(e.b.data(), e.b.size(), &f).code == Code::GgufTruncated);
  Enc g;
  g.put<uint32_t>(0x46554747);
  g.put<uint32_t>(3);
  g.put<uint64_t>(~0ULL);
  g.put<uint64_t>(~0ULL);
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

// ---------- hostile files (issue 9): counts, lengths and nesting are checked before allocating ----------

namespace {

Enc header(uint64_t n_tensors, uint64_t n_kv) {
  Enc e;
  e.put<uint32_t>(0x46554747);
  e.put<uint32_t>(3);
  e.put<uint64_t>(n_tensors);
  e.put<uint64_t>(n_kv);
  return e;
}

bool mentions(const Status& s, const std::string& what) {
  if (s.message.find(what) != std::string::npos) return true;
  std::fprintf(stderr, "  message lacks '%s': %s '%s'\n", what.c_str(), code_name(s.code), s.message.c_str());
  return false;
}

}  // namespace

TEST(gguf_reader_string_length_beyond_file_is_truncated) {
  Enc e = header(0, 1);
  e.key("general.name", GgufType::STRING);
  e.put<uint64_t>(1ULL << 40);
  e.put<uint64_t>(0);
  std::unique_ptr<GgufFile> f;
  Status s = GgufFile::parse(e.b.data(), e.b.size(), &f);
  CHECK(s.code == Code::GgufTruncated);
  CHECK(mentions(s, "'general.name'"));
  Enc k = header(0, 1);
  k.put<uint64_t>(~0ULL);
  k.put<uint64_t>(0);  // the key's own length, then a few bytes
  s = GgufFile::parse(k.b.data(), k.b.size(), &f);
  CHECK(s.code == Code::GgufTruncated);
  CHECK(mentions(s, "metadata key #0"));
}

TEST(gguf_reader_giant_string_hits_the_default_cap_without_being_read) {
  // A string of 2^29 bytes (over V8's maximum string length) in a file that really is that long:
  // an untouched anonymous mapping stands in for the sparse file, so nothing is allocated or read.
  const size_t len = size_t(1) << 29;
  Enc e = header(0, 1);
  e.key("tokenizer.chat_template", GgufType::STRING);
  e.put<uint64_t>(len);
  const size_t size = e.b.size() + len;
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  CHECK(p != MAP_FAILED);
  if (p == MAP_FAILED) return;
  std::memcpy(p, e.b.data(), e.b.size());
  std::unique_ptr<GgufFile> f;
  Status s = GgufFile::parse(static_cast<const uint8_t*>(p), size, &f);
  CHECK(s.code == Code::GgufLimit);
  CHECK(mentions(s, "'tokenizer.chat_template'"));
  CHECK(mentions(s, std::to_string(GgufLimits().max_string_bytes)));
  // Raising the cap lets the same file parse (the cap, not the file, was the reason).
  GgufLimits big;
  big.max_string_bytes = len;
  CHECK(GgufFile::parse(static_cast<const uint8_t*>(p), size, &f, big).is_ok());
  munmap(p, size);
}

TEST(gguf_reader_counts_over_caps_are_limits) {
  std::unique_ptr<GgufFile> f;
  // 5 kvs of 13+ bytes each fit the file, but the cap is 4.
  Enc e = header(0, 5);
  for (int k = 0; k < 5; ++k) {
    e.key("k" + std::to_string(k), GgufType::UINT8);
    e.put<uint8_t>(1);
  }
  GgufLimits lim;
  lim.max_kv = 4;
  Status s = GgufFile::parse(e.b.data(), e.b.size(), &f, lim);
  CHECK(s.code == Code::GgufLimit);
  CHECK(mentions(s, "metadata entries") && mentions(s, "max_kv"));
  CHECK(GgufFile::parse(e.b.data(), e.b.size(), &f).is_ok());
  // A tensor count the file could hold, over the cap.
  Enc t = header(3, 0);
  for (int k = 0; k < 3; ++k) {
    t.str("t" + std::to_string(k));
    t.put<uint32_t>(1);
    t.put<int64_t>(8);
    t.put<uint32_t>(0);
    t.put<uint64_t>(0);
  }
  lim = GgufLimits();
  lim.max_tensors = 2;
  s = GgufFile::parse(t.b.data(), t.b.size(), &f, lim);
  CHECK(s.code == Code::GgufLimit);
  CHECK(mentions(s, "tensor infos"));
  // Counts the file cannot hold: truncated, with a message, never an allocation.
  Enc h = header(1ULL << 40, 1ULL << 40);
  s = GgufFile::parse(h.b.data(), h.b.size(), &f);
  CHECK(s.code == Code::GgufTruncated);
  CHECK(mentions(s, "metadata entries"));
}

TEST(gguf_reader_array_lengths_checked) {
  std::unique_ptr<GgufFile> f;
  // Longer than the file: truncated, naming the key.
  Enc e = header(0, 1);
  e.key("tokenizer.ggml.scores", GgufType::ARRAY);
  e.put<uint32_t>((uint32_t)GgufType::FLOAT32);
  e.put<uint64_t>(1ULL << 62);
  Status s = GgufFile::parse(e.b.data(), e.b.size(), &f);
  CHECK(s.code == Code::GgufTruncated);
  CHECK(mentions(s, "'tokenizer.ggml.scores'"));
  // Present in the file but over the length cap: limit, naming the key and the limit.
  Enc g = header(0, 1);
  g.key("tokenizer.ggml.tokens", GgufType::ARRAY);
  g.put<uint32_t>((uint32_t)GgufType::STRING);
  g.put<uint64_t>(10);
  for (int k = 0; k < 10; ++k) g.str("t");
  GgufLimits lim;
  lim.max_array_length = 9;
  s = GgufFile::parse(g.b.data(), g.b.size(), &f, lim);
  CHECK(s.code == Code::GgufLimit);
  CHECK(mentions(s, "'tokenizer.ggml.tokens'") && mentions(s, "9"));
  // A string element over the string cap.
  lim = GgufLimits();
  lim.max_string_bytes = 0;
  s = GgufFile::parse(g.b.data(), g.b.size(), &f, lim);
  CHECK(s.code == Code::GgufLimit);
  CHECK(mentions(s, "string array 'tokenizer.ggml.tokens'"));
  // The metadata memory budget: one byte short of what the file needs fails at the string array.
  CHECK(GgufFile::parse(g.b.data(), g.b.size(), &f).is_ok());
  if (!f) return;
  lim = GgufLimits();
  lim.max_metadata_bytes = f->metadata_bytes() - 1;
  s = GgufFile::parse(g.b.data(), g.b.size(), &f, lim);
  CHECK(s.code == Code::GgufLimit);
  CHECK(mentions(s, "max_metadata_bytes") && mentions(s, "'tokenizer.ggml.tokens'"));
  // An over-long key.
  Enc k = header(0, 1);
  k.key(std::string(70000, 'k'), GgufType::UINT8);
  k.put<uint8_t>(0);
  s = GgufFile::parse(k.b.data(), k.b.size(), &f);
  CHECK(s.code == Code::GgufLimit);
  CHECK(mentions(s, "max_name_bytes"));
}

TEST(gguf_reader_millions_of_nested_arrays_fail_fast) {
  // One key holding 2M empty nested arrays (24 MB): the nested-element cap stops the reader long
  // before it has built 2M values (which took gigabytes through JS).
  const uint64_t n = 2000000;
  Enc e = header(0, 1);
  e.key("x.nested", GgufType::ARRAY);
  e.put<uint32_t>((uint32_t)GgufType::ARRAY);
  e.put<uint64_t>(n);
  e.b.reserve(e.b.size() + n * 12);
  for (uint64_t k = 0; k < n; ++k) {
    e.put<uint32_t>((uint32_t)GgufType::INT32);
    e.put<uint64_t>(0);
  }
  std::unique_ptr<GgufFile> f;
  Status s = GgufFile::parse(e.b.data(), e.b.size(), &f);
  CHECK(s.code == Code::GgufLimit);
  CHECK(mentions(s, "'x.nested'") && mentions(s, std::to_string(GgufLimits().max_nested_elements)));
  // Nesting depth is bounded as well (9 levels; the cap is 8).
  Enc d = header(0, 1);
  d.key("x.deep", GgufType::ARRAY);
  for (int k = 0; k < 9; ++k) {
    d.put<uint32_t>((uint32_t)GgufType::ARRAY);
    d.put<uint64_t>(1);
  }
  d.put<uint32_t>((uint32_t)GgufType::INT32);
  d.put<uint64_t>(0);
  s = GgufFile::parse(d.b.data(), d.b.size(), &f);
  CHECK(s.code == Code::GgufLimit);
  CHECK(mentions(s, "'x.deep'") && mentions(s, "nesting depth"));
  // Within the caps, nested arrays still parse.
  Enc ok = header(0, 1);
  ok.key("x.small", GgufType::ARRAY);
  ok.put<uint32_t>((uint32_t)GgufType::ARRAY);
  ok.put<uint64_t>(1000);
  for (int k = 0; k < 1000; ++k) {
    ok.put<uint32_t>((uint32_t)GgufType::INT32);
    ok.put<uint64_t>(1);
    ok.put<int32_t>(k);
  }
  CHECK(GgufFile::parse(ok.b.data(), ok.b.size(), &f).is_ok());
  if (f) CHECK_EQ(f->find("x.small")->arr_nested[999].arr_int(0), int64_t(999));
}

TEST(gguf_reader_nul_in_path_rejected) {
  std::unique_ptr<GgufFile> f;
  Status s = GgufFile::open(std::string("/tmp/a.gguf\0/etc/passwd", 23), &f);
  CHECK(s.code == Code::InvalidArgument);
}
