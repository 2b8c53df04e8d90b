// AVX2 + FMA + F16C attention_group (compiled with -mavx2 -mfma -mf16c; only called after
// attention.cpp has checked the CPU (isa/)): the tiled driver (attention_tiled.h) with the 8-lane
// scores and accumulators of attention_avx2_ops.h. Bit-identical to attention_group_ref. Also
// attention_prompt (attention_prompt_tiled.h), bit-identical to attention_prompt_ref.
#include "attention.h"
#include "attention_avx2_ops.h"
#include "attention_prompt_tiled.h"
#include "attention_tiled.h"

namespace llmserve {

void attention_group_avx2(const AttnGroup& a) { attention_group_tiled<Avx2Ops>(a); }

// Scores 4 positions x 2 row vectors (8 chains) per block: 16 ymm registers.
void attention_prompt_avx2(const AttnGroup& a) { attention_prompt_tiled<Avx2Ops, Vec8, 4, 2>(a); }

}  // namespace llmserve
