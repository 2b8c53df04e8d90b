/**
 * Architecture parity with llama.cpp (issue 15): synthetic models of the variants people download,
 * each judged exactly as test/parity/synth.test.ts judges llama and qwen2 (same checks, same bounds:
 * see its header): single tokens, teacher forcing on 128 positions against llama.cpp's own spread,
 * greedy tokens (exact for f32), and all of it again with a q8_0 KV cache.
 *
 * - llama3: Llama 3's rope_freqs.weight per-frequency factors (ggml_rope_ext's freq_factors) with
 *   tied embeddings (Llama 3.2 1B/3B have no output.weight).
 * - llama linear / yarn: rope.scaling.type with factor 4.
 * - qwen3: per-head Q/K RMSNorm before RoPE, NEOX RoPE, no biases, a head size (128) that is not
 *   dim / heads (64), as in Qwen3 0.6B.
 * - gemma2: GeGLU, post-norms, sqrt(dim) embedding scale, Q pre-scale, tied output, attention and
 *   final logit soft-capping (caps 2 and 5 instead of 50 and 30 so that they bend random weights'
 *   scores), interleaved sliding-window (16) / global layers.
 * - gemma3: per-head Q/K norms, its local layers' own RoPE base (100 vs 10000, so a swap shows), a
 *   window of 16 on layer 0 (pattern 2), no soft-capping.
 * The 128 teacher-forced positions and the greedy run go well past the window.
 * - phi3: fused attn_qkv and gate-up ffn_up tensors, Q pre-scaled by 1/sqrt(head_dim); its
 *   attention.sliding_window (16) is ignored, as llama.cpp does. LongRoPE: with the synth context
 *   512 the original context is 256, so llama.cpp's 256-token context per sequence takes the short
 *   factors; with context 256 (original 128) it takes the long ones, and so must llmserve.
 * - llama-swa-key: a Mistral-style llama file declaring llama.attention.sliding_window (16), which
 *   llama.cpp's llama graph ignores (no SWA for arch llama): every layer attends over every position.
 * The factors matter inside these 128 positions (the rope_freqs original context is the synth
 * context, 512), and dropping any feature moves the distributions far outside the bounds.
 */
import { afterAll, describe, expect, it } from "vitest";
import type { SynthOptions, SynthType } from "../../lib/index.js";
import { synthModel } from "../helpers.js";
import { type ParityRow, parityTable, synthParity } from "./synthParity.js";

const SHAPE = { dim: 256, layers: 2, heads: 4, kvHeads: 2, ffn: 512, vocabSize: 512, context: 512, seed: 11 };

const VARIANTS: [label: string, opts: SynthOptions, types: SynthType[]][] = [
  ["llama3", { arch: "llama", ropeFreqs: true, tiedOutput: true }, ["f32", "q8_0"]],
  ["llama-linear", { arch: "llama", ropeScaling: "linear", ropeScale: 4 }, ["f32"]],
  ["llama-yarn", { arch: "llama", ropeScaling: "yarn", ropeScale: 4 }, ["f32"]],
  ["qwen3", { arch: "qwen3", headDim: 128 }, ["f32", "q8_0", "q4_0"]],
  ["gemma2", { arch: "gemma2", slidingWindow: 16, attnSoftcap: 2, finalSoftcap: 5 }, ["f32", "q8_0", "q4_0"]],
  ["gemma3", { arch: "gemma3", slidingWindow: 16, swaPattern: 2, ropeFreqBaseSwa: 100 }, ["f32", "q4_0"]],
  ["phi3", { arch: "phi3", slidingWindow: 16 }, ["f32", "q8_0", "q4_0"]],
  ["llama-swa-key", { arch: "llama", slidingWindow: 16 }, ["f32"]],
  ["phi3-longrope-short", { arch: "phi3", longRope: true }, ["f32"]],
  ["phi3-longrope-long", { arch: "phi3", longRope: true, context: 256 }, ["f32", "q4_0"]],
];
const CASES = VARIANTS.flatMap(([label, opts, types]) => types.map((type) => [label, type, opts] as const));

const rows: ParityRow[] = [];

afterAll(() => {
  if (rows.length === 0) return;
  const order = (r: ParityRow) => CASES.findIndex(([l, t]) => l === r.arch && t === r.type);
  console.log("[parity] architecture variants vs llama.cpp (columns as in synth.test.ts)\n" + parityTable(rows, order));
});

describe("architecture parity vs llama.cpp", () => {
  it.each(CASES)("%s %s", async (label, type, opts) => {
    const path = await synthModel(`parity-${label}-${type}`, { ...SHAPE, ...opts, type });
    const { row, enforced } = await synthParity(path, label, type);
    rows.push(row);
    expect(enforced, `${label} ${type}:\n${enforced.join("\n")}`).toEqual([]);
  });
});
