// AVX2 + FMA + F16C attention_group (compiled with -mavx2 -mfma -mf16c; only called after
// attention.cpp has checked the CPU (isa/)): the tiled driver (attention_tiled.h) with the 8-lane
// scores and accumulators of attention_avx2_ops.h. Bit-identical to attention_group_ref.
#include "attention.h"
#include "attention_avx2_ops.h"
#include "attention_tiled.h"

namespace llmserve {

void attention_group_avx2(const AttnGroup& a) { attention_group_tiled<Avx2Ops>(a); }

}  // namespace llmserve
