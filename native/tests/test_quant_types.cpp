// Known-block and round-trip tests of the weight types added after the first seven: Q4_1, Q5_0,
// Q5_1, IQ4_NL, Q2_K, Q3_K, Q5_K, IQ4_XS (and the Q8_1 activations). Each known block is packed here
// from the GGUF spec's description of its layout (not with our quantizer), and the expected floats
// are computed from the spec's formula; a few literal values pin the arithmetic down. Round trips
// (quantize_row_ref -> dequantize_row_ref) on unit Gaussian rows stay within documented bounds.
// (Bit-exactness with ggml itself: test_quant_ggml.cpp.)
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "quant/quant.h"
#include "quant/quant_impl.h"
#include "testing.h"

using namespace llmserve;

namespace {

using Bytes = std::vector<uint8_t>;

void put16(uint8_t* p, float v) {
  const uint16_t h = fp32_to_fp16(v);
  std::memcpy(p, &h, 2);
}

std::vector<float> deq(GgmlType t, const uint8_t* b, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n));
  dequantize_row_ref(t, b, y.data(), n);
  return y;
}

const int8_t kGrid[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// 32 values (0..15 or 0..31) -> qs[16] (element j low nibble of byte j, j+16 high) and qh (bit j).
void pack32(const int* q, uint8_t* qs, uint8_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = static_cast<uint8_t>((q[j] & 15) | ((q[j + 16] & 15) << 4));
    h |= static_cast<uint32_t>(q[j] >> 4) << j;
    h |= static_cast<uint32_t>(q[j + 16] >> 4) << (j + 16);
  }
  if (qh) std::memcpy(qh, &h, 4);
}

// 256 2-bit values -> 64 bytes: element 128h + 32k + l in bits 2k of byte 32h + l.
void pack2bit(const int* q, uint8_t* qs) {
  std::memset(qs, 0, 64);
  for (int e = 0; e < 256; ++e)
    qs[32 * (e / 128) + e % 32] |= static_cast<uint8_t>((q[e] & 3) << (2 * ((e % 128) / 32)));
}

}  // namespace

TEST(quant_q4_1_known_block) {
  uint8_t blk[20];
  put16(blk, 0.5f);
  put16(blk + 2, -2.0f);
  int q[32];
  for (int j = 0; j < 32; ++j) q[j] = j < 16 ? j : 31 - j;
  pack32(q, blk + 4, nullptr);
  std::vector<float> y = deq(GgmlType::Q4_1, blk, 32);
  bool ok = true;
  for (int j = 0; j < 32; ++j) ok &= y[j] == q[j] * 0.5f - 2.0f;
  CHECK(ok);
  CHECK_EQ(y[0], -2.0f);
  CHECK_EQ(y[15], 5.5f);
  CHECK_EQ(y[16], 5.5f);
  // Quantizer: x = j - 16 -> m = -16, d = 31/15 (f16 0x4022), q = trunc((x + 16)/d + 0.5) capped at 15.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
  Bytes b(20);
  quantize_row_ref(GgmlType::Q4_1, x.data(), b.data(), 32);
  CHECK_EQ(b[0] | (b[1] << 8), 0x4022);
  CHECK_EQ(b[2] | (b[3] << 8), 0xCC00);  // -16
  CHECK_EQ(b[4] & 0xF, 0);               // x = -16
  CHECK_EQ(b[4 + 1] & 0xF, 0);           // x = -15: trunc(0.48 + 0.5) = 0
  CHECK_EQ(b[4 + 2] & 0xF, 1);           // x = -14: trunc(0.97 + 0.5) = 1
  CHECK_EQ(b[4 + 15] >> 4, 15);          // x = 15
}

TEST(quant_q5_0_known_block) {
  // Literal bits: qs[0] = 0x21 (element 0 low nibble 1, element 16 high nibble 2), qh bit 0 and
  // bit 16 set; d = 1.
  uint8_t blk[22] = {};
  put16(blk, 1.0f);
  blk[2] = 0x01;
  blk[4] = 0x01;  // qh bits 0 and 16 (little-endian u32)
  blk[6] = 0x21;
  std::vector<float> y = deq(GgmlType::Q5_0, blk, 32);
  CHECK_EQ(y[0], 1.0f);    // (1 | 16) - 16
  CHECK_EQ(y[16], 2.0f);   // (2 | 16) - 16
  CHECK_EQ(y[1], -16.0f);  // 0 - 16
  CHECK_EQ(y[17], -16.0f);
  // Every value: q(j) = (7j + 3) % 32, d = 0.25.
  int q[32];
  for (int j = 0; j < 32; ++j) q[j] = (7 * j + 3) % 32;
  put16(blk, 0.25f);
  pack32(q, blk + 6, blk + 2);
  y = deq(GgmlType::Q5_0, blk, 32);
  bool ok = true;
  for (int j = 0; j < 32; ++j) ok &= y[j] == (q[j] - 16) * 0.25f;
  CHECK(ok);
  // Quantizer: largest magnitude -16 -> d = 1, q = min(31, trunc(x + 16.5)).
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
  Bytes b(22);
  quantize_row_ref(GgmlType::Q5_0, x.data(), b.data(), 32);
  CHECK_EQ(b[0] | (b[1] << 8), 0x3C00);
  y = deq(GgmlType::Q5_0, b.data(), 32);
  ok = true;
  for (int j = 0; j < 32; ++j) ok &= y[j] == x[j];  // every integer in [-16, 15] is exact
  CHECK(ok);
}

TEST(quant_q5_1_known_block) {
  uint8_t blk[24] = {};
  put16(blk, 0.5f);
  put16(blk + 2, 0.25f);
  int q[32];
  for (int j = 0; j < 32; ++j) q[j] = (5 * j + 3) % 32;
  pack32(q, blk + 8, blk + 4);
  std::vector<float> y = deq(GgmlType::Q5_1, blk, 32);
  bool ok = true;
  for (int j = 0; j < 32; ++j) ok &= y[j] == q[j] * 0.5f + 0.25f;
  CHECK(ok);
  CHECK_EQ(y[0], 1.75f);    // q = 3
  CHECK_EQ(y[6], 0.75f);    // q = 33 % 32 = 1
  CHECK_EQ(y[31], 15.25f);  // q = 158 % 32 = 30
}

TEST(quant_q8_1_known_block) {
  // amax 127: d = 1, id = 1, halves round to even; s = d * sum(qs).
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;
  x[1] = 2.5f;
  x[2] = -3.5f;
  x[3] = -0.5f;
  Bytes b(36);
  quantize_row_ref(GgmlType::Q8_1, x.data(), b.data(), 32);
  CHECK_EQ(b[0] | (b[1] << 8), 0x3C00);
  CHECK_EQ(static_cast<int8_t>(b[4]), 127);
  CHECK_EQ(static_cast<int8_t>(b[5]), 2);
  CHECK_EQ(static_cast<int8_t>(b[6]), -4);
  CHECK_EQ(static_cast<int8_t>(b[7]), 0);
  CHECK_EQ(fp16_to_fp32(static_cast<uint16_t>(b[2] | (b[3] << 8))), 125.0f);  // 127 + 2 - 4
}

TEST(quant_iq4_nl_known_block) {
  uint8_t blk[18];
  put16(blk, 2.0f);
  for (int j = 0; j < 16; ++j) blk[2 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  std::vector<float> y = deq(GgmlType::IQ4_NL, blk, 32);
  bool ok = true;
  for (int j = 0; j < 16; ++j) ok &= y[j] == 2.0f * kGrid[j] && y[16 + j] == 2.0f * kGrid[15 - j];
  CHECK(ok);
  CHECK_EQ(y[0], -254.0f);
  CHECK_EQ(y[8], 2.0f);
  CHECK_EQ(y[16], 226.0f);
  // Quantizer: values already on the grid (times 0.5) come back exactly.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = 0.5f * kGrid[(j * 5) % 16];
  Bytes b(18);
  quantize_row_ref(GgmlType::IQ4_NL, x.data(), b.data(), 32);
  y = deq(GgmlType::IQ4_NL, b.data(), 32);
  CHECK(y == x);
}

TEST(quant_q2_K_known_block) {
  // scales[g]: scale g % 16 in the low nibble, min 15 - g in the high; d = 0.5, dmin = 0.25;
  // q(e) = (e * 3 + e / 64) % 4.
  uint8_t blk[84] = {};
  int q[256];
  for (int e = 0; e < 256; ++e) q[e] = (e * 3 + e / 64) % 4;
  for (int g = 0; g < 16; ++g) blk[g] = static_cast<uint8_t>(g | ((15 - g) << 4));
  pack2bit(q, blk + 16);
  put16(blk + 80, 0.5f);
  put16(blk + 82, 0.25f);
  std::vector<float> y = deq(GgmlType::Q2_K, blk, 256);
  bool ok = true;
  for (int e = 0; e < 256; ++e) ok &= y[e] == 0.5f * (e / 16) * q[e] - 0.25f * (15 - e / 16);
  CHECK(ok);
  CHECK_EQ(y[0], -3.75f);    // group 0: scale 0, min 15
  CHECK_EQ(y[17], -2.0f);    // group 1: q = 3: 0.5 * 1 * 3 - 0.25 * 14
  CHECK_EQ(y[130], -1.75f);  // group 8: q = 0: -0.25 * 7
  CHECK_EQ(y[254], 7.5f);    // group 15: q = 1: 0.5 * 15 * 1 - 0
}

TEST(quant_q3_K_known_block) {
  // Group scales s_g = 32 + (g - 8) * 3 (6 bits, packed as the spec says: low nibbles in bytes
  // 0..7 (g < 8 low, g >= 8 high nibble of byte g - 8), top 2 bits in byte 8 + g % 4 at 2 * (g / 4));
  // third bit set for even elements; 2-bit q(e) = e % 4; d = 0.5.
  uint8_t blk[110] = {};
  int q[256];
  for (int e = 0; e < 256; ++e) q[e] = e % 4;
  uint8_t* hmask = blk;
  uint8_t* scales = blk + 96;
  for (int e = 0; e < 256; e += 2) hmask[e % 32] |= static_cast<uint8_t>(1 << (e / 32));
  pack2bit(q, blk + 32);
  int s[16];
  for (int g = 0; g < 16; ++g) {
    s[g] = 32 + (g - 8) * 3;
    if (g < 8) scales[g] |= static_cast<uint8_t>(s[g] & 15);
    else scales[g - 8] |= static_cast<uint8_t>((s[g] & 15) << 4);
    scales[8 + g % 4] |= static_cast<uint8_t>((s[g] >> 4) << (2 * (g / 4)));
  }
  put16(blk + 108, 0.5f);
  int8_t unpacked[16];
  quant::unpack_q3_K_scales(scales, unpacked);
  bool ok = true;
  for (int g = 0; g < 16; ++g) ok &= unpacked[g] == s[g] - 32;
  CHECK(ok);
  std::vector<float> y = deq(GgmlType::Q3_K, blk, 256);
  ok = true;
  for (int e = 0; e < 256; ++e) ok &= y[e] == 0.5f * (s[e / 16] - 32) * (q[e] - (e % 2 == 0 ? 0 : 4));
  CHECK(ok);
  CHECK_EQ(y[0], 0.0f);      // q = 0, bit set
  CHECK_EQ(y[1], 36.0f);     // group 0: 0.5 * -24 * (1 - 4)
  CHECK_EQ(y[255], -10.5f);  // group 15: 0.5 * 21 * (3 - 4)
}

TEST(quant_q5_K_known_block) {
  // Q4_K's scale packing (sc = {1,10,33,63,5,40,17,62}, m = {0,2,63,31,48,7,1,60}), d = 1,
  // dmin = 0.5, q5(e) = (e * 7) % 32.
  const int sc[8] = {1, 10, 33, 63, 5, 40, 17, 62};
  const int mn[8] = {0, 2, 63, 31, 48, 7, 1, 60};
  const uint8_t packed[12] = {0x01, 0x8A, 0x61, 0xFF, 0xC0, 0x02, 0x3F, 0xDF, 0x05, 0x78, 0x11, 0xCE};
  uint8_t blk[176] = {};
  put16(blk, 1.0f);
  put16(blk + 2, 0.5f);
  std::memcpy(blk + 4, packed, 12);
  uint8_t* qh = blk + 16;
  uint8_t* qs = blk + 48;
  int q[256];
  for (int e = 0; e < 256; ++e) {
    q[e] = (e * 7) % 32;
    // 64 elements per 32 qs bytes: first 32 low nibbles, next 32 high; fifth bit: bit e/32 of qh[e%32].
    const int c = e / 64, r = e % 64;
    qs[32 * c + r % 32] |= static_cast<uint8_t>((q[e] & 15) << (r < 32 ? 0 : 4));
    qh[e % 32] |= static_cast<uint8_t>((q[e] >> 4) << (e / 32));
  }
  std::vector<float> y = deq(GgmlType::Q5_K, blk, 256);
  bool ok = true;
  for (int e = 0; e < 256; ++e) ok &= y[e] == static_cast<float>(sc[e / 32] * q[e]) - 0.5f * mn[e / 32];
  CHECK(ok);
  CHECK_EQ(y[1], 7.0f);       // sub-block 0: 1 * 7 - 0
  CHECK_EQ(y[255], 1520.0f);  // sub-block 7: 62 * 25 - 0.5 * 60
}

TEST(quant_iq4_xs_known_block) {
  // Sub-block scales ls = 32 + 3 * (ib - 4) (6 bits: low nibble in scales_l, top 2 in scales_h),
  // d = 0.5, nibble(e) = (e * 3) % 16.
  uint8_t blk[136] = {};
  put16(blk, 0.5f);
  int ls[8];
  uint16_t sh = 0;
  for (int ib = 0; ib < 8; ++ib) {
    ls[ib] = 32 + 3 * (ib - 4);
    blk[4 + ib / 2] |= static_cast<uint8_t>((ls[ib] & 15) << (4 * (ib % 2)));
    sh = static_cast<uint16_t>(sh | ((ls[ib] >> 4) << (2 * ib)));
  }
  std::memcpy(blk + 2, &sh, 2);
  int nib[256];
  for (int e = 0; e < 256; ++e) {
    nib[e] = (e * 3) % 16;
    const int ib = e / 32, r = e % 32;
    blk[8 + 16 * ib + r % 16] |= static_cast<uint8_t>(nib[e] << (r < 16 ? 0 : 4));
  }
  std::vector<float> y = deq(GgmlType::IQ4_XS, blk, 256);
  bool ok = true;
  for (int e = 0; e < 256; ++e) ok &= y[e] == 0.5f * (ls[e / 32] - 32) * kGrid[nib[e]];
  CHECK(ok);
  CHECK_EQ(y[0], 762.0f);    // 0.5 * -12 * -127
  CHECK_EQ(y[255], 310.5f);  // sub-block 7: 0.5 * 9 * 69 (nibble 13)
}

namespace {

std::vector<float> gaussian(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<float> roundtrip(GgmlType t, const std::vector<float>& x) {
  Bytes b(row_size(t, static_cast<int64_t>(x.size())));
  quantize_row_ref(t, x.data(), b.data(), static_cast<int64_t>(x.size()));
  return deq(t, b.data(), static_cast<int64_t>(x.size()));
}

double rmse(const std::vector<float>& x, const std::vector<float>& y) {
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
  return std::sqrt(s / static_cast<double>(x.size()));
}

}  // namespace

TEST(quant_new_types_roundtrip_error_bounds) {
  const int64_t n = 16 * 256;
  const std::vector<float> x = gaussian(n, 4321);
  // Per-element bounds of the linear 32-blocks (f16 rounding of d and m adds ~2^-11 relative).
  // Q4_1 / Q5_1: step d = (max - min)/15 or /31, rounding to nearest: |err| <= d/2.
  // Q5_0: step |d| = amax/16, the top level clipped at 15|d|: |err| <= |d| (as Q4_0).
  for (GgmlType t : {GgmlType::Q4_1, GgmlType::Q5_1, GgmlType::Q5_0}) {
    const std::vector<float> y = roundtrip(t, x);
    int bad = 0;
    for (int64_t b = 0; b < n / 32; ++b) {
      float mn = x[32 * b], mx = x[32 * b], amax = 0;
      for (int j = 0; j < 32; ++j) {
        mn = std::min(mn, x[32 * b + j]);
        mx = std::max(mx, x[32 * b + j]);
        amax = std::max(amax, std::fabs(x[32 * b + j]));
      }
      const float bound = t == GgmlType::Q5_0
                              ? 1.01f * amax / 16
                              : 0.5f * (mx - mn) / (t == GgmlType::Q4_1 ? 15 : 31) * 1.01f + amax * 0x1p-10f;
      for (int j = 0; j < 32; ++j) bad += !(std::fabs(x[32 * b + j] - y[32 * b + j]) <= bound);
    }
    if (bad) std::fprintf(stderr, "  %s: %d elements over the bound\n", type_traits(t).name, bad);
    CHECK_EQ(bad, 0);
  }
  // RMSE on unit Gaussian data (measured: q2_K 0.293, q3_K 0.149, q4_1 0.076, iq4_nl 0.075,
  // iq4_xs 0.076, q5_0 0.042, q5_1 0.037, q5_K 0.035); bounds leave ~30% slack, and the ordering
  // by bits per weight must hold.
  auto e = [&x](GgmlType t) { return rmse(x, roundtrip(t, x)); };
  const double q2k = e(GgmlType::Q2_K), q3k = e(GgmlType::Q3_K), q40 = e(GgmlType::Q4_0), q41 = e(GgmlType::Q4_1);
  const double nl = e(GgmlType::IQ4_NL), xs = e(GgmlType::IQ4_XS), q50 = e(GgmlType::Q5_0), q51 = e(GgmlType::Q5_1);
  const double q5k = e(GgmlType::Q5_K), q6k = e(GgmlType::Q6_K);
  CHECK(q2k < 0.38);
  CHECK(q3k < 0.20);
  CHECK(q41 < 0.10);
  CHECK(nl < 0.10);
  CHECK(xs < 0.10);
  CHECK(q50 < 0.055);
  CHECK(q51 < 0.05);
  CHECK(q5k < 0.046);
  CHECK(q3k < q2k);
  CHECK(q41 < q3k && nl < q3k && xs < q3k);
  CHECK(q41 < q40 && nl < q40);  // an offset / a non-linear grid beat Q4_0's symmetric levels
  CHECK(q50 < q41 && q51 < q50 && q5k < q41);
  CHECK(q6k < q5k);
}
