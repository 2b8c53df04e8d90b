// synth_model: random-weight llama / qwen2 / qwen3 / gemma2 / gemma3 / phi3 GGUF files with llama.cpp's key and tensor names.
//
// Initialisation (all Gaussian, deterministic from the seed and the tensor name):
//   matrices        std 1/sqrt(fan_in), fan_in = ne[0]
//   token_embd      std 1 (token identity stays visible next to the layers' contributions), or
//                   kLogitStd/sqrt(dim) when tied, since it then also projects to the logits
//   output          std kLogitStd/sqrt(dim)  (final-normed hidden has rms ~1 -> logits std ~kLogitStd)
//   norm weights    1 + 0.1 * N(0,1) (qwen3's per-head q/k norms too);  qwen2 q/k/v biases 0.05 * N(0,1)
// kLogitStd = 3 keeps next-token distributions far from both one-hot and uniform: on the default
// llama model (vocab 512) llama.cpp gives a mean next-token entropy of ~2.9 nats (uniform: 6.2)
// with a mean top probability of ~0.33, and the argmax changes with the context.
#include "synth.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <iterator>
#include <memory>
#include <numbers>
#include <thread>

#include "../gguf/gguf.h"
#include "../quant/gemm.h"

namespace llmserve {
namespace {

constexpr double kLogitStd = 3.0;
constexpr double kNormNoise = 0.1;
constexpr double kBiasStd = 0.05;
constexpr double kMaxFileBytes = 32.0 * (1ull << 30);

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// xoshiro256** seeded through splitmix64; Box-Muller for normals.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (auto& w : s_) w = splitmix64(seed);
  }
  uint64_t next() {
    const uint64_t r = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return r;
  }
  // Fills out[0..n) with mean + std * N(0,1).
  void normal(float* out, size_t n, double mean, double std) {
    constexpr double kTwoPi = 6.283185307179586476925286766559;
    for (size_t i = 0; i < n; i += 2) {
      const double u1 = (static_cast<double>(next() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
      const double u2 = static_cast<double>(next() >> 11) * 0x1.0p-53;          // [0, 1)
      const double r = std::sqrt(-2.0 * std::log(u1));
      out[i] = static_cast<float>(mean + std * r * std::cos(kTwoPi * u2));
      if (i + 1 < n) out[i + 1] = static_cast<float>(mean + std * r * std::sin(kTwoPi * u2));
    }
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001B3ull;
  }
  return h;
}

// synth writes exactly the weight types the engine runs (synth_types()).
bool synth_type_allowed(GgmlType t) {
  for (GgmlType s : synth_types())
    if (s == t) return true;
  return false;
}

// The JS name of a type ("q4_K" -> "q4_k", as lib/synth.ts SYNTH_TYPES).
std::string type_label(GgmlType t) {
  std::string n = type_traits(t).name;
  for (char& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return n;
}

int64_t block_of(GgmlType t) { return std::max<int64_t>(1, type_traits(t).block_size); }

// Bytes per element, for the size estimate only.
double bytes_per_elem(GgmlType t) {
  const TypeTraits& tr = type_traits(t);
  return tr.block_size > 0 ? static_cast<double>(tr.type_size) / static_cast<double>(tr.block_size) : 4;
}

Status invalid(const std::string& msg) { return make_error(Code::InvalidArgument, msg); }

Status check_range(const char* name, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return invalid(std::string("Expected ") + name + " in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                   "] but received " + std::to_string(v));
  }
  return Status::ok();
}

int64_t synth_head_dim(const SynthOptions& o) { return o.head_dim != 0 ? o.head_dim : o.dim / o.heads; }

// Llama 3's rope_freqs.weight as llama.cpp's converter computes it for rope_type "llama3"
// (conversion/llama.py generate_extra_tensors): factor 8, low/high frequency factors 1 and 4,
// original context = the model's context (so the factors matter within a small model's context).
std::vector<float> llama3_rope_factors(const SynthOptions& o) {
  const int64_t n_rot = synth_head_dim(o);
  const double factor = 8, low_ff = 1, high_ff = 4, old_ctx = static_cast<double>(o.context);
  const double low_wavelen = old_ctx / low_ff, high_wavelen = old_ctx / high_ff;
  std::vector<float> out;
  for (int64_t i = 0; i < n_rot; i += 2) {
    // The converter's torch float32 frequencies, then Python double arithmetic.
    const float freq = 1.0f / std::pow(o.rope_freq_base, static_cast<float>(i) / static_cast<float>(n_rot));
    const double wavelen = 2 * std::numbers::pi / static_cast<double>(freq);
    if (wavelen < high_wavelen) {
      out.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      out.push_back(static_cast<float>(factor));
    } else {
      const double smooth = (old_ctx / wavelen - low_ff) / (high_ff - low_ff);
      out.push_back(static_cast<float>(1 / ((1 - smooth) / factor + smooth)));
    }
  }
  return out;
}

// Size estimate: the writer holds every tensor in memory until it writes.
Status check_size(const SynthOptions& o, int64_t n_vocab) {
  const double vocab = static_cast<double>(n_vocab);
  const double d = static_cast<double>(o.dim), f = static_cast<double>(o.ffn);
  const double hd = static_cast<double>(synth_head_dim(o));
  const double q = hd * static_cast<double>(o.heads), kv = hd * static_cast<double>(o.kv_heads);
  const double per_layer = d * q * 2 + d * kv * 2 + d * f * 3 * static_cast<double>(std::max<int64_t>(1, o.experts));
  const double mats = per_layer * static_cast<double>(o.layers) + vocab * d * (o.tied_output ? 1 : 2);
  const double bytes = mats * bytes_per_elem(o.type);
  if (bytes > kMaxFileBytes) {
    return invalid("Expected a model of at most 32 GiB but dim/layers/ffn/vocab_size give about " +
                   std::to_string(static_cast<int64_t>(bytes / (1ull << 30))) + " GiB");
  }
  return Status::ok();
}

// Converts rows of f32 into `type`, splitting large tensors across threads (each row is
// independent, so the bytes do not depend on the thread count).
std::vector<uint8_t> encode_rows(GgmlType type, const std::vector<float>& src, int64_t ne0, int64_t nrows) {
  if (type == GgmlType::F32) {
    std::vector<uint8_t> out(src.size() * sizeof(float));
    std::memcpy(out.data(), src.data(), out.size());
    return out;
  }
  const size_t rs = row_size(type, ne0);
  std::vector<uint8_t> out(rs * static_cast<size_t>(nrows));
  auto work = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      quantize_row(type, src.data() + r * ne0, out.data() + static_cast<size_t>(r) * rs, ne0);
    }
  };
  const int64_t elems = ne0 * nrows;
  unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  int64_t nt =
      std::min<int64_t>({static_cast<int64_t>(std::min(hw, 16u)), nrows, std::max<int64_t>(1, elems / (1 << 18))});
  if (nt <= 1) {
    work(0, nrows);
    return out;
  }
  std::vector<std::thread> threads;
  const int64_t per = (nrows + nt - 1) / nt;
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t r0 = t * per, r1 = std::min(nrows, r0 + per);
    if (r0 < r1) threads.emplace_back(work, r0, r1);
  }
  for (auto& th : threads) th.join();
  return out;
}

struct Builder {
  const SynthOptions& opt;
  GgufWriter& w;
  std::vector<std::string>* notes;
  std::function<void(double)> progress;
  double total_elems = 1;
  double done_elems = 0;

  void report(int64_t n) {
    done_elems += static_cast<double>(n);
    if (progress) progress(std::min(0.99, 0.99 * done_elems / total_elems));
  }

  // A 1-D f32 tensor: mean + std * N(0,1).
  Status vec(const std::string& name, int64_t n, double mean, double std) {
    std::vector<float> x(static_cast<size_t>(n));
    Rng rng(opt.seed ^ fnv1a(name));
    rng.normal(x.data(), x.size(), mean, std);
    std::vector<uint8_t> bytes(x.size() * sizeof(float));
    std::memcpy(bytes.data(), x.data(), bytes.size());
    LLMS_RETURN_IF_ERROR(w.add_tensor(name, GgmlType::F32, {n}, std::move(bytes)));
    report(n);
    return Status::ok();
  }

  // A 1-D f32 tensor with the given values.
  Status vec_values(const std::string& name, const std::vector<float>& x) {
    std::vector<uint8_t> bytes(x.size() * sizeof(float));
    std::memcpy(bytes.data(), x.data(), bytes.size());
    LLMS_RETURN_IF_ERROR(w.add_tensor(name, GgmlType::F32, {static_cast<int64_t>(x.size())}, std::move(bytes)));
    report(static_cast<int64_t>(x.size()));
    return Status::ok();
  }

  // A matrix [ne0 (contiguous, input dim), ne1] (x ne2 for 3-D expert tensors) in opt.type (or its
  // fallback), or f32.
  Status mat(const std::string& name, int64_t ne0, int64_t ne1, double std, int64_t ne2 = 1, bool f32 = false) {
    const GgmlType t = f32 ? GgmlType::F32 : synth_matrix_type(opt.type, ne0);
    if (!f32 && t != opt.type && notes) {
      notes->push_back(name + ": " + type_label(opt.type) + " needs ne[0] % " + std::to_string(block_of(opt.type)) +
                       " == 0 (ne[0]=" + std::to_string(ne0) + "), using " + type_label(t));
    }
    std::vector<float> x(static_cast<size_t>(ne0 * ne1 * ne2));
    Rng rng(opt.seed ^ fnv1a(name));
    rng.normal(x.data(), x.size(), 0.0, std);
    std::vector<int64_t> ne = {ne0, ne1};
    if (ne2 > 1) ne.push_back(ne2);
    LLMS_RETURN_IF_ERROR(w.add_tensor(name, t, ne, encode_rows(t, x, ne0, ne1 * ne2)));
    report(ne0 * ne1 * ne2);
    return Status::ok();
  }
};

}  // namespace

const std::vector<GgmlType>& synth_types() {
  // SYNTH_TYPES order (lib/synth.ts); each type is listed once the engine runs it (gemm_supported).
  static const std::vector<GgmlType> types = [] {
    std::vector<GgmlType> v;
    for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K,
                       GgmlType::Q6_K, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::IQ4_NL, GgmlType::Q5_K,
                       GgmlType::Q3_K, GgmlType::Q2_K, GgmlType::IQ4_XS})
      if (gemm_supported(t)) v.push_back(t);
    return v;
  }();
  return types;
}

GgmlType synth_matrix_type(GgmlType want, int64_t ne0) {
  const int64_t bs = block_of(want);
  if (bs <= 1 || ne0 % bs == 0) return want;
  if (bs == 256 && ne0 % 32 == 0) return GgmlType::Q8_0;
  return GgmlType::F16;
}

int synth_file_type(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return 0;      // LLAMA_FTYPE_ALL_F32
    case GgmlType::F16: return 1;      // LLAMA_FTYPE_MOSTLY_F16
    case GgmlType::Q4_0: return 2;     // LLAMA_FTYPE_MOSTLY_Q4_0
    case GgmlType::Q4_1: return 3;     // LLAMA_FTYPE_MOSTLY_Q4_1
    case GgmlType::Q8_0: return 7;     // LLAMA_FTYPE_MOSTLY_Q8_0
    case GgmlType::Q5_0: return 8;     // LLAMA_FTYPE_MOSTLY_Q5_0
    case GgmlType::Q5_1: return 9;     // LLAMA_FTYPE_MOSTLY_Q5_1
    case GgmlType::Q2_K: return 10;    // LLAMA_FTYPE_MOSTLY_Q2_K
    case GgmlType::Q3_K: return 12;    // LLAMA_FTYPE_MOSTLY_Q3_K_M
    case GgmlType::Q4_K: return 15;    // LLAMA_FTYPE_MOSTLY_Q4_K_M
    case GgmlType::Q5_K: return 17;    // LLAMA_FTYPE_MOSTLY_Q5_K_M
    case GgmlType::Q6_K: return 18;    // LLAMA_FTYPE_MOSTLY_Q6_K
    case GgmlType::IQ4_NL: return 25;  // LLAMA_FTYPE_MOSTLY_IQ4_NL
    case GgmlType::IQ4_XS: return 30;  // LLAMA_FTYPE_MOSTLY_IQ4_XS
    case GgmlType::BF16: return 32;    // LLAMA_FTYPE_MOSTLY_BF16
    default: return -1;
  }
}

Status validate_synth_options(const SynthOptions& o) {
  if (std::find_if(std::begin(kSynthArchs), std::end(kSynthArchs), [&](const char* a) { return o.arch == a; }) ==
      std::end(kSynthArchs)) {
    return invalid(
        "Expected arch to be 'llama', 'qwen2', 'qwen3', 'qwen3moe', 'gemma2', 'gemma3' or 'phi3' but received '" +
        o.arch + "'");
  }
  LLMS_RETURN_IF_ERROR(check_range("dim", o.dim, 1, 65536));
  LLMS_RETURN_IF_ERROR(check_range("layers", o.layers, 1, 1024));
  LLMS_RETURN_IF_ERROR(check_range("heads", o.heads, 1, 4096));
  LLMS_RETURN_IF_ERROR(check_range("kv_heads", o.kv_heads, 1, 4096));
  LLMS_RETURN_IF_ERROR(check_range("ffn", o.ffn, 1, 1 << 20));
  LLMS_RETURN_IF_ERROR(check_range("context", o.context, 1, 1 << 24));
  if (o.heads % o.kv_heads != 0) {
    return invalid("Expected kv_heads to divide heads but heads=" + std::to_string(o.heads) +
                   " is not a multiple of kv_heads=" + std::to_string(o.kv_heads));
  }
  if (o.head_dim != 0) {
    // An explicit head size (Qwen3's is not dim / heads): even, for RoPE's pairs.
    LLMS_RETURN_IF_ERROR(check_range("head_dim", o.head_dim, 0, 16384));
    if (o.head_dim % 2 != 0) return invalid("Expected an even head_dim but received " + std::to_string(o.head_dim));
  } else {
    if (o.dim % o.heads != 0) {
      return invalid("Expected heads to divide dim but dim=" + std::to_string(o.dim) +
                     " is not a multiple of heads=" + std::to_string(o.heads) + " (or give head_dim)");
    }
    if ((o.dim / o.heads) % 2 != 0) {
      return invalid("Expected an even head dimension (dim/heads) but received " + std::to_string(o.dim / o.heads) +
                     " (dim=" + std::to_string(o.dim) + ", heads=" + std::to_string(o.heads) + ")");
    }
  }
  if (o.rope_freqs && o.arch != "llama") {
    return invalid(
        "Expected arch 'llama' for rope_freqs (llama.cpp applies rope_freqs.weight to llama only) but "
        "received '" +
        o.arch + "'");
  }
  if (std::find_if(std::begin(kSynthRopeScalings), std::end(kSynthRopeScalings),
                   [&](const char* r) { return o.rope_scaling == r; }) == std::end(kSynthRopeScalings)) {
    return invalid("Expected rope_scaling to be '', 'none', 'linear' or 'yarn' but received '" + o.rope_scaling + "'");
  }
  // The loader's range of RoPE factors (model_config.cpp).
  if (!std::isfinite(o.rope_scale) || o.rope_scale < 1.0f / 1024 || o.rope_scale > 1024) {
    return invalid("Expected rope_scale in [0.0009765625, 1024] but received " + std::to_string(o.rope_scale));
  }
  if (o.vocab_from.empty()) {
    LLMS_RETURN_IF_ERROR(check_range("vocab_size", o.vocab_size, kSynthMinGeneratedVocab, kSynthMaxGeneratedVocab));
  }
  if (!synth_type_allowed(o.type)) {
    std::string list;
    for (GgmlType t : synth_types()) list += (list.empty() ? "" : ", ") + type_label(t);
    return invalid("Expected type to be one of " + list + " but received ggml type " +
                   std::to_string(static_cast<uint32_t>(o.type)));
  }
  if (!std::isfinite(o.rope_freq_base) || o.rope_freq_base <= 0) {
    return invalid("Expected positive rope_freq_base but received " + std::to_string(o.rope_freq_base));
  }
  if (!std::isfinite(o.rms_eps) || o.rms_eps <= 0 || o.rms_eps >= 1) {
    return invalid("Expected rms_eps in (0, 1) but received " + std::to_string(o.rms_eps));
  }
  const bool gemma = o.arch == "gemma2" || o.arch == "gemma3";
  // phi3 and Mistral-style llama files carry attention.sliding_window too (llama.cpp ignores it
  // for both: its llama and phi3 graphs attend over every position).
  if (!gemma && o.arch != "phi3" && o.arch != "llama" && o.sliding_window) {
    return invalid("Expected arch 'gemma2', 'gemma3', 'phi3' or 'llama' for sliding_window but received '" + o.arch +
                   "'");
  }
  if (o.long_rope && o.arch != "phi3") {
    return invalid("Expected arch 'phi3' for long_rope (LongRoPE factor tensors) but received '" + o.arch + "'");
  }
  if (o.long_rope && o.context < 4) return invalid("Expected context >= 4 for long_rope");
  if (!gemma && (o.swa_pattern || o.attn_softcap != 0 || o.final_softcap != 0 || o.rope_freq_base_swa != 0)) {
    return invalid(
        "Expected arch 'gemma2' or 'gemma3' for swa_pattern, attn_softcap, final_softcap and rope_freq_base_swa but "
        "received '" +
        o.arch + "'");
  }
  if (o.arch == "gemma3" && o.attn_softcap != 0) {
    return invalid("Expected attn_softcap 0 for 'gemma3' (llama.cpp's gemma3 has no attention soft-capping)");
  }
  LLMS_RETURN_IF_ERROR(check_range("experts", o.experts, o.arch == "qwen3moe" ? 1 : 0, 512));
  if (o.experts > 0 && o.arch != "llama" && o.arch != "qwen3moe")
    return invalid("Expected arch 'llama' or 'qwen3moe' for experts but received '" + o.arch + "'");
  LLMS_RETURN_IF_ERROR(check_range("experts_used", o.experts_used, o.experts > 0 ? 1 : 0, o.experts));
  if (o.vocab_from.empty()) LLMS_RETURN_IF_ERROR(check_size(o, o.vocab_size));
  return Status::ok();
}

Status synth_model(const SynthOptions& opt, const std::string& out_path, std::function<void(double)> progress,
                   std::vector<std::string>* notes) {
  LLMS_RETURN_IF_ERROR(validate_synth_options(opt));
  if (out_path.empty()) return invalid("Expected a non-empty output path");

  GgufWriter w;
  const std::string& a = opt.arch;
  const int64_t head_dim = synth_head_dim(opt);
  const int64_t q_dim = head_dim * opt.heads, kv_dim = head_dim * opt.kv_heads;

  w.set_str("general.architecture", a);
  w.set_str("general.name", "synth-" + a + "-" + std::to_string(opt.dim) + "x" + std::to_string(opt.layers) + "-" +
                                type_label(opt.type));
  w.set_u32("general.file_type", static_cast<uint32_t>(synth_file_type(opt.type)));
  w.set_u32("general.alignment", 32);
  w.set_u32(a + ".context_length", static_cast<uint32_t>(opt.context));
  w.set_u32(a + ".embedding_length", static_cast<uint32_t>(opt.dim));
  w.set_u32(a + ".block_count", static_cast<uint32_t>(opt.layers));
  w.set_u32(a + ".feed_forward_length", static_cast<uint32_t>(opt.ffn));
  w.set_u32(a + ".attention.head_count", static_cast<uint32_t>(opt.heads));
  w.set_u32(a + ".attention.head_count_kv", static_cast<uint32_t>(opt.kv_heads));
  w.set_f32(a + ".rope.freq_base", opt.rope_freq_base);
  w.set_f32(a + ".attention.layer_norm_rms_epsilon", opt.rms_eps);
  w.set_u32(a + ".rope.dimension_count", static_cast<uint32_t>(head_dim));
  // Qwen3's converter always writes the head size (its head_dim is not dim / heads in general).
  const bool gemma = a == "gemma2" || a == "gemma3";
  const bool tied = opt.tied_output || a == "gemma2";  // llama.cpp's gemma2 takes no output.weight
  const bool qwen3 = a == "qwen3" || a == "qwen3moe", moe = opt.experts > 0;
  if (moe) {
    w.set_u32(a + ".expert_count", static_cast<uint32_t>(opt.experts));
    w.set_u32(a + ".expert_used_count", static_cast<uint32_t>(opt.experts_used));
    if (a == "qwen3moe") w.set_u32(a + ".expert_feed_forward_length", static_cast<uint32_t>(opt.ffn));
  }
  if (opt.head_dim != 0 || qwen3 || gemma) {
    w.set_u32(a + ".attention.key_length", static_cast<uint32_t>(head_dim));
    w.set_u32(a + ".attention.value_length", static_cast<uint32_t>(head_dim));
  }
  if (!opt.rope_scaling.empty()) {
    w.set_str(a + ".rope.scaling.type", opt.rope_scaling);
    w.set_f32(a + ".rope.scaling.factor", opt.rope_scale);
    if (opt.rope_scaling == "yarn")
      w.set_u32(a + ".rope.scaling.original_context_length", static_cast<uint32_t>(opt.context));
  }

  if (opt.sliding_window) w.set_u32(a + ".attention.sliding_window", static_cast<uint32_t>(opt.sliding_window));
  if (opt.swa_pattern) w.set_u32(a + ".attention.sliding_window_pattern", static_cast<uint32_t>(opt.swa_pattern));
  if (opt.attn_softcap != 0) w.set_f32(a + ".attn_logit_softcapping", opt.attn_softcap);
  if (opt.final_softcap != 0) w.set_f32(a + ".final_logit_softcapping", opt.final_softcap);
  if (opt.rope_freq_base_swa != 0) w.set_f32(a + ".rope.freq_base_swa", opt.rope_freq_base_swa);
  if (opt.long_rope) {
    const int64_t orig = opt.context / 2;
    w.set_u32(a + ".rope.scaling.original_context_length", static_cast<uint32_t>(orig));
    w.set_f32(a + ".rope.scaling.attn_factor",
              static_cast<float>(std::sqrt(1 + std::log(2.0) / std::log(static_cast<double>(orig)))));
  }

  // Tokenizer.
  int64_t n_vocab = 0;
  if (!opt.vocab_from.empty()) {
    std::unique_ptr<GgufFile> src;
    Status st = GgufFile::open(opt.vocab_from, &src);
    if (!st.is_ok()) {
      st.message = "vocab_from '" + opt.vocab_from + "': " + st.message;
      return st;
    }
    const GgufValue* toks = src->find("tokenizer.ggml.tokens");
    if (!toks || toks->type != GgufType::ARRAY || toks->arr_type != GgufType::STRING) {
      return invalid("Expected vocab_from '" + opt.vocab_from + "' to contain a tokenizer.ggml.tokens string array");
    }
    n_vocab = static_cast<int64_t>(toks->arr_str.size());
    if (n_vocab < 1 || n_vocab > (1 << 21)) {
      return invalid("Expected vocab_from '" + opt.vocab_from + "' to hold 1.." + std::to_string(1 << 21) +
                     " tokens but it holds " + std::to_string(n_vocab));
    }
    LLMS_RETURN_IF_ERROR(check_size(opt, n_vocab));
    w.set_u32(a + ".vocab_size", static_cast<uint32_t>(n_vocab));
    for (const auto& [key, value] : src->metadata()) {
      if (key.rfind("tokenizer.", 0) == 0) w.set_value(key, value);
    }
  } else {
    SynthVocab v = synth_generate_vocab(opt.vocab_size);
    if (static_cast<int64_t>(v.tokens.size()) != opt.vocab_size) {
      return make_error(Code::Internal, "generated vocabulary has " + std::to_string(v.tokens.size()) +
                                            " tokens, expected " + std::to_string(opt.vocab_size));
    }
    // llama.cpp marks special tokens of models named phi3 by name and throws when Phi-3's
    // <|endoftext|> control token is absent: the last piece becomes it.
    if (a == "phi3") v.tokens.back() = "<|endoftext|>", v.types.back() = 3;
    n_vocab = opt.vocab_size;
    w.set_u32(a + ".vocab_size", static_cast<uint32_t>(n_vocab));
    w.set_str("tokenizer.ggml.model", "llama");
    w.set_arr_str("tokenizer.ggml.tokens", v.tokens);
    w.set_arr_f32("tokenizer.ggml.scores", v.scores);
    w.set_arr_i32("tokenizer.ggml.token_type", v.types);
    w.set_u32("tokenizer.ggml.bos_token_id", 1);
    w.set_u32("tokenizer.ggml.eos_token_id", 2);
    w.set_u32("tokenizer.ggml.unknown_token_id", 0);
    w.set_bool("tokenizer.ggml.add_bos_token", true);
    w.set_bool("tokenizer.ggml.add_eos_token", false);
    // Gemma's converters write SentencePiece without the leading-space prefix.
    if (gemma) w.set_bool("tokenizer.ggml.add_space_prefix", false);
  }

  // Tensors, in llama.cpp's usual order.
  const double d = static_cast<double>(opt.dim), f = static_cast<double>(opt.ffn);
  const double vocab_elems = static_cast<double>(n_vocab) * d * (tied ? 1 : 2);
  const double q = static_cast<double>(q_dim), kv = static_cast<double>(kv_dim), hd = static_cast<double>(head_dim);
  const double n_exp = static_cast<double>(opt.experts);
  const double layer_elems = 2 * d * q + 2 * d * kv + 3 * d * f * std::max(1.0, n_exp) + d * n_exp + 2 * d +
                             (a == "qwen2" ? q + 2 * kv : 0) + (qwen3 || a == "gemma3" ? 2 * hd : 0) +
                             (gemma ? 2 * d : 0);
  Builder b{opt, w, notes, std::move(progress)};
  b.total_elems = vocab_elems + d + layer_elems * static_cast<double>(opt.layers) + (opt.rope_freqs ? hd / 2 : 0) +
                  (opt.long_rope ? hd : 0);
  if (b.progress) b.progress(0.0);

  // gemma multiplies the embedding by sqrt(dim) on input; its norms make the input scale moot.
  const double embd_std = tied ? kLogitStd / std::sqrt(d) : 1.0;
  const double in_std = 1.0 / std::sqrt(d);
  const double ffn_in_std = 1.0 / std::sqrt(f);
  LLMS_RETURN_IF_ERROR(b.mat("token_embd.weight", opt.dim, n_vocab, embd_std));
  LLMS_RETURN_IF_ERROR(b.vec("output_norm.weight", opt.dim, 1.0, kNormNoise));
  if (!tied) { LLMS_RETURN_IF_ERROR(b.mat("output.weight", opt.dim, n_vocab, kLogitStd / std::sqrt(d))); }
  if (opt.rope_freqs) LLMS_RETURN_IF_ERROR(b.vec_values("rope_freqs.weight", llama3_rope_factors(opt)));
  if (opt.long_rope) {
    std::vector<float> lf, sf;
    const int64_t n = head_dim / 2;
    for (int64_t i = 0; i < n; ++i) {
      sf.push_back(1.0f + 0.2f * static_cast<float>(i) / static_cast<float>(n));
      lf.push_back(1.0f + 3.0f * static_cast<float>(i) / static_cast<float>(n));
    }
    LLMS_RETURN_IF_ERROR(b.vec_values("rope_factors_long.weight", lf));
    LLMS_RETURN_IF_ERROR(b.vec_values("rope_factors_short.weight", sf));
  }
  for (int64_t i = 0; i < opt.layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    LLMS_RETURN_IF_ERROR(b.vec(p + "attn_norm.weight", opt.dim, 1.0, kNormNoise));
    if (a == "phi3") {  // fused Q | K | V rows, as Phi-3's converter writes them
      LLMS_RETURN_IF_ERROR(b.mat(p + "attn_qkv.weight", opt.dim, q_dim + 2 * kv_dim, in_std));
    } else {
      LLMS_RETURN_IF_ERROR(b.mat(p + "attn_q.weight", opt.dim, q_dim, in_std));
      LLMS_RETURN_IF_ERROR(b.mat(p + "attn_k.weight", opt.dim, kv_dim, in_std));
      LLMS_RETURN_IF_ERROR(b.mat(p + "attn_v.weight", opt.dim, kv_dim, in_std));
    }
    if (a == "qwen2") {
      LLMS_RETURN_IF_ERROR(b.vec(p + "attn_q.bias", q_dim, 0.0, kBiasStd));
      LLMS_RETURN_IF_ERROR(b.vec(p + "attn_k.bias", kv_dim, 0.0, kBiasStd));
      LLMS_RETURN_IF_ERROR(b.vec(p + "attn_v.bias", kv_dim, 0.0, kBiasStd));
    }
    if (qwen3 || a == "gemma3") {
      LLMS_RETURN_IF_ERROR(b.vec(p + "attn_q_norm.weight", head_dim, 1.0, kNormNoise));
      LLMS_RETURN_IF_ERROR(b.vec(p + "attn_k_norm.weight", head_dim, 1.0, kNormNoise));
    }
    LLMS_RETURN_IF_ERROR(b.mat(p + "attn_output.weight", q_dim, opt.dim, 1.0 / std::sqrt(q)));
    if (gemma) LLMS_RETURN_IF_ERROR(b.vec(p + "post_attention_norm.weight", opt.dim, 1.0, kNormNoise));
    LLMS_RETURN_IF_ERROR(b.vec(p + "ffn_norm.weight", opt.dim, 1.0, kNormNoise));
    if (moe) {  // f32 router (llama.cpp's quantizer leaves ffn_gate_inp alone), 3-D experts
      LLMS_RETURN_IF_ERROR(b.mat(p + "ffn_gate_inp.weight", opt.dim, opt.experts, in_std, 1, true));
      LLMS_RETURN_IF_ERROR(b.mat(p + "ffn_gate_exps.weight", opt.dim, opt.ffn, in_std, opt.experts));
      LLMS_RETURN_IF_ERROR(b.mat(p + "ffn_down_exps.weight", opt.ffn, opt.dim, ffn_in_std, opt.experts));
      LLMS_RETURN_IF_ERROR(b.mat(p + "ffn_up_exps.weight", opt.dim, opt.ffn, in_std, opt.experts));
    } else if (a == "phi3") {  // fused gate | up rows
      LLMS_RETURN_IF_ERROR(b.mat(p + "ffn_up.weight", opt.dim, 2 * opt.ffn, in_std));
    } else {
      LLMS_RETURN_IF_ERROR(b.mat(p + "ffn_gate.weight", opt.dim, opt.ffn, in_std));
      LLMS_RETURN_IF_ERROR(b.mat(p + "ffn_up.weight", opt.dim, opt.ffn, in_std));
    }
    if (!moe) LLMS_RETURN_IF_ERROR(b.mat(p + "ffn_down.weight", opt.ffn, opt.dim, ffn_in_std));
    if (gemma) LLMS_RETURN_IF_ERROR(b.vec(p + "post_ffw_norm.weight", opt.dim, 1.0, kNormNoise));
  }
  LLMS_RETURN_IF_ERROR(w.write(out_path));
  if (b.progress) b.progress(1.0);
  return Status::ok();
}

Status synth_lora(const std::string& base_path, const SynthLoraOptions& opt, const std::string& out_path) {
  if (opt.rank < 1 || opt.rank > 65536)
    return invalid("Expected rank in [1, 65536] but received " + std::to_string(opt.rank));
  if (opt.type != GgmlType::F32 && opt.type != GgmlType::F16 && opt.type != GgmlType::BF16 &&
      opt.type != GgmlType::Q8_0 && opt.type != GgmlType::Q4_0)
    return invalid(std::string("Expected a LoRA type of f32, f16, bf16, q8_0 or q4_0 but received ") +
                   type_traits(opt.type).name);
  static const char* kKinds[] = {"attn_q",   "attn_k", "attn_v",   "attn_output",
                                 "ffn_gate", "ffn_up", "ffn_down", "output"};
  for (const std::string& t : opt.targets) {
    if (std::find_if(std::begin(kKinds), std::end(kKinds), [&](const char* k) { return t == k; }) == std::end(kKinds))
      return invalid("Unknown LoRA target '" + t + "'");
  }
  std::unique_ptr<GgufFile> base;
  LLMS_RETURN_IF_ERROR(GgufFile::open(base_path, &base));
  std::string arch;
  bool found = false;
  LLMS_RETURN_IF_ERROR(base->get_string("general.architecture", &arch, &found));
  int64_t n_layer = 0;
  LLMS_RETURN_IF_ERROR(base->get_int(arch + ".block_count", &n_layer, &found));
  if (!found) return make_error(Code::GgufCorrupt, "base model has no " + arch + ".block_count");

  GgufWriter w;
  w.set_str("general.architecture", arch);
  w.set_str("general.type", "adapter");
  w.set_str("general.name", "synth-lora");
  w.set_str("adapter.type", "lora");
  w.set_f32("adapter.lora.alpha", opt.alpha);
  auto add_pair = [&](const std::string& name) -> Status {
    const GgufTensorInfo* t = base->find_tensor(name);
    if (!t) return make_error(Code::MissingTensor, "synth_lora: the base model has no tensor '" + name + "'");
    const int64_t n_in = t->ne[0], n_out = t->ne[1], r = opt.rank;
    const int64_t blk = type_traits(opt.type).block_size;
    if (n_in % blk != 0 || r % blk != 0)
      return invalid(std::string("LoRA type ") + type_traits(opt.type).name + " needs n_in and rank multiples of " +
                     std::to_string(blk));
    std::vector<float> a(static_cast<size_t>(n_in * r)), b(static_cast<size_t>(r * n_out));
    Rng ra(opt.seed ^ fnv1a(name + ".lora_a"));
    ra.normal(a.data(), a.size(), 0.0, 1.0 / std::sqrt(static_cast<double>(n_in)));
    Rng rb(opt.seed ^ fnv1a(name + ".lora_b"));
    rb.normal(b.data(), b.size(), 0.0, opt.std_b / std::sqrt(static_cast<double>(r)));
    LLMS_RETURN_IF_ERROR(w.add_tensor(name + ".lora_a", opt.type, {n_in, r}, encode_rows(opt.type, a, n_in, r)));
    return w.add_tensor(name + ".lora_b", opt.type, {r, n_out}, encode_rows(opt.type, b, r, n_out));
  };
  for (int64_t il = 0; il < n_layer; ++il) {
    for (const std::string& t : opt.targets) {
      if (t == "output") continue;
      LLMS_RETURN_IF_ERROR(add_pair("blk." + std::to_string(il) + "." + t + ".weight"));
    }
  }
  for (const std::string& t : opt.targets)
    if (t == "output") LLMS_RETURN_IF_ERROR(add_pair("output.weight"));
  return w.write(out_path);
}

}  // namespace llmserve
