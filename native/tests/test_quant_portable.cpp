// Quantized bytes are the same on every platform. The digests below are of quantize_row's output
// on x86-64, where test_quant_ggml.cpp checks those same quantizers byte for byte against ggml's own;
// this test then holds every other platform (arm64 under scripts/check-arm64.mjs) to the x86
// bytes. It caught arm64 builds fusing a*b+c in the k-quant search (Q2_K and Q4_K differed), fixed by
// -ffp-contract=off off x86 (CMakeLists.txt).
#include <cmath>
#include <cstdint>
#include <vector>

#include "quant/quant.h"
#include "testing.h"

using namespace llmserve;

TEST(quant_bytes_equal_the_x86_reference_on_this_platform) {
  struct Case {
    GgmlType type;
    uint64_t fnv1a;
  };
  const Case cases[] = {
      {GgmlType::Q4_0, 0xc00d8368a40dc3f8ULL},   {GgmlType::Q4_1, 0xa8da2dfda66e6426ULL},
      {GgmlType::Q5_0, 0x8e9ad39712f25298ULL},   {GgmlType::Q5_1, 0xe80bd6072103dae5ULL},
      {GgmlType::Q8_0, 0xd66c02d2ab9e2785ULL},   {GgmlType::Q2_K, 0x01044ce15e07fbf7ULL},
      {GgmlType::Q3_K, 0xf4b6199efa81eee4ULL},   {GgmlType::Q4_K, 0x45985051907ba09aULL},
      {GgmlType::Q5_K, 0x1fe03363cb00b6baULL},   {GgmlType::Q6_K, 0xdb126b65672c61c8ULL},
      {GgmlType::IQ4_NL, 0xb561b772c82c11b4ULL}, {GgmlType::IQ4_XS, 0xa6cff3277516aa74ULL},
  };
  // 128 super-blocks of values spanning seven binades (fewer did not show the arm64 difference), (a fixed LCG: the same input everywhere).
  const int64_t n = 256 * 128;
  std::vector<float> x(n);
  uint64_t s = 12345;
  for (float& v : x) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    // ldexp, not exp: exact on every libm.
    v = std::ldexp(static_cast<float>(static_cast<double>(s >> 11) / 9007199254740992.0 - 0.5),
                   static_cast<int>((s >> 3) % 7) - 3);
  }
  for (const Case& c : cases) {
    std::vector<uint8_t> y(static_cast<size_t>(n) * 4);
    quantize_row(c.type, x.data(), y.data(), n);
    uint64_t h = 1469598103934665603ULL;
    for (uint8_t b : y) {
      h ^= b;
      h *= 1099511628211ULL;
    }
    if (h != c.fnv1a)
      std::fprintf(stderr, "  type %d: digest %016llx\n", static_cast<int>(c.type), (unsigned long long)h);
    CHECK(h == c.fnv1a);
  }
}
