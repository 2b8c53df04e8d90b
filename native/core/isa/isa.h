// The one CPU-feature dispatcher: which instruction set the kernels may use. The CPU is probed
// once; LLMSERVE_FORCE_SCALAR=1 or LLMSERVE_KERNELS=scalar|avx2|avxvnni in the environment caps
// the choice (tests of every path on one machine, AVX2-tier benchmarks on an AVX-512 machine). Every
// SIMD kernel family (quant/ block kernels and GEMM, attention/, model/ elementwise ops) selects
// its variant from active_isa(), so they always agree on one tier.
#pragma once

namespace llmserve {

enum class Isa : int {
  Scalar = 0,
  Avx2 = 1,    // AVX2 + FMA + F16C
  Avx512 = 2,  // AVX-512 F/BW/VL/DQ/VNNI (with everything Avx2 needs)
};

// What this CPU (and OS: the zmm state is saved) can run, ignoring the environment.
bool cpu_supports(Isa isa);
// The tier kernels use: the best supported one, capped by the environment (read once).
Isa active_isa();
// AVX-512 VBMI (byte permutes across a register: Ice Lake, Zen 4 and later) on top of the Avx512
// tier: kernels that have a VBMI variant use it when active_isa() is Avx512 and this holds.
bool cpu_has_avx512vbmi();
// AVX-VNNI (the VEX-encoded vpdpbusd on ymm: Intel Alder Lake and later client cores, Zen 5) on
// top of the Avx2 tier: the int8 GEMMs take it when active_isa() is Avx2, this CPU has it, and
// LLMSERVE_KERNELS is not "avx2" (which means the plain AVX2 maddubs kernels, as llama.cpp's
// "haswell" variant runs them). LLMSERVE_KERNELS=avxvnni asks for this tier on an AVX-512 CPU.
bool avx_vnni_active();
// Whether this CPU has AVX-VNNI and AVX2 (ignoring the environment).
bool cpu_has_avx_vnni();
// "scalar", "avx2", "avx512".
const char* isa_name(Isa isa);
// Re-reads the environment (tests only; not thread-safe against concurrent kernel calls).
void reset_isa_for_testing();

}  // namespace llmserve
