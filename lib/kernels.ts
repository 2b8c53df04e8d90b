import { loadAddon } from "./binding.js";

/** The SIMD kernel family chosen at startup ("avx512", "avx2" or "scalar"; LLMSERVE_FORCE_SCALAR=1 forces scalar). */
export function kernelIsa(): string {
  return loadAddon().kernelIsa();
}
