// quantize_model: reads the input through GgufFile (mmap; pages are read as rows are converted),
// plans every tensor's type (recipe.cpp), then streams the output through GgufWriter::write's fill:
// one slab of rows at a time is converted on the thread pool and appended, so memory stays at one
// slab (about kSlabElements floats of output) whatever the model's size.
#include "quantize.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <memory>

#include "../gguf/gguf.h"
#include "../os/os.h"
#include "../threadpool/thread_pool.h"
#include "imatrix.h"
#include "recipe.h"
#include "stream_out.h"

namespace llmserve {
namespace {

// Rows converted between progress reports and cancel checks (elements of input per slab).
constexpr int64_t kSlabElements = int64_t(1) << 22;
// Fewest elements worth a thread-pool chunk of their own (llama.cpp's min_chunk_size is 32 * 512).
constexpr int64_t kChunkElements = 32 * 512;
constexpr uint32_t kQuantizationVersion = 2;  // ggml's GGML_QNT_VERSION

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

Status read_int(const GgufFile& f, const std::string& key, bool required, int64_t* out) {
  bool found = false;
  Status s = f.get_int(key, out, &found);
  if (!s) return make_error(Code::BadShape, key + " must be an integer: " + s.message);
  if (!found && required) return make_error(Code::MissingTensor, "the model has no " + key + " metadata key");
  return Status::ok();
}

// The recipe's view of the model, checked: an architecture whose recipe we implement.
Status recipe_model(const GgufFile& f, RecipeModel* m) {
  std::string arch;
  bool found = false;
  LLMS_RETURN_IF_ERROR(f.get_string("general.architecture", &arch, &found));
  if (!found) return make_error(Code::UnsupportedArch, "the model has no general.architecture; is it a model file?");
  if (arch != "llama" && arch != "qwen2") {
    return make_error(Code::UnsupportedArch, "quantize follows llama.cpp's recipe for llama and qwen2 models; '" +
                                                 arch + "' is not one of them (use llama.cpp's llama-quantize)");
  }
  int64_t experts = 0;
  LLMS_RETURN_IF_ERROR(read_int(f, arch + ".expert_count", false, &experts));
  if (experts > 0) {
    return make_error(Code::UnsupportedArch, "mixture-of-experts models (" + arch +
                                                 ".expert_count = " + std::to_string(experts) +
                                                 ") are not supported by quantize; use llama.cpp's llama-quantize");
  }
  LLMS_RETURN_IF_ERROR(read_int(f, arch + ".block_count", true, &m->n_layer));
  LLMS_RETURN_IF_ERROR(read_int(f, arch + ".attention.head_count", true, &m->n_head));
  m->n_head_kv = m->n_head;
  LLMS_RETURN_IF_ERROR(read_int(f, arch + ".attention.head_count_kv", false, &m->n_head_kv));
  if (m->n_layer < 1 || m->n_layer > (int64_t(1) << 20) || m->n_head < 1 || m->n_head_kv < 1) {
    return make_error(Code::BadShape, "block_count, head_count and head_count_kv must be positive");
  }
  // llama.cpp's LLM_TYPE_70B: 80 layers (llama: with grouped-query attention, else it is 65B).
  m->is_70b = m->n_layer == 80 && (arch == "qwen2" || m->n_head != m->n_head_kv);
  return Status::ok();
}

// llama-quantize's strncpy into a 128-byte override value: at most 127 bytes.
std::string kv_str(const std::string& s) { return s.substr(0, std::min<size_t>(s.size(), 127)); }

// The importance weights of each tensor (nullptr: quantize without), checked as llama.cpp does:
// the entry must hold ne[0] * ne[2] values (one per column; dense models have ne[2] = 1), else
// BadImatrix, but token_embd.weight is then quantized without (llama.cpp's exception).
Status plan_imatrix(const Imatrix& im, const std::string& path, const std::vector<GgufTensorInfo>& infos,
                    const std::vector<GgmlType>& plan, std::vector<const float*>* qw, std::vector<std::string>* notes) {
  qw->assign(infos.size(), nullptr);
  std::string missing;
  int n_missing = 0;
  for (size_t i = 0; i < infos.size(); ++i) {
    const GgufTensorInfo& t = infos[i];
    if (plan[i] == t.type) continue;  // copied unchanged
    auto it = im.entries.find(t.name);
    if (it == im.entries.end()) {
      missing += std::string(n_missing++ ? ", " : "") + t.name;
      continue;
    }
    const uint64_t want = static_cast<uint64_t>(t.ne[0]) * static_cast<uint64_t>(t.ne[2]);
    if (it->second.size() != want) {
      const std::string what = "the importance matrix '" + path + "' has " + std::to_string(it->second.size()) +
                               " values for '" + t.name + "', whose rows have " + std::to_string(want) + " columns";
      if (t.name == "token_embd.weight") {
        notes->push_back(what + ": quantized without it (as llama.cpp does)");
        continue;
      }
      return make_error(Code::BadImatrix, what + "; was it computed on another model? Recompute it with llama-imatrix");
    }
    (*qw)[i] = it->second.data();
  }
  if (n_missing > 0)
    notes->push_back(std::to_string(n_missing) +
                     " tensors have no importance-matrix entry and were quantized without one: " + missing);
  return Status::ok();
}

// Converts rows [r0, r1) of tensor t to `to` into dst (row_size(to, ne0) bytes per row), with the
// importance weights qw (nullptr: none).
Status convert_rows(const GgufTensorInfo& t, GgmlType to, const float* qw, int64_t r0, int64_t r1, uint8_t* dst,
                    ThreadPool& pool, std::vector<std::vector<float>>& scratch) {
  const int64_t ne0 = t.ne[0];
  const size_t src_rs = row_size(t.type, ne0), dst_rs = row_size(to, ne0);
  std::atomic<int64_t> bad_row{-1};
  const int64_t grain = std::max<int64_t>(1, kChunkElements / std::max<int64_t>(ne0, 1));
  pool.parallel_for_chunked(
      r1 - r0,
      [&](int64_t b, int64_t e, int slot) {
        std::vector<float>& buf = scratch[static_cast<size_t>(slot)];
        for (int64_t r = b; r < e; ++r) {
          const uint8_t* src = t.data + static_cast<size_t>(r0 + r) * src_rs;
          const float* x = reinterpret_cast<const float*>(src);
          if (t.type != GgmlType::F32 || (reinterpret_cast<uintptr_t>(src) % alignof(float)) != 0) {
            dequantize_row(t.type, src, buf.data(), ne0);
            x = buf.data();
          }
          for (int64_t k = 0; k < ne0; ++k) {
            if (!std::isfinite(x[k])) {
              int64_t none = -1;
              bad_row.compare_exchange_strong(none, r0 + r);
              return;
            }
          }
          quantize_row_imatrix(to, x, dst + static_cast<size_t>(r) * dst_rs, ne0, qw);
        }
      },
      grain);
  if (bad_row.load() >= 0) {
    return make_error(Code::InvalidArgument, "tensor '" + t.name +
                                                 "' has a non-finite value (NaN or infinity) in row " +
                                                 std::to_string(bad_row.load()) +
                                                 "; the input model is broken, quantize it from an intact file");
  }
  return Status::ok();
}

}  // namespace

Status check_output_path(const std::string& in_path, const std::string& out_path) {
  if (out_path.empty() || out_path.find('\0') != std::string::npos)
    return make_error(Code::InvalidArgument, "the output path must be a non-empty path without NUL characters");
  if (in_path == out_path || os::same_file(in_path, out_path)) {
    return make_error(Code::InvalidArgument, "refusing to overwrite the input model '" + in_path + "' with '" +
                                                 out_path + "' (the same file); write the output to another path");
  }
  return Status::ok();
}

Status check_convertible(const GgufTensorInfo& t, const char* advice) {
  if (type_traits(t.type).supported) return Status::ok();
  return make_error(Code::UnsupportedType, "tensor '" + t.name + "' has type " + type_traits(t.type).name +
                                               ", which llmserve cannot convert; " + advice + " the f16/f32 original");
}

Status quantize_model(const std::string& in_path, const std::string& out_path, const QuantizeOptions& opt,
                      const std::function<void(double)>& progress, const std::atomic<bool>* cancel,
                      QuantizeResult* result) {
  const QuantMix* mix = find_quant_mix(lower(opt.type));
  if (!mix) {
    return make_error(Code::InvalidArgument,
                      "Unknown quantization type '" + opt.type + "'; expected one of " + quant_mix_names());
  }
  std::unique_ptr<GgufFile> f;
  LLMS_RETURN_IF_ERROR(GgufFile::open(in_path, &f));
  LLMS_RETURN_IF_ERROR(check_output_path(in_path, out_path));
  int64_t split_count = 0;
  LLMS_RETURN_IF_ERROR(read_int(*f, "split.count", false, &split_count));
  if (split_count > 1) {
    return make_error(Code::InvalidArgument, "'" + in_path +
                                                 "' is one part of a split model; merge the parts first "
                                                 "(llama.cpp's llama-gguf-split --merge)");
  }
  RecipeModel model;
  LLMS_RETURN_IF_ERROR(recipe_model(*f, &model));
  Imatrix im;
  if (!opt.imatrix.empty()) {
    LLMS_RETURN_IF_ERROR(load_imatrix(opt.imatrix, &im));
    model.has_imatrix = true;
  }

  const auto& infos = f->tensors();
  std::vector<RecipeTensor> rts(infos.size());
  for (size_t i = 0; i < infos.size(); ++i) {
    rts[i].name = infos[i].name;
    std::copy(infos[i].ne, infos[i].ne + 4, rts[i].ne);
    rts[i].type = infos[i].type;
  }
  QuantizeResult res;
  res.ftype = mix->ftype;
  const std::vector<GgmlType> plan = plan_tensor_types(*mix, model, rts, &res.notes, opt.overrides);
  for (size_t i = 0; i < infos.size(); ++i) {
    // Only an output / token-embedding override skips the block fallback (as in llama.cpp, whose
    // quantizer would then abort): refuse it here instead.
    const int64_t block = type_traits(plan[i]).block_size;
    if (plan[i] != infos[i].type && infos[i].ne[0] % block != 0) {
      return make_error(Code::InvalidArgument, "tensor '" + infos[i].name + "' has rows of " +
                                                   std::to_string(infos[i].ne[0]) + " values, which " +
                                                   type_traits(plan[i]).name + " (blocks of " + std::to_string(block) +
                                                   ") cannot hold; override it with another type");
    }
  }
  std::vector<const float*> qw(infos.size(), nullptr);
  if (model.has_imatrix) LLMS_RETURN_IF_ERROR(plan_imatrix(im, opt.imatrix, infos, plan, &qw, &res.notes));

  GgufWriter w;
  for (const auto& [key, value] : f->metadata()) w.set_value(key, value);
  w.set_u32("general.quantization_version", kQuantizationVersion);
  w.set_u32("general.file_type", static_cast<uint32_t>(mix->ftype));
  if (model.has_imatrix) {  // what llama-quantize records (as its kv overrides: strings and u32s)
    w.set_str("quantize.imatrix.file", kv_str(opt.imatrix));
    if (!im.datasets.empty()) w.set_str("quantize.imatrix.dataset", kv_str(im.datasets[0]));
    w.set_u32("quantize.imatrix.entries_count", static_cast<uint32_t>(im.entries.size()));
    if (im.chunk_count > 0) w.set_u32("quantize.imatrix.chunks_count", static_cast<uint32_t>(im.chunk_count));
  }
  int64_t total = 0, requantized = 0;
  std::string requantized_types;
  for (size_t i = 0; i < infos.size(); ++i) {
    const GgufTensorInfo& t = infos[i];
    const GgmlType to = plan[i];
    if (to != t.type) {
      LLMS_RETURN_IF_ERROR(check_convertible(t, "quantize from"));
      const bool float_in = t.type == GgmlType::F32 || t.type == GgmlType::F16 || t.type == GgmlType::BF16;
      if (!float_in) {
        ++requantized;
        const std::string n = type_traits(t.type).name;
        if (requantized_types.find(n) == std::string::npos)
          requantized_types += std::string(requantized_types.empty() ? "" : ", ") + n;
      }
    }
    LLMS_RETURN_IF_ERROR(w.add_tensor_info(t.name, to, std::vector<int64_t>(t.ne, t.ne + t.n_dims)));
    res.tensors.push_back(QuantizedTensor{t.name, t.type, to});
    total += t.n_elements();
  }
  if (requantized > 0) {
    res.notes.push_back(std::to_string(requantized) + " tensors are already quantized (" + requantized_types +
                        "); re-quantizing loses quality: quantize from the f16/f32 original when you can");
  }

  ThreadPool pool(opt.threads);
  std::vector<std::vector<float>> scratch(static_cast<size_t>(pool.size()));
  ElementProgress report(total, progress);
  std::vector<uint8_t> slab;
  const auto fill = [&](size_t i, const GgufWriter::ByteSink& put) -> Status {
    const GgufTensorInfo& t = infos[i];
    const GgmlType to = plan[i];
    if (to == t.type) {  // unchanged: copy the bytes
      LLMS_RETURN_IF_ERROR(copy_tensor_bytes(t, put, cancel, "quantize", out_path));
      report.add(t.n_elements());
      f->release_pages(t.data, t.nbytes);  // read once: keep resident memory at about one tensor
      return Status::ok();
    }
    const int64_t ne0 = t.ne[0];
    const int64_t rows = ne0 > 0 ? t.n_elements() / ne0 : 0;
    const int64_t slab_rows = std::max<int64_t>(1, kSlabElements / std::max<int64_t>(ne0, 1));
    const size_t dst_rs = row_size(to, ne0);
    for (auto& s : scratch) s.resize(static_cast<size_t>(ne0));
    for (int64_t r0 = 0; r0 < rows; r0 += slab_rows) {
      if (cancelled(cancel)) return cancelled_error("quantize");
      const int64_t r1 = std::min(rows, r0 + slab_rows);
      slab.resize(static_cast<size_t>(r1 - r0) * dst_rs);
      LLMS_RETURN_IF_ERROR(convert_rows(t, to, qw[i], r0, r1, slab.data(), pool, scratch));
      if (!put(slab.data(), slab.size())) return write_error(out_path);
      report.add((r1 - r0) * ne0);
    }
    f->release_pages(t.data, t.nbytes);
    return Status::ok();
  };
  LLMS_RETURN_IF_ERROR(write_output(w, out_path, fill, *f, progress, &res.input_bytes, &res.output_bytes));
  if (result) *result = std::move(res);
  return Status::ok();
}

}  // namespace llmserve
