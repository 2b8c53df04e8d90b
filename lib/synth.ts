/** synth: write a random-weight GGUF model of any shape and weight type (for tests and benchmarks). */
import { loadAddon } from "./binding.js";
import { LlmserveError, wrapNative } from "./errors.js";
import { checkInt, checkKeys, checkObject, checkString, checkBool } from "./validate.js";

export const SYNTH_TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k"] as const;
export type SynthType = (typeof SYNTH_TYPES)[number];

export interface SynthOptions {
  arch?: "llama" | "qwen2";
  dim?: number;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  ffn?: number;
  context?: number;
  /** Copy the tokenizer from this GGUF file (vocab size = its token count). */
  vocabFrom?: string;
  /** Size of a generated SentencePiece vocabulary (when vocabFrom is not given). */
  vocabSize?: number;
  type?: SynthType;
  seed?: number;
  tiedOutput?: boolean;
  onProgress?: (fraction: number) => void;
}

/**
 * Writes a random-weight llama/qwen2 model that llama.cpp also loads.
 * @returns notes about per-tensor type fallbacks (e.g. a K-quant on rows not a multiple of 256).
 */
export async function synth(outPath: string, options: SynthOptions = {}): Promise<{ notes: string[] }> {
  checkString("outPath", outPath);
  const o = checkObject("synth options", options) as SynthOptions & Record<string, unknown>;
  checkKeys("synth options", o, ["arch", "dim", "layers", "heads", "kvHeads", "ffn", "context", "vocabFrom", "vocabSize", "type", "seed", "tiedOutput", "onProgress"]);
  const type = (o.type ?? "f32").toLowerCase();
  if (!(SYNTH_TYPES as readonly string[]).includes(type)) {
    throw new LlmserveError("ERR_INVALID_ARGUMENT", `Expected one of ${SYNTH_TYPES.join(", ")} for type but received ${JSON.stringify(o.type)}`);
  }
  const opts = {
    arch: checkString("arch", o.arch ?? "llama", ["llama", "qwen2"]),
    dim: checkInt("dim", o.dim ?? 256, 1, 1 << 16),
    layers: checkInt("layers", o.layers ?? 4, 1, 512),
    heads: checkInt("heads", o.heads ?? 8, 1, 1024),
    kvHeads: checkInt("kvHeads", o.kvHeads ?? 2, 1, 1024),
    ffn: checkInt("ffn", o.ffn ?? 768, 1, 1 << 18),
    context: checkInt("context", o.context ?? 2048, 1, 1 << 24),
    vocabFrom: o.vocabFrom === undefined ? "" : checkString("vocabFrom", o.vocabFrom),
    vocabSize: checkInt("vocabSize", o.vocabSize ?? 512, 1, 1 << 20),
    type,
    seed: checkInt("seed", o.seed ?? 7, 0),
    tiedOutput: o.tiedOutput === undefined ? false : checkBool("tiedOutput", o.tiedOutput),
  };
  return wrapNative(loadAddon().synth(opts, outPath, o.onProgress));
}
