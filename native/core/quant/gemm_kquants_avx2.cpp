// avx2 GEMM kernels of Q5_K, Q3_K, Q2_K and IQ4_XS: not written yet, so these types run the
// scalar GEMM of gemm_ref_kquants.cpp on this tier (the table keeps the reference entry).
#include "quant/quant_impl.h"

namespace llmserve::quant {

void install_avx2_gemm_kquants(KernelTable& t) { (void)t; }

}  // namespace llmserve::quant
