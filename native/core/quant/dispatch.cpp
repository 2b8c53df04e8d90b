// Runtime kernel selection: the table of the tier isa/isa.h chose (avx512 > avx2 > scalar) is
// published through an atomic pointer, and every public entry point is one indirect call.
// Unsupported types or malformed sizes never abort: outputs are zero-filled instead.
#include <atomic>
#include <cstring>

#include "../isa/isa.h"
#include "quant/gemm_impl.h"
#include "quant/quant_impl.h"

namespace llmserve {
namespace quant {
namespace {

KernelTable make_ref_table() {
  KernelTable t{};
  t.isa = "scalar";
  auto set = [&t](GgmlType ty, DequantFn dq, QuantFn q, DotFn d) {
    t.dequant[idx(ty)] = dq;
    t.quant[idx(ty)] = q;
    t.dot[idx(ty)] = d;
  };
  set(GgmlType::F32, dequantize_row_f32_ref, quantize_row_f32_ref, vec_dot_f32_ref);
  set(GgmlType::F16, dequantize_row_f16_ref, quantize_row_f16_ref, vec_dot_f16_ref);
  set(GgmlType::BF16, dequantize_row_bf16_ref, quantize_row_bf16_ref, vec_dot_bf16_ref);
  set(GgmlType::Q8_0, dequantize_row_q8_0_ref, quantize_row_q8_0_ref, vec_dot_q8_0_ref);
  set(GgmlType::Q4_0, dequantize_row_q4_0_ref, quantize_row_q4_0_ref, vec_dot_q4_0_ref);
  set(GgmlType::Q4_K, dequantize_row_q4_K_ref, quantize_row_q4_K_ref, vec_dot_q4_K_ref);
  set(GgmlType::Q6_K, dequantize_row_q6_K_ref, quantize_row_q6_K_ref, vec_dot_q6_K_ref);
  set(GgmlType::Q8_K, dequantize_row_q8_K_ref, quantize_row_q8_K_ref, vec_dot_q8_K_ref);
  set(GgmlType::Q8_1, dequantize_row_q8_1_ref, quantize_row_q8_1_ref, vec_dot_q8_1_ref);
  set(GgmlType::Q4_1, dequantize_row_q4_1_ref, quantize_row_q4_1_ref, vec_dot_q4_1_ref);
  set(GgmlType::Q5_0, dequantize_row_q5_0_ref, quantize_row_q5_0_ref, vec_dot_q5_0_ref);
  set(GgmlType::Q5_1, dequantize_row_q5_1_ref, quantize_row_q5_1_ref, vec_dot_q5_1_ref);
  set(GgmlType::IQ4_NL, dequantize_row_iq4_nl_ref, quantize_row_iq4_nl_ref, vec_dot_iq4_nl_ref);
  set(GgmlType::Q5_K, dequantize_row_q5_K_ref, quantize_row_q5_K_ref, vec_dot_q5_K_ref);
  set(GgmlType::Q3_K, dequantize_row_q3_K_ref, quantize_row_q3_K_ref, vec_dot_q3_K_ref);
  set(GgmlType::Q2_K, dequantize_row_q2_K_ref, quantize_row_q2_K_ref, vec_dot_q2_K_ref);
  set(GgmlType::IQ4_XS, dequantize_row_iq4_xs_ref, quantize_row_iq4_xs_ref, vec_dot_iq4_xs_ref);
  install_ref_gemm(t);
  return t;
}

struct Tables {
  KernelTable ref;
  KernelTable avx2;
  KernelTable avx_vnni;  // avx2 with the AVX-VNNI int8 GEMMs
  KernelTable avx512;
  bool has_avx2;
  bool has_avx_vnni;
  bool has_avx512;
  Tables() : ref(make_ref_table()), avx2(ref), avx_vnni(ref), avx512(ref) {
    has_avx2 = cpu_supports(Isa::Avx2);
    has_avx_vnni = cpu_has_avx_vnni();
    has_avx512 = cpu_supports(Isa::Avx512);
#if defined(LLMSERVE_X86)
    install_avx2_kernels(avx2);
    install_avx2_gemm(avx2);
    avx_vnni = avx2;
    install_avx_vnni_gemm(avx_vnni);
    avx512 = avx2;
    install_avx512_kernels(avx512);
    install_avx512_gemm(avx512);
#endif
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

// The table of the tier isa/ chose (the one dispatcher every kernel family follows).
const KernelTable* choose() {
  const Tables& t = tables();
  switch (active_isa()) {
    case Isa::Avx512: return &t.avx512;
    case Isa::Avx2: return avx_vnni_active() ? &t.avx_vnni : &t.avx2;
    default: return &t.ref;
  }
}

std::atomic<const KernelTable*> g_active{nullptr};

const KernelTable& active() {
  const KernelTable* k = g_active.load(std::memory_order_acquire);
  if (k) return *k;
  static const KernelTable* first = [] {
    const KernelTable* c = choose();
    g_active.store(c, std::memory_order_release);
    return c;
  }();
  (void)first;
  return *g_active.load(std::memory_order_acquire);
}

// n is valid for t when t is supported and n is a non-negative multiple of its block size.
bool valid(const KernelTable& k, GgmlType t, int64_t n) {
  const uint32_t i = idx(t);
  if (i >= kGgmlTypeCount || !k.dot[i] || n < 0) return false;
  return n % type_traits(t).block_size == 0;
}

void dequant_with(const KernelTable& k, GgmlType t, const void* x, float* y, int64_t n) {
  if (!valid(k, t, n)) {
    if (n > 0) std::memset(y, 0, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  k.dequant[idx(t)](x, y, n);
}

void quant_with(const KernelTable& k, GgmlType t, const float* x, void* y, int64_t n) {
  if (!valid(k, t, n)) {
    std::memset(y, 0, row_size(t, n));  // row_size is 0 for unknown types
    return;
  }
  k.quant[idx(t)](x, y, n);
}

float dot_with(const KernelTable& k, GgmlType t, int64_t n, const void* w, const void* xq) {
  if (!valid(k, t, n)) return 0.0f;
  return k.dot[idx(t)](n, w, xq);
}

void gemm_with(const KernelTable& k, const GemmArgs& a) {
  if (a.n <= 0 || a.r1 <= a.r0 || a.r0 < 0 || !a.y || !a.act) return;
  const uint32_t i = idx(a.type);
  if (i >= kGgmlTypeCount || !k.gemm[i] || gemm_act_row_bytes(a.type, a.n_in) == 0) return;
  if (a.n_in % type_traits(a.type).block_size != 0) return;
  // Without raw rows only a packed Q8_0 or Q4_0 matrix from a group boundary (gemm.h).
  if (!a.w && (!a.packed || (a.type != GgmlType::Q8_0 && a.type != GgmlType::Q4_0) || a.r0 % kGemmGroupRows != 0))
    return;
  if (a.packed && a.r0 % kGemmGroupRows != 0) {
    GemmArgs b = a;
    b.packed = nullptr;
    k.gemm[i](b);
    return;
  }
  k.gemm[i](a);
}

}  // namespace

const KernelTable& ref_kernels() { return tables().ref; }
const KernelTable* avx2_kernels() { return tables().has_avx2 ? &tables().avx2 : nullptr; }
const KernelTable* avx_vnni_kernels() { return tables().has_avx_vnni ? &tables().avx_vnni : nullptr; }
const KernelTable* avx512_kernels() { return tables().has_avx512 ? &tables().avx512 : nullptr; }

void reset_dispatch_for_testing() {
  reset_isa_for_testing();
  active();  // make sure the one-time initialisation has run, so it cannot overwrite us later
  g_active.store(choose(), std::memory_order_release);
}

}  // namespace quant

void dequantize_row(GgmlType t, const void* x, float* y, int64_t n) {
  quant::dequant_with(quant::active(), t, x, y, n);
}
void quantize_row(GgmlType t, const float* x, void* y, int64_t n) { quant::quant_with(quant::active(), t, x, y, n); }
float vec_dot(GgmlType t, int64_t n, const void* w, const void* xq) {
  return quant::dot_with(quant::active(), t, n, w, xq);
}

void dequantize_row_ref(GgmlType t, const void* x, float* y, int64_t n) {
  quant::dequant_with(quant::ref_kernels(), t, x, y, n);
}
void quantize_row_ref(GgmlType t, const float* x, void* y, int64_t n) {
  quant::quant_with(quant::ref_kernels(), t, x, y, n);
}
float vec_dot_ref(GgmlType t, int64_t n, const void* w, const void* xq) {
  return quant::dot_with(quant::ref_kernels(), t, n, w, xq);
}
void quantize_row_weights(GgmlType t, const float* x, void* y, int64_t n) {
  if (t == GgmlType::Q8_0) quant::quantize_row_q8_0_weights_ref(x, y, n);
  else quantize_row_ref(t, x, y, n);
}

namespace quant {
void gemm_pack_group(GgmlType t, const uint8_t* w, size_t row_bytes, int n_rows, int64_t nb, uint8_t* out) {
  active().pack_group(t, w, row_bytes, n_rows, nb, out);
}
}  // namespace quant

void gemm(const GemmArgs& a) { quant::gemm_with(quant::active(), a); }
void gemm_ref(const GemmArgs& a) { quant::gemm_with(quant::ref_kernels(), a); }

const char* kernel_isa() { return quant::active().isa; }

}  // namespace llmserve
