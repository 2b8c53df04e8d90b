// Mutation testing of the C++ core: applies each hand-written mutation below (an exact
// search/replace on one source file, which must match exactly once), rebuilds only the native test
// binary in its own build folder (build-mutate/), runs the native tests (dispatched kernels, then
// forced scalar), restores the file, and reports which mutations survived. Every mutation must be
// killed: a survivor means a native test is missing. `npm run test:mutation:native`
//   [-- --only id1,id2] [--list] [--keep-going: do not stop at the first survivor]
// The original file is restored whatever happens (error, test failure, Ctrl-C, SIGTERM); a copy of
// it is kept in build-mutate/backup/ while it is mutated, and a later run restores any left there
// (e.g. after a SIGKILL) before it starts.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const buildDir = join(root, "build-mutate");
const backupDir = join(buildDir, "backup");
const bin = join(buildDir, "bin", "llmserve_native_tests");

/** id, file, exact text, its replacement, and what the mutation breaks. */
export const MUTATIONS = [
  {
    id: "alloc-unref-never-frees",
    file: "native/core/kv/block_allocator.cpp",
    find: "  if (--blk.rc > 0) return;",
    replace: "  if (--blk.rc >= 0) return;",
    why: "block allocator: flipped comparison, a block whose last reference goes is never freed or cached",
  },
  {
    id: "alloc-ref-cached-stays-in-lru",
    file: "native/core/kv/block_allocator.cpp",
    find: "  if (blk.rc > 0) {\n    ++blk.rc;",
    replace: "  if (blk.rc >= 0) {\n    ++blk.rc;",
    why: "block allocator: flipped comparison, re-referencing a cached block leaves it on the LRU list",
  },
  {
    id: "alloc-evicts-most-recent",
    file: "native/core/kv/block_allocator.cpp",
    find: "    b = lru_head_;\n    lru_remove(b);",
    replace: "    b = lru_tail_;\n    lru_remove(b);",
    why: "block allocator: evicts the most recently released cached block instead of the least",
  },
  {
    id: "sched-no-prefix-registration",
    file: "native/core/sched/step.cpp",
    find: "    register_full_blocks(s);\n    if (!p.out) continue;",
    replace: "    if (!p.out) continue;",
    why: "scheduler: computed full blocks are never registered in the prefix cache",
  },
  {
    id: "sched-no-prefix-lookup",
    file: "native/core/sched/admission.cpp",
    find: "  if (opts_.prefix_cache && s.blocks.empty()) {",
    replace: "  if (false && opts_.prefix_cache && s.blocks.empty()) {",
    why: "scheduler: admission never looks up cached prefix blocks",
  },
  {
    id: "sched-skip-victim-preemption",
    file: "native/core/sched/preemption.cpp",
    find: "        order.pop_back();\n        preempt(*victim);",
    replace: "        order.pop_back();\n        (void)victim;",
    why: "scheduler: out of KV blocks, the lowest-ranked running sequence is not preempted",
  },
  {
    id: "sched-preempt-keeps-kv",
    file: "native/core/sched/preemption.cpp",
    find: "  release_blocks(s);\n  ++st_.preemptions;",
    replace: "  ++st_.preemptions;",
    why: "scheduler: a preempted sequence keeps its KV blocks (nothing is freed)",
  },
  {
    id: "sched-prefill-chunk-off-by-one",
    file: "native/core/sched/chunked_prefill.h",
    find: "&& generating) return prefill_chunk;",
    replace: "&& generating) return prefill_chunk + 1;",
    why: "chunked prefill: one prompt token more per step than prefillChunk while others generate",
  },
  {
    id: "sched-chunk-position-off-by-one",
    file: "native/core/sched/step.cpp",
    find: "    b.pos0 = s.n_computed;",
    replace: "    b.pos0 = s.n_computed + 1;",
    why: "chunked prefill: a chunk's first position is one past the tokens already computed",
  },
  {
    id: "sched-priority-ignored",
    file: "native/core/sched/sequence.h",
    find: "  if (a.req->priority != b.req->priority) return a.req->priority > b.req->priority;\n",
    replace: "",
    why: "admission: priority ignored, waiting requests run in arrival order only",
  },
  {
    id: "sched-max-sequences-off-by-one",
    file: "native/core/sched/admission.cpp",
    find: "(int64_t)running_.size() < opts_.max_sequences",
    replace: "(int64_t)running_.size() <= opts_.max_sequences",
    why: "admission: one sequence more than maxSequences runs at once",
  },
  {
    id: "sched-session-not-adopted",
    file: "native/core/sched/admission.cpp",
    find: "      if (extends) {",
    replace: "      if (false && extends) {",
    why: "sessions: a turn that extends its session recomputes instead of adopting the kept KV",
  },
  {
    id: "sched-evicts-pinned-session",
    file: "native/core/sched/preemption.cpp",
    find: "    if (it->second->pinned) continue;\n",
    replace: "",
    why: "session eviction: pinned sessions are evicted like any other",
  },
  {
    id: "sched-evicts-newest-session",
    file: "native/core/sched/preemption.cpp",
    find: "it->second->last_used < victim->second->last_used",
    replace: "it->second->last_used > victim->second->last_used",
    why: "session eviction: the most recently used session goes first instead of the least",
  },
  {
    id: "sched-cow-copies-short",
    file: "native/core/sched/admission.cpp",
    find: "ss.n_computed - full * bs);",
    replace: "ss.n_computed - full * bs - 1);",
    why: "prefix reuse: the copy-on-write of a kept partial block misses its last slot",
  },
  {
    id: "lora-alpha-ignored",
    file: "native/core/lora/lora.cpp",
    find: "pr.scale = a->alpha_ != 0.0f ? user_scale * a->alpha_ / rank : user_scale;",
    replace: "pr.scale = user_scale;",
    why: "LoRA: the adapter's alpha / rank is left out of the scale",
  },
  {
    id: "lora-delta-unscaled",
    file: "native/core/lora/lora.cpp",
    find: "yr[j] = yr[j] + ur[j] * scale;",
    replace: "yr[j] = yr[j] + ur[j];",
    why: "LoRA: the low-rank term is added without its scale",
  },
  {
    id: "peft-qk-not-permuted",
    file: "native/core/lora/peft.cpp",
    find: 'const bool permute_qk = mc.arch == "llama";',
    replace: "const bool permute_qk = false;",
    why: "PEFT: lora_B rows of a llama's q/k are not permuted as convert_hf_to_gguf.py permutes q_proj / k_proj",
  },
  {
    id: "peft-alpha-pattern-ignored",
    file: "native/core/lora/peft.cpp",
    find: "const double alpha = PeftConfig::lookup(cfg.alpha_pattern, module, cfg.alpha);",
    replace: "const double alpha = cfg.alpha;",
    why: "PEFT: alpha_pattern overrides are ignored (every module gets lora_alpha)",
  },
  {
    id: "safetensors-overlap-allowed",
    file: "native/core/lora/safetensors.cpp",
    find: "    if (t->begin != at)",
    replace: "    if (t->begin > at)",
    why: "safetensors reader: tensors whose byte ranges overlap are accepted",
  },
  {
    id: "json-duplicate-keys-allowed",
    file: "native/core/lora/json.cpp",
    find: "      if (!seen.insert(key).second) return fail(",
    replace: "      if (false) return fail(",
    why: "JSON reader: an object with a key twice is accepted (an ambiguous safetensors header)",
  },
  {
    id: "pattern-caret-anywhere",
    file: "native/core/lora/pattern.cpp",
    find: "          if (pos == 0) stack.push_back(pc + 1);",
    replace: "          stack.push_back(pc + 1);",
    why: "module patterns: ^ matches anywhere, so a rank_pattern key anchored at the start matches a suffix",
  },
  {
    id: "dequant-q8_0-scale",
    file: "native/core/quant/q8_0_ref.cpp",
    find: "y[i * kQK8_0 + j] = b[i].qs[j] * d;",
    replace: "y[i * kQK8_0 + j] = b[i].qs[j] * d * 0.5f;",
    why: "Q8_0 reference dequantizer: wrong scale",
  },
  {
    id: "dequant-q4_0-scale",
    file: "native/core/quant/q4_0_ref.cpp",
    find: "      y[j + kQK4_0 / 2] = ((b[i].qs[j] >> 4) - 8) * d;",
    replace: "      y[j + kQK4_0 / 2] = ((b[i].qs[j] >> 4) - 8) * d * 1.0625f;",
    why: "Q4_0 reference dequantizer: wrong scale on the high nibbles",
  },
  {
    id: "dequant-q4_k-min",
    file: "native/core/quant/k_quants_ref.cpp",
    find: "const float d1 = d * sc, m1 = dmin * m;",
    replace: "const float d1 = d * sc, m1 = dmin * m * 0.5f;",
    why: "Q4_K reference dequantizer: wrong scale of the first sub-block's min",
  },
  {
    id: "gemm-act-scale-all-isas",
    file: "native/core/quant/gemm_ref.cpp",
    find: "      const float df = half_to_float(tmp[i].d);",
    replace: "      const float df = 2.0f * half_to_float(tmp[i].d);",
    why: "GEMM activation preparation shared by every ISA: wrong Q8_0 scale (a GEMM consistently wrong at every batch size)",
  },
  {
    id: "eval-scores-whole-chunk",
    file: "native/core/eval/perplexity.h",
    find: "inline int64_t first_scored_row(int64_t n_ctx) { return n_ctx / 2; }",
    replace: "inline int64_t first_scored_row(int64_t n_ctx) { return 0 * n_ctx; }",
    why: "perplexity: scores every row of a chunk instead of its second half (llama-perplexity's first = n_ctx/2)",
  },
  {
    id: "lowrank-wrong-group-factors",
    file: "native/core/model/lowrank.cpp",
    find: "      b_pass(groups[g].f,",
    replace: "      b_pass(groups[0].f,",
    why: "multi-LoRA: every group of a batch gets the first adapter's B (requests leak into each other's adapters)",
  },
  {
    id: "lora-scatter-skips-copy-back",
    file: "native/core/model/forward.cpp",
    find: "      std::copy(p.gy.data() + i * n_out, p.gy.data() + (i + 1) * n_out, y + r * ldy);",
    replace: "      (void)r;",
    why: "LoRA: a non-contiguous group's update (q8_0/bf16 adapters) is computed but never scattered back",
  },
  {
    id: "eval-kl-reversed",
    file: "native/core/eval/perplexity.cpp",
    find: "    kl += std::exp(lp_ref) * (lp_ref - lp);",
    replace: "    kl += std::exp(lp) * (lp - lp_ref);",
    why: "KL divergence: KL(model || reference) instead of KL(reference || model)",
  },
  {
    id: "eval-passes-drop-logits-from",
    file: "native/core/backend/cpu_executor.cpp",
    find: "      if (!last_only && pos < logits_from && end > logits_from) end = logits_from;",
    replace: "      if (!last_only && pos < logits_from && end > logits_from + 1) end = logits_from + 1;",
    why: "evaluate(): a pass straddling logits_from is cut one token late (a row before logits_from is returned)",
  },
  {
    id: "quantize-more-bits-off-by-one",
    file: "native/core/compress/recipe.cpp",
    find: "bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }",
    replace: "bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 1; }",
    why: "quantize recipe: the _M mixes bump attn_v / ffn_down on the wrong layers",
  },
  {
    id: "quantize-q4k-falls-back-to-q4_0",
    file: "native/core/compress/recipe.cpp",
    find: "    case T::Q4_K: r = T::Q5_0; break;",
    replace: "    case T::Q4_K: r = T::Q4_0; break;",
    why: "quantize recipe: Q4_K rows that do not fit 256 fall back to Q4_0 instead of llama.cpp's Q5_0",
  },
  {
    id: "quantize-tensor-type-rule-ignored",
    file: "native/core/compress/recipe.cpp",
    find: "      if (!manual && !ov.pure) want = mix_rule(mix, model, t, cat, tied, c, ov);",
    replace: "      if (!ov.pure) want = mix_rule(mix, model, t, cat, tied, c, ov);",
    why: "quantize overrides: a --tensor-type match is overwritten by the mix's rule (and advances its layer count)",
  },
  {
    id: "quantize-cancel-ignored",
    file: "native/core/compress/quantize.cpp",
    find: "bool cancelled(const std::atomic<bool>* cancel) { return cancel && cancel->load(std::memory_order_relaxed); }",
    replace: "bool cancelled(const std::atomic<bool>* cancel) { return false && cancel; }",
    why: "quantize: a cancel request is never seen (the file is written anyway)",
  },
  {
    id: "imatrix-k4-weights-wrong-column",
    file: "native/core/quant/weighted_ref.cpp",
    find: "    for (int l = 0; l < 32; ++l) weights[l] = qw[32 * j + l] * std::sqrt(sigma2 + x[32 * j + l] * x[32 * j + l]);",
    replace: "    for (int l = 0; l < 32; ++l) weights[l] = qw[l] * std::sqrt(sigma2 + x[32 * j + l] * x[32 * j + l]);",
    why: "imatrix Q4_K/Q5_K: every sub-block weighted by the first 32 columns' importance instead of its own",
  },
  {
    id: "imatrix-legacy-weights-ignored",
    file: "native/core/quant/weighted_ref.cpp",
    find: "  for (int j = 0; j < 32; ++j) weight[j] = q[j] * std::sqrt(sigma2 + xb[j] * xb[j]);",
    replace: "  for (int j = 0; j < 32; ++j) weight[j] = std::sqrt(sigma2 + xb[j] * xb[j]);",
    why: "imatrix Q4_0/Q4_1/Q5_0/Q5_1: the importance weights are dropped (only the row's own magnitudes count)",
  },
  {
    id: "qwen3-skip-q-norm",
    file: "native/core/model/forward.cpp",
    find: "          if (L.attn_q_norm) {",
    replace: "          if (false && L.attn_q_norm) {",
    why: "qwen3: the per-head RMSNorm of Q before RoPE is skipped",
  },
  {
    id: "qwen3-skip-k-norm",
    file: "native/core/model/forward.cpp",
    find: "          if (L.attn_k_norm) {",
    replace: "          if (false && L.attn_k_norm) {",
    why: "qwen3: the per-head RMSNorm of K before RoPE is skipped",
  },
  {
    id: "rope-ignores-freq-factors",
    file: "native/core/model/ops.cpp",
    find: "      const float ff = freq_factors ? freq_factors[i0 / 2] : 1.0f;",
    replace: "      const float ff = 1.0f;",
    why: "RoPE: Llama 3's rope_freqs.weight factors are ignored",
  },
  {
    id: "rope-attn-factor-ignored",
    file: "native/core/model/model_config.cpp",
    find: "    c.yarn_attn_factor *= static_cast<float>(fv);",
    replace: "    (void)fv;",
    why: "RoPE: the rope.scaling.attn_factor key is read but not applied",
  },
  {
    id: "swa-window-off-by-one",
    file: "native/core/attention/attention.cpp",
    find: "std::max<int64_t>(0, a.len - c.window)",
    replace: "std::max<int64_t>(0, a.len - c.window - 1)",
    why: "sliding window: a local layer's query also sees the key one position outside its window",
  },
  {
    id: "gemma-post-norm-skipped",
    file: "native/core/model/forward.cpp",
    find: "        if (post_norm) rms_norm_f32(",
    replace: "        if (false && post_norm) rms_norm_f32(",
    why: "gemma: the attention / FFN output goes into the residual without its post-norm",
  },
  {
    id: "gemma-final-softcap-dropped",
    file: "native/core/model/forward.cpp",
    find: "  if (p.c.final_softcap != 0.0f) {",
    replace: "  if (false) {",
    why: "gemma: the final logit soft-cap is not applied",
  },
  {
    id: "phi3-gate-up-swapped",
    file: "native/core/model/model.cpp",
    find: "L.ffn_gate = row_view(gu, 0, c.n_ff), L.ffn_up = row_view(gu, c.n_ff, c.n_ff);",
    replace: "L.ffn_up = row_view(gu, 0, c.n_ff), L.ffn_gate = row_view(gu, c.n_ff, c.n_ff);",
    why: "phi3: the halves of the fused gate-up tensor are swapped (silu of the up projection)",
  },
  {
    id: "sampling-bias-skips-scan",
    file: "native/core/sampling/sampler.h",
    find: "  const std::unordered_map<int32_t, int32_t>* overridden() const { return bias_.empty() ? &counts_ : &mods_; }",
    replace: "  const std::unordered_map<int32_t, int32_t>* overridden() const { return &counts_; }",
    why: "sampling: the top-k scan also offers a biased token's raw logit, so a banned token can still win",
  },
  {
    id: "sampling-bias-after-penalty",
    file: "native/core/sampling/sampler.cpp",
    find: "    if (it != bias_.end()) l = it->second <= -kMaxLogitBias ? kNegInf : sanitize(l + it->second);\n    if (count > 0) l = penalize(l, count);",
    replace:
      "    if (count > 0) l = penalize(l, count);\n    if (it != bias_.end()) l = it->second <= -kMaxLogitBias ? kNegInf : sanitize(l + it->second);",
    why: "sampling: logit bias applied after the penalties instead of before (llama.cpp's order)",
  },
  {
    id: "sampling-bias-no-ban",
    file: "native/core/sampling/sampler.cpp",
    find: "it->second <= -kMaxLogitBias ? kNegInf : sanitize(l + it->second)",
    replace: "sanitize(l + it->second)",
    why: "sampling: logit bias -100 is added instead of banning the token",
  },
  {
    id: "os-same-file-ignores-inode",
    file: "native/core/os/os.cpp",
    find: "  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;",
    replace: "  return sa.st_dev == sb.st_dev;",
    why: "os: two files on one device count as the same file (quantize would refuse any output path there)",
  },
  {
    id: "embed-mean-drops-last-row",
    file: "native/core/eval/pooling.cpp",
    find: "const int64_t used = p == Pooling::Mean ? n_rows : 1;",
    replace: "const int64_t used = p == Pooling::Mean ? n_rows - 1 : 1;",
    why: "embeddings: mean pooling averages all rows but the last",
  },
  {
    id: "embed-hidden-skips-output-norm",
    file: "native/core/model/forward.cpp",
    find: "  if (hidden) {\n    std::copy(B.xn, B.xn + p.n_out * E, logits);",
    replace: "  if (hidden) {\n    std::copy(B.x, B.x + p.n_out * E, logits);",
    why: "embeddings: the hidden rows are taken before output_norm",
  },
  {
    id: "train-softmax-bwd-no-rowsum",
    file: "native/core/train/train_ops.cpp",
    find: "p[j] * (dS[j] - rowsum) * scale",
    replace: "p[j] * dS[j] * scale",
    why: "training: attention softmax backward drops the Σ P·dP term (dS = P∘dP instead of P∘(dP − rowsum))",
  },
  {
    id: "train-rmsnorm-bwd-no-norm-term",
    file: "native/core/train/train_ops.cpp",
    find: "rho * g[i] * w[i] - xt[i] * c",
    replace: "rho * g[i] * w[i]",
    why: "training: RMSNorm backward treats the scale ρ as a constant (drops −x·ρ³/d·Σ g·w·x)",
  },
  {
    id: "train-lars-no-weight-decay-in-trust",
    file: "native/core/train/optim.cpp",
    find: "o_.lars_eta * wn / (gn + wd * wn)",
    replace: "o_.lars_eta * wn / gn",
    why: "training: LARS trust ratio without the β‖w‖ term in its denominator",
  },
  {
    id: "prune-24-keeps-wrong-two",
    file: "native/core/compress/prune.cpp",
    find: "      if (i != a && i != b) w[g + i] = 0.0f;",
    replace: "      if (i == a || i == b) w[g + i] = 0.0f;",
    why: "2:4 pruning zeroes the two highest-scored entries of each group instead of the two lowest",
  },
  {
    id: "wanda-ignores-activations",
    file: "native/core/compress/prune.cpp",
    find: "    score[j] = static_cast<float>(col_sumsq ? a * std::sqrt(col_sumsq[j]) : a);",
    replace: "    score[j] = static_cast<float>(a);",
    why: "Wanda scores by |W| alone (the calibration norms ||x_j|| are ignored): it becomes magnitude pruning",
  },
  {
    id: "sparse24-avx2-wrong-half",
    file: "native/core/model/sparse24_avx2.cpp",
    find: "  return _mm256_blend_ps(lo, hi, 0xF0);",
    replace: "  return _mm256_blend_ps(lo, hi, 0x0F);",
    why: "2:4 AVX2 kernel: the x values of groups 2-3 are taken from columns 0-7 instead of 8-15",
  },
  {
    id: "sparse24-ref-lane-order",
    file: "native/core/model/sparse24.cpp",
    find: "        s[k % 16] = std::fma(fp16_to_fp32(v[k]), xt[col], s[k % 16]);",
    replace: "        s[k % 8] = std::fma(fp16_to_fp32(v[k]), xt[col], s[k % 8]);",
    why: "2:4 scalar reference: 8 lanes instead of 16, so the SIMD kernels no longer match it bit for bit",
  },
  {
    id: "grammar-mask-allows-rejected",
    file: "native/core/grammar/matcher.cpp",
    find: "    if (!step_byte(nodes[c].byte, &v, levels_[(size_t)depth], &out)) continue;",
    replace: "    step_byte(nodes[c].byte, &v, levels_[(size_t)depth], &out);",
    why: "grammar: the trie walk allows tokens whose bytes the grammar rejects (no pruning)",
  },
  {
    id: "grammar-negated-class-as-positive",
    file: "native/core/grammar/gbnf.cpp",
    find: "  return found == positive;",
    replace: "  return found;",
    why: "grammar: a negated character class [^...] matches what it should exclude",
  },
  {
    id: "grammar-no-left-recursion-check",
    file: "native/core/grammar/gbnf.cpp",
    find: "  LLMS_RETURN_IF_ERROR(check_left_recursion(*g));",
    replace: "",
    why: "grammar: left-recursive grammars are accepted (the matcher would recurse without end)",
  },
  {
    id: "sampling-mask-ignored",
    file: "native/core/sampling/sampler.cpp",
    find: "masked_[(size_t)i] = allowed[i] ? logits[i] : ninf;",
    replace: "masked_[(size_t)i] = logits[i];",
    why: "sampling: sample_masked ignores the grammar mask",
  },
  {
    id: "lowrank-q8-ref-drops-scale",
    file: "native/core/model/lowrank.cpp",
    find: "return fp16_to_fp32(b.d) * static_cast<float>(b.qs[i % quant::kQK8_0]);",
    replace: "return static_cast<float>(b.qs[i % quant::kQK8_0]);",
    why: "low-rank kernels: the q8_0 reference reads q without its block scale",
  },
  {
    id: "lowrank-q8-avx2-wrong-offset",
    file: "native/core/model/lowrank_avx2.cpp",
    find: "b.qs + i % quant::kQK8_0));",
    replace: "b.qs + (i + 8) % quant::kQK8_0));",
    why: "low-rank kernels: the AVX2 q8_0 load reads the wrong eight of its block",
  },
  {
    id: "lora-q8-bt-not-transposed",
    file: "native/core/lora/lora_q8.cpp",
    find: "col[static_cast<size_t>(j)] = b[static_cast<size_t>(j * r + k)];",
    replace: "col[static_cast<size_t>(j)] = b[static_cast<size_t>(k * n_out + j)];",
    why: "LoRA q8_0 storage: B^T's rows are built from B without transposing it",
  },
  {
    id: "swa-trim-one-too-many",
    file: "native/core/sched/preemption.cpp",
    find: "std::max<int64_t>(0, n_computed - window_ + 1) / kv_.block_size",
    replace: "std::max<int64_t>(0, n_computed - window_ + 2) / kv_.block_size",
    why: "sliding-window KV: a local block is freed while its last position is still in the window",
  },
  {
    id: "swa-prefix-skips-window-check",
    file: "native/core/sched/admission.cpp",
    find: "      k = adopt_local_window(keys, k, &s.lblocks);",
    replace: "      s.lblocks.assign((size_t)k, -1);",
    why: "sliding-window KV: a prefix-cache hit adopts global blocks without the local layers' window",
  },
  {
    id: "swa-local-blocks-unregistered",
    file: "native/core/sched/admission.cpp",
    find: "      lalloc_->register_block(s.lblocks[(size_t)i], key);",
    replace: "      (void)key;",
    why: "sliding-window KV: local blocks never enter the prefix cache, so no prefix past the window is reused",
  },
  {
    id: "swa-local-layers-read-global-table",
    file: "native/core/model/forward.cpp",
    find: "p.B.lblocks[t0 + i] = p.kv.local ? q.local_blocks : q.blocks;",
    replace: "p.B.lblocks[t0 + i] = q.blocks;",
    why: "sliding-window KV: local layers index their pool with the global block table",
  },
  {
    id: "svd-jacobi-wrong-vector-rotation",
    file: "native/core/compress/svd.cpp",
    find: "          V[k * n + p] = c * a - s * b;",
    replace: "          V[k * n + p] = c * a + s * b;",
    why: "SVD: the Jacobi eigensolver rotates its eigenvectors with the wrong sign, so the singular vectors are wrong",
  },
  {
    id: "factored-csr-drops-last-entry",
    file: "native/core/model/factored.cpp",
    find: "        for (int32_t e = w.sp_ptr[i]; e < w.sp_ptr[i + 1]; ++e)",
    replace: "        for (int32_t e = w.sp_ptr[i]; e + 1 < w.sp_ptr[i + 1]; ++e)",
    why: "low-rank + sparse: the residual pass skips each row's last entry (in the reference and the fast path alike)",
  },
  {
    id: "lowrank-aware-no-unscale",
    file: "native/core/compress/factorize.cpp",
    find: "      const float x = static_cast<float>(svd.vt[i * n_in + j] * sq / d[j]);",
    replace: "      const float x = static_cast<float>(svd.vt[i * n_in + j] * sq);",
    why: "activation-aware factorization: V is not divided back by the column scales, so U·V approximates W·diag(d)",
  },
  {
    id: "lowrank-energy-rank-one-short",
    file: "native/core/compress/factorize.cpp",
    find: "        r = i + 1;",
    replace: "        r = std::max<int64_t>(1, i);",
    why: "energy truncation keeps one singular value fewer than the fraction needs",
  },
  {
    id: "grammar-classes-ignore-references",
    file: "native/core/grammar/mask_cache.cpp",
    find: "e.type == GType::RuleRef ? cls[e.value] : e.value",
    replace: "e.type == GType::RuleRef ? 0u : e.value",
    why: "grammar masks: rules of the same shape share a class whatever they reference (a bounded repetition's last steps reuse the mask of its first)",
  },
  {
    id: "grammar-classes-too-shallow",
    file: "native/core/grammar/mask_cache.cpp",
    find: "const uint64_t levels = h < 0 ? 0 : (d + 1) * ((uint64_t)h + 2);",
    replace: "const uint64_t levels = h < 0 ? 0 : 1;",
    why: "grammar masks: the refinement stops before the depth a token's walk can see",
  },
  {
    id: "grammar-mask-cache-no-eviction",
    file: "native/core/grammar/mask_cache.cpp",
    find: "while (bytes_ + cost > cap_ && !order_.empty()) {",
    replace: "while (false) {",
    why: "grammar masks: the shared mask cache grows past its byte cap",
  },
  {
    id: "moe-no-renormalisation",
    file: "native/core/model/moe.cpp",
    find: "wts[j] = wts[j] / wsum;",
    replace: "wts[j] = wts[j];",
    why: "moe: the chosen experts' probabilities are not renormalised to sum 1 (llama.cpp's norm_w)",
  },
  {
    id: "moe-topk-least-probable",
    file: "native/core/model/moe.cpp",
    find: "(best < 0 || probs[e] > probs[best])",
    replace: "(best < 0 || probs[e] < probs[best])",
    why: "moe: top-k routing picks the least probable experts",
  },
  {
    id: "moe-expert-used-unchecked",
    file: "native/core/model/model_config.cpp",
    find: 'LLMS_RETURN_IF_ERROR(check_range(a + "expert_used_count", c.n_expert_used, 1, c.n_expert));',
    replace: "",
    why: "moe: expert_used_count outside [1, expert_count] is accepted (routing would index past the experts)",
  },
  {
    id: "distill-grad-no-temperature",
    file: "native/core/train/distill.cpp",
    find: "a * temp * (std::exp(log_q) - p)",
    replace: "a * (std::exp(log_q) - p)",
    why: "distillation: the KL term's gradient loses its factor T (only right at T = 1)",
  },
  {
    id: "distill-kl-reversed",
    file: "native/core/train/distill.cpp",
    find: "k += p * (log_p - log_q);",
    replace: "k += std::exp(log_q) * (log_q - log_p);",
    why: "distillation: the reported KL is KL(student ‖ teacher) instead of KL(teacher ‖ student)",
  },
  {
    id: "distill-teacher-logits-stale",
    file: "native/core/train/trainer.cpp",
    find: "      if (distilling) {",
    replace: "      if (distilling && teacher_logits.empty()) {",
    why: "distillation: the teacher runs once and every later sequence trains against the first one's logits",
  },
  {
    id: "train-recompute-wrong-layer-input",
    file: "native/core/train/lora_train.cpp",
    find: "inputs[static_cast<size_t>(il)].data(), n, &acts[0]",
    replace: "inputs[static_cast<size_t>(il > 0 ? il - 1 : 0)].data(), n, &acts[0]",
    why: "training: activation recomputation reruns a block on the previous layer's input",
  },
];
const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const value = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};

if (flag("--list")) {
  for (const m of MUTATIONS) console.log(`${m.id.padEnd(34)} ${m.file}: ${m.why}`);
  process.exit(0);
}

/** Files currently mutated: path -> original text (restored on any exit). */
const pending = new Map();
function restoreAll() {
  for (const [file, text] of pending) {
    writeFileSync(join(root, file), text);
    pending.delete(file);
  }
  rmSync(backupDir, { recursive: true, force: true });
}
let child;
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, () => {
    if (child) child.kill("SIGKILL");
    restoreAll();
    console.error(`\nmutate-native: ${sig}: restored the source; stopping`);
    process.exit(130);
  });
}
process.on("exit", restoreAll);
process.on("uncaughtException", (err) => {
  restoreAll();
  console.error(err);
  process.exit(2);
});

/** Runs a command; resolves { code, out, ms }; code "timeout" past timeoutMs. */
function run(cmd, argv, { env = {}, timeoutMs = 0, quiet = true } = {}) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    let out = "";
    child = spawn(cmd, argv, { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    const onData = (d) => {
      out += d;
      if (!quiet) process.stdout.write(d);
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    let timedOut = false;
    const timer = timeoutMs
      ? setTimeout(() => {
          timedOut = true;
          child.kill("SIGKILL");
        }, timeoutMs)
      : undefined;
    child.on("close", (code) => {
      clearTimeout(timer);
      child = undefined;
      resolve({ code: timedOut ? "timeout" : code, out, ms: Date.now() - t0 });
    });
  });
}

const jobs = String(Math.max(1, Math.min(2, availableParallelism())));
async function build(quiet = true) {
  if (!existsSync(join(buildDir, "CMakeCache.txt"))) {
    const c = await run(
      "cmake",
      ["-S", root, "-B", buildDir, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DLLMSERVE_BUILD_TESTS=ON"],
      { quiet },
    );
    if (c.code !== 0) return c;
  }
  return run("cmake", ["--build", buildDir, "--target", "llmserve_native_tests", "-j", jobs], { quiet });
}

// The few slow tests (file-level quantization and imatrix byte-equality against llama.cpp, the
// empirical sampling frequencies: over 90% of a native run) run after the rest, so most mutations
// are killed in seconds; the verdict is the same as one whole run (a survivor has passed them all).
const SLOW = ["quantize_", "imatrix_", "sampling_empirical"];

/** The native tests, dispatched kernels (fast ones, then the slow ones), then forced scalar (as npm run test:native). */
async function tests(timeoutMs) {
  const passes = [
    ["dispatched kernels", SLOW.map((s) => `-${s}`), {}],
    ["dispatched kernels, slow tests", SLOW, {}],
    ["forced scalar", [], { LLMSERVE_FORCE_SCALAR: "1" }],
  ];
  let out = "";
  let ms = 0;
  let last = { code: 0 };
  for (const [pass, args, env] of passes) {
    last = await run(bin, args, { timeoutMs, env });
    out += last.out;
    ms += last.ms;
    if (last.code !== 0) return { code: last.code, out, ms, pass };
  }
  return { code: 0, out, ms, pass: "forced scalar" };
}

// A previous run killed mid-mutation leaves its backups: put them back first.
if (existsSync(backupDir)) {
  for (const name of readdirSync(backupDir)) {
    const file = decodeURIComponent(name);
    writeFileSync(join(root, file), readFileSync(join(backupDir, name)));
    console.log(`mutate-native: restored ${file} left mutated by an interrupted run`);
  }
  rmSync(backupDir, { recursive: true, force: true });
}

const only = value("--only")?.split(",");
const list = only ? MUTATIONS.filter((m) => only.includes(m.id)) : MUTATIONS;
if (only && list.length !== only.length) {
  console.error(
    `mutate-native: unknown id in --only (${only.filter((id) => !MUTATIONS.some((m) => m.id === id)).join(", ")}); see --list`,
  );
  process.exit(2);
}
// Each mutation must match its file exactly once before anything is built.
for (const m of list) {
  const text = readFileSync(join(root, m.file), "utf8");
  const n = text.split(m.find).length - 1;
  if (n !== 1) {
    console.error(
      `mutate-native: ${m.id}: the text to replace occurs ${n} times in ${m.file} (must be exactly once); update the mutation`,
    );
    process.exit(2);
  }
}

console.log(`mutate-native: baseline build in ${buildDir} (native test binary only)`);
let b = await build(false);
if (b.code !== 0) {
  console.error("mutate-native: the unmutated source does not build");
  process.exit(2);
}
const base = await tests(0);
if (base.code !== 0) {
  console.error(
    base.out
      .split("\n")
      .filter((l) => l.startsWith("FAIL") || l.includes("failed"))
      .join("\n"),
  );
  console.error("mutate-native: the native tests fail without any mutation; fix them first");
  process.exit(2);
}
const timeoutMs = Math.max(120_000, base.ms * 10);
console.log(
  `mutate-native: baseline passes (${(base.ms / 1000).toFixed(1)} s); ${list.length} mutations, test timeout ${(timeoutMs / 1000).toFixed(0)} s`,
);

const results = [];
for (const m of list) {
  const path = join(root, m.file);
  const original = readFileSync(path, "utf8");
  mkdirSync(backupDir, { recursive: true });
  writeFileSync(join(backupDir, encodeURIComponent(m.file)), original);
  pending.set(m.file, original);
  let result;
  try {
    writeFileSync(
      path,
      original.replace(m.find, () => m.replace),
    );
    b = await build();
    if (b.code !== 0) {
      result = { status: "no-build", detail: (b.out.match(/error: .*/) ?? ["build failed"])[0] };
    } else {
      const t = await tests(timeoutMs);
      const failing = t.out
        .split("\n")
        .filter((l) => l.startsWith("FAIL "))
        .map((l) =>
          l
            .slice(5)
            .replace(/ \(\d+ ms\)$/, "")
            .trim(),
        );
      result =
        t.code === 0
          ? { status: "SURVIVED", detail: "every native test passed" }
          : t.code === "timeout"
            ? { status: "killed", detail: `timed out (${t.pass})` }
            : {
                status: "killed",
                detail: `${t.pass}: ${[...new Set(failing)].slice(0, 4).join(", ") || `exit ${t.code}`}`,
              };
    }
  } finally {
    writeFileSync(path, original);
    pending.delete(m.file);
    rmSync(backupDir, { recursive: true, force: true });
  }
  results.push({ ...m, ...result });
  console.log(`${result.status.padEnd(8)} ${m.id.padEnd(34)} ${result.detail}`);
  if (result.status === "SURVIVED" && !flag("--keep-going") && !only) {
    console.log("mutate-native: stopping at the first survivor (--keep-going runs the rest)");
    break;
  }
}
await build(); // leave build-mutate matching the restored source

const killed = results.filter((r) => r.status === "killed").length;
const survived = results.filter((r) => r.status === "SURVIVED");
const broken = results.filter((r) => r.status === "no-build");
console.log(
  `\nmutate-native: ${killed} killed, ${survived.length} survived, ${broken.length} did not build, of ${results.length} run`,
);
for (const r of survived) console.log(`  survived: ${r.id} (${r.file}): ${r.why}`);
for (const r of broken) console.log(`  did not build: ${r.id}: ${r.detail}`);
process.exit(survived.length > 0 || broken.length > 0 || results.length < list.length ? 1 : 0);
