// Truncated SVD (svd.h): Gram matrix + Jacobi eigensolver, with a randomized range finder for
// small ranks of large matrices. All arithmetic in f64.
#include "svd.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "svd_gemm.h"

namespace llmserve {
namespace {

// Singular values below this fraction of the largest are taken as zero: the Gram route resolves
// them only to ~sqrt(f64 epsilon) = 1.5e-8 of the largest, so smaller ones are rounding noise.
constexpr double kZeroSingular = 1e-7;

double dot(const double* a, const double* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy(double a, const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// Orthonormalizes the l rows (each of length n) of q in place by modified Gram-Schmidt, twice
// (one pass loses orthogonality when the rows are nearly dependent). A row with nothing left
// becomes zero: it then only adds a zero singular value.
void orthonormalize_rows(std::vector<double>& q, int64_t l, int64_t n) {
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t i = 0; i < l; ++i) {
      double* qi = q.data() + i * n;
      const double before = std::sqrt(dot(qi, qi, n));
      for (int64_t j = 0; j < i; ++j) {
        const double* qj = q.data() + j * n;
        axpy(-dot(qi, qj, n), qj, qi, n);
      }
      const double nrm = std::sqrt(dot(qi, qi, n));
      // Relative to the row's own size: 1e-12 of it left means the row was in the span already.
      if (nrm <= 1e-12 * before || nrm == 0) {
        std::fill(qi, qi + n, 0.0);
        continue;
      }
      for (int64_t c = 0; c < n; ++c) qi[c] /= nrm;
    }
  }
}

// Sizes out for k triplets of an [m, n] matrix, all zero, then fills each triplet whose singular
// value s_i = sqrt(w_i) (w: the Gram matrix's eigenvalues, largest first) is above the zero
// tolerance: set(i, s_i) writes column i of u and row i of vt. Below it the triplet stays zero.
template <class SetTriplet>
void fill_triplets(const std::vector<double>& w, int64_t m, int64_t n, int64_t k, SvdResult* out,
                   const SetTriplet& set) {
  out->k = k;
  out->s.assign(static_cast<size_t>(k), 0.0);
  out->u.assign(static_cast<size_t>(m * k), 0.0);
  out->vt.assign(static_cast<size_t>(k * n), 0.0);
  const double tol = kZeroSingular * std::sqrt(std::max(0.0, w[0]));
  for (int64_t i = 0; i < k; ++i) {
    const double s = std::sqrt(std::max(0.0, w[i]));
    if (!(s > tol)) continue;  // nothing left: a zero triplet
    out->s[i] = s;
    set(i, s);
  }
}

// The exact route for a [m, n] with m <= n: eigenvectors of A·Aᵀ are U; Vt rows = uᵀ·A / s.
void svd_wide(const double* a, int64_t m, int64_t n, int64_t k, SvdResult* out) {
  std::vector<double> g(static_cast<size_t>(m * m));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j <= i; ++j) g[i * m + j] = g[j * m + i] = dot(a + i * n, a + j * n, n);
  std::vector<double> w, v;
  symmetric_eigen(g, m, &w, &v);
  fill_triplets(w, m, n, k, out, [&](int64_t i, double s) {
    double* vi = out->vt.data() + i * n;
    for (int64_t r = 0; r < m; ++r) {
      out->u[r * k + i] = v[r * m + i];
      axpy(v[r * m + i] / s, a + r * n, vi, n);
    }
  });
}

// The exact route for m > n: eigenvectors of Aᵀ·A are V; U columns = A·v / s.
void svd_tall(const double* a, int64_t m, int64_t n, int64_t k, SvdResult* out) {
  std::vector<double> g(static_cast<size_t>(n * n), 0.0);
  for (int64_t r = 0; r < m; ++r) {
    const double* ar = a + r * n;
    for (int64_t i = 0; i < n; ++i) axpy(ar[i], ar, g.data() + i * n, i + 1);
  }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < i; ++j) g[j * n + i] = g[i * n + j];
  std::vector<double> w, v;
  symmetric_eigen(g, n, &w, &v);
  fill_triplets(w, m, n, k, out, [&](int64_t i, double s) {
    double* vi = out->vt.data() + i * n;
    for (int64_t c = 0; c < n; ++c) vi[c] = v[c * n + i];
    for (int64_t r = 0; r < m; ++r) out->u[r * k + i] = dot(a + r * n, vi, n) / s;
  });
}

void svd_exact(const double* a, int64_t m, int64_t n, int64_t k, SvdResult* out) {
  if (m <= n) svd_wide(a, m, n, k, out);
  else svd_tall(a, m, n, k, out);
}

// A fixed-seed generator (splitmix64) of uniform values in [-1, 1): the sketch only needs
// directions in general position, not Gaussian ones.
struct Rng {
  uint64_t s;
  double next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * (2.0 / 9007199254740992.0) - 1.0;
  }
};

}  // namespace

void symmetric_eigen(std::vector<double>& g, int64_t n, std::vector<double>* w, std::vector<double>* v) {
  std::vector<double>& V = *v;
  V.assign(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) V[i * n + i] = 1.0;
  double total = 0;
  for (double x : g) total += x * x;
  for (int sweep = 0; sweep < 60; ++sweep) {
    double off = 0;
    for (int64_t p = 0; p < n; ++p)
      for (int64_t q = p + 1; q < n; ++q) off += 2 * g[p * n + q] * g[p * n + q];
    if (off <= 1e-30 * total || off == 0) break;
    for (int64_t p = 0; p < n; ++p) {
      for (int64_t q = p + 1; q < n; ++q) {
        const double gpq = g[p * n + q];
        if (std::fabs(gpq) < 1e-300) continue;
        // The rotation [[c, s], [-s, c]] in the (p, q) plane that zeroes g[p, q]: t = tan(angle)
        // is the smaller root of t² + 2·theta·t - 1 = 0.
        const double theta = (g[q * n + q] - g[p * n + p]) / (2 * gpq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int64_t k = 0; k < n; ++k) {  // columns p, q
          const double a = g[k * n + p], b = g[k * n + q];
          g[k * n + p] = c * a - s * b;
          g[k * n + q] = s * a + c * b;
        }
        for (int64_t k = 0; k < n; ++k) {  // rows p, q
          const double a = g[p * n + k], b = g[q * n + k];
          g[p * n + k] = c * a - s * b;
          g[q * n + k] = s * a + c * b;
        }
        for (int64_t k = 0; k < n; ++k) {
          const double a = V[k * n + p], b = V[k * n + q];
          V[k * n + p] = c * a - s * b;
          V[k * n + q] = s * a + c * b;
        }
      }
    }
  }
  // Sort descending (ties: the lower index first), permuting V's columns alike.
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return g[a * n + a] > g[b * n + b]; });
  w->resize(static_cast<size_t>(n));
  std::vector<double> sorted(static_cast<size_t>(n * n));
  for (int64_t j = 0; j < n; ++j) {
    (*w)[j] = g[order[j] * n + order[j]];
    for (int64_t i = 0; i < n; ++i) sorted[i * n + j] = V[i * n + order[j]];
  }
  V.swap(sorted);
}

void truncated_svd(const double* a, int64_t m, int64_t n, int64_t k, SvdResult* out, int64_t oversample, int power) {
  const int64_t mn = std::min(m, n);
  k = std::max<int64_t>(1, std::min(k, mn));
  const int64_t l = std::min(mn, k + std::max<int64_t>(0, oversample));
  if (2 * l >= mn) return svd_exact(a, m, n, k, out);
  // Qt [l, m]: orthonormal rows spanning (nearly) the top-l column space of A.
  std::vector<double> omega(static_cast<size_t>(l * n)), qt(static_cast<size_t>(l * m)), zt(static_cast<size_t>(l * n));
  Rng rng{0x5EED5EEDull + static_cast<uint64_t>(m * 131 + n)};
  for (double& x : omega) x = rng.next();
  // The products run as svd_nn (blocked; each element summed in the order of a plain dot
  // product over A's rows): A is streamed once per product instead of once per sketch row.
  std::vector<double> at(static_cast<size_t>(n * m));  // Aᵀ [n, m]
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < n; ++c) at[c * m + r] = a[r * n + c];
  const auto times_a = [&](const std::vector<double>& rows_n, std::vector<double>& rows_m) {  // (A·x) per row
    svd_nn(rows_n.data(), l, n, at.data(), m, rows_m.data());
  };
  const auto times_at = [&](const std::vector<double>& rows_m, std::vector<double>& rows_n) {  // (Aᵀ·q) per row
    svd_nn(rows_m.data(), l, m, a, n, rows_n.data());
  };
  times_a(omega, qt);
  orthonormalize_rows(qt, l, m);
  for (int it = 0; it < power; ++it) {
    times_at(qt, zt);
    orthonormalize_rows(zt, l, n);
    times_a(zt, qt);
    orthonormalize_rows(qt, l, m);
  }
  times_at(qt, zt);  // B = Qᵀ·A [l, n]
  SvdResult small;
  svd_exact(zt.data(), l, n, k, &small);
  out->k = k;
  out->s = std::move(small.s);
  out->vt = std::move(small.vt);
  out->u.assign(static_cast<size_t>(m * k), 0.0);
  svd_nn_qt(qt.data(), m, l, small.u.data(), k, out->u.data());  // U = Q·U_B
}

std::vector<double> singular_values(const double* a, int64_t m, int64_t n) {
  SvdResult r;
  svd_exact(a, m, n, std::min(m, n), &r);
  return r.s;
}

}  // namespace llmserve
