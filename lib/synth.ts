/** synth: write a random-weight GGUF model of any shape and weight type (for tests and benchmarks). */
import { loadAddon } from "./binding.js";
import { wrapNative } from "./errors.js";
import { SYNTH_DEFAULTS } from "./defaults.js";
import { SYNTH_LIMITS as S } from "./limits.js";
import type { NativeSynthOptions } from "./native.js";
import { checkBool, checkKeys, checkLimit, checkObject, checkPath, checkString } from "./validate.js";

/** The weight types {@link synth} can write. */
export const SYNTH_TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k"] as const;
/** One of {@link SYNTH_TYPES}. */
export type SynthType = (typeof SYNTH_TYPES)[number];

/** The shape, weight type and seed of a model written by {@link synth}; every field has a default. */
export interface SynthOptions {
  /** Architecture (default `"llama"`; `"qwen2"` adds Q/K/V biases). */
  arch?: "llama" | "qwen2";
  /** Embedding size (default 256). */
  dim?: number;
  /** Transformer blocks (default 4). */
  layers?: number;
  /** Attention heads (default 8); `dim` must be a multiple, with an even head size `dim / heads`. */
  heads?: number;
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
    "onProgress",
  ]);
  const D = SYNTH_DEFAULTS;
  const type = o.type === undefined ? D.type : typeof o.type === "string" ? o.type.toLowerCase() : o.type;
  const int = (name: keyof typeof S & keyof typeof D): number => checkLimit(name, o[name] ?? D[name], S[name]);
  // Every field of the native options is set here (the addon has no defaults of its own).
  const opts: NativeSynthOptions = {
    arch: checkString("arch", o.arch ?? D.arch, ["llama", "qwen2"]),
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
  };
  return { opts, onProgress: o.onProgress };
}

/**
 * Writes a random-weight llama/qwen2 model that llama.cpp also loads.
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
