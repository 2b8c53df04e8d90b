// prune_model: plans the selected tensors (plan_prune, every check before any work), then streams
// the output through GgufWriter::write's fill as quantize_model does: unselected tensors are
// copied, selected ones converted one slab of rows at a time on the thread pool (decode -> score
// -> zero -> encode in the input's type).
#include "prune.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <memory>
#include <numeric>

#include "../gguf/gguf.h"
#include "../model/factored.h"
#include "../model/sparse24.h"
#include "../threadpool/thread_pool.h"
#include "quantize.h"
#include "stream_out.h"

namespace llmserve {
namespace {

// A type whose values are rounded when re-encoded (everything but f32 / f16 / bf16).
bool quantized_type(GgmlType t) { return t != GgmlType::F32 && t != GgmlType::F16 && t != GgmlType::BF16; }

// The value type of a selected matrix written in the 2:4 sparse format (PruneOptions::values).
GgmlType sparse24_values_for(Sparse24Values v, const GgufTensorInfo& t) {
  if (v == Sparse24Values::F16) return GgmlType::F16;
  if (v == Sparse24Values::Q8_0) return GgmlType::Q8_0;
  return quantized_type(t.type) && sparse24_value_type_ok(GgmlType::Q8_0, t.ne[0]) ? GgmlType::Q8_0 : GgmlType::F16;
}

constexpr int64_t kSlabElements = int64_t(1) << 22;  // rows between progress reports / cancel checks
std::string method_name(PruneMethod m) { return m == PruneMethod::Wanda ? "wanda" : "magnitude"; }

// Entries each row keeps at an unstructured ratio (prune_row_unstructured zeroes floor(ratio * n)).
int64_t kept_per_row(double ratio, int64_t n) {
  return n - static_cast<int64_t>(std::floor(ratio * static_cast<double>(n)));
}

// The kept entries of a pruned row w[n] (idx[0, k): the positions prune_row_unstructured zeroed, k
// > 0) as CSR: columns ascending into col, values into val (f16 bits, or f32). A kept value that
// is 0 is stored too, so every row holds n - k entries. Returns the row's zero entries as stored.
int64_t csr_encode_kept(const float* w, int64_t n, const std::vector<int32_t>& idx, int64_t k,
                        std::vector<uint8_t>& keep, int32_t* col, void* val, bool f32) {
  keep.assign(static_cast<size_t>(n), 1);
  for (int64_t i = 0; i < k; ++i) keep[static_cast<size_t>(idx[static_cast<size_t>(i)])] = 0;
  int64_t m = 0, zeros = k;
  for (int64_t j = 0; j < n; ++j) {
    if (!keep[static_cast<size_t>(j)]) continue;
    col[m] = static_cast<int32_t>(j);
    float v = w[j];
    if (f32) {
      static_cast<float*>(val)[m] = v;
    } else {
      static_cast<uint16_t*>(val)[m] = fp32_to_fp16(v);
      v = fp16_to_fp32(static_cast<uint16_t*>(val)[m]);
    }
    zeros += v == 0.0f;
    ++m;
  }
  return zeros;
}

}  // namespace

std::string layer_role(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return "";
  const size_t dot = name.find('.', 4);
  const std::string suffix = ".weight";
  if (dot == std::string::npos || name.size() <= suffix.size() ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return "";
  const std::string role = name.substr(dot + 1, name.size() - suffix.size() - dot - 1);
  const auto& roles = layer_projection_roles();
  return std::find(roles.begin(), roles.end(), role) != roles.end() ? role : "";
}

bool glob_match(const std::string& pattern, const std::string& name) {
  // Iterative wildcard match with one backtrack point (the last '*').
  size_t p = 0, n = 0, star = std::string::npos, mark = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p;
      ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = n;
    } else if (star != std::string::npos) {
      p = star + 1;
      n = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

void prune_scores(const float* w, const double* col_sumsq, int64_t n, float* score) {
  for (int64_t j = 0; j < n; ++j) {
    const double a = std::fabs(static_cast<double>(w[j]));
    score[j] = static_cast<float>(col_sumsq ? a * std::sqrt(col_sumsq[j]) : a);
  }
}

void prune_row_unstructured(float* w, const float* score, int64_t n, int64_t k, std::vector<int32_t>& idx) {
  if (k <= 0) return;
  idx.resize(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  const auto lower = [score](int32_t a, int32_t b) { return score[a] < score[b] || (score[a] == score[b] && a < b); };
  if (k < n) std::nth_element(idx.begin(), idx.begin() + k, idx.end(), lower);
  for (int64_t i = 0; i < std::min(k, n); ++i) w[idx[static_cast<size_t>(i)]] = 0.0f;
}

void prune_row_2_4(float* w, const float* score, int64_t n) {
  for (int64_t g = 0; g + 4 <= n; g += 4) {
    // The two highest-scored of the group stay (ties: the higher index stays, so the lower is zeroed).
    int a = 0;
    for (int i = 1; i < 4; ++i)
      if (score[g + i] >= score[g + a]) a = i;
    int b = a == 0 ? 1 : 0;
    for (int i = 0; i < 4; ++i)
      if (i != a && score[g + i] >= score[g + b]) b = i;
    for (int i = 0; i < 4; ++i)
      if (i != a && i != b) w[g + i] = 0.0f;
  }
}

Status plan_prune(const std::string& in_path, const PruneOptions& opt, std::vector<std::string>* selected) {
  if (!opt.two_four && !(opt.ratio > 0 && opt.ratio < 1)) {
    return make_error(Code::InvalidArgument,
                      "the prune ratio must be in (0, 1), e.g. 0.5 (half of each row zeroed), "
                      "or 2:4; got " +
                          std::to_string(opt.ratio));
  }
  if (opt.sparse_format && !opt.two_four) {
    return make_error(Code::InvalidArgument,
                      "the 2:4 sparse format holds 2:4 pruned matrices only; prune with 2:4, "
                      "or write unstructured pruning densely");
  }
  if (opt.values != Sparse24Values::Auto && !opt.sparse_format) {
    return make_error(Code::InvalidArgument,
                      "a value type (f16 or q8_0) is chosen for the 2:4 sparse format only (--prune 2:4 "
                      "--format sparse)");
  }
  if (opt.csr_format && (opt.two_four || opt.sparse_format)) {
    return make_error(Code::InvalidArgument,
                      "the CSR format holds unstructured pruning (a ratio such as --prune 0.9); 2:4 pruning has "
                      "its own sparse format (--format sparse)");
  }
  std::unique_ptr<GgufFile> f;
  LLMS_RETURN_IF_ERROR(GgufFile::open(in_path, &f));
  std::vector<std::string> out;
  auto check = [&opt](const GgufTensorInfo& t) {
    const int64_t kept = t.ne[0] - static_cast<int64_t>(std::floor(opt.ratio * static_cast<double>(t.ne[0])));
    if (opt.csr_format && kept * t.ne[1] > int64_t{INT32_MAX}) {
      return make_error(Code::InvalidArgument, "tensor '" + t.name + "' would keep " + std::to_string(kept * t.ne[1]) +
                                                   " entries, more than CSR's 32-bit indices hold; prune more, or "
                                                   "leave it out with --tensors");
    }
    if (opt.two_four && t.ne[0] % 4 != 0) {
      return make_error(Code::InvalidArgument, "2:4 pruning needs rows of a multiple of 4 entries; tensor '" + t.name +
                                                   "' has rows of " + std::to_string(t.ne[0]) +
                                                   " (leave it out with --tensors, or use an unstructured ratio)");
    }
    if (opt.sparse_format && opt.values == Sparse24Values::Q8_0 && t.ne[0] % 64 != 0) {
      return make_error(Code::InvalidArgument,
                        "q8_0 values in the 2:4 sparse format need rows of a multiple of 64 "
                        "entries; tensor '" +
                            t.name + "' has rows of " + std::to_string(t.ne[0]) +
                            " (leave it out with --tensors, or use f16 values)");
    }
    return check_convertible(t, "prune");
  };
  LLMS_RETURN_IF_ERROR(select_layer_matrices(*f, opt.patterns, check, "prune", &out));
  if (selected) *selected = std::move(out);
  return Status::ok();
}

Status select_layer_matrices(const GgufFile& f, const std::vector<std::string>& patterns,
                             const std::function<Status(const GgufTensorInfo&)>& check, const char* verb,
                             std::vector<std::string>* out) {
  out->clear();
  std::vector<bool> used(patterns.size(), false);
  for (const GgufTensorInfo& t : f.tensors()) {
    const std::string role = layer_role(t.name);
    if (role.empty() || t.n_dims != 2) continue;
    bool take = patterns.empty();
    for (size_t i = 0; i < patterns.size(); ++i) {
      if (glob_match(patterns[i], t.name) || glob_match(patterns[i], role)) used[i] = take = true;
    }
    if (!take) continue;
    LLMS_RETURN_IF_ERROR(check(t));
    out->push_back(t.name);
  }
  for (size_t i = 0; i < patterns.size(); ++i) {
    if (used[i]) continue;
    std::string roles;
    for (const auto& r : layer_projection_roles()) roles += (roles.empty() ? "" : ", ") + r;
    return make_error(Code::InvalidArgument, "the tensor pattern '" + patterns[i] +
                                                 "' matches no layer matrix; patterns are globs over names "
                                                 "(blk.0.ffn_up.weight) or roles (" +
                                                 roles + ")");
  }
  if (out->empty())
    return make_error(Code::InvalidArgument,
                      std::string("the model has no layer matrices to ") + verb + " (blk.N.attn_q.weight, ...)");
  return Status::ok();
}

Status prune_model(const std::string& in_path, const std::string& out_path, const PruneOptions& opt,
                   const ActivationStats* stats, const std::function<void(double)>& progress,
                   const std::atomic<bool>* cancel, PruneResult* result) {
  std::vector<std::string> names;
  LLMS_RETURN_IF_ERROR(plan_prune(in_path, opt, &names));
  LLMS_RETURN_IF_ERROR(check_output_path(in_path, out_path));
  if (opt.method == PruneMethod::Wanda && !stats) {
    return make_error(Code::InvalidArgument,
                      "Wanda pruning needs calibration statistics: give a calibration text (--calib text.txt)");
  }
  std::unique_ptr<GgufFile> f;
  LLMS_RETURN_IF_ERROR(GgufFile::open(in_path, &f));
  const auto& infos = f->tensors();
  std::vector<const std::vector<double>*> col(infos.size(), nullptr);
  std::vector<bool> sel(infos.size(), false);
  PruneResult res;
  int64_t total = 0;
  bool requantized = false;
  for (size_t i = 0; i < infos.size(); ++i) {
    const GgufTensorInfo& t = infos[i];
    total += t.n_elements();
    if (std::find(names.begin(), names.end(), t.name) == names.end()) continue;
    sel[i] = true;
    if (opt.method == PruneMethod::Wanda) LLMS_RETURN_IF_ERROR(column_sumsq(*stats, t.name, t.ne[0], &col[i]));
    requantized |= quantized_type(t.type);
  }
  std::vector<GgmlType> s24_type(infos.size(), GgmlType::F16);
  int n_q8 = 0, n_f16 = 0, n_row_fallback = 0, n_grow = 0;
  for (size_t i = 0; opt.sparse_format && i < infos.size(); ++i) {
    if (!sel[i]) continue;
    const GgufTensorInfo& t = infos[i];
    s24_type[i] = sparse24_values_for(opt.values, t);
    (s24_type[i] == GgmlType::Q8_0 ? n_q8 : n_f16)++;
    n_row_fallback += opt.values == Sparse24Values::Auto && quantized_type(t.type) && s24_type[i] == GgmlType::F16;
    // 2:4 bytes per row (values + positions) against the input row's.
    n_grow +=
        sparse24_values_row_bytes(s24_type[i], t.ne[0]) + static_cast<size_t>(sparse24_index_bytes_per_row(t.ne[0])) >
        row_size(t.type, t.ne[0]);
  }
  if (n_row_fallback)
    res.notes.push_back(std::to_string(n_row_fallback) +
                        " quantized matrices keep f16 values: q8_0 values need rows of a multiple of 64");
  if (n_grow)
    res.notes.push_back(std::to_string(n_grow) +
                        " matrices grow: their input type stores fewer bytes per weight than the 2:4 format "
                        "(f16 values: 1.125, q8_0: 0.656); 2:4 pays off from 8-bit weights up");
  if (opt.sparse_format)
    res.notes.push_back(std::string("the 2:4 sparse format stores the kept values in ") +
                        (n_q8 == 0    ? "f16 (f32 inputs are rounded)"
                         : n_f16 == 0 ? "q8_0 (int8 with an f16 scale per 32 values; re-rounded)"
                                      : "q8_0 for quantized inputs and f16 for the others") +
                        " and only llmserve runs it: llama.cpp cannot load the output");
  const bool csr = opt.csr_format;
  ThreadPool pool(opt.threads);
  // CSR values are f16, or f32 for a matrix holding a value beyond f16's range (one scan of it).
  std::vector<bool> csr_f32(infos.size(), false);
  for (size_t i = 0; csr && i < infos.size(); ++i) {
    const GgufTensorInfo& t = infos[i];
    if (!sel[i] || t.type == GgmlType::F16) continue;
    if (cancelled(cancel)) return cancelled_error("compress");
    std::atomic<bool> big{false};
    const size_t rs = row_size(t.type, t.ne[0]);
    pool.parallel_for(t.ne[1], [&](int64_t b, int64_t e) {
      std::vector<float> row(static_cast<size_t>(t.ne[0]));
      for (int64_t r = b; r < e && !big; ++r) {
        dequantize_row(t.type, t.data + static_cast<size_t>(r) * rs, row.data(), t.ne[0]);
        for (float v : row)
          if (!(std::fabs(v) <= 65504.0f)) big = true;
      }
    });
    csr_f32[i] = big;
  }
  if (csr)
    res.notes.push_back(
        "the CSR format stores the kept values in f16 (f32 for a matrix with values beyond f16's range; other "
        "f32 and quantized inputs are rounded to f16) and only llmserve runs it: llama.cpp cannot load the output");
  if (requantized && !csr)
    res.notes.push_back(
        "some pruned tensors are quantized: their kept values are re-rounded when re-encoded; prune "
        "the f16/f32 original and quantize afterwards when you can");

  // Output tensors: each input tensor once, except a pruned one in the sparse format, which
  // becomes its values and its positions (both filled from one pass over the rows: the positions
  // are kept from the values' pass, 1/16 of the f16 size).
  // CSR: row pointers, columns and values (the values kept from the columns' pass).
  enum class Part { Same, Values, Positions, CsrPtr, CsrCol, CsrVal };
  struct Out {
    size_t src;
    Part part;
  };
  const bool sparse = opt.sparse_format;
  std::vector<Out> outs;
  std::vector<int64_t> csr_m(infos.size(), 0);  // CSR: kept entries per row
  GgufWriter w;
  for (const auto& [key, value] : f->metadata()) w.set_value(key, value);
  w.set_str("llmserve.prune.method", method_name(opt.method));
  w.set_str("llmserve.prune.pattern", opt.two_four ? "2:4" : "unstructured");
  if (!opt.two_four) w.set_f32("llmserve.prune.ratio", static_cast<float>(opt.ratio));
  if (csr) {
    w.set_str("llmserve.csr",
              "CSR sparse tensors (NAME.sp_ptr row pointers, NAME.sp_col columns, NAME.sp_val values) replace "
              "the pruned matrices: only llmserve runs this file, llama.cpp cannot load it");
  }
  if (sparse) {
    w.set_str("llmserve.sparse24",
              "2:4 sparse tensors (NAME.s24v f16 or q8_0 values, NAME.s24i 2-bit positions) replace "
              "the pruned matrices: only llmserve runs this file, llama.cpp cannot load it");
  }
  for (size_t i = 0; i < infos.size(); ++i) {
    const GgufTensorInfo& t = infos[i];
    if (csr && sel[i]) {
      const int64_t m = csr_m[i] = kept_per_row(opt.ratio, t.ne[0]);
      LLMS_RETURN_IF_ERROR(w.add_tensor_info(t.name + kSparsePtrSuffix, GgmlType::I32, {t.ne[1] + 1}));
      LLMS_RETURN_IF_ERROR(w.add_tensor_info(t.name + kSparseColSuffix, GgmlType::I32, {m * t.ne[1]}));
      LLMS_RETURN_IF_ERROR(
          w.add_tensor_info(t.name + kSparseValSuffix, csr_f32[i] ? GgmlType::F32 : GgmlType::F16, {m * t.ne[1]}));
      outs.push_back({i, Part::CsrPtr});
      outs.push_back({i, Part::CsrCol});
      outs.push_back({i, Part::CsrVal});
      continue;
    }
    if (!(sparse && sel[i])) {
      LLMS_RETURN_IF_ERROR(w.add_tensor_info(t.name, t.type, std::vector<int64_t>(t.ne, t.ne + t.n_dims)));
      outs.push_back({i, Part::Same});
      continue;
    }
    LLMS_RETURN_IF_ERROR(
        w.add_tensor_info(t.name + kSparse24ValuesSuffix, s24_type[i], {sparse24_values_per_row(t.ne[0]), t.ne[1]}));
    LLMS_RETURN_IF_ERROR(w.add_tensor_info(t.name + kSparse24IndexSuffix, GgmlType::I8,
                                           {sparse24_index_bytes_per_row(t.ne[0]), t.ne[1]}));
    outs.push_back({i, Part::Values});
    outs.push_back({i, Part::Positions});
  }

  struct Scratch {
    std::vector<float> w, score, kept;
    std::vector<int32_t> idx;
    std::vector<uint8_t> keep;
  };
  std::vector<Scratch> scratch(static_cast<size_t>(pool.size()));
  ElementProgress report(total, progress);
  std::vector<uint8_t> slab, positions, csr_vals;
  const auto fill = [&](size_t oi, const GgufWriter::ByteSink& put) -> Status {
    const size_t i = outs[oi].src;
    const GgufTensorInfo& t = infos[i];
    if (outs[oi].part == Part::Positions || outs[oi].part == Part::CsrVal) {
      const std::vector<uint8_t>& b = outs[oi].part == Part::Positions ? positions : csr_vals;
      if (!put(b.data(), b.size())) return write_error(out_path);
      return Status::ok();
    }
    if (outs[oi].part == Part::CsrPtr) {
      std::vector<int32_t> ptr(static_cast<size_t>(t.ne[1] + 1));
      for (int64_t r = 0; r <= t.ne[1]; ++r) ptr[static_cast<size_t>(r)] = static_cast<int32_t>(r * csr_m[i]);
      if (!put(reinterpret_cast<const uint8_t*>(ptr.data()), ptr.size() * 4)) return write_error(out_path);
      return Status::ok();
    }
    if (!sel[i]) {
      LLMS_RETURN_IF_ERROR(copy_tensor_bytes(t, put, cancel, "compress", out_path));
      report.add(t.n_elements());
      return Status::ok();
    }
    const int64_t ne0 = t.ne[0], rows = t.n_elements() / ne0;
    const size_t rs = row_size(t.type, ne0);
    const size_t vrs = sparse24_values_row_bytes(s24_type[i], ne0);
    const size_t irs = static_cast<size_t>(sparse24_index_bytes_per_row(ne0));
    const int64_t m = csr_m[i];
    const size_t ves = csr_f32[i] ? 4 : 2;  // CSR value bytes
    const size_t out_rs = sparse ? vrs : csr ? static_cast<size_t>(m) * 4 : rs;
    if (sparse) positions.assign(static_cast<size_t>(rows) * irs, 0);
    if (csr) csr_vals.assign(static_cast<size_t>(rows * m) * ves, 0);
    const int64_t slab_rows = std::max<int64_t>(1, kSlabElements / ne0);
    const int64_t k = static_cast<int64_t>(std::floor(opt.ratio * static_cast<double>(ne0)));
    const double* cs = col[i] ? col[i]->data() : nullptr;
    std::atomic<int64_t> zeros{0};
    std::atomic<bool> not_2_4{false};
    for (int64_t r0 = 0; r0 < rows; r0 += slab_rows) {
      if (cancelled(cancel)) return cancelled_error("compress");
      const int64_t r1 = std::min(rows, r0 + slab_rows);
      slab.resize(static_cast<size_t>(r1 - r0) * out_rs);
      pool.parallel_for_chunked(
          r1 - r0,
          [&](int64_t b, int64_t e, int s) {
            Scratch& sc = scratch[static_cast<size_t>(s)];
            sc.w.resize(static_cast<size_t>(ne0));
            sc.score.resize(static_cast<size_t>(ne0));
            sc.kept.resize(static_cast<size_t>(ne0 / 2));
            int64_t z = 0;
            for (int64_t r = b; r < e; ++r) {
              dequantize_row(t.type, t.data + static_cast<size_t>(r0 + r) * rs, sc.w.data(), ne0);
              prune_scores(sc.w.data(), cs, ne0, sc.score.data());
              if (opt.two_four) prune_row_2_4(sc.w.data(), sc.score.data(), ne0);
              else prune_row_unstructured(sc.w.data(), sc.score.data(), ne0, k, sc.idx);
              uint8_t* dst = slab.data() + static_cast<size_t>(r) * out_rs;
              if (csr) {
                z += csr_encode_kept(sc.w.data(), ne0, sc.idx, k, sc.keep, reinterpret_cast<int32_t*>(dst),
                                     csr_vals.data() + static_cast<size_t>((r0 + r) * m) * ves, csr_f32[i]);
                continue;
              }
              if (!sparse) {
                quantize_row_weights(t.type, sc.w.data(), dst, ne0);
              } else if (!sparse24_encode_row(s24_type[i], sc.w.data(), ne0, dst,
                                              positions.data() + static_cast<size_t>(r0 + r) * irs, sc.kept.data())) {
                not_2_4 = true;
              } else {
                // The entries not stored, and the stored values that are 0 once encoded.
                z += ne0 - ne0 / 2;
                for (int64_t k = 0; k < ne0 / 2; ++k) z += sparse24_value(s24_type[i], dst, k) == 0.0f;
                continue;
              }
              for (float v : sc.w) z += v == 0.0f;
            }
            zeros += z;
          },
          std::max<int64_t>(1, 16384 / ne0));
      if (not_2_4) return make_error(Code::Internal, "tensor '" + t.name + "': a pruned row is not 2:4");
      if (!put(slab.data(), slab.size())) return write_error(out_path);
      report.add((r1 - r0) * ne0);
    }
    const GgmlType out_type = sparse ? s24_type[i] : !csr ? t.type : csr_f32[i] ? GgmlType::F32 : GgmlType::F16;
    res.tensors.push_back(PrunedTensor{t.name, out_type, zeros.load(), t.n_elements()});
    f->release_pages(t.data, t.nbytes);
    return Status::ok();
  };
  LLMS_RETURN_IF_ERROR(write_output(w, out_path, fill, *f, progress, &res.input_bytes, &res.output_bytes));
  if (result) *result = std::move(res);
  return Status::ok();
}

}  // namespace llmserve
