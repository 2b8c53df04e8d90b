import { loadAddon } from "./binding.js";

/** The SIMD kernel family chosen at startup ("avx512", "avxvnni" (AVX2 with AVX-VNNI int8 GEMMs), "avx2" or "scalar"; LLMSERVE_FORCE_SCALAR=1 forces scalar, LLMSERVE_KERNELS=avx2|avxvnni|scalar caps it). */
export function kernelIsa(): string {
  return loadAddon().kernelIsa();
}
