// AVX2 GEMM kernels (placeholder; filled in below).
#include "quant/gemm_impl.h"
namespace llmserve::quant {
void install_avx2_gemm(KernelTable&) {}
}  // namespace llmserve::quant
