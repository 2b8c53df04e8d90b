// quantize with an importance matrix (compress/imatrix.h, quant weighted_ref.cpp):
// - both of llama.cpp's imatrix formats read to the weights llama-quantize computes from them;
// - hostile files (every truncation, huge counts, NaN, missing halves, random byte flips) end in
//   typed errors, never a crash or a huge allocation;
// - whole files against llama.cpp's own llama_model_quantize given the same importance matrix and
//   llama-quantize's metadata overrides, for every mix: same type and bytes per tensor, same keys;
//   a size mismatch behaves as llama.cpp's (an error, but token_embd is quantized without);
// - on the trained fixture, the imatrix lowers the KL divergence of q4_0 against the f32 model.
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "compress/imatrix.h"
#include "compress/quantize.h"
#include "compress/recipe.h"
#include "forward_ref.h"
#include "gguf/gguf.h"
#include "llama_oracle.h"
#include "model_test_util.h"
#include "synth/synth.h"
#include "testing.h"

using namespace llmserve;

namespace {

std::string tmp_path(const std::string& name) {
  return "/tmp/llmserve_test_imatrix_" + std::to_string(static_cast<long>(::getpid())) + "_" + name;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}
std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

// One imatrix entry as llama-imatrix's GGUF holds it: sums of squared inputs and the token count
// per matrix (one here: dense models).
struct RawEntry {
  std::vector<float> sums;
  std::vector<float> counts;
};
using RawImatrix = std::map<std::string, RawEntry>;

Status write_gguf_imatrix(const std::string& path, const RawImatrix& m, bool metadata = true) {
  GgufWriter w;
  if (metadata) {
    w.set_arr_str("imatrix.datasets", {"calibration.txt"});
    w.set_u32("imatrix.chunk_count", 7);
    w.set_u32("imatrix.chunk_size", 512);
  }
  for (const auto& [name, e] : m) {
    const int64_t n_mat = static_cast<int64_t>(e.counts.size());
    const int64_t n_sums = static_cast<int64_t>(e.sums.size());
    // {ne0, n_mat} as llama-imatrix writes it; a flat {n} when the sizes do not divide (hostile tests).
    const bool whole = n_mat > 0 && n_sums % n_mat == 0;
    const int64_t ne0 = whole ? n_sums / n_mat : n_sums;
    std::vector<uint8_t> s(e.sums.size() * 4), c(e.counts.size() * 4);
    std::memcpy(s.data(), e.sums.data(), s.size());
    std::memcpy(c.data(), e.counts.data(), c.size());
    LLMS_RETURN_IF_ERROR(
        w.add_tensor(name + ".in_sum2", GgmlType::F32, {ne0 > 0 ? ne0 : 1, whole ? n_mat : 1}, std::move(s)));
    LLMS_RETURN_IF_ERROR(w.add_tensor(name + ".counts", GgmlType::F32, {1, n_mat > 0 ? n_mat : 1}, std::move(c)));
  }
  return w.write(path);
}

// The legacy .dat: per entry name, ncall, values (mean * ncall); then the chunk count and dataset.
struct LegacyEntry {
  std::string name;
  int32_t ncall;
  std::vector<float> values;
};
std::string legacy_bytes(const std::vector<LegacyEntry>& es, bool trailer = true) {
  std::string b;
  auto i32 = [&b](int32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); };
  i32(static_cast<int32_t>(es.size()));
  for (const LegacyEntry& e : es) {
    i32(static_cast<int32_t>(e.name.size()));
    b += e.name;
    i32(e.ncall);
    i32(static_cast<int32_t>(e.values.size()));
    b.append(reinterpret_cast<const char*>(e.values.data()), e.values.size() * 4);
  }
  if (trailer) {
    i32(5);
    i32(4);
    b += "wiki";
  }
  return b;
}

Code load_code(const std::string& path, Imatrix* im = nullptr) {
  Imatrix tmp;
  return load_imatrix(path, im ? im : &tmp).code;
}

std::string synth_f32(const std::string& name) {
  SynthOptions o;
  o.arch = "llama";
  o.dim = 256;
  o.layers = 8;
  o.heads = 8;
  o.kv_heads = 2;
  o.ffn = 256;
  o.context = 256;
  o.vocab_size = 320;
  o.seed = 21;
  const std::string p = tmp_path(name);
  CHECK(synth_model(o, p).is_ok());
  return p;
}

}  // namespace

TEST(imatrix_reads_both_formats) {
  // GGUF: sums / count per matrix, 1 where the count is 0; experts: one count per matrix.
  RawImatrix m;
  m["a.weight"] = {{2, 4, 6, 8}, {2}};
  m["b.weight"] = {{5, 5}, {0}};
  m["c.weight"] = {{3, 6, 9, 4, 8, 12}, {3, 4}};
  const std::string g = tmp_path("formats.gguf");
  CHECK(write_gguf_imatrix(g, m).is_ok());
  Imatrix im;
  CHECK(load_code(g, &im) == Code::Ok);
  CHECK(!im.legacy);
  CHECK_EQ(im.entries.size(), size_t(3));
  CHECK(im.entries["a.weight"] == std::vector<float>({1, 2, 3, 4}));
  CHECK(im.entries["b.weight"] == std::vector<float>({1, 1}));
  CHECK(im.entries["c.weight"] == std::vector<float>({1, 2, 3, 1, 2, 3}));
  CHECK_EQ(im.chunk_count, int64_t(7));
  CHECK(im.datasets == std::vector<std::string>({"calibration.txt"}));
  // Legacy: values / ncall (as is for ncall <= 0), the optional trailer.
  const std::string d = tmp_path("formats.dat");
  write_file(d, legacy_bytes({{"x.weight", 4, {4, 8}}, {"y.weight", 0, {3}}}));
  CHECK(load_code(d, &im) == Code::Ok);
  CHECK(im.legacy);
  CHECK(im.entries["x.weight"] == std::vector<float>({1, 2}));
  CHECK(im.entries["y.weight"] == std::vector<float>({3}));
  CHECK_EQ(im.chunk_count, int64_t(5));
  CHECK(im.datasets == std::vector<std::string>({"wiki"}));
  write_file(d, legacy_bytes({{"x.weight", 2, {4, 8}}}, false));
  CHECK(load_code(d, &im) == Code::Ok);
  CHECK(im.entries["x.weight"] == std::vector<float>({2, 4}));
  CHECK_EQ(im.chunk_count, int64_t(0));
  std::remove(g.c_str());
  std::remove(d.c_str());
}

TEST(imatrix_hostile_files_typed_errors) {
  const std::string p = tmp_path("hostile");
  // Every truncation of a legacy file before its last value is an error; none crashes.
  const std::string good = legacy_bytes({{"blk.0.attn_q.weight", 3, {1, 2, 3, 4}}, {"b", 1, {5, 6}}});
  const size_t values_end = good.size() - 12;  // the trailer: chunk count, length, "wiki"
  for (size_t n = 0; n < good.size(); ++n) {
    write_file(p, good.substr(0, n));
    const Code c = load_code(p);
    if (n < values_end) CHECK(c == Code::BadImatrix);
    else CHECK(c == Code::Ok);  // a cut trailer is ignored, as llama.cpp does
  }
  auto with_i32_at = [&](size_t off, int32_t v) {
    std::string b = good;
    std::memcpy(b.data() + off, &v, 4);
    return b;
  };
  const size_t nval_off = 4 + 4 + 19 + 4;
  for (const std::string& b : {with_i32_at(0, 0x7fffffff), with_i32_at(0, -1), with_i32_at(4, -5),
                               with_i32_at(4, 1 << 30), with_i32_at(nval_off, 0x7fffffff), with_i32_at(nval_off, 0)}) {
    write_file(p, b);
    CHECK(load_code(p) == Code::BadImatrix);
  }
  write_file(p, legacy_bytes({{"a", 1, {1, NAN}}}));
  Imatrix im;
  Status st = load_imatrix(p, &im);
  CHECK(st.code == Code::BadImatrix);
  CHECK(st.message.find("non-finite") != std::string::npos && st.message.find("'a'") != std::string::npos);
  write_file(p, legacy_bytes({{"a", 1, {INFINITY}}}));
  CHECK(load_code(p) == Code::BadImatrix);
  write_file(p, "");
  CHECK(load_code(p) == Code::BadImatrix);
  CHECK(load_code(tmp_path("missing")) == Code::FileNotFound);
  CHECK(load_code("/tmp") == Code::Io);
  // GGUF: a half missing, non-F32, NaN / huge / negative counts, inf sums, no metadata, a size that
  // is not whole matrices, truncation.
  const std::string g = tmp_path("hostile.gguf");
  auto gguf_code = [&](const RawImatrix& m, bool meta = true) {
    CHECK(write_gguf_imatrix(g, m, meta).is_ok());
    return load_code(g);
  };
  CHECK(gguf_code({{"a", {{1, 2}, {1}}}}) == Code::Ok);
  CHECK(gguf_code({{"a", {{1, 2}, {1}}}}, false) == Code::BadImatrix);
  for (float bad_count : {NAN, INFINITY, 1e30f, -3.0f})
    CHECK(gguf_code({{"a", {{1, 2}, {bad_count}}}}) == Code::BadImatrix);
  CHECK(gguf_code({{"a", {{1, INFINITY}, {1}}}}) == Code::BadImatrix);
  CHECK(gguf_code({{"a", {{1, 2, 3}, {1, 1}}}}) == Code::BadImatrix);
  {
    GgufWriter w;  // sums without counts; F16 sums
    w.set_arr_str("imatrix.datasets", {"x"});
    w.set_u32("imatrix.chunk_count", 1);
    w.set_u32("imatrix.chunk_size", 1);
    CHECK(w.add_tensor("a.in_sum2", GgmlType::F32, {2}, std::vector<uint8_t>(8, 0)).is_ok());
    CHECK(w.write(g).is_ok());
    CHECK(load_code(g) == Code::BadImatrix);
    CHECK(w.add_tensor("a.counts", GgmlType::F16, {1}, std::vector<uint8_t>(2, 0)).is_ok());
    CHECK(w.write(g).is_ok());
    CHECK(load_code(g) == Code::BadImatrix);
  }
  CHECK(write_gguf_imatrix(g, {{"a", {{1, 2, 3, 4}, {2}}}, {"b", {{1, 2}, {1}}}}).is_ok());
  const std::string gbytes = read_file(g);  // ends with the last tensor's data and up to 31 bytes of padding
  for (size_t n : {size_t(3), size_t(4), size_t(20), gbytes.size() / 2, gbytes.size() - 40}) {
    write_file(p, gbytes.substr(0, n));
    const Code c = load_code(p);
    if (c != Code::BadImatrix) std::fprintf(stderr, "  a GGUF imatrix cut at %zu bytes: %s\n", n, code_name(c));
    CHECK(c == Code::BadImatrix);
  }
  // Random byte flips in both formats: any outcome but a crash, and only the typed codes.
  std::mt19937 rng(5);
  int ok = 0, errors = 0;
  for (const std::string* base : {&good, &gbytes}) {
    for (int k = 0; k < 300; ++k) {
      std::string b = *base;
      for (int f = 0; f < 1 + static_cast<int>(rng() % 4); ++f) b[rng() % b.size()] = static_cast<char>(rng());
      write_file(p, b);
      const Code c = load_code(p);
      CHECK(c == Code::Ok || c == Code::BadImatrix);
      (c == Code::Ok ? ok : errors)++;
    }
  }
  std::printf("  random byte flips: %d read, %d typed errors\n", ok, errors);
  std::remove(p.c_str());
  std::remove(g.c_str());
}

namespace {

// An imatrix for a synth model: random positive sums for every blk weight (counts 10), none for
// output.weight (llama-imatrix skips it by default), a wrong-sized token_embd entry (llama.cpp
// quantizes token_embd without it) and an entry for a tensor the model does not have.
RawImatrix synth_imatrix(const GgufFile& model) {
  RawImatrix m;
  std::mt19937 rng(8);
  std::lognormal_distribution<float> ln(0.0f, 1.0f);
  for (const GgufTensorInfo& t : model.tensors()) {
    if (t.name.rfind("blk.", 0) != 0 || t.n_dims < 2) continue;
    RawEntry e;
    for (int64_t i = 0; i < t.ne[0]; ++i) e.sums.push_back(10.0f * ln(rng));
    e.counts = {10};
    m[t.name] = e;
  }
  m["token_embd.weight"] = {std::vector<float>(17, 1.0f), {1}};
  m["blk.99.ffn_up.weight"] = {{1, 2}, {1}};
  return m;
}

// llama-quantize's kv overrides for an imatrix (tools/quantize/quantize.cpp), for the oracle.
std::vector<oracle::KvOverride> imatrix_overrides(const std::string& file, size_t entries) {
  std::vector<oracle::KvOverride> kv(5);
  std::memset(kv.data(), 0, kv.size() * sizeof(oracle::KvOverride));
  auto str = [](oracle::KvOverride& o, const char* key, const std::string& v) {
    o.tag = oracle::kKvStr;
    std::snprintf(o.key, sizeof o.key, "%s", key);
    std::snprintf(o.val_str, sizeof o.val_str, "%s", v.c_str());
  };
  auto num = [](oracle::KvOverride& o, const char* key, int64_t v) {
    o.tag = oracle::kKvInt;
    std::snprintf(o.key, sizeof o.key, "%s", key);
    o.val_i64 = v;
  };
  str(kv[0], "quantize.imatrix.file", file);
  str(kv[1], "quantize.imatrix.dataset", "calibration.txt");
  num(kv[2], "quantize.imatrix.entries_count", static_cast<int64_t>(entries));
  num(kv[3], "quantize.imatrix.chunks_count", 7);
  return kv;  // kv[4]: the terminator (empty key)
}

int compare_tensors(const GgufFile& a, const GgufFile& b, const std::string& what, const char* other = "llama.cpp",
                    bool print = true) {
  int bad = 0;
  for (const GgufTensorInfo& t : a.tensors()) {
    const GgufTensorInfo* u = b.find_tensor(t.name);
    if (!u || u->type != t.type || u->nbytes != t.nbytes || std::memcmp(u->data, t.data, t.nbytes) != 0) {
      if (bad++ < 4 && print)
        std::fprintf(stderr, "  %s %s: ours %s, %s %s%s\n", what.c_str(), t.name.c_str(), type_traits(t.type).name,
                     other, u ? type_traits(u->type).name : "(absent)",
                     u && u->type == t.type ? " (bytes differ)" : "");
    }
  }
  return bad;
}

std::unique_ptr<GgufFile> open_ok(const std::string& path) {
  std::unique_ptr<GgufFile> f;
  Status st = GgufFile::open(path, &f);
  if (!st.is_ok()) std::fprintf(stderr, "  open %s: %s\n", path.c_str(), st.message.c_str());
  CHECK(st.is_ok());
  return f;
}

}  // namespace

// The whole output with an importance matrix against llama_model_quantize given the same weights
// (sums / counts, as llama-quantize computes them) and llama-quantize's metadata, for every mix.
TEST(quantize_imatrix_equals_llama_model_quantize) {
  const auto& L = oracle::libs();
  if (!L.model_quantize || !L.default_params) {
    std::printf("  (skipped: libllama with llama_model_quantize not found)\n");
    return;
  }
  const std::string in = synth_f32("oracle_in.gguf");
  auto src = open_ok(in);
  if (!src) return;
  const RawImatrix raw = synth_imatrix(*src);
  const std::string imf = tmp_path("oracle.imatrix.gguf");
  CHECK(write_gguf_imatrix(imf, raw).is_ok());
  std::map<std::string, std::vector<float>> norm;  // the weights, computed here (not by our reader)
  std::vector<oracle::ImatrixData> idata;
  for (const auto& [name, e] : raw) {
    std::vector<float>& v = norm[name];
    for (float s : e.sums) v.push_back(e.counts[0] > 0 ? s / e.counts[0] : 1.0f);
  }
  for (const auto& [name, v] : norm) idata.push_back({name.c_str(), v.data(), v.size()});
  idata.push_back({nullptr, nullptr, 0});
  const auto kv = imatrix_overrides(imf, norm.size());
  oracle::QuantizeParams probe = L.default_params();
  CHECK(probe.quantize_output_tensor && !probe.pure && probe.imatrix == nullptr);  // the layout is llama.h's
  int differs_without = 0;
  // Every weighted quantizer and both has-imatrix recipe rules, within CI's time (not all 19 mixes).
  for (const char* name : {"q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_m", "q4_k_m", "q5_k_m", "q6_k", "iq4_nl",
                           "iq4_xs", "q8_0", "f16"}) {
    const QuantMix& mix = *find_quant_mix(name);
    const std::string ours = tmp_path(std::string("ours_") + mix.name),
                      theirs = tmp_path(std::string("theirs_") + mix.name);
    QuantizeOptions o;
    o.type = mix.name;
    o.threads = 2;
    o.imatrix = imf;
    QuantizeResult res;
    Status st = quantize_model(in, ours, o, {}, nullptr, &res);
    CHECK(st.is_ok());
    oracle::QuantizeParams p = L.default_params();
    p.nthread = 2;
    p.ftype = mix.ftype;
    p.imatrix = idata.data();
    p.kv_overrides = kv.data();
    CHECK_EQ(L.model_quantize(in.c_str(), theirs.c_str(), &p), 0u);
    auto a = open_ok(ours), b = open_ok(theirs);
    if (!a || !b) continue;
    CHECK_EQ(a->tensors().size(), b->tensors().size());
    CHECK_EQ(compare_tensors(*a, *b, mix.name), 0);
    CHECK_EQ(a->metadata().size(), b->metadata().size());
    for (const auto& [key, v] : b->metadata()) CHECK(a->find(key) != nullptr);
    std::string file, dataset;
    bool found = false;
    int64_t entries = 0, chunks = 0;
    CHECK(a->get_string("quantize.imatrix.file", &file, &found).is_ok() && file == imf);
    CHECK(a->get_string("quantize.imatrix.dataset", &dataset, &found).is_ok() && dataset == "calibration.txt");
    CHECK(a->get_int("quantize.imatrix.entries_count", &entries, &found).is_ok() && entries == int64_t(norm.size()));
    CHECK(a->get_int("quantize.imatrix.chunks_count", &chunks, &found).is_ok() && chunks == 7);
    if (std::string(mix.name) == "q4_k_m") {
      // Not vacuous: the weights change the bytes; notes name what had no entry or a wrong size.
      const std::string plain = tmp_path("plain_q4_k_m");
      QuantizeOptions po = o;
      po.imatrix.clear();
      CHECK(quantize_model(in, plain, po, {}, nullptr, nullptr).is_ok());
      auto c = open_ok(plain);
      if (c) differs_without = compare_tensors(*a, *c, "with imatrix:", "without", false);
      std::remove(plain.c_str());
      std::string notes;
      for (const auto& n : res.notes) notes += n + "\n";
      CHECK(notes.find("1 tensors have no importance-matrix entry") != std::string::npos);
      CHECK(notes.find("output.weight") != std::string::npos);
      CHECK(notes.find("'token_embd.weight', whose rows have 256 columns: quantized without it") != std::string::npos);
      // The legacy format with the same weights gives the same file but its metadata.
      std::vector<LegacyEntry> le;
      for (const auto& [name, v] : norm) le.push_back({name, 1, v});
      const std::string dat = tmp_path("oracle.imatrix.dat");
      write_file(dat, legacy_bytes(le));
      QuantizeOptions lo = o;
      lo.imatrix = dat;
      const std::string via_dat = tmp_path("via_dat");
      CHECK(quantize_model(in, via_dat, lo, {}, nullptr, nullptr).is_ok());
      auto d = open_ok(via_dat);
      if (d) CHECK_EQ(compare_tensors(*a, *d, "GGUF imatrix:", ".dat imatrix"), 0);
      std::remove(dat.c_str());
      std::remove(via_dat.c_str());
    }
    std::remove(ours.c_str());
    std::remove(theirs.c_str());
  }
  std::printf("  q4_k_m: %d tensors differ with vs without the imatrix\n", differs_without);
  CHECK(differs_without > 20);
  std::remove(in.c_str());
  std::remove(imf.c_str());
}

// A wrong-sized entry for a tensor other than token_embd: llama.cpp fails, so do we (typed, no file).
TEST(quantize_imatrix_size_mismatch_fails_like_llama_cpp) {
  const std::string in = synth_f32("mismatch_in.gguf");
  auto src = open_ok(in);
  if (!src) return;
  RawImatrix raw = synth_imatrix(*src);
  raw["blk.3.attn_q.weight"].sums.resize(128);
  const std::string imf = tmp_path("mismatch.imatrix.gguf");
  CHECK(write_gguf_imatrix(imf, raw).is_ok());
  QuantizeOptions o;
  o.type = "q4_k_m";
  o.imatrix = imf;
  const std::string out = tmp_path("mismatch_out.gguf");
  Status st = quantize_model(in, out, o, {}, nullptr, nullptr);
  CHECK(st.code == Code::BadImatrix);
  CHECK(st.message.find("128 values for 'blk.3.attn_q.weight', whose rows have 256 columns") != std::string::npos);
  struct stat sb {};
  CHECK(::stat(out.c_str(), &sb) != 0);
  const auto& L = oracle::libs();
  if (L.model_quantize && L.default_params) {
    std::vector<oracle::ImatrixData> idata;
    std::map<std::string, std::vector<float>> norm;
    for (const auto& [name, e] : raw) norm[name] = e.sums;
    for (const auto& [name, v] : norm) idata.push_back({name.c_str(), v.data(), v.size()});
    idata.push_back({nullptr, nullptr, 0});
    oracle::QuantizeParams p = L.default_params();
    p.ftype = 15;
    p.imatrix = idata.data();
    CHECK(L.model_quantize(in.c_str(), out.c_str(), &p) != 0u);
    std::remove(out.c_str());
  }
  // A non-finite weight: refused before anything is read from the model.
  write_file(imf, legacy_bytes({{"blk.0.attn_q.weight", 1, std::vector<float>(256, NAN)}}));
  CHECK(quantize_model(in, out, o, {}, nullptr, nullptr).code == Code::BadImatrix);
  std::remove(in.c_str());
  std::remove(imf.c_str());
}

namespace {

// The trained fixture's token sequences: per reference case its prompt then llama.cpp's greedy
// continuation (aidreams260K.reference.json, read with a small scanner: arrays of integers).
std::vector<std::vector<int32_t>> fixture_sequences(const std::string& json) {
  std::vector<std::vector<int32_t>> out;
  auto ints_after = [&json](size_t& pos, const char* key, std::vector<int32_t>* v) {
    pos = json.find(key, pos);
    if (pos == std::string::npos) return false;
    size_t p = json.find('[', pos), end = json.find(']', p);
    if (p == std::string::npos || end == std::string::npos) return false;
    for (++p; p < end;) {
      char* e = nullptr;
      const long x = std::strtol(json.c_str() + p, &e, 10);
      if (e == json.c_str() + p) {
        ++p;
        continue;
      }
      v->push_back(static_cast<int32_t>(x));
      p = static_cast<size_t>(e - json.c_str());
    }
    pos = end;
    return true;
  };
  size_t pos = 0;
  for (;;) {
    std::vector<int32_t> seq;
    if (!ints_after(pos, "\"promptTokens\"", &seq) || !ints_after(pos, "\"greedy\"", &seq)) break;
    out.push_back(seq);
  }
  return out;
}

std::vector<double> log_softmax(const std::vector<double>& z) {
  double mx = z[0], s = 0;
  for (double v : z) mx = std::max(mx, v);
  for (double v : z) s += std::exp(v - mx);
  std::vector<double> r(z.size());
  for (size_t i = 0; i < z.size(); ++i) r[i] = z[i] - mx - std::log(s);
  return r;
}

// Mean KL(reference || model) over every position of the sequences.
double mean_kl(const Model& ref, const Model& m, const std::vector<std::vector<int32_t>>& seqs) {
  double sum = 0;
  int64_t n = 0;
  for (const auto& s : seqs) {
    const auto a = forward_ref_all(ref, s), b = forward_ref_all(m, s);
    for (size_t t = 0; t < s.size(); ++t) {
      const auto p = log_softmax(a[t]), q = log_softmax(b[t]);
      double kl = 0;
      for (size_t i = 0; i < p.size(); ++i) kl += std::exp(p[i]) * (p[i] - q[i]);
      sum += kl;
      ++n;
    }
  }
  return n ? sum / static_cast<double>(n) : 0;
}

}  // namespace

// What an importance matrix is for: on the trained fixture (dim 64, so the k-quant mixes take their
// 32-block fallbacks), an imatrix computed from the model's own activations on two reference texts
// lowers the KL divergence against the f32 model on two other texts, for the low-bit mixes.
TEST(quantize_imatrix_lowers_kl_on_trained_fixture) {
  const std::string here = __FILE__;
  const std::string dir = here.substr(0, here.rfind("/native/tests/")) + "/../shared/fixtures/models/";
  const std::string path = dir + "aidreams260K.gguf";
  if (::access(path.c_str(), R_OK) != 0) {
    std::printf("  skipped: fixture %s not found\n", path.c_str());
    return;
  }
  const auto seqs = fixture_sequences(read_file(dir + "aidreams260K.reference.json"));
  CHECK(seqs.size() >= 4);
  if (seqs.size() < 4) return;
  const std::vector<std::vector<int32_t>> calib = {seqs[0], seqs[1]}, eval = {seqs[2], seqs[3]};
  auto ref = llmserve_test::load_model(path);
  CHECK(ref != nullptr);
  if (!ref) return;
  // llama-imatrix's accumulation: per weight, the sum over tokens of each squared input column.
  std::map<const MatrixView*, std::string> names;
  for (size_t i = 0; i < ref->weights().layers.size(); ++i) {
    const LayerWeights& Lw = ref->weights().layers[i];
    const std::string b = "blk." + std::to_string(i) + ".";
    names[&Lw.wq] = b + "attn_q.weight";
    names[&Lw.wk] = b + "attn_k.weight";
    names[&Lw.wv] = b + "attn_v.weight";
    names[&Lw.wo] = b + "attn_output.weight";
    names[&Lw.ffn_gate] = b + "ffn_gate.weight";
    names[&Lw.ffn_up] = b + "ffn_up.weight";
    names[&Lw.ffn_down] = b + "ffn_down.weight";
  }
  RawImatrix raw;
  for (const auto& s : calib) {
    forward_ref_all(*ref, s, [&](const MatrixView& w, const std::vector<double>& x) {
      auto it = names.find(&w);
      if (it == names.end()) return;
      RawEntry& e = raw[it->second];
      if (e.sums.empty()) e = {std::vector<float>(x.size(), 0.0f), {0.0f}};
      for (size_t j = 0; j < x.size(); ++j) e.sums[j] += static_cast<float>(x[j] * x[j]);
      e.counts[0] += 1;
    });
  }
  CHECK_EQ(raw.size(), names.size());
  const std::string imf = tmp_path("fixture.imatrix.gguf");
  CHECK(write_gguf_imatrix(imf, raw).is_ok());
  int better = 0;
  const char* mixes[] = {"q4_0", "q4_1", "q2_k", "iq4_nl"};
  for (const char* mix : mixes) {
    double kl[2] = {0, 0};
    for (int with = 0; with < 2; ++with) {
      const std::string out = tmp_path(std::string("fixture_") + mix + (with ? "_im" : ""));
      QuantizeOptions o;
      o.type = mix;
      o.threads = 2;
      if (with) o.imatrix = imf;
      CHECK(quantize_model(path, out, o, {}, nullptr, nullptr).is_ok());
      auto q = llmserve_test::load_model(out);
      CHECK(q != nullptr);
      if (q) kl[with] = mean_kl(*ref, *q, eval);
      std::remove(out.c_str());
    }
    std::printf("  %-6s KL vs f32: %.5f without, %.5f with the imatrix (%+.1f%%)\n", mix, kl[0], kl[1],
                100.0 * (kl[1] - kl[0]) / kl[0]);
    better += kl[1] < kl[0];
  }
  CHECK_EQ(better, 4);
  std::remove(imf.c_str());
}
