#include "model.h"

#include <algorithm>
#include <cmath>

#include "../quant/gemm.h"
#include "csr.h"
#include "factored.h"
#include "sparse24.h"

namespace llmserve {

namespace {

std::string shape_str(const int64_t* ne, int n) {
  std::string s = "[";
  for (int i = 0; i < n; ++i) {
    if (i) s += ", ";
    s += std::to_string(ne[i]);
  }
  return s + "]";
}

// Number of meaningful dims of a tensor (trailing 1s dropped, at least 1).
int effective_dims(const GgufTensorInfo& t) {
  int n = 4;
  while (n > 1 && t.ne[n - 1] == 1) --n;
  return n;
}

// Rows [r0, r0 + n) of a matrix: a view of a fused tensor's part (rows are contiguous; a 2:4
// matrix's positions and a CSR matrix's row pointers move with them). Not for low-rank factors
// (a row of W is a column of U^T): check_fusable refuses those.
MatrixView row_view(const MatrixView& m, int64_t r0, int64_t n) {
  MatrixView v = m;
  if (m.data) v.data = m.data + static_cast<size_t>(r0) * m.row_bytes;
  if (m.s24_idx) v.s24_idx = m.s24_idx + static_cast<size_t>(r0 * sparse24_index_bytes_per_row(m.n_in));
  if (m.is_csr()) v.sp_ptr = m.sp_ptr + r0;
  v.n_out = n;
  return v;
}

// A fused matrix (phi3's attn_qkv, ffn_up) is split into row views: low-rank factors cannot be.
Status check_fusable(const std::string& name, const MatrixView& m) {
  if (m.lr_rank == 0) return Status::ok();
  return make_error(Code::UnsupportedType, "tensor '" + name +
                                               "' is fused (several projections in one matrix) and low-rank "
                                               "factored, which llmserve cannot split; compress it without it "
                                               "(leave it out with --tensors)");
}

class Binder {
 public:
  explicit Binder(const GgufFile& f) : f_(f) {}

  // Finds `name` and checks shape == expect (missing dims are 1) and data bounds.
  // raw: any known type (the i8 positions of a 2:4 matrix), not only the ones llmserve dequantizes.
  Status find(const std::string& name, std::vector<int64_t> expect, bool required, const GgufTensorInfo** out,
              bool raw = false) {
    *out = nullptr;
    const GgufTensorInfo* t = f_.find_tensor(name);
    if (!t) {
      if (required) return make_error(Code::MissingTensor, "missing tensor '" + name + "'");
      return Status::ok();
    }
    int64_t want[4] = {1, 1, 1, 1};
    for (size_t i = 0; i < expect.size() && i < 4; ++i) want[i] = expect[i];
    if (t->ne[0] != want[0] || t->ne[1] != want[1] || t->ne[2] != want[2] || t->ne[3] != want[3]) {
      return make_error(Code::BadShape, "tensor '" + name + "' has shape " + shape_str(t->ne, effective_dims(*t)) +
                                            ", expected " + shape_str(want, static_cast<int>(expect.size())));
    }
    const TypeTraits& tt = type_traits(t->type);
    if (!tt.known || (!tt.supported && !raw)) {
      return make_error(Code::UnsupportedType, "tensor '" + name + "' has type " + std::string(tt.name) + " (id " +
                                                   std::to_string(static_cast<uint32_t>(t->type)) +
                                                   "), which is not supported");
    }
    if (tt.block_size <= 0 || t->ne[0] % tt.block_size != 0) {
      return make_error(Code::BadShape, "tensor '" + name + "' row length " + std::to_string(t->ne[0]) +
                                            " is not a multiple of the " + tt.name + " block size " +
                                            std::to_string(tt.block_size));
    }
    const uint64_t need =
        static_cast<uint64_t>(row_size(t->type, t->ne[0])) * static_cast<uint64_t>(t->ne[1] * t->ne[2] * t->ne[3]);
    const uint64_t start = f_.data_offset() + t->offset;
    if (t->data == nullptr || start < t->offset || start > f_.file_size() || need > f_.file_size() - start ||
        (t->nbytes != 0 && t->nbytes < need)) {
      return make_error(Code::GgufCorrupt, "tensor '" + name + "' data (" + std::to_string(need) + " bytes at offset " +
                                               std::to_string(start) + ") lies outside the file (" +
                                               std::to_string(f_.file_size()) + " bytes)");
    }
    *out = t;
    return Status::ok();
  }

  // A weight matrix [n_in] -> [n_out]: any type we can dot against, or llmserve's 2:4 sparse
  // pair NAME.s24v / NAME.s24i (model/sparse24.h) in place of NAME.
  Status matrix(const std::string& name, int64_t n_in, int64_t n_out, bool required, MatrixView* out) {
    if (!f_.find_tensor(name) && f_.find_tensor(name + kSparse24ValuesSuffix)) return sparse24(name, n_in, n_out, out);
    if (!f_.find_tensor(name) && f_.find_tensor(name + kLowRankVSuffix)) return factored(name, n_in, n_out, out);
    if (!f_.find_tensor(name) && f_.find_tensor(name + kSparsePtrSuffix)) {
      out->n_in = n_in;
      out->n_out = n_out;
      out->type = GgmlType::F16;
      return csr(name, n_in, n_out, out);
    }
    const GgufTensorInfo* t = nullptr;
    LLMS_RETURN_IF_ERROR(find(name, {n_in, n_out}, required, &t));
    if (!t) return Status::ok();
    LLMS_RETURN_IF_ERROR(check_gemm_type(name, t->type, n_in));
    out->data = t->data;
    out->type = t->type;
    out->n_in = n_in;
    out->n_out = n_out;
    out->row_bytes = row_size(t->type, n_in);
    return Status::ok();
  }

  // A 3-D expert tensor (ggml ne [n_in, n_out, n_expert]): one 2-D view per expert.
  Status experts(const std::string& name, int64_t n_in, int64_t n_out, int64_t n_expert, std::vector<MatrixView>* out) {
    const GgufTensorInfo* t = nullptr;
    LLMS_RETURN_IF_ERROR(find(name, {n_in, n_out, n_expert}, true, &t));
    MatrixView all;
    LLMS_RETURN_IF_ERROR(check_gemm_type(name, t->type, n_in));
    all.data = t->data, all.type = t->type, all.n_in = n_in, all.n_out = n_out * n_expert;
    all.row_bytes = row_size(t->type, n_in);
    out->clear();
    for (int64_t e = 0; e < n_expert; ++e) out->push_back(row_view(all, e * n_out, n_out));
    return Status::ok();
  }

  Status check_gemm_type(const std::string& name, GgmlType type, int64_t n_in) {
    if (!gemm_supported(type)) {
      return make_error(Code::UnsupportedType, "tensor '" + name + "' has type " + type_traits(type).name +
                                                   ", which llmserve cannot multiply with; convert the model to a "
                                                   "supported weight type (see the README)");
    }
    const TypeTraits& vt = type_traits(type_traits(type).vec_dot_type);
    if (!vt.known || !vt.supported || n_in % vt.block_size != 0) {
      return make_error(Code::UnsupportedType, "tensor '" + name + "' has type " + type_traits(type).name +
                                                   ", whose activation format " + vt.name + " cannot hold rows of " +
                                                   std::to_string(n_in));
    }
    return Status::ok();
  }

  Status sparse24(const std::string& name, int64_t n_in, int64_t n_out, MatrixView* out) {
    if (n_in % 4 != 0)
      return make_error(Code::BadShape,
                        "2:4 sparse tensor '" + name + "' needs rows of a multiple of 4, not " + std::to_string(n_in));
    // The value type first: a q8_0 row of n_in % 64 == 32 would otherwise fail find's block check
    // with a message that does not say why.
    const GgufTensorInfo* vt = f_.find_tensor(name + kSparse24ValuesSuffix);
    if (vt && !sparse24_value_type_ok(vt->type, n_in)) {
      return make_error(Code::UnsupportedType, "2:4 sparse tensor '" + name +
                                                   "' must hold f16 values, or q8_0 values with rows of a multiple "
                                                   "of 64 (" +
                                                   kSparse24ValuesSuffix + ": " + type_traits(vt->type).name +
                                                   ", rows of " + std::to_string(n_in) + ")");
    }
    const GgufTensorInfo *v = nullptr, *i = nullptr;
    LLMS_RETURN_IF_ERROR(find(name + kSparse24ValuesSuffix, {sparse24_values_per_row(n_in), n_out}, true, &v));
    LLMS_RETURN_IF_ERROR(
        find(name + kSparse24IndexSuffix, {sparse24_index_bytes_per_row(n_in), n_out}, true, &i, true));
    if (!sparse24_value_type_ok(v->type, n_in) || i->type != GgmlType::I8 ||
        (v->type == GgmlType::F16 && reinterpret_cast<uintptr_t>(v->data) % 2 != 0)) {
      return make_error(Code::UnsupportedType, "2:4 sparse tensor '" + name +
                                                   "' must hold f16 values, or q8_0 values with rows of a multiple "
                                                   "of 64 (" +
                                                   kSparse24ValuesSuffix + ": " + type_traits(v->type).name +
                                                   ", rows of " + std::to_string(n_in) + "), and i8 positions (" +
                                                   kSparse24IndexSuffix + ")");
    }
    out->data = v->data;
    out->type = v->type;
    out->n_in = n_in;
    out->n_out = n_out;
    out->row_bytes = sparse24_values_row_bytes(v->type, n_in);
    out->s24_idx = i->data;
    return Status::ok();
  }

  // NAME.lr_v / NAME.lr_ut (+ NAME.sp_ptr / sp_col / sp_val), model/factored.h. The residual's
  // indices are checked here once, so the kernels can trust them.
  Status factored(const std::string& name, int64_t n_in, int64_t n_out, MatrixView* out) {
    const GgufTensorInfo* v = f_.find_tensor(name + kLowRankVSuffix);
    const int64_t r = v->n_dims == 2 ? v->ne[1] : 0;
    if (r < 1 || r > std::min(n_in, n_out))
      return make_error(Code::BadShape, "low-rank tensor '" + name + "' needs a rank in [1, min(n_in, n_out)] (n_in " +
                                            std::to_string(n_in) + ", rank " + std::to_string(r) + ")");
    const GgufTensorInfo* ut = nullptr;
    LLMS_RETURN_IF_ERROR(find(name + kLowRankVSuffix, {n_in, r}, true, &v));
    LLMS_RETURN_IF_ERROR(find(name + kLowRankUtSuffix, {n_out, r}, true, &ut));
    const bool f16 = v->type == GgmlType::F16;
    if ((v->type != GgmlType::F16 && v->type != GgmlType::F32) || ut->type != v->type ||
        reinterpret_cast<uintptr_t>(v->data) % 4 != 0 || reinterpret_cast<uintptr_t>(ut->data) % 4 != 0) {
      return make_error(Code::UnsupportedType, "low-rank tensor '" + name + "' must have both factors (" +
                                                   kLowRankVSuffix + ", " + kLowRankUtSuffix +
                                                   ") in f16 or both in f32, 4-byte aligned");
    }
    out->data = nullptr;
    out->type = v->type;
    out->n_in = n_in;
    out->n_out = n_out;
    out->row_bytes = 0;
    out->lr_rank = r;
    out->lr_f16 = f16;
    out->lr_v = v->data;
    out->lr_ut = ut->data;
    if (!f_.find_tensor(name + kSparsePtrSuffix)) return Status::ok();
    return csr(name, n_in, n_out, out);
  }

  // NAME.sp_ptr / sp_col / sp_val (model/csr.h): a whole CSR matrix or a factored one's residual.
  // The indices are checked here once, so the kernels can trust them.
  Status csr(const std::string& name, int64_t n_in, int64_t n_out, MatrixView* out) {
    const GgufTensorInfo *p = nullptr, *c = nullptr, *x = nullptr;
    LLMS_RETURN_IF_ERROR(find(name + kSparsePtrSuffix, {n_out + 1}, true, &p, true));
    const GgufTensorInfo* ci = f_.find_tensor(name + kSparseColSuffix);
    const int64_t nnz = ci && ci->n_dims == 1 ? ci->ne[0] : -1;
    if (nnz < 1) return make_error(Code::BadShape, "CSR tensors of '" + name + "' have no 1-D column tensor");
    LLMS_RETURN_IF_ERROR(find(name + kSparseColSuffix, {nnz}, true, &c, true));
    LLMS_RETURN_IF_ERROR(find(name + kSparseValSuffix, {nnz}, true, &x));
    const bool f32 = x->type == GgmlType::F32;
    if (p->type != GgmlType::I32 || c->type != GgmlType::I32 || (x->type != GgmlType::F16 && !f32) ||
        reinterpret_cast<uintptr_t>(p->data) % 4 != 0 || reinterpret_cast<uintptr_t>(c->data) % 4 != 0 ||
        reinterpret_cast<uintptr_t>(x->data) % (f32 ? 4 : 2) != 0) {
      return make_error(Code::UnsupportedType, "CSR tensors of '" + name +
                                                   "' must be i32 row pointers and columns and f16 or f32 values, "
                                                   "aligned");
    }
    const auto* ptr = reinterpret_cast<const int32_t*>(p->data);
    const auto* col = reinterpret_cast<const int32_t*>(c->data);
    if (!csr_valid(ptr, col, n_out, n_in, nnz))
      return make_error(Code::GgufCorrupt,
                        "CSR tensors of '" + name + "' have row pointers or columns out of range or out of order");
    out->sp_ptr = ptr;
    out->sp_col = col;
    out->sp_val = x->data;
    out->sp_f32 = f32;
    return Status::ok();
  }

  // A 1-D f32 vector (norm weights, biases, rope factors), as llama.cpp's converters write them.
  Status vector(const std::string& name, int64_t n, bool required, const float** out) {
    *out = nullptr;
    const GgufTensorInfo* t = nullptr;
    LLMS_RETURN_IF_ERROR(find(name, {n}, required, &t));
    if (!t) return Status::ok();
    if (t->type != GgmlType::F32) {
      return make_error(Code::UnsupportedType,
                        "tensor '" + name + "' has type " + type_traits(t->type).name + "; 1-D tensors must be f32");
    }
    if (reinterpret_cast<uintptr_t>(t->data) % alignof(float) != 0) {
      return make_error(Code::GgufCorrupt, "tensor '" + name + "' data is not 4-byte aligned");
    }
    *out = reinterpret_cast<const float*>(t->data);
    return Status::ok();
  }

 private:
  const GgufFile& f_;
};

// Bytes per token to hold the activations of one matmul group converted to each distinct
// vec_dot type the group's weights use (f32 needs no conversion).
}  // namespace

Status Model::load(std::shared_ptr<GgufFile> file, std::unique_ptr<Model>* out) {
  if (!file) return make_error(Code::InvalidArgument, "Model::load: no file");
  std::unique_ptr<Model> m(new Model());
  ModelConfig& c = m->config_;
  LLMS_RETURN_IF_ERROR(read_model_config(*file, &c));
  Binder b(*file);
  ModelWeights& w = m->weights_;

  // Vocabulary size comes from the embedding matrix.
  const GgufTensorInfo* te = file->find_tensor("token_embd.weight");
  if (!te) return make_error(Code::MissingTensor, "missing tensor 'token_embd.weight'");
  c.n_vocab = te->ne[1];
  if (c.n_vocab < 1 || c.n_vocab > (int64_t(1) << 22)) {
    return make_error(Code::BadShape, "tensor 'token_embd.weight' has " + std::to_string(c.n_vocab) +
                                          " rows; expected a vocabulary size in [1, 4194304]");
  }
  if (const GgufValue* v = file->find(c.arch + ".vocab_size")) {
    if (v->is_int() && v->as_int() != c.n_vocab) {
      return make_error(Code::BadShape, "hyperparameter '" + c.arch + ".vocab_size' = " + std::to_string(v->as_int()) +
                                            " differs from token_embd.weight rows " + std::to_string(c.n_vocab));
    }
  }
  LLMS_RETURN_IF_ERROR(validate_token_ids(*file, c.n_vocab));
  LLMS_RETURN_IF_ERROR(b.matrix("token_embd.weight", c.n_embd, c.n_vocab, true, &w.tok_embd));
  LLMS_RETURN_IF_ERROR(b.vector("output_norm.weight", c.n_embd, true, &w.output_norm));
  // gemma2 always reuses token_embd (llama.cpp's loader takes no output.weight for it, so a file
  // with one is refused there too); gemma3 and the others may have either.
  if (c.arch == "gemma2" && file->find_tensor("output.weight")) {
    return make_error(Code::GgufCorrupt,
                      "tensor 'output.weight' is not used by architecture 'gemma2' (its output "
                      "is token_embd.weight; llama.cpp refuses the file too); re-convert the model");
  }
  LLMS_RETURN_IF_ERROR(b.matrix("output.weight", c.n_embd, c.n_vocab, false, &w.output));
  c.tied_output = w.output.data == nullptr;
  if (c.tied_output) w.output = w.tok_embd;
  // Llama 3's per-frequency RoPE factors. llama.cpp's qwen graphs pass no factors and its loader
  // refuses a file with a tensor no architecture slot takes, so the qwen family refuses it too.
  const bool llama = c.arch == "llama", qwen2 = c.arch == "qwen2", phi3 = c.arch == "phi3";
  if (llama) {
    LLMS_RETURN_IF_ERROR(b.vector("rope_freqs.weight", c.n_rot / 2, false, &w.rope_freqs));
  } else if (phi3) {
    // LongRoPE: both sets or neither (llama.cpp would pass a null factor set otherwise).
    LLMS_RETURN_IF_ERROR(b.vector("rope_factors_short.weight", c.n_rot / 2, false, &w.rope_short));
    LLMS_RETURN_IF_ERROR(b.vector("rope_factors_long.weight", c.n_rot / 2, false, &w.rope_long));
    if (!w.rope_short != !w.rope_long) {
      return make_error(Code::MissingTensor,
                        std::string("missing tensor '") +
                            (w.rope_short ? "rope_factors_long.weight" : "rope_factors_short.weight") +
                            "' (phi3 LongRoPE needs both factor sets); re-convert the model");
    }
    c.has_longrope = w.rope_short != nullptr;
    w.rope_freqs = w.rope_short;
  }
  if (!llama && file->find_tensor("rope_freqs.weight")) {
    return make_error(Code::GgufCorrupt, "tensor 'rope_freqs.weight' is not used by architecture '" + c.arch +
                                             "' (llama.cpp refuses the file too); re-convert the model");
  }
  c.has_rope_freqs = llama && w.rope_freqs != nullptr;

  const int64_t nq = c.n_embd_q(), nkv = c.n_embd_kv();
  w.layers.resize(static_cast<size_t>(c.n_layer));
  for (int64_t il = 0; il < c.n_layer; ++il) {
    LayerWeights& L = w.layers[static_cast<size_t>(il)];
    const std::string p = "blk." + std::to_string(il) + ".";
    LLMS_RETURN_IF_ERROR(b.vector(p + "attn_norm.weight", c.n_embd, true, &L.attn_norm));
    // phi3 may fuse Q, K and V into attn_qkv ([n_embd] -> [nq + 2 nkv], rows Q | K | V, as
    // llama.cpp's create_tensor_qkv / build_qkv view it): three row views of the one matrix.
    MatrixView qkv;
    if (phi3) LLMS_RETURN_IF_ERROR(b.matrix(p + "attn_qkv.weight", c.n_embd, nq + 2 * nkv, false, &qkv));
    LLMS_RETURN_IF_ERROR(check_fusable(p + "attn_qkv.weight", qkv));
    if (qkv.data || qkv.is_csr()) {
      L.wq = row_view(qkv, 0, nq), L.wk = row_view(qkv, nq, nkv), L.wv = row_view(qkv, nq + nkv, nkv);
      const float* bqkv = nullptr;
      LLMS_RETURN_IF_ERROR(b.vector(p + "attn_qkv.bias", nq + 2 * nkv, false, &bqkv));
      if (bqkv) L.bq = bqkv, L.bk = bqkv + nq, L.bv = bqkv + nq + nkv;
    } else {
      LLMS_RETURN_IF_ERROR(b.matrix(p + "attn_q.weight", c.n_embd, nq, true, &L.wq));
      LLMS_RETURN_IF_ERROR(b.matrix(p + "attn_k.weight", c.n_embd, nkv, true, &L.wk));
      LLMS_RETURN_IF_ERROR(b.matrix(p + "attn_v.weight", c.n_embd, nkv, true, &L.wv));
    }
    LLMS_RETURN_IF_ERROR(b.matrix(p + "attn_output.weight", nq, c.n_embd, true, &L.wo));
    // qwen2 requires Q/K/V biases; the others may carry optional ones (llama.cpp:
    // create_tensor_qkv, TENSOR_NOT_REQUIRED; Qwen3 and Gemma checkpoints have none).
    if (!qkv.data) {
      LLMS_RETURN_IF_ERROR(b.vector(p + "attn_q.bias", nq, qwen2, &L.bq));
      LLMS_RETURN_IF_ERROR(b.vector(p + "attn_k.bias", nkv, qwen2, &L.bk));
      LLMS_RETURN_IF_ERROR(b.vector(p + "attn_v.bias", nkv, qwen2, &L.bv));
    }
    if (c.has_qk_norm) {
      LLMS_RETURN_IF_ERROR(b.vector(p + "attn_q_norm.weight", c.head_dim, true, &L.attn_q_norm));
      LLMS_RETURN_IF_ERROR(b.vector(p + "attn_k_norm.weight", c.head_dim, true, &L.attn_k_norm));
    }
    if (llama) {
      LLMS_RETURN_IF_ERROR(b.vector(p + "attn_output.bias", c.n_embd, false, &L.bo));
      LLMS_RETURN_IF_ERROR(b.vector(p + "ffn_gate.bias", c.n_ff, false, &L.ffn_gate_b));
      LLMS_RETURN_IF_ERROR(b.vector(p + "ffn_up.bias", c.n_ff, false, &L.ffn_up_b));
      LLMS_RETURN_IF_ERROR(b.vector(p + "ffn_down.bias", c.n_embd, false, &L.ffn_down_b));
    }
    if (il == 0) c.has_qkv_bias = L.bq || L.bk || L.bv;
    LLMS_RETURN_IF_ERROR(b.vector(p + "ffn_norm.weight", c.n_embd, true, &L.ffn_norm));
    if (c.post_norms) {
      LLMS_RETURN_IF_ERROR(b.vector(p + "post_attention_norm.weight", c.n_embd, true, &L.attn_post_norm));
      LLMS_RETURN_IF_ERROR(b.vector(p + "post_ffw_norm.weight", c.n_embd, true, &L.ffn_post_norm));
    }
    if (c.is_moe()) {
      // Mixtral / qwen3moe experts (llama.cpp: ffn_gate_inp {n_embd, n_expert}, ffn_*_exps).
      LLMS_RETURN_IF_ERROR(b.matrix(p + "ffn_gate_inp.weight", c.n_embd, c.n_expert, true, &L.ffn_gate_inp));
      LLMS_RETURN_IF_ERROR(b.experts(p + "ffn_gate_exps.weight", c.n_embd, c.n_ff_exp, c.n_expert, &L.gate_exps));
      LLMS_RETURN_IF_ERROR(b.experts(p + "ffn_up_exps.weight", c.n_embd, c.n_ff_exp, c.n_expert, &L.up_exps));
      LLMS_RETURN_IF_ERROR(b.experts(p + "ffn_down_exps.weight", c.n_ff_exp, c.n_embd, c.n_expert, &L.down_exps));
      if (L.ffn_gate_b || L.ffn_up_b || L.ffn_down_b || file->find_tensor(p + "ffn_gate.weight")) {
        return make_error(Code::GgufCorrupt, "block " + std::to_string(il) +
                                                 " has both dense FFN tensors and experts; re-convert the model");
      }
      continue;
    }
    if (phi3) {
      // Fused gate-up: ffn_up is [n_embd] -> [2 n_ff]; ggml_swiglu takes silu of the first half
      // (the gate) times the second (the up projection).
      MatrixView gu;
      LLMS_RETURN_IF_ERROR(b.matrix(p + "ffn_up.weight", c.n_embd, 2 * c.n_ff, true, &gu));
      LLMS_RETURN_IF_ERROR(check_fusable(p + "ffn_up.weight", gu));
      L.ffn_gate = row_view(gu, 0, c.n_ff), L.ffn_up = row_view(gu, c.n_ff, c.n_ff);
    } else {
      LLMS_RETURN_IF_ERROR(b.matrix(p + "ffn_gate.weight", c.n_embd, c.n_ff, true, &L.ffn_gate));
      LLMS_RETURN_IF_ERROR(b.matrix(p + "ffn_up.weight", c.n_embd, c.n_ff, true, &L.ffn_up));
    }
    LLMS_RETURN_IF_ERROR(b.matrix(p + "ffn_down.weight", c.n_ff, c.n_embd, true, &L.ffn_down));
  }

  m->file_ = std::move(file);
  *out = std::move(m);
  return Status::ok();
}

}  // namespace llmserve
