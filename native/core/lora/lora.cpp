#include "lora.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>

#include "../model/matmul.h"
#include "../os/os.h"
#include "../quant/quant.h"

namespace llmserve {

namespace {

constexpr const char* kSuffixA = ".lora_a";
constexpr const char* kSuffixB = ".lora_b";

bool ends_with(const std::string& s, const char* suffix) {
  const std::string t(suffix);
  return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
}

// "blk.N.<kind>.weight" -> (N, projection); "output.weight" -> (-1, Output). False otherwise.
bool parse_target(const std::string& name, int64_t* il, Proj* p) {
  if (name == "output.weight") {
    *il = -1, *p = Proj::Output;
    return true;
  }
  if (name.rfind("blk.", 0) != 0) return false;
  size_t i = 4, j = i;
  while (j < name.size() && name[j] >= '0' && name[j] <= '9') ++j;
  if (j == i || j - i > 9 || j >= name.size() || name[j] != '.') return false;
  const std::string kind = name.substr(j + 1);
  static const std::pair<const char*, Proj> kinds[] = {
      {"attn_q.weight", Proj::Q},      {"attn_k.weight", Proj::K},      {"attn_v.weight", Proj::V},
      {"attn_output.weight", Proj::O}, {"ffn_gate.weight", Proj::Gate}, {"ffn_up.weight", Proj::Up},
      {"ffn_down.weight", Proj::Down},
  };
  for (auto& [k, proj] : kinds) {
    if (kind == k) {
      *il = std::strtoll(name.c_str() + i, nullptr, 10), *p = proj;
      return true;
    }
  }
  return false;
}

bool lora_type_supported(GgmlType t) {
  return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16 || t == GgmlType::Q8_0 || t == GgmlType::Q4_0;
}

std::string shape_str(const GgufTensorInfo& t) {
  std::string s = "[";
  for (uint32_t d = 0; d < t.n_dims; ++d) s += (d ? ", " : "") + std::to_string(t.ne[d]);
  return s + "]";
}

// A 2-D tensor of a supported type whose rows fit its type's blocks, as a matrix view.
Status as_matrix(const GgufTensorInfo& t, MatrixView* out) {
  if (!lora_type_supported(t.type)) {
    return make_error(Code::UnsupportedType, "LoRA tensor '" + t.name + "' has type " + type_traits(t.type).name +
                                                 "; supported: f32, f16, bf16, q8_0, q4_0");
  }
  if (t.n_dims != 2 || t.ne[0] < 1 || t.ne[1] < 1) {
    return make_error(Code::BadShape, "LoRA tensor '" + t.name + "' should be 2-D but has shape " + shape_str(t));
  }
  const int64_t blk = type_traits(t.type).block_size;
  if (t.ne[0] % blk != 0) {
    return make_error(Code::BadShape, "LoRA tensor '" + t.name + "' has rows of " + std::to_string(t.ne[0]) +
                                          " elements, not a multiple of " + type_traits(t.type).name + "'s block of " +
                                          std::to_string(blk));
  }
  const size_t rb = row_size(t.type, t.ne[0]);
  if (t.data == nullptr || rb * static_cast<uint64_t>(t.ne[1]) > t.nbytes) {
    return make_error(Code::GgufCorrupt, "LoRA tensor '" + t.name + "' has no data for its shape");
  }
  MatrixView m;
  m.data = t.data;
  m.type = t.type;
  m.n_in = t.ne[0];
  m.n_out = t.ne[1];
  m.row_bytes = rb;
  *out = m;
  return Status::ok();
}

// Grow-only f32 buffer of the calling thread (the forward pass calls add() from one thread).
float* thread_buffer(size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

}  // namespace

const MatrixView& LoraAdapter::base_matrix(const Model& base, int64_t il, Proj p) {
  const ModelWeights& W = base.weights();
  if (p == Proj::Output) return W.output;
  const LayerWeights& L = W.layers[static_cast<size_t>(il)];
  switch (p) {
    case Proj::Q: return L.wq;
    case Proj::K: return L.wk;
    case Proj::V: return L.wv;
    case Proj::O: return L.wo;
    case Proj::Gate: return L.ffn_gate;
    case Proj::Up: return L.ffn_up;
    default: return L.ffn_down;
  }
}

Status LoraAdapter::load(const std::string& path, const Model& base, float user_scale,
                         std::unique_ptr<LoraAdapter>* out) {
  const bool is_dir = os::is_directory(path);
  if (is_dir || ends_with(path, ".safetensors")) return load_peft(path, is_dir, base, user_scale, out);
  std::unique_ptr<GgufFile> f;
  LLMS_RETURN_IF_ERROR(GgufFile::open(path, &f));
  return from_file(std::shared_ptr<GgufFile>(std::move(f)), base, user_scale, out);
}

Status LoraAdapter::from_file(std::shared_ptr<GgufFile> file, const Model& base, float user_scale,
                              std::unique_ptr<LoraAdapter>* out) {
  if (!file || !out) return make_error(Code::InvalidArgument, "LoraAdapter: null file or output");
  if (!std::isfinite(user_scale)) {
    return make_error(Code::InvalidArgument, "Expected a finite LoRA scale but received " + std::to_string(user_scale));
  }
  const GgufFile& F = *file;
  std::string s;
  bool found = false;
  LLMS_RETURN_IF_ERROR(F.get_string("general.type", &s, &found));
  if (!found || s != "adapter") {
    return make_error(Code::InvalidArgument, "not a LoRA adapter: general.type is " +
                                                 (found ? "'" + s + "'" : std::string("absent")) +
                                                 ", expected 'adapter'");
  }
  LLMS_RETURN_IF_ERROR(F.get_string("adapter.type", &s, &found));
  if (!found || s != "lora") {
    return make_error(Code::InvalidArgument, "not a LoRA adapter: adapter.type is " +
                                                 (found ? "'" + s + "'" : std::string("absent")) + ", expected 'lora'");
  }
  std::string base_arch;
  bool base_found = false;
  LLMS_RETURN_IF_ERROR(base.file().get_string("general.architecture", &base_arch, &base_found));
  LLMS_RETURN_IF_ERROR(F.get_string("general.architecture", &s, &found));
  if (!found || s != base_arch) {
    return make_error(Code::UnsupportedArch, "LoRA adapter is for architecture " +
                                                 (found ? "'" + s + "'" : std::string("(absent)")) +
                                                 " but the model is '" + base_arch + "'");
  }
  double alpha = 0;
  LLMS_RETURN_IF_ERROR(F.get_float("adapter.lora.alpha", &alpha, &found));
  if (!std::isfinite(alpha)) return make_error(Code::InvalidArgument, "LoRA adapter.lora.alpha is not finite");

  std::unique_ptr<LoraAdapter> a(new LoraAdapter());
  a->file_ = file;
  a->alpha_ = static_cast<float>(alpha);
  const ModelConfig& c = base.config();
  a->layers_.resize(static_cast<size_t>(c.n_layer));

  // Pair up the halves by base name (ordered, so errors name the same tensor every time).
  std::map<std::string, std::pair<const GgufTensorInfo*, const GgufTensorInfo*>> halves;
  for (const GgufTensorInfo& t : F.tensors()) {
    if (ends_with(t.name, kSuffixA)) {
      halves[t.name.substr(0, t.name.size() - 7)].first = &t;
    } else if (ends_with(t.name, kSuffixB)) {
      halves[t.name.substr(0, t.name.size() - 7)].second = &t;
    } else {
      return make_error(Code::InvalidArgument,
                        "LoRA tensor '" + t.name + "' is neither a .lora_a nor a .lora_b tensor");
    }
  }
  if (halves.empty()) return make_error(Code::InvalidArgument, "LoRA adapter has no .lora_a / .lora_b tensors");

  for (const auto& [name, ab] : halves) {
    if (!ab.first || !ab.second) {
      return make_error(Code::MissingTensor, "LoRA tensor '" + name + (ab.first ? kSuffixB : kSuffixA) +
                                                 "' is missing (its other half is present)");
    }
    const GgufTensorInfo* bt = base.file().find_tensor(name);
    if (!bt)
      return make_error(Code::MissingTensor,
                        "LoRA tensor '" + ab.first->name + "': the model has no tensor '" + name + "'");
    int64_t il = 0;
    Proj p = Proj::Q;
    if (!parse_target(name, &il, &p) || il >= c.n_layer) {
      return make_error(Code::InvalidArgument,
                        "LoRA tensor '" + ab.first->name + "' targets '" + name +
                            "', which is not supported (attn_q/k/v/output, ffn_gate/up/down, output)");
    }
    // phi3's ffn_up holds gate and up together (two row views here): a delta over both halves
    // is not one projection of this engine.
    if (c.arch == "phi3" && p == Proj::Up) {
      return make_error(Code::InvalidArgument, "LoRA tensor '" + ab.first->name + "' targets '" + name +
                                                   "', phi3's fused gate-up projection, which is not supported");
    }
    const MatrixView& W = base_matrix(base, il, p);
    if (p == Proj::Output && W.data == base.weights().tok_embd.data) {
      return make_error(Code::MissingTensor,
                        "LoRA tensor '" + ab.first->name + "': the model's output is tied to token_embd");
    }
    LoraPair pr;
    LLMS_RETURN_IF_ERROR(as_matrix(*ab.first, &pr.a));
    LLMS_RETURN_IF_ERROR(as_matrix(*ab.second, &pr.b));
    if (pr.a.n_in != W.n_in || pr.b.n_out != W.n_out) {
      return make_error(Code::BadShape, "LoRA pair of '" + name + "' has shape a " + shape_str(*ab.first) + ", b " +
                                            shape_str(*ab.second) + " but the model tensor is [" +
                                            std::to_string(W.n_in) + ", " + std::to_string(W.n_out) +
                                            "] (expected a [" + std::to_string(W.n_in) + ", r], b [r, " +
                                            std::to_string(W.n_out) + "])");
    }
    if (pr.a.n_out != pr.b.n_in) {
      return make_error(Code::BadShape, "LoRA pair of '" + name + "' has ranks that differ: a " + shape_str(*ab.first) +
                                            " has r = " + std::to_string(pr.a.n_out) + ", b " + shape_str(*ab.second) +
                                            " has r = " + std::to_string(pr.b.n_in));
    }
    // llama.cpp (llama_adapter_lora_weight::get_scale): rank from b's ne[0], scale * alpha / rank.
    const float rank = static_cast<float>(pr.b.n_in);
    pr.scale = a->alpha_ != 0.0f ? user_scale * a->alpha_ / rank : user_scale;
    if (!std::isfinite(pr.scale))
      return make_error(Code::InvalidArgument, "LoRA scale of '" + name + "' is not finite");
    (p == Proj::Output ? a->output_ : a->layers_[static_cast<size_t>(il)][static_cast<size_t>(p)]) = pr;
    ++a->n_pairs_;
    a->bytes_ += static_cast<size_t>(ab.first->nbytes + ab.second->nbytes);
  }
  a->prepare_low_rank();
  *out = std::move(a);
  return Status::ok();
}

const LoraPair* LoraAdapter::pair(int64_t il, Proj p) const {
  if (p == Proj::Output) return output_.present() ? &output_ : nullptr;
  if (il < 0 || il >= static_cast<int64_t>(layers_.size())) return nullptr;
  const LoraPair& pr = layers_[static_cast<size_t>(il)][static_cast<size_t>(p)];
  return pr.present() ? &pr : nullptr;
}

// Pairs whose A and B are both f16 or both f32 with n_in a multiple of 8 get B transposed (same
// type, [r, n_out]) for lowrank_apply; q8_0 and q4_0 pairs packed copies for its gemm passes; the
// others keep the matmul path of add().
void LoraAdapter::prepare_low_rank() {
  size_t packed = 0;  // the quantized pairs' packed copies, in one block
  auto is_gemm = [](const LoraPair& pr) {
    return pr.present() && pr.a.type == pr.b.type && (pr.a.type == GgmlType::Q8_0 || pr.a.type == GgmlType::Q4_0);
  };
  for (auto& layer : layers_)
    for (auto& pr : layer)
      if (is_gemm(pr)) packed += packed_size(pr, pr.a.type);
  if (is_gemm(output_)) packed += packed_size(output_, output_.a.type);
  reserve_packed(packed);
  auto prep = [this, &is_gemm](LoraPair& pr) {
    if (is_gemm(pr)) {
      // Rows of n_in and of r: both multiples of 32 (the loader checked the block size).
      pack_for_gemm(pr, pr.a.type, pr.a.data, pr.b.data);
      return;
    }
    if (!pr.present() || pr.a.type != pr.b.type || pr.a.n_in % 8 != 0) return;
    if (pr.a.type != GgmlType::F16 && pr.a.type != GgmlType::F32) return;
    const size_t es = pr.a.type == GgmlType::F16 ? 2 : 4;
    const int64_t r = pr.b.n_in, n_out = pr.b.n_out;
    if (pr.a.row_bytes != static_cast<size_t>(pr.a.n_in) * es || pr.b.row_bytes != static_cast<size_t>(r) * es) return;
    std::unique_ptr<uint8_t[]> bt(new uint8_t[static_cast<size_t>(r * n_out) * es]);
    for (int64_t j = 0; j < n_out; ++j)
      for (int64_t k = 0; k < r; ++k)
        std::memcpy(bt.get() + static_cast<size_t>(k * n_out + j) * es, pr.b.row(j) + static_cast<size_t>(k) * es, es);
    pr.bt = bt.get();
    bytes_ += static_cast<size_t>(r * n_out) * es;
    owned_.push_back(std::move(bt));
  };
  for (auto& layer : layers_)
    for (auto& pr : layer) prep(pr);
  prep(output_);
}

bool LoraAdapter::low_rank(int64_t il, Proj p, LowRankFactors* out) const {
  const LoraPair* pr = pair(il, p);
  if (!pr) return false;
  if (pr->gemm_a) {
    // The raw rows too where the file holds them in the packed type (gemm reads the packed copies).
    out->a = pr->a.type == pr->gemm_type ? pr->a.data : nullptr;
    out->b = pr->b.type == pr->gemm_type ? pr->b.data : nullptr;
    out->bt = nullptr;
    out->a_packed = pr->gemm_a, out->b_packed = pr->gemm_b;
    out->type = pr->gemm_type == GgmlType::Q4_0 ? LowRankType::Q4_0Gemm : LowRankType::Q8_0Gemm;
  } else if (pr->q8_a) {
    out->a = pr->q8_a;
    out->bt = pr->q8_bt;
    out->type = LowRankType::Q8_0;
  } else if (pr->bt) {
    out->a = pr->a.data;
    out->bt = pr->bt;
    out->type = pr->a.type == GgmlType::F16 ? LowRankType::F16 : LowRankType::F32;
  } else {
    return false;
  }
  out->r = pr->a.n_out;
  out->scale = pr->scale;
  return true;
}

void LoraAdapter::add(int64_t il, Proj p, const float* x, int64_t n, float* y, int64_t ldy, ThreadPool& pool) const {
  const LoraPair* pr = pair(il, p);
  if (!pr || n <= 0) return;
  const int64_t r = pr->a.n_out, n_out = pr->b.n_out;
  float* buf = thread_buffer(static_cast<size_t>(n) * static_cast<size_t>(r + n_out));
  float* t = buf;          // [n, r]   A·x
  float* u = buf + n * r;  // [n, n_out] B·(A·x)
  const MatmulTask ta[1] = {{&pr->a, nullptr, t, r}};
  matmul(ta, 1, x, n, pool);
  const MatmulTask tb[1] = {{&pr->b, nullptr, u, n_out}};
  matmul(tb, 1, t, n, pool);
  const float scale = pr->scale;
  pool.parallel_for(
      n,
      [&](int64_t b, int64_t e) {
        for (int64_t row = b; row < e; ++row) lowrank_add_scaled(y + row * ldy, u + row * n_out, n_out, scale);
      },
      std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(n_out, 1)));
}

}  // namespace llmserve
