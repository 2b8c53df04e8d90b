// Truncated singular value decomposition in f64 for low-rank factorization (compress/factorize.h).
//   A [m, n] row-major ≈ U [m, k] · diag(s) · Vt [k, n], s descending.
// Two routes, both ending in a small symmetric eigenproblem solved by cyclic Jacobi rotations:
//   exact       (k large, or the sketch would be as wide as the matrix): the Gram matrix of the
//               shorter side (A·Aᵀ or Aᵀ·A, min(m, n)²) is diagonalized; the other side's vectors
//               are A's projections divided by s. Every singular value is found, so retained
//               energy is exact. Squaring the condition number only blurs singular values below
//               ~1e-8 of the largest, which truncation drops anyway.
//   randomized  (Halko, Martinsson & Tropp 2011): Q = orth(A·Ω) with `power` rounds of
//               orth(Aᵀ·Q), orth(A··) for a spectrum that decays slowly; then the exact route on
//               the small B = Qᵀ·A ([l, n], l = k + oversampling) and U = Q·U_B.
// Deterministic: Ω comes from a fixed-seed generator, and nothing depends on threads.
#pragma once
#include <cstdint>
#include <vector>

namespace llmserve {

struct SvdResult {
  int64_t k = 0;
  std::vector<double> u;   // [m, k] row-major
  std::vector<double> s;   // [k] descending, >= 0
  std::vector<double> vt;  // [k, n] row-major
};

// Eigen-decomposition of the symmetric g [n, n] (overwritten): eigenvalues descending into w,
// eigenvectors as the columns of v [n, n] row-major. Cyclic Jacobi until the off-diagonal mass is
// below 1e-15 of the whole (or 60 sweeps).
void symmetric_eigen(std::vector<double>& g, int64_t n, std::vector<double>* w, std::vector<double>* v);

// The top k singular triplets of a [m, n]; k in [1, min(m, n)]. oversample / power: the
// randomized route's extra columns and power iterations (the exact route when k + oversample >=
// min(m, n) / 2: there the sketch saves little).
void truncated_svd(const double* a, int64_t m, int64_t n, int64_t k, SvdResult* out, int64_t oversample = 10,
                   int power = 2);

// Every singular value of a (the exact route), descending.
std::vector<double> singular_values(const double* a, int64_t m, int64_t n);

}  // namespace llmserve
