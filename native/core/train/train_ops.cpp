#include "train_ops.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "../model/sparse24.h"
#include "../quant/quant.h"
#include "train_gemm.h"

namespace llmserve {

template <typename T>
void dequant_matrix(const MatrixView& m, std::vector<T>* out, ThreadPool& pool) {
  out->resize(static_cast<size_t>(m.n_out * m.n_in));
  T* dst = out->data();
  pool.parallel_for(
      m.n_out,
      [&](int64_t r0, int64_t r1) {
        std::vector<float> row(static_cast<size_t>(m.n_in));
        for (int64_t r = r0; r < r1; ++r) {
          // A 2:4 sparse matrix's rows hold n_in / 2 kept values and their positions, not n_in
          // elements of m.type: expand them (reading them as dense would run past each row).
          if (m.s24_idx)
            sparse24_decode_row(m.type, m.row(r),
                                m.s24_idx + static_cast<size_t>(r) * sparse24_index_bytes_per_row(m.n_in), m.n_in,
                                row.data());
          else dequantize_row(m.type, m.row(r), row.data(), m.n_in);
          std::copy(row.begin(), row.end(), dst + r * m.n_in);
        }
      },
      16);
}

// Σ a[i]·b[i] in 8 interleaved partial sums (lane i % 8), added in a fixed order at the end: the
// compiler can vectorize it without reassociating, and the result does not depend on threads.
template <typename T>
T dot8(const T* a, const T* b, int64_t k) {
  T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  for (; i < k; ++i) acc[i % 8] += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <typename T>
void mm_nt(const T* x, const T* w, int64_t n, int64_t k, int64_t m, T* y, ThreadPool& pool) {
  // f32 on an AVX2 / AVX-512 CPU: the blocked SIMD kernels (train_gemm.h), bit-identical to the
  // loop below, which stays the scalar reference (and the f64 path of the gradient checks).
  if constexpr (std::is_same_v<T, float>)
    if (train_gemm_tier() > 0) return train_mm_nt_f32(x, w, n, k, m, y, pool);
  pool.parallel_for(
      m,
      [&](int64_t o0, int64_t o1) {
        for (int64_t t = 0; t < n; ++t) {
          const T* xt = x + t * k;
          for (int64_t o = o0; o < o1; ++o) y[t * m + o] = dot8(xt, w + o * k, k);
        }
      },
      8);
}

template <typename T>
void mm_nn_acc(const T* dy, const T* w, int64_t n, int64_t m, int64_t k, T* dx, ThreadPool& pool) {
  if constexpr (std::is_same_v<T, float>)
    if (train_gemm_tier() > 0) return train_mm_nn_acc_f32(dy, w, n, m, k, dx, pool);
  // Tiles of 4 tokens share each row of w read from memory; every dx element still sums over o in
  // ascending order, so the result does not depend on the tiling or the threads.
  constexpr int64_t kTile = 4;
  pool.parallel_for((n + kTile - 1) / kTile, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t t0 = b * kTile, t1 = std::min(n, t0 + kTile);
      for (int64_t o = 0; o < m; ++o) {
        const T* wo = w + o * k;
        for (int64_t t = t0; t < t1; ++t) {
          const T g = dy[t * m + o];
          if (g == T(0)) continue;
          T* d = dx + t * k;
          for (int64_t i = 0; i < k; ++i) d[i] += g * wo[i];
        }
      }
    }
  });
}

template <typename T>
void mm_tn_acc(const T* dy, const T* x, int64_t n, int64_t m, int64_t k, T* g, ThreadPool& pool) {
  if constexpr (std::is_same_v<T, float>)
    if (train_gemm_tier() > 0) return train_mm_tn_acc_f32(dy, x, n, m, k, g, pool);
  // Tiles of 4 output rows share each x row read; every g element sums over t in ascending order.
  constexpr int64_t kTile = 4;
  pool.parallel_for((m + kTile - 1) / kTile, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t o0 = b * kTile, o1 = std::min(m, o0 + kTile);
      for (int64_t t = 0; t < n; ++t) {
        const T* xt = x + t * k;
        for (int64_t o = o0; o < o1; ++o) {
          const T d = dy[t * m + o];
          if (d == T(0)) continue;
          T* go = g + o * k;
          for (int64_t i = 0; i < k; ++i) go[i] += d * xt[i];
        }
      }
    }
  });
}

template <typename T>
void linear_fwd(const T* W, const float* bias, const T* A, const T* B, int64_t r, T s, const T* x, int64_t n,
                int64_t n_in, int64_t n_out, T* y, T* u, ThreadPool& pool) {
  mm_nt(x, W, n, n_in, n_out, y, pool);
  if (A) {
    mm_nt(x, A, n, n_in, r, u, pool);  // u [n, r]
    for (int64_t t = 0; t < n; ++t)
      for (int64_t o = 0; o < n_out; ++o) {
        T d = 0;
        for (int64_t j = 0; j < r; ++j) d += u[t * r + j] * B[o * r + j];
        y[t * n_out + o] += s * d;
      }
  }
  if (bias)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t o = 0; o < n_out; ++o) y[t * n_out + o] += bias[o];
}

template <typename T>
void linear_bwd(const T* W, const T* A, const T* B, int64_t r, T s, const T* x, const T* u, const T* dy, int64_t n,
                int64_t n_in, int64_t n_out, T* dx, T* dA, T* dB, std::vector<T>* du_tmp, ThreadPool& pool) {
  if (dx) mm_nn_acc(dy, W, n, n_out, n_in, dx, pool);
  if (!A) return;
  // du [n, r] = s·dy·B
  du_tmp->assign(static_cast<size_t>(n * r), T(0));
  T* du = du_tmp->data();
  mm_nn_acc(dy, B, n, n_out, r, du, pool);
  for (T& v : *du_tmp) v *= s;
  if (dx) mm_nn_acc(du, A, n, r, n_in, dx, pool);
  if (dA) mm_tn_acc(du, x, n, r, n_in, dA, pool);
  if (dB) {
    // dB [n_out, r] += s·dyᵀ·u
    pool.parallel_for(
        n_out,
        [&](int64_t o0, int64_t o1) {
          for (int64_t o = o0; o < o1; ++o)
            for (int64_t t = 0; t < n; ++t) {
              const T d = s * dy[t * n_out + o];
              for (int64_t j = 0; j < r; ++j) dB[o * r + j] += d * u[t * r + j];
            }
        },
        16);
  }
}

template <typename T>
void rmsnorm_fwd(const T* x, const float* w, int64_t rows, int64_t d, float eps, T* y, T* rstd) {
  for (int64_t t = 0; t < rows; ++t) {
    const T* xt = x + t * d;
    double ss = 0;  // in double, as ggml's rms_norm
    for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(xt[i]) * xt[i];
    const T rho = static_cast<T>(1.0 / std::sqrt(ss / static_cast<double>(d) + eps));
    rstd[t] = rho;
    for (int64_t i = 0; i < d; ++i) y[t * d + i] = xt[i] * rho * w[i];
  }
}

template <typename T>
void rmsnorm_bwd(const T* x, const float* w, const T* rstd, const T* dy, int64_t rows, int64_t d, T* dx) {
  for (int64_t t = 0; t < rows; ++t) {
    const T* xt = x + t * d;
    const T* g = dy + t * d;
    const T rho = rstd[t];
    T dot = 0;  // Σ g·w·x
    for (int64_t i = 0; i < d; ++i) dot += g[i] * w[i] * xt[i];
    const T c = rho * rho * rho * dot / static_cast<T>(d);
    for (int64_t i = 0; i < d; ++i) dx[t * d + i] += rho * g[i] * w[i] - xt[i] * c;
  }
}

template <typename T>
void rope(T* x, int64_t n, int64_t heads, int64_t head_dim, int64_t n_rot, int rope_type, const float* cache,
          bool inverse) {
  const bool neox = rope_type == 2;
  const int64_t off = neox ? n_rot / 2 : 1;
  for (int64_t t = 0; t < n; ++t) {
    const float* row = cache + t * n_rot;
    for (int64_t h = 0; h < heads; ++h) {
      T* xh = x + (t * heads + h) * head_dim;
      for (int64_t i0 = 0; i0 < n_rot; i0 += 2) {
        const T c = row[i0], sn = inverse ? -row[i0 + 1] : row[i0 + 1];
        T* p = xh + (neox ? i0 / 2 : i0);
        const T x0 = p[0], x1 = p[off];
        p[0] = x0 * c - x1 * sn;
        p[off] = x0 * sn + x1 * c;
      }
    }
  }
}

template <typename T>
void attention_fwd(const T* q, const T* k, const T* v, int64_t n, int64_t H, int64_t Hkv, int64_t D, T* P, T* o,
                   ThreadPool& pool) {
  const int64_t gqa = H / Hkv;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(D)));
  pool.parallel_for(H, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t kh = h / gqa;
      for (int64_t t = 0; t < n; ++t) {
        T* p = P + (h * n + t) * n;
        const T* qt = q + (t * H + h) * D;
        T mx = -INFINITY;
        for (int64_t j = 0; j <= t; ++j) {
          // dot8: 8 independent partial sums (vectorized, a fixed order) instead of one serial chain.
          p[j] = dot8(qt, k + (j * Hkv + kh) * D, D) * scale;
          mx = std::max(mx, p[j]);
        }
        T sum = 0;
        for (int64_t j = 0; j <= t; ++j) sum += (p[j] = std::exp(p[j] - mx));
        for (int64_t j = 0; j <= t; ++j) p[j] /= sum;
        for (int64_t j = t + 1; j < n; ++j) p[j] = 0;
        T* ot = o + (t * H + h) * D;
        std::fill(ot, ot + D, T(0));
        for (int64_t j = 0; j <= t; ++j) {
          const T* vj = v + (j * Hkv + kh) * D;
          for (int64_t i = 0; i < D; ++i) ot[i] += p[j] * vj[i];
        }
      }
    }
  });
}

template <typename T>
void attention_bwd(const T* q, const T* k, const T* v, const T* P, const T* dout, int64_t n, int64_t H, int64_t Hkv,
                   int64_t D, T* dq, T* dk, T* dv, ThreadPool& pool) {
  const int64_t gqa = H / Hkv;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(D)));
  pool.parallel_for(Hkv, [&](int64_t k0, int64_t k1) {
    std::vector<T> dS(static_cast<size_t>(n));
    for (int64_t kh = k0; kh < k1; ++kh) {
      for (int64_t h = kh * gqa; h < (kh + 1) * gqa; ++h) {
        for (int64_t t = 0; t < n; ++t) {
          const T* p = P + (h * n + t) * n;
          const T* dot_ = dout + (t * H + h) * D;
          const T* qt = q + (t * H + h) * D;
          T* dqt = dq + (t * H + h) * D;
          T rowsum = 0;
          for (int64_t j = 0; j <= t; ++j) {
            const T* vj = v + (j * Hkv + kh) * D;
            const T dp = dot8(dot_, vj, D);
            dS[j] = dp;
            rowsum += p[j] * dp;
            T* dvj = dv + (j * Hkv + kh) * D;
            for (int64_t i = 0; i < D; ++i) dvj[i] += p[j] * dot_[i];
          }
          for (int64_t j = 0; j <= t; ++j) {
            const T ds = p[j] * (dS[j] - rowsum) * scale;
            const T* kj = k + (j * Hkv + kh) * D;
            T* dkj = dk + (j * Hkv + kh) * D;
            for (int64_t i = 0; i < D; ++i) {
              dqt[i] += ds * kj[i];
              dkj[i] += ds * qt[i];
            }
          }
        }
      }
    }
  });
}

template <typename T>
void swiglu_fwd(const T* g, const T* u, int64_t count, T* h) {
  for (int64_t i = 0; i < count; ++i) h[i] = g[i] / (T(1) + std::exp(-g[i])) * u[i];
}

template <typename T>
void swiglu_bwd(const T* g, const T* u, const T* dh, int64_t count, T* dg, T* du) {
  for (int64_t i = 0; i < count; ++i) {
    const T sg = T(1) / (T(1) + std::exp(-g[i]));
    dg[i] += dh[i] * u[i] * sg * (T(1) + g[i] * (T(1) - sg));
    du[i] += dh[i] * g[i] * sg;
  }
}

template <typename T>
double cross_entropy(const T* logits, const int32_t* labels, int64_t n, int64_t V, double weight, T* dlogits,
                     ThreadPool& pool) {
  std::vector<double> nll(static_cast<size_t>(n), 0.0);
  pool.parallel_for(n, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const T* z = logits + t * V;
      T* dz = dlogits ? dlogits + t * V : nullptr;
      if (labels[t] < 0) {
        if (dz) std::fill(dz, dz + V, T(0));
        continue;
      }
      double mx = -INFINITY, sum = 0;  // log-sum-exp in double: the loss is what the user reads
      for (int64_t i = 0; i < V; ++i) mx = std::max(mx, static_cast<double>(z[i]));
      for (int64_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(z[i]) - mx);
      const double lse = mx + std::log(sum);
      nll[static_cast<size_t>(t)] = lse - static_cast<double>(z[labels[t]]);
      if (!dz) continue;
      for (int64_t i = 0; i < V; ++i) dz[i] = static_cast<T>(weight * std::exp(static_cast<double>(z[i]) - lse));
      dz[labels[t]] -= static_cast<T>(weight);
    }
  });
  double total = 0;
  for (double v : nll) total += v;  // fixed order: same loss for any thread count
  return total;
}

#define LLMSERVE_TRAIN_OPS(T)                                                                                          \
  template void dequant_matrix<T>(const MatrixView&, std::vector<T>*, ThreadPool&);                                    \
  template void mm_nt<T>(const T*, const T*, int64_t, int64_t, int64_t, T*, ThreadPool&);                              \
  template void mm_nn_acc<T>(const T*, const T*, int64_t, int64_t, int64_t, T*, ThreadPool&);                          \
  template void mm_tn_acc<T>(const T*, const T*, int64_t, int64_t, int64_t, T*, ThreadPool&);                          \
  template void linear_fwd<T>(const T*, const float*, const T*, const T*, int64_t, T, const T*, int64_t, int64_t,      \
                              int64_t, T*, T*, ThreadPool&);                                                           \
  template void linear_bwd<T>(const T*, const T*, const T*, int64_t, T, const T*, const T*, const T*, int64_t,         \
                              int64_t, int64_t, T*, T*, T*, std::vector<T>*, ThreadPool&);                             \
  template void rmsnorm_fwd<T>(const T*, const float*, int64_t, int64_t, float, T*, T*);                               \
  template void rmsnorm_bwd<T>(const T*, const float*, const T*, const T*, int64_t, int64_t, T*);                      \
  template void rope<T>(T*, int64_t, int64_t, int64_t, int64_t, int, const float*, bool);                              \
  template void attention_fwd<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, int64_t, T*, T*,             \
                                 ThreadPool&);                                                                         \
  template void attention_bwd<T>(const T*, const T*, const T*, const T*, const T*, int64_t, int64_t, int64_t, int64_t, \
                                 T*, T*, T*, ThreadPool&);                                                             \
  template void swiglu_fwd<T>(const T*, const T*, int64_t, T*);                                                        \
  template void swiglu_bwd<T>(const T*, const T*, const T*, int64_t, T*, T*);                                          \
  template double cross_entropy<T>(const T*, const int32_t*, int64_t, int64_t, double, T*, ThreadPool&);

LLMSERVE_TRAIN_OPS(float)
LLMSERVE_TRAIN_OPS(double)

}  // namespace llmserve
