// Low-rank (+ sparse) factorization of a model (factorize.h): plan, factor every selected matrix
// on the thread pool (one matrix per task, each single-threaded, so results do not depend on the
// thread count), then stream the output through GgufWriter::write.
#include "factorize.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "../gguf/gguf.h"
#include "../model/factored.h"
#include "../threadpool/thread_pool.h"
#include "prune.h"
#include "quantize.h"
#include "stream_out.h"
#include "svd.h"
#include "svd_gemm.h"

namespace llmserve {
namespace {

constexpr float kF16Max = 65504.0f;

std::string fmt_bytes(uint64_t b) {
  return b >= (1u << 20) ? std::to_string(b >> 20) + " MiB" : std::to_string((b + 1023) >> 10) + " KiB";
}

}  // namespace

uint64_t factorization_bytes(int64_t r, bool f16, int64_t n_in, int64_t n_out, int64_t nnz) {
  const uint64_t es = f16 ? 2 : 4;
  uint64_t b = es * static_cast<uint64_t>(r) * static_cast<uint64_t>(n_in + n_out);
  if (nnz > 0) b += 4 * static_cast<uint64_t>(n_out + 1) + 6 * static_cast<uint64_t>(nnz);
  return b;
}

void factorize_matrix(const float* w, int64_t n_out, int64_t n_in, const LowRankOptions& opt, const double* col_sumsq,
                      int64_t tokens, Factorization* out) {
  // Column scales d_j (1 without statistics); a column that never saw activation keeps a floor
  // so V stays finite.
  std::vector<double> d(static_cast<size_t>(n_in), 1.0);
  if (col_sumsq) {
    double dmax = 0;
    for (int64_t j = 0; j < n_in; ++j)
      dmax = std::max(dmax, d[j] = std::sqrt(col_sumsq[j] / static_cast<double>(std::max<int64_t>(1, tokens))));
    for (double& x : d) x = dmax > 0 ? std::max(x, 1e-6 * dmax) : 1.0;
  }
  std::vector<double> a(static_cast<size_t>(n_out * n_in));
  double total = 0;
  for (int64_t i = 0; i < n_out; ++i)
    for (int64_t j = 0; j < n_in; ++j) {
      const double x = static_cast<double>(w[i * n_in + j]) * d[j];
      a[i * n_in + j] = x;
      total += x * x;
    }
  const int64_t mn = std::min(n_in, n_out);
  SvdResult svd;
  int64_t r = std::min(opt.rank, mn);
  if (opt.rank <= 0) {
    // By energy: the whole spectrum, then the smallest rank reaching the fraction.
    truncated_svd(a.data(), n_out, n_in, mn, &svd);
    double kept = 0;
    r = mn;
    for (int64_t i = 0; i < mn; ++i) {
      kept += svd.s[i] * svd.s[i];
      if (kept >= opt.energy * total * (1 - 1e-12)) {
        r = i + 1;
        break;
      }
    }
  } else {
    truncated_svd(a.data(), n_out, n_in, r, &svd);
  }
  double kept = 0;
  for (int64_t i = 0; i < r; ++i) kept += svd.s[i] * svd.s[i];
  out->energy = total > 0 ? std::min(1.0, kept / total) : 1.0;
  out->r = r;
  const int64_t k = svd.k;  // columns of svd.u (>= r)
  out->ut.assign(static_cast<size_t>(r * n_out), 0.0f);
  out->v.assign(static_cast<size_t>(r * n_in), 0.0f);
  float amax = 0;
  for (int64_t i = 0; i < r; ++i) {
    const double sq = std::sqrt(svd.s[i]);
    for (int64_t o = 0; o < n_out; ++o) {
      const float x = static_cast<float>(svd.u[o * k + i] * sq);
      out->ut[i * n_out + o] = x;
      amax = std::max(amax, std::fabs(x));
    }
    for (int64_t j = 0; j < n_in; ++j) {
      const float x = static_cast<float>(svd.vt[i * n_in + j] * sq / d[j]);
      out->v[i * n_in + j] = x;
      amax = std::max(amax, std::fabs(x));
    }
  }
  out->f16 = amax <= kF16Max;
  if (out->f16) {
    for (float& x : out->ut) x = fp16_to_fp32(fp32_to_fp16(x));
    for (float& x : out->v) x = fp16_to_fp32(fp32_to_fp16(x));
  }
  // Residual against the stored factors (reuses a: R = W - Uᵀᵀ·V, unwhitened), and its score.
  // Per element: w - u_0·v_0 - u_1·v_1 - ... in rank order (svd_nn_qt_acc with negated
  // coefficients: the same subtractions, blocked).
  std::vector<float> score(static_cast<size_t>(n_out * n_in));
  double wnorm = 0;
  for (int64_t i = 0; i < n_out * n_in; ++i) a[i] = w[i];
  {
    std::vector<double> neg_ut(static_cast<size_t>(r * n_out)), vd(static_cast<size_t>(r * n_in));
    for (size_t i = 0; i < neg_ut.size(); ++i) neg_ut[i] = -static_cast<double>(out->ut[i]);
    for (size_t i = 0; i < vd.size(); ++i) vd[i] = out->v[i];
    svd_nn_qt_acc(neg_ut.data(), n_out, r, vd.data(), n_in, a.data());
  }
  for (int64_t o = 0; o < n_out; ++o) {
    const double* ro = a.data() + o * n_in;
    for (int64_t j = 0; j < n_in; ++j) {
      wnorm += static_cast<double>(w[o * n_in + j]) * w[o * n_in + j];
      score[o * n_in + j] = static_cast<float>(std::fabs(ro[j]) * d[j]);
    }
  }
  const int64_t entries = n_out * n_in;
  const int64_t nnz = std::min(entries, static_cast<int64_t>(std::llround(opt.sparse * static_cast<double>(entries))));
  // Keep the nnz highest scores: those above the nnz-th largest, then ties in index order.
  float thr = INFINITY;
  int64_t above = 0;
  if (nnz > 0) {
    std::vector<float> tmp(score);
    std::nth_element(tmp.begin(), tmp.begin() + (nnz - 1), tmp.end(), std::greater<float>());
    thr = tmp[static_cast<size_t>(nnz - 1)];
    for (float s : score) above += s > thr;
  }
  int64_t ties = nnz - above;
  out->ptr.assign(nnz > 0 ? static_cast<size_t>(n_out + 1) : 0, 0);
  out->col.clear();
  out->val.clear();
  double err = 0;
  for (int64_t o = 0; o < n_out; ++o) {
    for (int64_t j = 0; j < n_in; ++j) {
      const double rv = a[o * n_in + j];
      const float s = score[o * n_in + j];
      const bool keep = nnz > 0 && (s > thr || (s == thr && ties > 0 && ties--));
      if (!keep) {
        err += rv * rv;
        continue;
      }
      const uint16_t h = fp32_to_fp16(std::clamp(static_cast<float>(rv), -kF16Max, kF16Max));
      const double e = rv - fp16_to_fp32(h);
      err += e * e;
      out->col.push_back(static_cast<int32_t>(j));
      out->val.push_back(h);
    }
    if (nnz > 0) out->ptr[o + 1] = static_cast<int32_t>(out->col.size());
  }
  out->rel_error = wnorm > 0 ? std::sqrt(err / wnorm) : 0.0;
}

Status plan_lowrank(const std::string& in_path, const LowRankOptions& opt, std::vector<std::string>* selected) {
  if ((opt.rank > 0) == (opt.energy > 0))
    return make_error(Code::InvalidArgument,
                      "low-rank factorization takes either a rank (rank=128) or a retained energy (energy=0.95)");
  if (opt.rank < 0) return make_error(Code::InvalidArgument, "the rank must be at least 1");
  if (opt.rank == 0 && !(opt.energy > 0 && opt.energy <= 1))
    return make_error(Code::InvalidArgument,
                      "the retained energy must be in (0, 1], e.g. energy=0.95; got " + std::to_string(opt.energy));
  if (!(opt.sparse >= 0 && opt.sparse < 1))
    return make_error(Code::InvalidArgument,
                      "the sparse residual fraction must be in [0, 1), e.g. 0.02; got " + std::to_string(opt.sparse));
  std::unique_ptr<GgufFile> f;
  LLMS_RETURN_IF_ERROR(GgufFile::open(in_path, &f));
  std::vector<std::string> out;
  auto check = [&opt](const GgufTensorInfo& t) {
    if (opt.rank > std::min(t.ne[0], t.ne[1]))
      return make_error(Code::InvalidArgument, "rank " + std::to_string(opt.rank) + " is above min(n_in, n_out) = " +
                                                   std::to_string(std::min(t.ne[0], t.ne[1])) + " of tensor '" +
                                                   t.name + "'; choose a smaller rank or leave it out with --tensors");
    return check_convertible(t, "factor");
  };
  LLMS_RETURN_IF_ERROR(select_layer_matrices(*f, opt.patterns, check, "factor", &out));
  if (selected) *selected = std::move(out);
  return Status::ok();
}

Status lowrank_model(const std::string& in_path, const std::string& out_path, const LowRankOptions& opt,
                     const ActivationStats* stats, const std::function<void(double)>& progress,
                     const std::atomic<bool>* cancel, LowRankResult* result) {
  std::vector<std::string> names;
  LLMS_RETURN_IF_ERROR(plan_lowrank(in_path, opt, &names));
  LLMS_RETURN_IF_ERROR(check_output_path(in_path, out_path));
  if (opt.activation_aware && !stats)
    return make_error(Code::InvalidArgument,
                      "activation-aware factorization needs calibration statistics: give a calibration text "
                      "(--calib text.txt)");
  std::unique_ptr<GgufFile> f;
  LLMS_RETURN_IF_ERROR(GgufFile::open(in_path, &f));
  const auto& infos = f->tensors();
  std::vector<size_t> sel;  // indices into infos
  std::vector<const double*> cols;
  for (size_t i = 0; i < infos.size(); ++i) {
    if (std::find(names.begin(), names.end(), infos[i].name) == names.end()) continue;
    const std::vector<double>* cs = nullptr;
    if (opt.activation_aware) LLMS_RETURN_IF_ERROR(column_sumsq(*stats, infos[i].name, infos[i].ne[0], &cs));
    sel.push_back(i);
    cols.push_back(cs ? cs->data() : nullptr);
  }
  // Factor every selected matrix, a pool's width of matrices at a time (progress and cancel
  // between rounds, from this thread).
  std::vector<Factorization> fac(sel.size());
  std::vector<bool> keep(sel.size(), false);
  LowRankResult res;
  res.tensors.resize(sel.size());
  ThreadPool pool(opt.threads);
  bool requantized = false;
  for (size_t s0 = 0; s0 < sel.size(); s0 += static_cast<size_t>(pool.size())) {
    if (cancelled(cancel)) return cancelled_error("compress");
    const size_t s1 = std::min(sel.size(), s0 + static_cast<size_t>(pool.size()));
    pool.parallel_for(
        static_cast<int64_t>(s1 - s0),
        [&](int64_t b, int64_t e) {
          for (int64_t q = b; q < e; ++q) {
            const size_t s = s0 + static_cast<size_t>(q);
            const GgufTensorInfo& t = infos[sel[s]];
            const int64_t n_in = t.ne[0], n_out = t.ne[1];
            std::vector<float> w(static_cast<size_t>(n_in * n_out));
            const size_t rs = row_size(t.type, n_in);
            for (int64_t o = 0; o < n_out; ++o) dequantize_row(t.type, t.data + o * rs, w.data() + o * n_in, n_in);
            factorize_matrix(w.data(), n_out, n_in, opt, cols[s], stats ? stats->tokens : 0, &fac[s]);
            FactoredTensorInfo& ti = res.tensors[s];
            ti.name = t.name;
            ti.rank = fac[s].r;
            ti.nnz = static_cast<int64_t>(fac[s].col.size());
            ti.dense_bytes = static_cast<uint64_t>(rs) * static_cast<uint64_t>(n_out);
            ti.bytes = factorization_bytes(fac[s].r, fac[s].f16, n_in, n_out, ti.nnz);
            ti.rel_error = fac[s].rel_error;
            ti.energy = fac[s].energy;
            ti.factored = opt.keep_unprofitable || ti.bytes < ti.dense_bytes;
            if (!ti.factored) ti.bytes = ti.dense_bytes, ti.rel_error = 0, ti.energy = 1;
            keep[s] = ti.factored;
          }
        },
        1);
    if (progress) progress(0.95 * static_cast<double>(s1) / static_cast<double>(sel.size()));
  }
  std::vector<size_t> fac_of(infos.size(), SIZE_MAX);
  int64_t n_factored = 0;
  for (size_t s = 0; s < sel.size(); ++s) {
    const FactoredTensorInfo& ti = res.tensors[s];
    if (!ti.factored) {
      res.notes.push_back(
          ti.name + ": rank " + std::to_string(ti.rank) + " factors would take " +
          fmt_bytes(factorization_bytes(ti.rank, fac[s].f16, infos[sel[s]].ne[0], infos[sel[s]].ne[1], ti.nnz)) +
          ", not less than its " + fmt_bytes(ti.dense_bytes) + " dense: kept dense");
      continue;
    }
    ++n_factored;
    fac_of[sel[s]] = s;
    const GgmlType ty = infos[sel[s]].type;
    requantized |= ty != GgmlType::F32 && ty != GgmlType::F16 && ty != GgmlType::BF16;
    if (!fac[s].f16) res.notes.push_back(ti.name + ": a factor value exceeds the f16 range: factors stored in f32");
  }
  if (n_factored == 0)
    return make_error(Code::InvalidArgument,
                      "no selected matrix gets smaller at this rank: the factors would take at least their dense "
                      "bytes; choose a smaller rank or energy (or select the larger matrices with --tensors)");
  if (requantized) res.notes.push_back("some factored tensors were quantized: they were dequantized before the SVD");
  res.notes.push_back("low-rank factored tensors (NAME.lr_v / NAME.lr_ut" +
                      std::string(opt.sparse > 0 ? ", sparse residual NAME.sp_*" : "") +
                      ") are llmserve's own format: llama.cpp cannot load the output");

  enum class Part { Same, V, Ut, Ptr, Col, Val };
  struct Out {
    size_t src;
    Part part;
  };
  std::vector<Out> outs;
  GgufWriter w;
  for (const auto& [key, value] : f->metadata()) w.set_value(key, value);
  w.set_str("llmserve.lowrank",
            "low-rank factored tensors (NAME.lr_v, NAME.lr_ut, optional CSR residual NAME.sp_ptr/sp_col/sp_val) "
            "replace the factored matrices: only llmserve runs this file, llama.cpp cannot load it");
  if (opt.rank > 0) w.set_u32("llmserve.lowrank.rank", static_cast<uint32_t>(opt.rank));
  else w.set_f32("llmserve.lowrank.energy", static_cast<float>(opt.energy));
  w.set_f32("llmserve.lowrank.sparse", static_cast<float>(opt.sparse));
  w.set_bool("llmserve.lowrank.activation_aware", opt.activation_aware);
  for (size_t i = 0; i < infos.size(); ++i) {
    const GgufTensorInfo& t = infos[i];
    if (fac_of[i] == SIZE_MAX) {
      LLMS_RETURN_IF_ERROR(w.add_tensor_info(t.name, t.type, std::vector<int64_t>(t.ne, t.ne + t.n_dims)));
      outs.push_back({i, Part::Same});
      continue;
    }
    const Factorization& fz = fac[fac_of[i]];
    const GgmlType ft = fz.f16 ? GgmlType::F16 : GgmlType::F32;
    LLMS_RETURN_IF_ERROR(w.add_tensor_info(t.name + kLowRankVSuffix, ft, {t.ne[0], fz.r}));
    LLMS_RETURN_IF_ERROR(w.add_tensor_info(t.name + kLowRankUtSuffix, ft, {t.ne[1], fz.r}));
    outs.push_back({i, Part::V});
    outs.push_back({i, Part::Ut});
    if (fz.col.empty()) continue;
    const int64_t nnz = static_cast<int64_t>(fz.col.size());
    LLMS_RETURN_IF_ERROR(w.add_tensor_info(t.name + kSparsePtrSuffix, GgmlType::I32, {t.ne[1] + 1}));
    LLMS_RETURN_IF_ERROR(w.add_tensor_info(t.name + kSparseColSuffix, GgmlType::I32, {nnz}));
    LLMS_RETURN_IF_ERROR(w.add_tensor_info(t.name + kSparseValSuffix, GgmlType::F16, {nnz}));
    outs.push_back({i, Part::Ptr});
    outs.push_back({i, Part::Col});
    outs.push_back({i, Part::Val});
  }
  std::vector<uint8_t> buf;
  const auto put_floats = [&](const std::vector<float>& x, bool f16, const GgufWriter::ByteSink& put) {
    if (!f16) return put(reinterpret_cast<const uint8_t*>(x.data()), x.size() * 4);
    buf.resize(x.size() * 2);
    auto* h = reinterpret_cast<uint16_t*>(buf.data());
    for (size_t e = 0; e < x.size(); ++e) h[e] = fp32_to_fp16(x[e]);
    return put(buf.data(), buf.size());
  };
  const auto fill = [&](size_t oi, const GgufWriter::ByteSink& put) -> Status {
    const GgufTensorInfo& t = infos[outs[oi].src];
    if (cancelled(cancel)) return cancelled_error("compress");
    if (outs[oi].part == Part::Same) return copy_tensor_bytes(t, put, cancel, "compress", out_path);
    const Factorization& fz = fac[fac_of[outs[oi].src]];
    bool ok = true;
    switch (outs[oi].part) {
      case Part::V: ok = put_floats(fz.v, fz.f16, put); break;
      case Part::Ut: ok = put_floats(fz.ut, fz.f16, put); break;
      case Part::Ptr: ok = put(reinterpret_cast<const uint8_t*>(fz.ptr.data()), fz.ptr.size() * 4); break;
      case Part::Col: ok = put(reinterpret_cast<const uint8_t*>(fz.col.data()), fz.col.size() * 4); break;
      default: ok = put(reinterpret_cast<const uint8_t*>(fz.val.data()), fz.val.size() * 2); break;
    }
    return ok ? Status::ok() : write_error(out_path);
  };
  LLMS_RETURN_IF_ERROR(write_output(w, out_path, fill, *f, progress, &res.input_bytes, &res.output_bytes));
  if (result) *result = std::move(res);
  return Status::ok();
}

}  // namespace llmserve
