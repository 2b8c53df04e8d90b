// How a flattened batch of tokens from many sequences maps onto the paged KV pool. The scheduler
// builds BatchSeq entries; the forward pass expands them to one position and one block table per
// token (BatchLayout) for storing K/V and for attention.
#pragma once
#include <cstdint>

namespace llmserve {

// llama.cpp runs a prompt batch of at least 64 tokens through its tiled attention kernel (an f32
// accumulator) and everything else through its decode kernel (an f16 accumulator rounded after
// every key). We choose per request, not per batch, so no batch changes a result: a request whose
// prompt has at least kPromptTiledMinTokens tokens computes every token, prompt and generated,
// with the prompt arithmetic (attention/attention.h: attention_prompt, with an f16 or f32 cache);
// a shorter one every token with the decode arithmetic, as llama.cpp computes a short prompt and
// its generation. So the K/V of a token depend on its tokens and on that choice: prefix-cache keys
// and session reuse carry it (a short conversation's session is recomputed once, at the turn
// whose prompt reaches the threshold; after that a turn adopts the previous one whole, and a
// fresh request with the same history gets the same bits, generated tokens included).
constexpr int64_t kPromptTiledMinTokens = 64;
// Whether a request with an n_prompt-token prompt uses the prompt arithmetic.
inline bool prompt_tiled(int64_t n_prompt) { return n_prompt >= kPromptTiledMinTokens; }

// One sequence's part of a flattened batch; its tokens are contiguous in the batch, in order.
struct BatchSeq {
  const int32_t* blocks = nullptr;  // block table covering positions [0, pos0 + n_tokens)
  int64_t n_blocks = 0;             // entries in the block table
  int64_t pos0 = 0;                 // positions already in the KV cache
  int64_t n_tokens = 0;             // tokens in this batch (>= 1)
  int out = 1;                      // logits wanted: 0 none, 1 last token, 2 every token
  uint64_t adapter = 0;             // the request's LoRA adapter id (0: the base model); the
                                    // executor resolves it to the weights it loaded
  // Block table of the sliding-window (local) layers when they live in their own bounded pool
  // (KvPools): same indexing as `blocks`, but only the blocks holding positions
  // [max(0, pos0 - window + 1), pos0 + n_tokens) need be valid; earlier entries may be -1 (freed
  // once out of every query's window). Null: local layers share `blocks` and the one pool.
  const int32_t* local_blocks = nullptr;
  // Its tokens use the prompt arithmetic (prompt_tiled), else the decode arithmetic.
  bool tiled = false;
};

// Where each token of a flattened batch lives: token t is at position pos[t] of a sequence whose
// block table is blocks[t] (position p in block blocks[t][p / block_size], slot p % block_size).
struct BatchLayout {
  int64_t n = 0;
  const int64_t* pos = nullptr;            // [n]
  const int32_t* const* blocks = nullptr;  // [n]
  const uint8_t* tiled = nullptr;          // [n] 1: the row uses the prompt arithmetic (null: none)
};

}  // namespace llmserve
