/**
 * compress: prune a GGUF model (magnitude or Wanda; unstructured at a ratio or 2:4), off the JS
 * thread, with progress and cancellation. A ratio writes the zeros into each tensor's own type
 * (dense: any GGUF reader loads it); 2:4 by default writes llmserve's 2:4 sparse format, which runs
 * faster and which llama.cpp cannot load.
 */
import { stat } from "node:fs/promises";
import { basename } from "node:path";
import { loadAddon } from "./binding.js";
import { COMPRESS_DEFAULTS } from "./defaults.js";
import { LlmserveError, wrapNative } from "./errors.js";
import { fileText, ioError } from "./eval.js";
import { EVAL_LIMITS, LOAD_LIMITS } from "./limits.js";
import { defaultThreads } from "./loadOptions.js";
import type { NativeCompressOptions, NativeCompressResult } from "./native.js";
import { type ProgressEvent, ProgressTracker } from "./progress.js";
import { Tokenizer } from "./tokenizer/index.js";
import { encodeStream } from "./tokenizer/stream.js";
import { checkKeys, checkLimit, checkObject, checkPath, checkString } from "./validate.js";

/** The pruning criteria of {@link compress}. */
export const PRUNE_METHODS = ["magnitude", "wanda"] as const;

/** How {@link compress} stores pruned matrices. */
export const COMPRESS_FORMATS = ["dense", "sparse", "csr"] as const;

/** The value types of the 2:4 sparse format ({@link CompressOptions.values}). */
export const SPARSE24_VALUES = ["auto", "f16", "q8_0"] as const;

/**
 * The density (kept / all entries) above which a CSR matrix is expanded to dense at load, because
 * the dense kernels are faster there: native/core/model/csr.h's kCsrMaxDensity, measured by
 * bench/kernels (bench_matmul --csr).
 */
export const CSR_MAX_DENSITY = 0.2;

/** How {@link compress} picks each factored matrix's rank: one rank for all, or by retained energy. */
export type LowRankSpec =
  | {
      /** One rank for every selected matrix (<= min(rows, columns)). */
      rank: number;
    }
  | {
      /** Per matrix, the smallest rank keeping this fraction, in (0, 1], of the squared singular values. */
      energy: number;
    };

/** Options of {@link compress}: either `prune` or `lowrank`. */
export interface CompressOptions {
  /**
   * What to prune in every selected matrix row: a ratio in (0, 1) (that fraction of each row's
   * entries, the lowest-scored, become 0) or `"2:4"` (in every 4 consecutive entries the 2
   * lowest-scored become 0).
   */
  prune?: number | "2:4";
  /**
   * Low-rank factorization instead of pruning: each selected matrix W becomes U·V from a truncated
   * SVD, at `{ rank }` (<= min(rows, columns)) or at the smallest rank keeping `{ energy }` (in
   * (0, 1]) of the squared singular values. With `calib` the SVD is activation-aware (columns
   * weighted by the calibration activations' RMS). Written in llmserve's factored format
   * (docs/sparse-formats.md): llama.cpp cannot load the file. A matrix the factors would not make
   * smaller stays dense (a note says so).
   */
  lowrank?: LowRankSpec;
  /** With `lowrank`: the fraction in [0, 1) of each matrix's entries kept as a sparse residual S (W ≈ U·V + S). */
  sparse?: number;
  /** `magnitude` (|W|, default) or `wanda` (|W|·‖x‖ from the activations of `calib`). */
  method?: (typeof PRUNE_METHODS)[number];
  /**
   * How the pruned matrices are stored. `"sparse"` (the default for 2:4; 2:4 only): llmserve's 2:4
   * format (f16 or q8_0 kept values + 2-bit positions, docs/sparse-formats.md; see `values`), about 56% of f16's bytes (62% of q8_0's) and
   * faster to run; llama.cpp cannot load such a file. `"dense"` (always for a ratio): the zeros
   * written into each tensor's own type, a file llama.cpp loads, no faster than the input.
   * `"csr"` (a ratio only): each pruned matrix in CSR (row pointers, i32 columns, f16 values;
   * docs/sparse-formats.md), 6 bytes per kept weight, run by llmserve's CSR kernels (expanded to
   * dense at load when the matrix is denser than 20%, where CSR would be slower); llama.cpp cannot
   * load such a file.
   */
  format?: "dense" | "sparse" | "csr";
  /**
   * The kept values of the 2:4 sparse format (only with it): `"f16"` (1.125 bytes per original
   * weight), `"q8_0"` (int8 with an f16 scale per 32 kept values: 0.66 bytes per weight against
   * q8_0's 1.06; rows of a multiple of 64), or `"auto"` (the default): q8_0 for a matrix that is
   * quantized in the input, f16 for an f16/bf16/f32 one.
   */
  values?: (typeof SPARSE24_VALUES)[number];
  /** A UTF-8 text file the model runs over to measure its activations (required for `wanda`; makes `lowrank` activation-aware). */
  calib?: string;
  /** Calibration tokens per chunk (default 512). */
  calibCtx?: number;
  /**
   * Which layer matrices to prune: globs over tensor names (`blk.0.ffn_up.weight`) or roles
   * (`attn_q`, `attn_k`, `attn_v`, `attn_output`, `ffn_gate`, `ffn_up`, `ffn_down`), e.g.
   * `["ffn_*", "attn_output"]`. Default: all of them. A pattern that matches none is an error.
   */
  tensors?: string[];
  /** Threads (default: physical cores). The output does not depend on it. */
  threads?: number;
  /** Called with the fraction done (calibration is the first half when there is one). */
  onProgress?: (fraction: number, event: ProgressEvent) => void;
  /** Aborting stops the work: the promise rejects with ERR_CANCELLED and no output file is left. */
  signal?: AbortSignal;
}

/** One pruned tensor of a {@link compress} output. */
export interface CompressedTensor {
  /** Its name, e.g. `blk.0.ffn_up.weight`. */
  name: string;
  /** Its type in the output (the values' "f16" / "q8_0" in the sparse format, the values' "f16" / "f32" in CSR, else unchanged: "f32", "q8_0", ...). */
  type: string;
  /** Zero entries in the output. */
  zeros: number;
  /** Entries of the tensor. */
  elements: number;
}

/** One matrix selected for low-rank factorization. */
export interface FactoredTensor {
  /** Its name, e.g. `blk.0.ffn_up.weight`. */
  name: string;
  /** False when the factors would not have been smaller: the matrix stayed dense. */
  factored: boolean;
  /** The rank (chosen per matrix with `energy`). */
  rank: number;
  /** Entries of its sparse residual. */
  nnz: number;
  /** Bytes of the dense input matrix. */
  denseBytes: number;
  /** Bytes written for it (factors and residual, or the dense matrix when kept). */
  bytes: number;
  /** ‖W − (U·V + S)‖ / ‖W‖ (0 when kept dense). */
  relError: number;
  /** The retained fraction of the (whitened) squared singular values. */
  energy: number;
}

/** What {@link compress} wrote. */
export interface CompressResult {
  /** How the compressed matrices are stored ("sparse", "csr" and "lowrank": only llmserve loads the file). */
  format: "dense" | "sparse" | "csr" | "lowrank";
  /** The pruned tensors in file order (empty for `lowrank`). */
  tensors: CompressedTensor[];
  /** With `lowrank`: every selected matrix in file order. */
  factored?: FactoredTensor[];
  /** Warnings (e.g. a quantized input re-rounded). */
  notes: string[];
  /** Calibration tokens run (0 for magnitude). */
  calibTokens: number;
  /** Size of the input file in bytes. */
  inputBytes: number;
  /** Size of the output file in bytes. */
  outputBytes: number;
}

/** @internal Validates compress options; fills the absent ones from COMPRESS_DEFAULTS. */
export function resolveCompressOptions(options: unknown): {
  opts: NativeCompressOptions;
  calib?: string;
  onProgress?: CompressOptions["onProgress"];
  signal?: AbortSignal;
} {
  const o = checkObject("compress options", options) as RawOptions;
  checkKeys("compress options", o, [
    "prune",
    "lowrank",
    "sparse",
    "method",
    "format",
    "values",
    "calib",
    "calibCtx",
    "tensors",
    "threads",
    "onProgress",
    "signal",
  ]);
  if ((o.prune === undefined) === (o.lowrank === undefined))
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Give either prune or lowrank (not both, not neither).");
  if (o.lowrank !== undefined) return resolveLowRank(o);
  if (o.sparse !== undefined)
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "sparse (a residual fraction) goes with lowrank only.");
  let prune: number | "2:4";
  if (o.prune === "2:4") prune = "2:4";
  else if (typeof o.prune === "number" && o.prune > 0 && o.prune < 1) prune = o.prune;
  else
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `Expected a ratio in (0, 1) (e.g. 0.5) or "2:4" for prune but received ${JSON.stringify(o.prune) ?? String(o.prune)}`,
    );
  const method = checkString(
    "method",
    o.method ?? COMPRESS_DEFAULTS.method,
    PRUNE_METHODS,
  ) as NativeCompressOptions["method"];
  const format = checkString(
    "format",
    o.format ?? (prune === "2:4" ? COMPRESS_DEFAULTS.format24 : "dense"),
    COMPRESS_FORMATS,
  ) as NativeCompressOptions["format"];
  if (format === "sparse" && prune !== "2:4")
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      'The sparse format holds 2:4 pruned matrices only: use prune "2:4", or format "csr" or "dense" for a ratio.',
    );
  if (format === "csr" && prune === "2:4")
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      'The CSR format holds unstructured pruning (a ratio such as 0.9); 2:4 has its own format "sparse".',
    );
  const values = checkString("values", o.values ?? "auto", SPARSE24_VALUES) as NativeCompressOptions["values"];
  if (values !== "auto" && format !== "sparse")
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      'values (f16 or q8_0) chooses the 2:4 sparse format\'s kept values: use it with prune "2:4" and format "sparse".',
    );
  const calib = o.calib === undefined ? undefined : checkPath("calib", o.calib);
  if (method === "wanda" && calib === undefined)
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      "Wanda pruning weighs each weight by its input's activations: give a calibration text (calib / --calib text.txt), or use method magnitude.",
    );
  const { calibCtx, tensors, threads } = commonOptions(o);
  return {
    opts: { prune, lowrank: null, method, format, values, tensors, threads, ctx: calibCtx, checkOnly: false },
    calib: method === "wanda" ? calib : undefined,
    onProgress: o.onProgress,
    signal: o.signal,
  };
}

type RawOptions = Partial<CompressOptions> & Record<string, unknown>;

function commonOptions(o: RawOptions): { calibCtx: number; tensors: string[]; threads: number } {
  const calibCtx =
    o.calibCtx === undefined ? COMPRESS_DEFAULTS.calibCtx : checkLimit("calibCtx", o.calibCtx, EVAL_LIMITS.ctx);
  let tensors: string[] = [];
  if (o.tensors !== undefined) {
    if (!Array.isArray(o.tensors) || o.tensors.some((t) => typeof t !== "string" || t.length === 0))
      throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected an array of non-empty glob strings for tensors");
    tensors = o.tensors as string[];
  }
  const threads = o.threads === undefined ? defaultThreads() : checkLimit("threads", o.threads, LOAD_LIMITS.threads);
  if (o.onProgress !== undefined && typeof o.onProgress !== "function")
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected a function for onProgress");
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal))
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected an AbortSignal for signal");
  return { calibCtx, tensors, threads };
}

// The lowrank half of resolveCompressOptions: exactly one of rank / energy, a residual fraction.
function resolveLowRank(o: RawOptions): ReturnType<typeof resolveCompressOptions> {
  const l = checkObject("lowrank", o.lowrank) as Record<string, unknown>;
  checkKeys("lowrank", l, ["rank", "energy"]);
  let rank = 0;
  let energy = 0;
  if ((l.rank === undefined) === (l.energy === undefined))
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "lowrank takes either { rank } or { energy }.");
  if (l.rank !== undefined) {
    if (typeof l.rank !== "number" || !Number.isInteger(l.rank) || l.rank < 1)
      throw new LlmserveError(
        "ERR_INVALID_ARGUMENT",
        `Expected an integer >= 1 for lowrank.rank but received ${JSON.stringify(l.rank) ?? String(l.rank)}`,
      );
    rank = l.rank;
  } else {
    if (typeof l.energy !== "number" || !(l.energy > 0 && l.energy <= 1))
      throw new LlmserveError(
        "ERR_INVALID_ARGUMENT",
        `Expected a retained energy in (0, 1] (e.g. 0.95) for lowrank.energy but received ${JSON.stringify(l.energy) ?? String(l.energy)}`,
      );
    energy = l.energy;
  }
  const sparse = o.sparse ?? 0;
  if (typeof sparse !== "number" || !(sparse >= 0 && sparse < 1))
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `Expected a residual fraction in [0, 1) (e.g. 0.02) for sparse but received ${JSON.stringify(sparse) ?? String(sparse)}`,
    );
  if (o.method !== undefined || o.format !== undefined || o.values !== undefined)
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "method, format and values go with prune, not lowrank.");
  const calib = o.calib === undefined ? undefined : checkPath("calib", o.calib);
  const { calibCtx, tensors, threads } = commonOptions(o);
  return {
    opts: {
      prune: null,
      lowrank: { rank, energy, sparse, aware: calib !== undefined },
      method: "magnitude",
      format: "dense",
      values: "auto",
      tensors,
      threads,
      ctx: calibCtx,
      checkOnly: false,
    },
    calib,
    onProgress: o.onProgress,
    signal: o.signal,
  };
}

async function calibTokens(input: string, path: string, signal?: AbortSignal): Promise<Int32Array> {
  try {
    const st = await stat(path);
    if (!st.isFile()) throw Object.assign(new Error("it is not a regular file"), { code: "EISDIR" });
  } catch (err) {
    throw ioError(err, path);
  }
  const tok = await Tokenizer.fromGguf(input);
  return encodeStream(
    tok,
    fileText(path, () => {}),
    { signal },
  );
}

/**
 * Prunes the GGUF model at `input` into `output`: every selected layer matrix loses the
 * lowest-scored entries of each row (magnitude |W|, or Wanda |W|·‖x‖ with ‖x‖ measured by running
 * the model over `calib`). Every argument is checked against the file before any work (bad ratio,
 * 2:4 on rows not divisible by 4, a tensor pattern that matches nothing, Wanda without `calib`):
 * ERR_INVALID_ARGUMENT, nothing written. The output is written to a temp file and renamed into
 * place; `input` is never overwritten.
 * @example
 * await compress("model-f16.gguf", "pruned.gguf", { prune: "2:4", method: "wanda", calib: "wiki.txt" });
 */
export async function compress(input: string, output: string, options: CompressOptions): Promise<CompressResult> {
  checkPath("input", input);
  checkPath("output", output);
  const { opts, calib, onProgress, signal } = resolveCompressOptions(options);
  if (signal?.aborted) throw new LlmserveError("ERR_CANCELLED", "compress was aborted before it started.");
  const addon = loadAddon();
  // The checks that need the file (patterns, 2:4 row lengths) run before the calibration text is read.
  await wrapNative(addon.compress(input, output, { ...opts, checkOnly: true }, null).promise);
  const tokens = calib === undefined ? null : await calibTokens(input, calib, signal);
  if (signal?.aborted) throw new LlmserveError("ERR_CANCELLED", "compress was aborted; no output file was written.");
  const toFraction = (e: ProgressEvent) => onProgress?.(e.total > 0 ? Math.min(1, e.done / e.total) : 0, e);
  const tracker = onProgress && new ProgressTracker("compress", basename(output), 1, "fraction", toFraction);
  const job = addon.compress(input, output, opts, tokens, tracker && ((f) => tracker.update(f)));
  const onAbort = () => job.cancel();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const r = (await wrapNative(job.promise)) as NativeCompressResult;
    tracker?.finish();
    if (opts.lowrank)
      return {
        format: "lowrank",
        tensors: [],
        factored: r.tensors as unknown as FactoredTensor[],
        notes: r.notes,
        calibTokens: r.calibTokens,
        inputBytes: r.inputBytes,
        outputBytes: r.outputBytes,
      };
    return {
      format: opts.format,
      tensors: r.tensors,
      notes: r.notes,
      calibTokens: r.calibTokens,
      inputBytes: r.inputBytes,
      outputBytes: r.outputBytes,
    };
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}
