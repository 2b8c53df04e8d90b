/**
 * quantize: convert a GGUF model to a smaller weight mix (llama.cpp's llama-quantize), off the JS
 * thread, with progress and cancellation.
 */
import { basename } from "node:path";
import { loadAddon } from "./binding.js";
import { fromNative, LlmserveError, wrapNative } from "./errors.js";
import { LOAD_LIMITS } from "./limits.js";
import { defaultThreads } from "./loadOptions.js";
import type { NativeQuantizeOptions } from "./native.js";
import { type ProgressEvent, ProgressTracker } from "./progress.js";
import { checkBool, checkKeys, checkLimit, checkObject, checkPath, checkString } from "./validate.js";

/**
 * The weight mixes {@link quantize} writes (llama-quantize's names, lowercase). The k-quant mixes
 * (`_s`, `_m`, `_l`) give some tensors more bits by llama.cpp's recipe (output.weight, attn_v and
 * ffn_down of some layers); `f32`, `f16`, `bf16` convert every matrix.
 */
export const QUANTIZE_TYPES = [
  "q8_0",
  "q4_0",
  "q4_1",
  "q5_0",
  "q5_1",
  "q2_k",
  "q3_k_s",
  "q3_k_m",
  "q3_k_l",
  "q4_k_s",
  "q4_k_m",
  "q5_k_s",
  "q5_k_m",
  "q6_k",
  "iq4_nl",
  "iq4_xs",
  "f16",
  "bf16",
  "f32",
] as const;
/** One of {@link QUANTIZE_TYPES}. */
export type QuantizeType = (typeof QUANTIZE_TYPES)[number];

/** Short names llama-quantize also accepts: the `_m` mixes. */
export const QUANTIZE_TYPE_ALIASES = {
  /** q3_k = q3_k_m */
  q3_k: "q3_k_m",
  /** q4_k = q4_k_m */
  q4_k: "q4_k_m",
  /** q5_k = q5_k_m */
  q5_k: "q5_k_m",
} as const satisfies Record<string, QuantizeType>;

/** Options of {@link quantize}. */
export interface QuantizeOptions {
  /** The weight mix, e.g. `"q4_k_m"` (case-insensitive; see {@link QUANTIZE_TYPES} and {@link QUANTIZE_TYPE_ALIASES}). */
  type:
    | QuantizeType
    | keyof typeof QUANTIZE_TYPE_ALIASES
    | Uppercase<QuantizeType | keyof typeof QUANTIZE_TYPE_ALIASES>;
  /** Threads converting rows (default: physical cores). The output does not depend on it. */
  threads?: number;
  /**
   * An importance matrix computed by llama.cpp's `llama-imatrix` for this model (its GGUF output or
   * the legacy `.dat`): tensors it has an entry for are quantized with its per-column weights, as
   * `llama-quantize --imatrix` does (the same bytes), which lowers the error where the activations
   * are large. Tensors without an entry are quantized without one (listed in `notes`); an entry
   * whose size does not match its tensor, or a malformed file, rejects with ERR_BAD_IMATRIX.
   */
  imatrix?: string;
  /**
   * llama-quantize's `--pure`: every matrix gets the mix's type (no per-tensor rules: no Q6_K
   * output, no bumped attn_v / ffn_down); norms, biases and 1-D tensors still keep theirs, and rows
   * that do not fit the type's block still take llama.cpp's fallback.
   */
  pure?: boolean;
  /** llama-quantize's `--output-tensor-type`: this type (ggml's name, e.g. `"q8_0"`) for output.weight (and tied embeddings). */
  outputTensorType?: string;
  /** llama-quantize's `--token-embedding-type`: this type for token_embd.weight. */
  tokenEmbeddingType?: string;
  /**
   * llama-quantize's `--tensor-type`, in order: `"PATTERN=TYPE"` rules, PATTERN a regular expression
   * searched in each tensor name (lowercased, as llama-quantize does), e.g. `"attn_v=q8_0"`,
   * `"blk\.[0-3]\.ffn_down=q6_k"`; the first match wins. Ignored for the float mixes (as llama.cpp).
   */
  tensorTypes?: string[];
  /** Called with the fraction of elements converted (and the same as a {@link ProgressEvent} with rate and ETA). */
  onProgress?: (fraction: number, event: ProgressEvent) => void;
  /** Aborting stops the work: the promise rejects with ERR_CANCELLED and no output file is left. */
  signal?: AbortSignal;
}

/** One tensor of a {@link quantize} output. */
export interface QuantizedTensor {
  /** Its name, e.g. `blk.0.attn_v.weight`. */
  name: string;
  /** Its type in the input ("f16", "f32", "q8_0", ...). */
  from: string;
  /** Its type in the output ("q6_k", "q4_k", "f32", ...). */
  to: string;
}

/** What {@link quantize} wrote. */
export interface QuantizeResult {
  /** The mix written (aliases resolved). */
  type: QuantizeType;
  /** `general.file_type` of the output (llama.cpp's `llama_ftype`, e.g. 15 for q4_k_m). */
  fileType: number;
  /** Every tensor in file order, with its type in the input and in the output ("q6_k", "f32", ...). */
  tensors: QuantizedTensor[];
  /** Tensors whose rows did not fit the type's block (and got llama.cpp's fallback), re-quantization warnings. */
  notes: string[];
  /** Size of the input file in bytes. */
  inputBytes: number;
  /** Size of the output file in bytes. */
  outputBytes: number;
}

/** @internal Validates quantize options and fills the absent ones from QUANTIZE_DEFAULTS. */
export function resolveQuantizeOptions(options: unknown): {
  opts: NativeQuantizeOptions;
  onProgress?: QuantizeOptions["onProgress"];
  signal?: AbortSignal;
} {
  const o = checkObject("quantize options", options) as Partial<QuantizeOptions> & Record<string, unknown>;
  checkKeys("quantize options", o, [
    "type",
    "threads",
    "imatrix",
    "pure",
    "outputTensorType",
    "tokenEmbeddingType",
    "tensorTypes",
    "onProgress",
    "signal",
  ]);
  if (o.imatrix !== undefined) checkPath("imatrix", o.imatrix);
  const aliases: Readonly<Record<string, QuantizeType>> = QUANTIZE_TYPE_ALIASES;
  const lower = typeof o.type === "string" ? o.type.toLowerCase() : o.type;
  const name = typeof lower === "string" && Object.hasOwn(aliases, lower) ? aliases[lower] : lower;
  const type = checkString("type", name, QUANTIZE_TYPES) as QuantizeType;
  // Same default as Model.load's threads (lib/defaults.ts: physical cores, not a constant).
  const threads = o.threads === undefined ? defaultThreads() : checkLimit("threads", o.threads, LOAD_LIMITS.threads);
  if (o.onProgress !== undefined && typeof o.onProgress !== "function")
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected a function for onProgress");
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal))
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected an AbortSignal for signal");
  const opts: NativeQuantizeOptions = { type, threads };
  if (o.imatrix !== undefined) opts.imatrix = o.imatrix;
  // Type names and patterns are checked natively (native/core/compress/recipe.cpp: one list).
  if (o.pure !== undefined) opts.pure = checkBool("pure", o.pure);
  if (o.outputTensorType !== undefined) opts.outputTensorType = checkString("outputTensorType", o.outputTensorType);
  if (o.tokenEmbeddingType !== undefined)
    opts.tokenEmbeddingType = checkString("tokenEmbeddingType", o.tokenEmbeddingType);
  if (o.tensorTypes !== undefined) {
    if (!Array.isArray(o.tensorTypes) || o.tensorTypes.length > 1024)
      throw new LlmserveError(
        "ERR_INVALID_ARGUMENT",
        'Expected an array of at most 1024 "PATTERN=TYPE" strings for tensorTypes',
      );
    opts.tensorTypes = o.tensorTypes.map((r, i) => checkString(`tensorTypes[${i}]`, r));
  }
  return { opts, onProgress: o.onProgress, signal: o.signal };
}

/**
 * Converts the GGUF model at `input` to the weight mix `options.type` and writes it to `output`,
 * following llama.cpp's llama-quantize: the same type for every tensor (by name and layer), the
 * same bytes, every metadata key and the tokenizer kept, `general.file_type` set. Inputs: F32, F16
 * or BF16 models, or any type llmserve runs (re-quantizing is noted: it loses quality). Runs on a
 * worker thread; the output is written to a temp file in the same folder and renamed into place
 * when complete, so `output` never holds a partial file. Refuses to overwrite `input`.
 * @example
 * await quantize("model-f16.gguf", "model-q4_k_m.gguf", { type: "q4_k_m", onProgress: (f) => console.log(f) });
 */
export async function quantize(input: string, output: string, options: QuantizeOptions): Promise<QuantizeResult> {
  checkPath("input", input);
  checkPath("output", output);
  const { opts, onProgress, signal } = resolveQuantizeOptions(options);
  if (signal?.aborted) throw new LlmserveError("ERR_CANCELLED", "quantize was aborted before it started.");
  const toFraction = (e: ProgressEvent) => onProgress?.(e.total > 0 ? Math.min(1, e.done / e.total) : 0, e);
  const tracker = onProgress && new ProgressTracker("quantize", basename(output), 1, "fraction", toFraction);
  let job: ReturnType<ReturnType<typeof loadAddon>["quantize"]>;
  try {
    job = loadAddon().quantize(input, output, opts, tracker && ((f) => tracker.update(f)));
  } catch (e) {
    throw fromNative(e); // an override the native side refuses (type name, pattern): ERR_INVALID_ARGUMENT
  }
  const onAbort = () => job.cancel();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const r = await wrapNative(job.promise);
    tracker?.finish();
    return {
      type: opts.type as QuantizeType,
      fileType: r.ftype,
      tensors: r.tensors,
      notes: r.notes,
      inputBytes: r.inputBytes,
      outputBytes: r.outputBytes,
    };
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}
