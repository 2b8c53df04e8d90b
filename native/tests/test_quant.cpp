// Tests for native/core/quant: type traits, f16/bf16 conversions, hand-built blocks with known
// values (layout), quantization error bounds, ref dot vs dequantized dot, and every SIMD kernel
// against its scalar reference (bytes identical for quantizers, exact integer block sums, f32
// accumulation order the only difference), plus LLMSERVE_FORCE_SCALAR.
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "quant/quant.h"
#include "quant/quant_impl.h"
#include "testing.h"

using namespace llmserve;
using llmserve::quant::KernelTable;

namespace {

using Bytes = std::vector<uint8_t>;

std::vector<float> gaussian(size_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

Bytes quantize_ref(GgmlType t, const std::vector<float>& x) {
  Bytes b(row_size(t, static_cast<int64_t>(x.size())));
  quantize_row_ref(t, x.data(), b.data(), static_cast<int64_t>(x.size()));
  return b;
}

std::vector<float> dequantize_ref(GgmlType t, const Bytes& b, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n));
  dequantize_row_ref(t, b.data(), y.data(), n);
  return y;
}

void put_f16(uint8_t* p, float v) {
  uint16_t h = fp32_to_fp16(v);
  std::memcpy(p, &h, 2);
}

// The fast tables this CPU can run ("avx2", "avx512"), each checked against the reference.
std::vector<const KernelTable*> fast_tables() {
  std::vector<const KernelTable*> v;
  if (auto* t = quant::avx2_kernels()) v.push_back(t);
  if (auto* t = quant::avx_vnni_kernels()) v.push_back(t);
  if (auto* t = quant::avx512_kernels()) v.push_back(t);
  return v;
}

const GgmlType kSupported[] = {GgmlType::F32,  GgmlType::F16,   GgmlType::BF16,   GgmlType::Q8_0, GgmlType::Q4_0,
                               GgmlType::Q4_K, GgmlType::Q6_K,  GgmlType::Q8_K,   GgmlType::Q4_1, GgmlType::Q5_0,
                               GgmlType::Q5_1, GgmlType::Q8_1,  GgmlType::IQ4_NL, GgmlType::Q2_K, GgmlType::Q3_K,
                               GgmlType::Q5_K, GgmlType::IQ4_XS};

// Q4_1/Q5_1 dots add m_w * s_x per block with s_x = d_x * sum(qs) rounded to f16 (and d_x there is
// the f32 scale, not its f16 rounding): up to 2 * 2^-11 of that term on top of the f32 tolerance.
double q8_1_offset_slack(GgmlType t, const std::vector<uint8_t>& w, const std::vector<uint8_t>& xq, int64_t n) {
  if (type_traits(t).vec_dot_type != GgmlType::Q8_1 || t == GgmlType::Q8_1) return 0;
  const size_t ws = type_traits(t).type_size;
  double s = 0;
  for (int64_t b = 0; b < n / 32; ++b) {
    uint16_t m, sx;
    std::memcpy(&m, w.data() + b * ws + 2, 2);
    std::memcpy(&sx, xq.data() + b * 36 + 2, 2);
    s += std::fabs(double(fp16_to_fp32(m)) * fp16_to_fp32(sx)) * 0x1p-10;
  }
  return s;
}

// sum |w_i * x_i| over the dequantized rows: the scale for dot-product tolerances.
double abs_dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += std::fabs(static_cast<double>(a[i]) * b[i]);
  return s;
}

}  // namespace

TEST(quant_type_traits_match_ggml) {
  struct Row {
    uint32_t id;
    const char* name;
    int64_t bs;
    size_t ts;
  };
  const Row rows[] = {
      {0, "f32", 1, 4},         {1, "f16", 1, 2},         {2, "q4_0", 32, 18},      {3, "q4_1", 32, 20},
      {6, "q5_0", 32, 22},      {7, "q5_1", 32, 24},      {8, "q8_0", 32, 34},      {9, "q8_1", 32, 36},
      {10, "q2_K", 256, 84},    {11, "q3_K", 256, 110},   {12, "q4_K", 256, 144},   {13, "q5_K", 256, 176},
      {14, "q6_K", 256, 210},   {15, "q8_K", 256, 292},   {16, "iq2_xxs", 256, 66}, {17, "iq2_xs", 256, 74},
      {18, "iq3_xxs", 256, 98}, {19, "iq1_s", 256, 50},   {20, "iq4_nl", 32, 18},   {21, "iq3_s", 256, 110},
      {22, "iq2_s", 256, 82},   {23, "iq4_xs", 256, 136}, {24, "i8", 1, 1},         {25, "i16", 1, 2},
      {26, "i32", 1, 4},        {27, "i64", 1, 8},        {28, "f64", 1, 8},        {29, "iq1_m", 256, 56},
      {30, "bf16", 1, 2},       {34, "tq1_0", 256, 54},   {35, "tq2_0", 256, 66},   {39, "mxfp4", 32, 17},
  };
  for (const Row& r : rows) {
    const TypeTraits& t = type_traits(r.id);
    CHECK(t.known);
    CHECK(std::string(t.name) == r.name);
    CHECK_EQ(t.block_size, r.bs);
    CHECK_EQ(t.type_size, r.ts);
  }
  for (uint32_t id : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 40u, 1000u, 0xFFFFFFFFu}) {
    CHECK(!type_traits(id).known);
    CHECK(!type_traits(id).supported);
    CHECK(std::string(type_traits(id).name) == "unknown");
  }
  int supported = 0;
  for (uint32_t id = 0; id < kGgmlTypeCount; ++id) supported += type_traits(id).supported;
  CHECK_EQ(supported, 17);
  for (GgmlType t : kSupported) CHECK(type_traits(t).supported);
  CHECK(type_traits(GgmlType::F32).vec_dot_type == GgmlType::F32);
  CHECK(type_traits(GgmlType::F16).vec_dot_type == GgmlType::F16);
  CHECK(type_traits(GgmlType::BF16).vec_dot_type == GgmlType::BF16);
  CHECK(type_traits(GgmlType::Q4_0).vec_dot_type == GgmlType::Q8_0);
  CHECK(type_traits(GgmlType::Q8_0).vec_dot_type == GgmlType::Q8_0);
  CHECK(type_traits(GgmlType::Q4_K).vec_dot_type == GgmlType::Q8_K);
  CHECK(type_traits(GgmlType::Q6_K).vec_dot_type == GgmlType::Q8_K);
  CHECK(type_traits(GgmlType::Q4_1).vec_dot_type == GgmlType::Q8_1);
  CHECK_EQ(row_size(GgmlType::Q4_K, 4096), size_t{16 * 144});
  CHECK_EQ(row_size(GgmlType::Q8_0, 64), size_t{68});
  CHECK_EQ(row_size(GgmlType::F16, 3), size_t{6});
  CHECK_EQ(row_size(static_cast<GgmlType>(4), 32), size_t{0});
}

TEST(quant_fp16_conversions) {
  // Every non-NaN half survives f16 -> f32 -> f16; NaNs stay NaN.
  int bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_to_fp32(static_cast<uint16_t>(h));
    const bool nan = (h & 0x7C00) == 0x7C00 && (h & 0x3FF);
    if (nan) bad += !(f != f) || (fp32_to_fp16(f) & 0x7FFF) != 0x7E00;
    else bad += fp32_to_fp16(f) != h;
  }
  CHECK_EQ(bad, 0);
  CHECK_EQ(fp16_to_fp32(0x3C00), 1.0f);
  CHECK_EQ(fp16_to_fp32(0x7BFF), 65504.0f);
  CHECK_EQ(fp16_to_fp32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK_EQ(fp16_to_fp32(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  CHECK(std::signbit(fp16_to_fp32(0x8000)) && fp16_to_fp32(0x8000) == 0.0f);
  CHECK(std::isinf(fp16_to_fp32(0xFC00)) && fp16_to_fp32(0xFC00) < 0);
  CHECK_EQ(fp32_to_fp16(65519.0f), 0x7BFF);  // below the midpoint to 65536
  CHECK_EQ(fp32_to_fp16(65520.0f), 0x7C00);  // midpoint, ties to even = inf
  CHECK_EQ(fp32_to_fp16(1e6f), 0x7C00);
  CHECK_EQ(fp32_to_fp16(-1e6f), 0xFC00);
  CHECK_EQ(fp32_to_fp16(1e-8f), 0x0000);                             // < half of 2^-24
  CHECK_EQ(fp32_to_fp16(3e-8f), 0x0001);                             // > half of 2^-24
  CHECK_EQ(fp32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);             // tie -> even (0)
  CHECK_EQ(fp32_to_fp16(3 * std::ldexp(1.0f, -25)), 0x0002);         // tie 1.5 units -> 2
  CHECK_EQ(fp32_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // tie -> even mantissa 0
  CHECK_EQ(fp32_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie -> even mantissa 2
  CHECK_EQ(fp32_to_fp16(-2.0f), 0xC000);
  CHECK_EQ(fp32_to_fp16(std::ldexp(1.0f, -14) * (1 - std::ldexp(1.0f, -12))), 0x0400);  // rounds up into normals
  CHECK_EQ(fp32_to_fp16(std::nanf("")) & 0x7FFF, 0x7E00);
}

TEST(quant_bf16_conversions) {
  auto bits = [](uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  int bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const bool nan = (h & 0x7F80) == 0x7F80 && (h & 0x7F);
    if (!nan) bad += fp32_to_bf16(bf16_to_fp32(static_cast<uint16_t>(h))) != h;
  }
  CHECK_EQ(bad, 0);
  CHECK_EQ(bf16_to_fp32(0x3F80), 1.0f);
  CHECK_EQ(fp32_to_bf16(1.0f), 0x3F80);
  CHECK_EQ(fp32_to_bf16(bits(0x3F808000)), 0x3F80);  // exact tie -> even
  CHECK_EQ(fp32_to_bf16(bits(0x3F818000)), 0x3F82);  // exact tie -> even (up)
  CHECK_EQ(fp32_to_bf16(bits(0x3F808001)), 0x3F81);  // above tie
  CHECK_EQ(fp32_to_bf16(bits(0x7F7FFFFF)), 0x7F80);  // FLT_MAX rounds to inf, as ggml
  CHECK_EQ(fp32_to_bf16(bits(0x7F800000)), 0x7F80);
  CHECK_EQ(fp32_to_bf16(bits(0x7F800001)), 0x7FC0);  // signalling NaN made quiet, not inf
  CHECK_EQ(fp32_to_bf16(bits(0xFF800001)), 0xFFC0);
  CHECK_EQ(fp32_to_bf16(bits(0x7FC12345)), 0x7FC1);  // quiet NaN keeps its top payload
  CHECK_EQ(fp32_to_bf16(bits(0x00000001)), 0x0000);  // tiny subnormal rounds to zero
}

TEST(quant_q4_0_known_block) {
  uint8_t blk[18] = {0x00, 0x38};  // d = 0.5 (f16 0x3800, little-endian)
  for (int j = 0; j < 16; ++j) blk[2 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float y[32];
  dequantize_row(GgmlType::Q4_0, blk, y, 32);
  bool ok = true;
  for (int j = 0; j < 16; ++j) ok &= y[j] == (j - 8) * 0.5f && y[16 + j] == (7 - j) * 0.5f;
  CHECK(ok);
  CHECK_EQ(y[0], -4.0f);
  CHECK_EQ(y[15], 3.5f);
  CHECK_EQ(y[16], 3.5f);
  CHECK_EQ(y[31], -4.0f);
  // Dot with a Q8_0 block of all ones, d = 1: 0.5 * (sum(j-8) + sum(7-j)) = 0.5 * (-8 - 8).
  uint8_t act[34] = {0x00, 0x3C};
  std::memset(act + 2, 1, 32);
  CHECK_EQ(vec_dot_ref(GgmlType::Q4_0, 32, blk, act), -8.0f);
  CHECK_EQ(vec_dot(GgmlType::Q4_0, 32, blk, act), -8.0f);
  // Quantizer rules: largest magnitude is -16, so d = -16/-8 = 2 and q = min(15, trunc(x/2 + 8.5)).
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
  Bytes q = quantize_ref(GgmlType::Q4_0, x);
  CHECK_EQ(q[0] | (q[1] << 8), 0x4000);  // d = 2.0
  CHECK_EQ(q[2 + 0] & 0xF, 0);           // x[0]  = -16: trunc(0.5) = 0 (maps exactly to -16)
  CHECK_EQ(q[2 + 8] & 0xF, 4);           // x[8]  = -8:  trunc(4.5) = 4
  CHECK_EQ(q[2 + 0] >> 4, 8);            // x[16] = 0:   trunc(8.5) = 8
  CHECK_EQ(q[2 + 15] >> 4, 15);          // x[31] = 15:  trunc(16.0) = 16 -> clamped to 15
}

TEST(quant_q8_0_known_block_and_rounding) {
  // amax = 127 gives d = 1 and id = 1, so x*id is exactly x: halves round to even, as llama.cpp's
  // x86 activation quantizer does.
  std::vector<float> x(32, 0.0f);
  const float in[] = {127.0f, 2.5f, -0.5f, 1.5f, -2.5f, 0.49999997f, -126.5f, 0.5f};
  const int8_t want[] = {127, 2, 0, 2, -2, 0, -126, 0};
  for (int j = 0; j < 8; ++j) x[j] = in[j];
  Bytes q = quantize_ref(GgmlType::Q8_0, x);
  CHECK_EQ(q[0] | (q[1] << 8), 0x3C00);
  for (int j = 0; j < 8; ++j) CHECK_EQ(static_cast<int8_t>(q[2 + j]), want[j]);
  // d = 16/127 rounds to f16 0x3008; x = -16 maps to -127, x = -1 to round(-7.94) = -8.
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
  q = quantize_ref(GgmlType::Q8_0, x);
  CHECK_EQ(q[0] | (q[1] << 8), 0x3008);
  CHECK_EQ(static_cast<int8_t>(q[2]), -127);
  CHECK_EQ(static_cast<int8_t>(q[2 + 15]), -8);
  CHECK_EQ(static_cast<int8_t>(q[2 + 31]), 119);
  // Dequantize: value = qs * d.
  uint8_t blk[34] = {0x00, 0x34};  // d = 0.25
  for (int j = 0; j < 32; ++j) blk[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j * 8 - 128));
  float y[32];
  dequantize_row(GgmlType::Q8_0, blk, y, 32);
  CHECK_EQ(y[0], -32.0f);
  CHECK_EQ(y[31], 30.0f);
}

TEST(quant_q8_K_known_blocks_and_layout) {
  std::vector<float> x(3 * 256, 0.0f);
  // Block 0: first largest magnitude is -127 -> iscale = 1, d = 1; halves round to even.
  const float b0[] = {-127.0f, 2.5f, -0.5f, 1.5f, 3.5f, -2.5f};
  const int8_t w0[] = {-127, 2, 0, 2, 4, -2};
  for (int j = 0; j < 6; ++j) x[j] = b0[j];
  // Block 1: largest is +127 -> iscale = -1, d = -1 (values are stored negated).
  x[256] = 127.0f;
  x[257] = 2.5f;
  // Block 2: -5 and 5 tie in magnitude; the first (-5) decides the sign.
  x[512] = -5.0f;
  x[513] = 5.0f;
  Bytes q = quantize_ref(GgmlType::Q8_K, x);
  CHECK_EQ(q.size(), size_t{3 * 292});
  auto d_of = [&q](int blk) {
    float d;
    std::memcpy(&d, &q[292 * blk], 4);
    return d;
  };
  auto qs = [&q](int blk, int j) { return static_cast<int8_t>(q[292 * blk + 4 + j]); };
  auto bsum = [&q](int blk, int g) {
    int16_t s;
    std::memcpy(&s, &q[292 * blk + 260 + 2 * g], 2);
    return s;
  };
  CHECK_EQ(d_of(0), 1.0f);
  for (int j = 0; j < 6; ++j) CHECK_EQ(qs(0, j), w0[j]);
  CHECK_EQ(bsum(0, 0), -121);
  CHECK_EQ(bsum(0, 1), 0);
  CHECK_EQ(d_of(1), -1.0f);
  CHECK_EQ(qs(1, 0), -127);
  CHECK_EQ(qs(1, 1), -2);
  CHECK(d_of(2) > 0.0f);
  CHECK_EQ(qs(2, 0), -127);
  CHECK_EQ(qs(2, 1), 127);
  std::vector<float> y = dequantize_ref(GgmlType::Q8_K, q, 3 * 256);
  CHECK_EQ(y[0], -127.0f);
  CHECK_EQ(y[257], 2.0f);  // -2 * -1
  CHECK_NEAR(y[513], 5.0f, 1e-5);
}

TEST(quant_q4_K_known_block) {
  // Sub-block scales/mins with high bits set, packed by hand per ggml's get_scale_min_k4:
  // sc = {1,10,33,63,5,40,17,62}, m = {0,2,63,31,48,7,1,60}.
  const int sc[8] = {1, 10, 33, 63, 5, 40, 17, 62};
  const int mn[8] = {0, 2, 63, 31, 48, 7, 1, 60};
  const uint8_t packed[12] = {0x01, 0x8A, 0x61, 0xFF, 0xC0, 0x02, 0x3F, 0xDF, 0x05, 0x78, 0x11, 0xCE};
  uint8_t blk[144] = {0x00, 0x3C, 0x00, 0x38};  // d = 1.0, dmin = 0.5
  std::memcpy(blk + 4, packed, 12);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) blk[16 + 32 * c + l] = static_cast<uint8_t>((l & 15) | (((l + c) & 15) << 4));
  for (int j = 0; j < 8; ++j) {
    uint8_t s, m;
    quant::get_scale_min_k4(j, packed, &s, &m);
    CHECK_EQ(int{s}, sc[j]);
    CHECK_EQ(int{m}, mn[j]);
  }
  // The SIMD kernels' word-at-a-time unpacking agrees with get_scale_min_k4 on any bytes.
  std::mt19937 rng(5);
  bool same = true;
  for (int trial = 0; trial < 1000; ++trial) {
    uint8_t bytes[12], out[16];
    for (auto& v : bytes) v = static_cast<uint8_t>(rng());
    quant::unpack_q4_K_scales(bytes, out);
    for (int j = 0; j < 8; ++j) {
      uint8_t s, m;
      quant::get_scale_min_k4(j, bytes, &s, &m);
      same &= out[j] == s && out[8 + j] == m;
    }
  }
  CHECK(same);
  float y[256];
  dequantize_row(GgmlType::Q4_K, blk, y, 256);
  bool ok = true;
  for (int e = 0; e < 256; ++e) {
    const int c = e / 64, r = e % 64;
    const int q = r < 32 ? (r & 15) : (((r - 32) + c) & 15);
    ok &= y[e] == sc[e / 32] * q - 0.5f * mn[e / 32];
  }
  CHECK(ok);
  CHECK_EQ(y[0], 0.0f);
  CHECK_EQ(y[100], 299.5f);  // sub-block 3: 63*5 - 15.5
  CHECK_EQ(y[130], -14.0f);  // sub-block 4: 5*2 - 24
  CHECK_EQ(y[255], 94.0f);   // sub-block 7: 62*2 - 30
}

TEST(quant_q6_K_known_block) {
  // Literal bits: ql[0] = 0x21, qh[0] = 0b11'10'01'00, all scales 1, d = 1 (offsets: ql 0,
  // qh 128, scales 192, d 208).
  uint8_t blk[210] = {};
  blk[0] = 0x21;
  blk[128] = 0xE4;
  for (int g = 0; g < 16; ++g) blk[192 + g] = 1;
  blk[208] = 0x00;
  blk[209] = 0x3C;
  float y[256];
  dequantize_row(GgmlType::Q6_K, blk, y, 256);
  CHECK_EQ(y[0], -31.0f);   // 1 | 0<<4
  CHECK_EQ(y[32], -16.0f);  // 0 | 1<<4
  CHECK_EQ(y[64], 2.0f);    // 2 | 2<<4
  CHECK_EQ(y[96], 16.0f);   // 0 | 3<<4
  CHECK_EQ(y[1], -32.0f);
  CHECK_EQ(y[128], -32.0f);
  // A full block packed from the layout description: q(e) = (7e+3) % 64, signed scales, d = 0.25.
  auto qv = [](int e) { return (7 * e + 3) % 64; };
  std::memset(blk, 0, sizeof blk);
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      const int e = 128 * h + l;
      blk[64 * h + l] = static_cast<uint8_t>((qv(e) & 15) | ((qv(e + 64) & 15) << 4));
      blk[64 * h + 32 + l] = static_cast<uint8_t>((qv(e + 32) & 15) | ((qv(e + 96) & 15) << 4));
      blk[128 + 32 * h + l] = static_cast<uint8_t>((qv(e) >> 4) | ((qv(e + 32) >> 4) << 2) | ((qv(e + 64) >> 4) << 4) |
                                                   ((qv(e + 96) >> 4) << 6));
    }
  }
  int scales[16];
  for (int g = 0; g < 16; ++g) {
    scales[g] = (g % 2 ? -1 : 1) * (8 * g + 1);
    blk[192 + g] = static_cast<uint8_t>(static_cast<int8_t>(scales[g]));
  }
  put_f16(blk + 208, 0.25f);
  dequantize_row(GgmlType::Q6_K, blk, y, 256);
  bool ok = true;
  for (int e = 0; e < 256; ++e) ok &= y[e] == 0.25f * scales[e / 16] * (qv(e) - 32);
  CHECK(ok);
}

TEST(quant_roundtrip_error_bounds) {
  const int64_t n = 8 * 256;
  const std::vector<float> x = gaussian(n, 1234);
  auto block_amax = [&x](int64_t start, int64_t len) {
    float m = 0;
    for (int64_t i = start; i < start + len; ++i) m = std::max(m, std::fabs(x[i]));
    return m;
  };
  auto rmse = [&x](const std::vector<float>& y) {
    double s = 0;
    for (size_t i = 0; i < x.size(); ++i) s += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    return std::sqrt(s / x.size());
  };
  // Q8_0: |err| <= d/2 for the rounding plus up to 127*d*2^-11 for storing d as f16.
  auto y = dequantize_ref(GgmlType::Q8_0, quantize_ref(GgmlType::Q8_0, x), n);
  bool ok = true;
  for (int64_t i = 0; i < n; ++i) ok &= std::fabs(x[i] - y[i]) <= 0.57f * block_amax(i / 32 * 32, 32) / 127;
  CHECK(ok);
  const double e_q8_0 = rmse(y);
  // Q8_K: d is f32, so |err| <= d/2 (plus float rounding).
  y = dequantize_ref(GgmlType::Q8_K, quantize_ref(GgmlType::Q8_K, x), n);
  ok = true;
  for (int64_t i = 0; i < n; ++i) ok &= std::fabs(x[i] - y[i]) <= 0.5001f * block_amax(i / 256 * 256, 256) / 127;
  CHECK(ok);
  // Q4_0: step |d| = amax/8; the top level is clipped at 7|d|, so |err| <= |d| (+ f16 rounding).
  y = dequantize_ref(GgmlType::Q4_0, quantize_ref(GgmlType::Q4_0, x), n);
  ok = true;
  for (int64_t i = 0; i < n; ++i) ok &= std::fabs(x[i] - y[i]) <= 1.01f * block_amax(i / 32 * 32, 32) / 8;
  CHECK(ok);
  const double e_q4_0 = rmse(y);
  // K-quants: no simple per-element bound; unit-variance data gives RMSE ~0.07 (Q4_K) and
  // ~0.018 (Q6_K). Bounds leave ~40% slack and keep the expected ordering of formats.
  y = dequantize_ref(GgmlType::Q4_K, quantize_ref(GgmlType::Q4_K, x), n);
  const double e_q4_K = rmse(y);
  y = dequantize_ref(GgmlType::Q6_K, quantize_ref(GgmlType::Q6_K, x), n);
  const double e_q6_K = rmse(y);
  CHECK(e_q4_K < 0.10);
  CHECK(e_q6_K < 0.025);
  CHECK(e_q4_K < e_q4_0);
  CHECK(e_q6_K < e_q4_K);
  CHECK(e_q8_0 < e_q6_K);
  // f16 / bf16: relative error <= 2^-11 / 2^-8 in the normal range.
  y = dequantize_ref(GgmlType::F16, quantize_ref(GgmlType::F16, x), n);
  ok = true;
  for (int64_t i = 0; i < n; ++i) ok &= std::fabs(x[i] - y[i]) <= std::fabs(x[i]) * 0x1p-11f + 0x1p-25f;
  CHECK(ok);
  y = dequantize_ref(GgmlType::BF16, quantize_ref(GgmlType::BF16, x), n);
  ok = true;
  for (int64_t i = 0; i < n; ++i) ok &= std::fabs(x[i] - y[i]) <= std::fabs(x[i]) * 0x1p-8f;
  CHECK(ok);
  // Degenerate rows: all zeros stay zeros; a single outlier keeps its value closely.
  for (GgmlType t : kSupported) {
    std::vector<float> z(512, 0.0f);
    auto yz = dequantize_ref(t, quantize_ref(t, z), 512);
    bool zero = true;
    for (float v : yz) zero &= v == 0.0f;
    CHECK(zero);
    z[300] = 1000.0f;
    yz = dequantize_ref(t, quantize_ref(t, z), 512);
    CHECK_NEAR(yz[300], 1000.0, 1.0);
    // The IQ4 grid has no 0 (its levels next to it are -10 and 1), so zeros beside an outlier
    // come back as d * 1.
    if (t != GgmlType::IQ4_NL && t != GgmlType::IQ4_XS) CHECK_EQ(yz[299], 0.0f);
    else CHECK(std::fabs(yz[299]) <= 1000.0f / 113 * 1.001f);
  }
}

TEST(quant_ref_dot_matches_dequantized_dot) {
  for (GgmlType t : kSupported) {
    const GgmlType vt = type_traits(t).vec_dot_type;
    for (int nb : {1, 3, 8}) {
      const int64_t n = nb * 256;
      Bytes w = quantize_ref(t, gaussian(n, 7 + nb));
      Bytes xq = quantize_ref(vt, gaussian(n, 100 + nb));
      std::vector<float> wf = dequantize_ref(t, w, n), xf = dequantize_ref(vt, xq, n);
      double expect = 0;
      for (int64_t i = 0; i < n; ++i) expect += static_cast<double>(wf[i]) * xf[i];
      const double got = vec_dot_ref(t, n, w.data(), xq.data());
      CHECK_NEAR(got, expect, 1e-5 * abs_dot(wf, xf) + 1e-6 + q8_1_offset_slack(t, w, xq, n));
    }
  }
}

namespace {

// Rows that stress the activation quantizers: random scales, exact .5 ties after scaling, zero
// blocks, and a few non-finite values (which must still give the reference's bytes).
std::vector<float> stress_row(int64_t n, uint32_t seed) {
  std::vector<float> x = gaussian(static_cast<size_t>(n), seed);
  std::mt19937 rng(seed ^ 0x9e3779b9u);
  for (int64_t b = 0; b * 32 < n; ++b) {
    const int kind = b == 0 ? 2 : static_cast<int>(rng() % 6);
    float* p = x.data() + b * 32;
    const int64_t len = std::min<int64_t>(32, n - b * 32);
    if (kind == 0)
      for (int64_t j = 0; j < len; ++j) p[j] *= 1e-3f;
    if (kind == 1)
      for (int64_t j = 0; j < len; ++j) p[j] *= 1e4f;
    if (kind == 2) {  // amax 127 (d = 1 for Q8_0) with halves: exercises roundf vs round-to-even
      for (int64_t j = 0; j < len; ++j) p[j] = static_cast<float>(static_cast<int>(rng() % 254) - 127) + 0.5f;
      p[0] = -127.0f;
      if (len > 2) p[1] = 0.49999997f, p[2] = -0.49999997f;  // largest floats below a tie
    }
    if (kind == 3)
      for (int64_t j = 0; j < len; ++j) p[j] = 0.0f;
  }
  return x;
}

}  // namespace

TEST(quant_fast_quantize_dequantize_identical_to_ref) {
  for (const KernelTable* k : fast_tables()) {
    for (GgmlType t : kSupported) {
      const int64_t bs = type_traits(t).block_size;
      std::vector<int64_t> sizes = {1, 2, 3, 7};
      if (bs == 1) sizes = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 257};
      for (int64_t m : sizes) {
        const int64_t n = bs == 1 ? m : m * bs;
        std::vector<float> x = stress_row(n, static_cast<uint32_t>(n * 31 + quant::idx(t)));
        Bytes ref = quantize_ref(t, x);
        Bytes fast(ref.size(), 0xAB);
        k->quant[quant::idx(t)](x.data(), fast.data(), n);
        const bool same = ref == fast;
        if (!same) std::fprintf(stderr, "  %s quantize %s n=%lld differs\n", k->isa, type_traits(t).name, (long long)n);
        CHECK(same);
        if (t == GgmlType::Q8_0 || t == GgmlType::Q8_K || t == GgmlType::F16 || t == GgmlType::BF16) {
          // Non-finite inputs: NaN / inf in one block.
          std::vector<float> bad = x;
          bad[0] = std::nanf("");
          if (n > 2) bad[2] = INFINITY;
          Bytes r2 = quantize_ref(t, bad), f2(r2.size());
          k->quant[quant::idx(t)](bad.data(), f2.data(), n);
          CHECK(r2 == f2);
        }
        std::vector<float> yr = dequantize_ref(t, ref, n), yf(static_cast<size_t>(n));
        k->dequant[quant::idx(t)](ref.data(), yf.data(), n);
        CHECK(std::memcmp(yr.data(), yf.data(), yr.size() * sizeof(float)) == 0);
      }
    }
  }
}

TEST(quant_fast_dots_match_ref_within_tolerance) {
  // Integer block sums are exact in both; only the f32 accumulation order differs, so the stated
  // tolerance is 1e-5 relative to sum|w_i*x_i| (f32 epsilon is 6e-8; <= ~100 rounded adds).
  for (const KernelTable* k : fast_tables()) {
    for (GgmlType t : kSupported) {
      // Types whose SIMD table entry is the scalar reference itself have nothing to compare.
      if (k->dot[quant::idx(t)] == quant::ref_kernels().dot[quant::idx(t)]) continue;
      const GgmlType vt = type_traits(t).vec_dot_type;
      const int64_t bs = type_traits(t).block_size;
      std::vector<int64_t> sizes = {1, 2, 3, 7};
      if (bs == 1) sizes = {1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 257, 1000};
      for (int64_t m : sizes) {
        const int64_t n = bs == 1 ? m : m * bs;
        Bytes w = quantize_ref(t, gaussian(n, static_cast<uint32_t>(n + 11)));
        Bytes xq = quantize_ref(vt, stress_row(n, static_cast<uint32_t>(n + 5)));
        const float ref = vec_dot_ref(t, n, w.data(), xq.data());
        const float fast = k->dot[quant::idx(t)](n, w.data(), xq.data());
        const double mag = abs_dot(dequantize_ref(t, w, n), dequantize_ref(vt, xq, n));
        if (!(std::fabs(double(fast) - ref) <= 1e-5 * mag + 1e-6))
          std::fprintf(stderr, "  %s vec_dot %s n=%lld\n", k->isa, type_traits(t).name, (long long)n);
        CHECK_NEAR(fast, ref, 1e-5 * mag + 1e-6);
      }
    }
  }
}

namespace {

// Random weight/activation bytes whose scales are 1.0, so every partial sum is an integer below
// 2^24 and both kernels must return exactly the same float. Activation values are kept small
// where needed to stay below 2^24 over 7 blocks.
void exact_operands(GgmlType t, int64_t n, std::mt19937& rng, Bytes& w, Bytes& x) {
  const GgmlType vt = type_traits(t).vec_dot_type;
  w.assign(row_size(t, n), 0);
  x.assign(row_size(vt, n), 0);
  auto rnd = [&rng](int lo, int hi) { return lo + static_cast<int>(rng() % static_cast<uint32_t>(hi - lo + 1)); };
  for (auto& b : w) b = static_cast<uint8_t>(rng());
  const int64_t nb = n / type_traits(t).block_size;
  switch (t) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const float a = static_cast<float>(rnd(-16, 16)), b = static_cast<float>(rnd(-16, 16));
        if (t == GgmlType::F32) {
          std::memcpy(&w[4 * i], &a, 4);
          std::memcpy(&x[4 * i], &b, 4);
        }
        if (t == GgmlType::F16) {
          put_f16(&w[2 * i], a);
          put_f16(&x[2 * i], b);
        }
        if (t == GgmlType::BF16) {
          uint16_t ha = fp32_to_bf16(a), hb = fp32_to_bf16(b);
          std::memcpy(&w[2 * i], &ha, 2);
          std::memcpy(&x[2 * i], &hb, 2);
        }
      }
      return;
    case GgmlType::Q4_0:
    case GgmlType::Q8_0:
      for (int64_t i = 0; i < nb; ++i) put_f16(&w[type_traits(t).type_size * i], 1.0f);
      for (int64_t i = 0; i < nb; ++i) {
        uint8_t* b = &x[34 * i];
        put_f16(b, 1.0f);
        // activations as quantize_row makes them ([-127, 127]); weights use all bytes incl. -128
        for (int j = 0; j < 32; ++j) b[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(rnd(-127, 127)));
      }
      return;
    case GgmlType::Q4_K:
    case GgmlType::Q6_K:
    case GgmlType::Q8_K: {
      const int lim = t == GgmlType::Q6_K ? 2 : 8;
      for (int64_t i = 0; i < nb; ++i) {
        uint8_t* b = &w[type_traits(t).type_size * i];
        if (t == GgmlType::Q4_K) {
          put_f16(b, 1.0f);
          put_f16(b + 2, 1.0f);
        }
        if (t == GgmlType::Q6_K) put_f16(b + 208, 1.0f);
        if (t == GgmlType::Q8_K) {
          const float one = 1.0f;
          std::memcpy(b, &one, 4);
        }
        quant::BlockQ8_K* a = reinterpret_cast<quant::BlockQ8_K*>(&x[292 * i]);
        a->d = 1.0f;
        for (int j = 0; j < 256; ++j) a->qs[j] = static_cast<int8_t>(rnd(-lim, lim));
        for (int g = 0; g < 16; ++g) {
          int s = 0;
          for (int l = 0; l < 16; ++l) s += a->qs[16 * g + l];
          a->bsums[g] = static_cast<int16_t>(s);
        }
        if (t == GgmlType::Q8_K) {  // keep weights small too
          for (int j = 0; j < 256; ++j) b[4 + j] = static_cast<uint8_t>(rnd(-lim, lim));
        }
      }
      return;
    }
    default: return;
  }
}

}  // namespace

TEST(quant_fast_dots_exact_integer_sums) {
  std::mt19937 rng(42);
  for (const KernelTable* k : fast_tables()) {
    for (GgmlType t : kSupported) {
      // Types whose SIMD table entry is the scalar reference itself have nothing to compare.
      if (k->dot[quant::idx(t)] == quant::ref_kernels().dot[quant::idx(t)]) continue;
      const int64_t bs = type_traits(t).block_size;
      std::vector<int64_t> sizes = {1, 2, 3, 7};
      if (bs == 1) sizes = {1, 3, 7, 8, 17, 33, 64, 100, 257};
      for (int64_t m : sizes) {
        const int64_t n = bs == 1 ? m : m * bs;
        Bytes w, x;
        exact_operands(t, n, rng, w, x);
        const float ref = vec_dot_ref(t, n, w.data(), x.data());
        const float fast = k->dot[quant::idx(t)](n, w.data(), x.data());
        if (ref != fast)
          std::fprintf(stderr, "  %s exact %s n=%lld: %.9g vs %.9g\n", k->isa, type_traits(t).name, (long long)n, fast,
                       ref);
        CHECK(ref == fast);
      }
    }
  }
}

TEST(quant_dispatch_and_forced_scalar) {
  const char* prev = std::getenv("LLMSERVE_FORCE_SCALAR");
  const std::string saved = prev ? prev : "";
  unsetenv("LLMSERVE_FORCE_SCALAR");
  const char* prev_cap = std::getenv("LLMSERVE_KERNELS");
  const std::string saved_cap = prev_cap ? prev_cap : "";
  unsetenv("LLMSERVE_KERNELS");
  quant::reset_dispatch_for_testing();
  const std::string best = quant::avx512_kernels()     ? "avx512"
                           : quant::avx_vnni_kernels() ? "avxvnni"
                           : quant::avx2_kernels()     ? "avx2"
                                                       : "scalar";
  CHECK(std::string(kernel_isa()) == best);
  // LLMSERVE_KERNELS caps the choice.
  setenv("LLMSERVE_KERNELS", "avx2", 1);
  quant::reset_dispatch_for_testing();
  CHECK(std::string(kernel_isa()) == (quant::avx2_kernels() ? "avx2" : "scalar"));
  // avxvnni: the AVX2 tier with the AVX-VNNI GEMMs where the CPU has them (also on AVX-512 CPUs).
  setenv("LLMSERVE_KERNELS", "avxvnni", 1);
  quant::reset_dispatch_for_testing();
  CHECK(std::string(kernel_isa()) == (quant::avx_vnni_kernels() ? "avxvnni"
                                      : quant::avx2_kernels()   ? "avx2"
                                                                : "scalar"));
  setenv("LLMSERVE_KERNELS", "scalar", 1);
  quant::reset_dispatch_for_testing();
  CHECK(std::string(kernel_isa()) == "scalar");
  if (prev_cap) setenv("LLMSERVE_KERNELS", saved_cap.c_str(), 1);
  else unsetenv("LLMSERVE_KERNELS");
  unsetenv("LLMSERVE_FORCE_SCALAR");
  quant::reset_dispatch_for_testing();
  const std::string expected = prev_cap ? std::string(kernel_isa()) : best;

  setenv("LLMSERVE_FORCE_SCALAR", "1", 1);
  quant::reset_dispatch_for_testing();
  CHECK(std::string(kernel_isa()) == "scalar");
  // With scalar forced, the public entry points are the references, bit for bit.
  for (GgmlType t : kSupported) {
    const GgmlType vt = type_traits(t).vec_dot_type;
    const int64_t n = 3 * 256;
    std::vector<float> xf = stress_row(n, 77), wf = gaussian(n, 78);
    Bytes w = quantize_ref(t, wf), xq(row_size(vt, n));
    quantize_row(vt, xf.data(), xq.data(), n);
    CHECK(xq == quantize_ref(vt, xf));
    CHECK(vec_dot(t, n, w.data(), xq.data()) == vec_dot_ref(t, n, w.data(), xq.data()));
    std::vector<float> y(n);
    dequantize_row(t, w.data(), y.data(), n);
    CHECK(y == dequantize_ref(t, w, n));
  }

  if (prev) setenv("LLMSERVE_FORCE_SCALAR", saved.c_str(), 1);
  else unsetenv("LLMSERVE_FORCE_SCALAR");
  quant::reset_dispatch_for_testing();
  if (!prev) CHECK(std::string(kernel_isa()) == expected);
}

TEST(quant_unsupported_and_malformed_inputs_are_safe) {
  std::vector<uint8_t> src(4096, 0x5A);
  std::vector<float> y(256, 123.0f);
  for (uint32_t id : {4u, 16u, 21u, 24u, 28u, 35u, 39u, 40u, 999u}) {
    const GgmlType t = static_cast<GgmlType>(id);
    std::fill(y.begin(), y.end(), 123.0f);
    dequantize_row(t, src.data(), y.data(), 256);
    bool zero = true;
    for (float v : y) zero &= v == 0.0f;
    CHECK(zero);
    CHECK_EQ(vec_dot(t, 256, src.data(), src.data()), 0.0f);
    CHECK_EQ(vec_dot_ref(t, 256, src.data(), src.data()), 0.0f);
    std::vector<uint8_t> out(row_size(t, 256) + 1, 0x77);
    std::vector<float> x(256, 1.0f);
    quantize_row(t, x.data(), out.data(), 256);
    bool cleared = true;
    for (size_t i = 0; i + 1 < out.size(); ++i) cleared &= out[i] == 0;
    CHECK(cleared);
    CHECK_EQ(out.back(), 0x77);  // nothing written past row_size
  }
  // n not a multiple of the block size, or negative: zeros, no crash.
  std::fill(y.begin(), y.end(), 123.0f);
  dequantize_row(GgmlType::Q4_K, src.data(), y.data(), 100);
  CHECK_EQ(y[0], 0.0f);
  CHECK_EQ(y[99], 0.0f);
  CHECK_EQ(y[100], 123.0f);
  CHECK_EQ(vec_dot(GgmlType::Q8_0, 33, src.data(), src.data()), 0.0f);
  CHECK_EQ(vec_dot(GgmlType::F32, -4, src.data(), src.data()), 0.0f);
  dequantize_row(GgmlType::F16, src.data(), y.data(), 0);
}
