// Internal to native/core/quant: the scale-fitting helpers the K-quant reference quantizers share
// (k_quants_ref.cpp defines them; k_quants2_ref.cpp uses them too).
#pragma once
#include <cstdint>

namespace llmserve::quant {

constexpr float kGroupMaxEps = 1e-15f;  // ggml's GROUP_MAX_EPS: below this a group is all zero

// Asymmetric fit x ~ scale*L - min with L in [0, nmax], weighted least squares over a sweep of
// nstep + 1 candidate inverse scales (ggml's make_qkx2_quants; use_mad: absolute instead of squared
// error, as Q2_K uses). Returns the scale, stores the (positive) min in *the_min.
float make_qkx2_quants(int n, int nmax, const float* x, const float* w, uint8_t* L, float* the_min, uint8_t* Laux,
                       float rmin, float rdelta, int nstep, bool use_mad);

}  // namespace llmserve::quant
