#include "kv_rotation.h"

#include <cmath>

namespace llmserve {

void hadamard_blocks_f32(float* x, int64_t count, int64_t n) {
  const float scale = static_cast<float>(1.0 / static_cast<double>(sqrtf(static_cast<float>(n))));
  for (int64_t off = 0; off + n <= count; off += n) {
    float* p = x + off;
    for (int64_t h = 1; h < n; h <<= 1) {
      for (int64_t i = 0; i < n; i += 2 * h) {
        for (int64_t j = i; j < i + h; ++j) {
          const float a = p[j], b = p[j + h];
          p[j] = a + b;
          p[j + h] = a - b;
        }
      }
    }
    for (int64_t j = 0; j < n; ++j) p[j] *= scale;
  }
}

KvRotation kv_rotation(int64_t head_dim, GgmlType kv_type) {
  KvRotation r;
  if (kv_type != GgmlType::Q8_0 || head_dim % 64 != 0) return r;
  int64_t n = 64;
  while (head_dim % (2 * n) == 0) n *= 2;
  r.k = n;
  r.v = 64;
  return r;
}

}  // namespace llmserve
