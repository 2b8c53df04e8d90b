// Low-rank factorization of a GGUF model's layer matrices: W [n_out, n_in] ≈ U·V with U [n_out, r]
// and V [r, n_in] from a truncated SVD (compress/svd.h), optionally plus a sparse residual S
// holding the largest entries of W - U·V (a fraction of the matrix), written in llmserve's
// factored format (model/factored.h, docs/sparse-formats.md) that only llmserve loads.
//   rank:   the same r for every selected matrix (r <= min(n_in, n_out))
//   energy: per matrix the smallest r whose squared singular values keep that fraction of the
//           total (of the whitened matrix when activation-aware)
//   activation-aware: columns scaled by d_j = sqrt(mean over tokens of x_j²) (calibration
//           statistics, calib.h) before the SVD and V's columns divided by d_j after, so the
//           truncation minimizes the error of W·x on the calibration activations rather than of W;
//           the residual then keeps the entries of largest |R_ij|·d_j.
// The factors are split evenly (U·sqrt(s), sqrt(s)·V) and stored in f16 (f32 when a value would
// overflow f16); the residual is taken against the rounded factors, so S also corrects their
// rounding. A matrix whose factored bytes would not be smaller than its dense bytes stays dense
// (a note names it).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "../quant/quant.h"
#include "../status.h"
#include "calib.h"

namespace llmserve {

struct LowRankOptions {
  int64_t rank = 0;                   // > 0: this rank everywhere (exclusive with energy)
  double energy = 0;                  // in (0, 1]: per-matrix rank by retained energy
  double sparse = 0;                  // in [0, 1): fraction of each matrix's entries kept as the residual S
  bool activation_aware = false;      // needs calibration statistics
  bool keep_unprofitable = false;     // factor a matrix even when it saves no bytes (tests)
  std::vector<std::string> patterns;  // as PruneOptions::patterns
  int threads = 0;
};

// One matrix's factors, row-major: v [r, n_in], ut [r, n_out] (the stored values: f16-rounded
// when f16), and the CSR residual (empty when none).
struct Factorization {
  int64_t r = 0;
  bool f16 = true;
  std::vector<float> v, ut;
  std::vector<int32_t> ptr, col;
  std::vector<uint16_t> val;
  double rel_error = 0;  // ||W - (U·V + S)||_F / ||W||_F
  double energy = 0;     // retained fraction of the (whitened) squared singular values
};

// Factors w [n_out, n_in] (f32) by opt (rank or energy, sparse; col_sumsq [n_in] and tokens:
// whitening when non-null). rank <= min(n_in, n_out) (plan_lowrank checks).
void factorize_matrix(const float* w, int64_t n_out, int64_t n_in, const LowRankOptions& opt, const double* col_sumsq,
                      int64_t tokens, Factorization* out);

// File bytes of a factorization's tensors (without GGUF padding).
uint64_t factorization_bytes(int64_t r, bool f16, int64_t n_in, int64_t n_out, int64_t nnz);

struct FactoredTensorInfo {
  std::string name;
  bool factored = false;  // false: kept dense (no saving)
  int64_t rank = 0;
  int64_t nnz = 0;  // residual entries
  uint64_t dense_bytes = 0, bytes = 0;
  double rel_error = 0, energy = 0;
};

struct LowRankResult {
  std::vector<FactoredTensorInfo> tensors;  // the selected ones, in file order
  std::vector<std::string> notes;
  uint64_t input_bytes = 0, output_bytes = 0;
};

// Every check before any work: rank >= 1 xor energy in (0, 1], sparse in [0, 1), patterns match,
// selected rows a multiple of 8 (the kernels' width), rank <= min(n_in, n_out), types llmserve
// converts. Errors: the reader's, InvalidArgument (saying what to do), UnsupportedType.
Status plan_lowrank(const std::string& in_path, const LowRankOptions& opt, std::vector<std::string>* selected);

// Writes out_path (atomically; nothing on error or cancel) with the selected matrices factored.
// stats: required when activation_aware. Quantized inputs are dequantized first.
Status lowrank_model(const std::string& in_path, const std::string& out_path, const LowRankOptions& opt,
                     const ActivationStats* stats, const std::function<void(double)>& progress,
                     const std::atomic<bool>* cancel, LowRankResult* result);

}  // namespace llmserve
