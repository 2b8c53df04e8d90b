/** synth: write a random-weight GGUF model of any shape and weight type (for tests and benchmarks). */
import { loadAddon } from "./binding.js";
import { LlmserveError, wrapNative } from "./errors.js";
import { SYNTH_DEFAULTS, SYNTH_LORA_DEFAULTS } from "./defaults.js";
import { LORA_LIMITS as LORA, SYNTH_LIMITS as S } from "./limits.js";
import type { NativeSynthLoraOptions, NativeSynthOptions } from "./native.js";
import { checkBool, checkKeys, checkLimit, checkObject, checkPath, checkString } from "./validate.js";

/** The weight types {@link synth} can write. */
export const SYNTH_TYPES = [
  "f32",
  "f16",
  "bf16",
  "q8_0",
  "q4_0",
  "q4_k",
  "q6_k",
  "q4_1",
  "q5_0",
  "q5_1",
  "iq4_nl",
  "q5_k",
  "q3_k",
  "q2_k",
  "iq4_xs",
] as const;
/** One of {@link SYNTH_TYPES}. */
export type SynthType = (typeof SYNTH_TYPES)[number];

/** The architectures {@link synth} can write (`general.architecture`). */
export const SYNTH_ARCHS = ["llama", "qwen2", "qwen3", "qwen3moe", "gemma2", "gemma3", "phi3"] as const;
/** One of {@link SYNTH_ARCHS}. */
export type SynthArch = (typeof SYNTH_ARCHS)[number];

/** RoPE scaling types {@link synth} can declare (`""`: no `rope.scaling.*` keys). */
export const SYNTH_ROPE_SCALINGS = ["", "none", "linear", "yarn"] as const;

/** The shape, weight type and seed of a model written by {@link synth}; every field has a default. */
export interface SynthOptions {
  /**
   * Architecture (default `"llama"`; `"qwen2"` adds Q/K/V biases; `"qwen3"` adds per-head Q and K
   * RMSNorm weights and always writes the head size; `"gemma2"` / `"gemma3"` add the post-norms,
   * always write the head size, and gemma2 always ties the output to the embedding; `"phi3"`
   * writes fused `attn_qkv` and gate-up `ffn_up` tensors).
   */
  arch?: SynthArch;
  /** Embedding size (default 256). */
  dim?: number;
  /** Transformer blocks (default 4). */
  layers?: number;
  /**
   * Attention heads (default 8); unless `headDim` is given, `dim` must be a multiple, with an even
   * head size `dim / heads`.
   */
  heads?: number;
  /**
   * Size of one attention head, even, in [2, 16384] (default 0: `dim / heads`); when given it is
   * written as `attention.key_length` / `value_length` (Qwen3's head size is not `dim / heads`).
   */
  headDim?: number;
  /** Key/value heads for grouped-query attention (default 2); `heads` must be a multiple. */
  kvHeads?: number;
  /** Feed-forward hidden size (default 768). */
  ffn?: number;
  /** Training context length written to the file (default 2048). */
  context?: number;
  /** Copy the tokenizer from this GGUF file (vocab size = its token count). */
  vocabFrom?: string;
  /** Size of a generated SentencePiece vocabulary (when vocabFrom is not given). */
  vocabSize?: number;
  /** Weight type of the large matrices (default `"f32"`; norms stay f32). */
  type?: SynthType;
  /** Seed of the random weights (default 7): the same options and seed write the same file. */
  seed?: number;
  /** Write no `output.weight` so the output projection reuses the embedding (default false). */
  tiedOutput?: boolean;
  /**
   * llama only: write Llama 3's `rope_freqs.weight` per-frequency RoPE factors (the converter's
   * "llama3" rope: factor 8, low/high frequency factors 1 and 4, original context = `context`).
   */
  ropeFreqs?: boolean;
  /**
   * Declare RoPE scaling: `"none"`, `"linear"` or `"yarn"` writes `rope.scaling.type` and
   * `rope.scaling.factor` = `ropeScale` (yarn also `original_context_length` = `context`);
   * `""` (default) writes no scaling keys.
   */
  ropeScaling?: (typeof SYNTH_ROPE_SCALINGS)[number];
  /** The RoPE scaling factor written with `ropeScaling`, in [1/1024, 1024] (default 1). */
  ropeScale?: number;
  /**
   * gemma2/gemma3/phi3/llama: `attention.sliding_window` (default 0: not written; gemma2 then uses
   * 4096, gemma3 has no window; llama.cpp ignores phi3's and llama's (Mistral files), and so do we).
   */
  slidingWindow?: number;
  /** gemma2/gemma3: `attention.sliding_window_pattern`, the period of global layers (default 0: not written). */
  swaPattern?: number;
  /** gemma2: `attn_logit_softcapping` (default 0: not written, llama.cpp uses 50). */
  attnSoftcap?: number;
  /** gemma2/gemma3: `final_logit_softcapping` (default 0: not written; gemma2 then uses 30, gemma3 none). */
  finalSoftcap?: number;
  /** gemma2/gemma3: `rope.freq_base_swa`, the local layers' RoPE base (default 0: not written). */
  ropeFreqBaseSwa?: number;
  /**
   * phi3: LongRoPE as Phi-3.5's converter writes it: `rope_factors_short` / `rope_factors_long`
   * tensors, `rope.scaling.original_context_length` = `context / 2` and its attn_factor (default
   * false). llama.cpp uses the long factors when the context per sequence exceeds that length.
   */
  longRope?: boolean;
  /**
   * Mixture of experts, llama (Mixtral) or qwen3moe: the number of experts (default 0: a dense
   * FFN; qwen3moe: 8). Each expert's FFN has `ffn` hidden units; the router stays f32.
   */
  experts?: number;
  /** Experts chosen per token, in [1, experts] (default: 2, or `experts` when smaller). */
  expertsUsed?: number;
  /** Called with a fraction in [0, 1] while tensors are written. */
  onProgress?: (fraction: number) => void;
}

/**
 * @internal Validates synth options and fills every absent one from SYNTH_DEFAULTS: the complete
 * options the addon needs (it has no defaults of its own).
 */
export function resolveSynthOptions(options: unknown): {
  opts: NativeSynthOptions;
  onProgress?: (fraction: number) => void;
} {
  const o = checkObject("synth options", options) as SynthOptions & Record<string, unknown>;
  checkKeys("synth options", o, [
    "arch",
    "dim",
    "layers",
    "heads",
    "kvHeads",
    "ffn",
    "context",
    "vocabFrom",
    "vocabSize",
    "type",
    "seed",
    "tiedOutput",
    "headDim",
    "ropeFreqs",
    "ropeScaling",
    "ropeScale",
    "slidingWindow",
    "swaPattern",
    "attnSoftcap",
    "finalSoftcap",
    "ropeFreqBaseSwa",
    "longRope",
    "experts",
    "expertsUsed",
    "onProgress",
  ]);
  const D = SYNTH_DEFAULTS;
  const type = o.type === undefined ? D.type : typeof o.type === "string" ? o.type.toLowerCase() : o.type;
  const int = (name: keyof typeof S & keyof typeof D): number => checkLimit(name, o[name] ?? D[name], S[name]);
  const arch = checkString("arch", o.arch ?? D.arch, SYNTH_ARCHS);
  // qwen3moe always has experts: 8 unless given; 2 chosen per token unless given (or fewer experts).
  const experts = checkLimit("experts", o.experts ?? (arch === "qwen3moe" ? 8 : D.experts), S.experts);
  const expertsUsed = checkLimit(
    "expertsUsed",
    o.expertsUsed ?? (experts > 0 ? Math.min(2, experts) : D.expertsUsed),
    S.expertsUsed,
  );
  // Every field of the native options is set here (the addon has no defaults of its own).
  const opts: NativeSynthOptions = {
    arch,
    dim: int("dim"),
    layers: int("layers"),
    heads: int("heads"),
    kvHeads: int("kvHeads"),
    ffn: int("ffn"),
    context: int("context"),
    vocabFrom: o.vocabFrom === undefined ? D.vocabFrom : checkString("vocabFrom", o.vocabFrom),
    vocabSize: int("vocabSize"),
    type: checkString("type", type, SYNTH_TYPES),
    seed: int("seed"),
    tiedOutput: o.tiedOutput === undefined ? D.tiedOutput : checkBool("tiedOutput", o.tiedOutput),
    headDim: int("headDim"),
    ropeFreqs: o.ropeFreqs === undefined ? D.ropeFreqs : checkBool("ropeFreqs", o.ropeFreqs),
    ropeScaling: checkString("ropeScaling", o.ropeScaling ?? D.ropeScaling, SYNTH_ROPE_SCALINGS),
    ropeScale: checkLimit("ropeScale", o.ropeScale ?? D.ropeScale, S.ropeScale),
    slidingWindow: int("slidingWindow"),
    swaPattern: int("swaPattern"),
    attnSoftcap: checkLimit("attnSoftcap", o.attnSoftcap ?? D.attnSoftcap, S.attnSoftcap),
    finalSoftcap: checkLimit("finalSoftcap", o.finalSoftcap ?? D.finalSoftcap, S.finalSoftcap),
    ropeFreqBaseSwa: checkLimit("ropeFreqBaseSwa", o.ropeFreqBaseSwa ?? D.ropeFreqBaseSwa, S.ropeFreqBaseSwa),
    longRope: o.longRope === undefined ? D.longRope : checkBool("longRope", o.longRope),
    experts,
    expertsUsed,
  };
  return { opts, onProgress: o.onProgress };
}

/**
 * Writes a random-weight llama/qwen2/qwen3/gemma2/gemma3/phi3 model that llama.cpp also loads.
 * @param outPath where to write the GGUF file (overwritten)
 * @param options shape, weight type and seed
 * @returns `notes`: per-tensor type fallbacks (e.g. a K-quant on rows not a multiple of 256).
 */
export async function synth(
  outPath: string,
  options: SynthOptions = {},
): Promise<{
  /** Per-tensor type fallbacks, one line each (empty when every tensor got the asked type). */
  notes: string[];
}> {
  checkPath("outPath", outPath);
  const { opts, onProgress } = resolveSynthOptions(options);
  return wrapNative(loadAddon().synth(opts, outPath, onProgress));
}

/** Types a LoRA adapter's A and B can be written in (and loaded from): llama.cpp loads all five. */
export const LORA_TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0"] as const;

/** The base tensors a {@link synthLora} adapter can target ("output": the base's own output matrix). */
export const LORA_TARGETS = [
  "attn_q",
  "attn_k",
  "attn_v",
  "attn_output",
  "ffn_gate",
  "ffn_up",
  "ffn_down",
  "output",
] as const;

/** Short names the CLI accepts for {@link LORA_TARGETS}: q, k, v, o, gate, up, down, output. */
export const LORA_TARGET_ALIASES: Readonly<Record<string, (typeof LORA_TARGETS)[number]>> = {
  q: "attn_q",
  k: "attn_k",
  v: "attn_v",
  o: "attn_output",
  gate: "ffn_gate",
  up: "ffn_up",
  down: "ffn_down",
  output: "output",
};

/** Options of {@link synthLora}; every field has a default. */
export interface SynthLoraOptions {
  /** Rank r of every pair, in [1, 4096] (default 4). */
  rank?: number;
  /** Base tensors of every layer to adapt (default every attention and FFN projection; see {@link LORA_TARGETS}). */
  targets?: (typeof LORA_TARGETS)[number][];
  /** Seed of the random weights (default 1): the same base shapes and options write the same file. */
  seed?: number;
  /** `adapter.lora.alpha` written to the file, in [0, 65536] (default 0: the scale is the user scale alone). */
  alpha?: number;
  /**
   * Type of the A and B matrices: "f32" (default), "f16", "bf16", "q8_0" or "q4_0" (the quantized
   * types need n_in and the rank to be multiples of 32).
   */
  type?: (typeof LORA_TYPES)[number];
  /** Size of B's entries relative to a unit projection, in [0, 100] (default 0.5). */
  stdB?: number;
}

/**
 * @internal Validates synthLora options and fills every absent one from SYNTH_LORA_DEFAULTS.
 */
export function resolveSynthLoraOptions(options: unknown): NativeSynthLoraOptions {
  const o = checkObject("synthLora options", options) as SynthLoraOptions & Record<string, unknown>;
  checkKeys("synthLora options", o, ["rank", "targets", "seed", "alpha", "type", "stdB"]);
  const D = SYNTH_LORA_DEFAULTS;
  const lim = (name: "rank" | "seed" | "alpha" | "stdB"): number => checkLimit(name, o[name] ?? D[name], LORA[name]);
  const targets = o.targets ?? D.targets;
  if (!Array.isArray(targets) || targets.length === 0 || targets.length > LORA_TARGETS.length)
    throw new LlmserveError("ERR_INVALID_ARGUMENT", `Expected 1 to ${LORA_TARGETS.length} targets for targets`);
  return {
    rank: lim("rank"),
    targets: targets.map((t, i) => checkString(`targets[${i}]`, t, LORA_TARGETS)),
    seed: lim("seed"),
    alpha: lim("alpha"),
    type: checkString("type", o.type ?? D.type, LORA_TYPES),
    stdB: lim("stdB"),
  };
}

/**
 * Writes a random LoRA adapter for the model at `basePath`, in llama.cpp's GGUF adapter format
 * (llama.cpp and {@link Model.loadAdapter} load it): for tests, parity checks and benchmarks.
 * @param basePath the base model the adapter is for (its tensor shapes are read)
 * @param outPath where to write the adapter (overwritten)
 * @example
 * await synthLora("base.gguf", "a.gguf", { rank: 8, seed: 1 });
 */
export async function synthLora(basePath: string, outPath: string, options: SynthLoraOptions = {}): Promise<void> {
  checkPath("basePath", basePath);
  checkPath("outPath", outPath);
  const opts = resolveSynthLoraOptions(options);
  return wrapNative(loadAddon().synthLora(basePath, opts, outPath));
}
