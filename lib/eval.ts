/**
 * Perplexity, and KL divergence against a reference model, over a text: llama.cpp's
 * llama-perplexity (and its `--kl-divergence` mode) in one call. The text is tokenized with BOS as
 * the vocabulary asks, cut into chunks of `ctx` tokens, each chunk evaluated from scratch with BOS
 * in place of its first token when the vocabulary adds BOS, and only the second half of each chunk
 * is scored (every scored token has at least ctx/2 tokens of context). The logits never reach
 * JavaScript: the engines score them on their own threads (native/core/eval, sched/eval_chunk).
 */
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { loadAddon } from "./binding.js";
import { EVAL_DEFAULTS } from "./defaults.js";
import { LlmserveError, fromNative } from "./errors.js";
import { EVAL_LIMITS } from "./limits.js";
import { Model } from "./model.js";
import type { NativeEvalStats, NativeEvaluation, NativeQuantiles } from "./native.js";
import { encodeStream } from "./tokenizer/stream.js";
import { checkBool, checkKeys, checkLimit, checkObject, checkPath, checkTokenIds } from "./validate.js";

/**
 * What to evaluate: a text, its token ids (used as they are: include BOS when the model expects
 * one), or `{ file }`, a UTF-8 text file read and tokenized in parts (any size; one final line
 * break is dropped, as llama-perplexity's `-f` does).
 */
export type EvalInput =
  | string
  | readonly number[]
  | Int32Array
  | {
      /** Path of a UTF-8 text file. */
      file: string;
    };

/** Options of {@link evaluatePerplexity}; every field is optional. */
export interface EvaluatePerplexityOptions {
  /** Tokens per chunk (llama-perplexity's `-c`), at least 3 and at most the model's contextSize (default 512). */
  ctx?: number;
  /** Most tokens per forward pass (`-b`; default 2048, at most ctx is used). Only memory and speed depend on it. */
  batch?: number;
  /** Evaluate at most this many chunks (`--chunks`; default: every whole chunk of the text). */
  chunks?: number;
  /**
   * A reference model (e.g. the f16 model a quantized one was made from) with the same
   * vocabulary: adds KL(reference || model), top-1 agreement, Δp and the perplexity ratio.
   * It may be the model itself (KL 0).
   */
  reference?: Model;
  /** Stops the evaluation: the promise rejects with ERR_CANCELLED (a chunk already running finishes unseen). */
  signal?: AbortSignal;
  /** Called while the text is tokenized and after each chunk. */
  onProgress?: (progress: EvalProgress) => void;
  /** Also return each scored token's NLL (and KL, Δp, top-1 agreement) in {@link PerplexityResult.perToken}. */
  perToken?: boolean;
}

/** A progress report of {@link evaluatePerplexity}. */
export interface EvalProgress {
  /** "tokenize" while the text is read and tokenized, then "evaluate" after each chunk. */
  phase: "tokenize" | "evaluate";
  /** Fraction of the phase done, in [0, 1] (tokenize: of the file's bytes). */
  fraction: number;
  /** Tokens of the text so far. */
  textTokens: number;
  /** Chunks evaluated. */
  chunksDone: number;
  /** Chunks to evaluate (0 while tokenizing). */
  chunks: number;
  /** Seconds since the phase began. */
  elapsedSeconds: number;
  /** Text tokens evaluated per second (each by the model and by the reference, if any). */
  tokensPerSecond: number;
  /** Estimated seconds until the evaluation ends (0 while tokenizing). */
  etaSeconds: number;
  /** Perplexity of the tokens scored so far (evaluate). */
  ppl?: number;
  /** Its standard error. */
  pplError?: number;
  /** Mean KL divergence so far (with a reference). */
  kl?: number;
  /** Top-1 agreement with the reference so far, in [0, 1]. */
  top1?: number;
}

/**
 * Statistics of a per-token quantity: mean ± standard error and llama-perplexity's percentiles
 * (linear between the two nearest ranks of fraction × (n - 1); `p99_9` is the 99.9th).
 */
export interface SeriesStats {
  /** Mean over the scored tokens. */
  mean: number;
  /** Standard error of the mean (0 for 10 tokens or fewer, as llama-perplexity). */
  meanError: number;
  /** Smallest value. */
  min: number;
  /** 0.1th percentile. */
  p0_1: number;
  /** 1st percentile. */
  p1: number;
  /** 5th percentile. */
  p5: number;
  /** 10th percentile. */
  p10: number;
  /** 25th percentile. */
  p25: number;
  /** Median (the mean of the two middle values for an even count). */
  median: number;
  /** 75th percentile. */
  p75: number;
  /** 90th percentile. */
  p90: number;
  /** 95th percentile. */
  p95: number;
  /** 99th percentile. */
  p99: number;
  /** 99.9th percentile. */
  p99_9: number;
  /** Largest value. */
  max: number;
}

/** How a model compares with its reference ({@link EvaluatePerplexityOptions.reference}). */
export interface ReferenceComparison {
  /** The reference's perplexity on the same tokens. */
  ppl: number;
  /** Its standard error. */
  pplError: number;
  /** PPL(model) - PPL(reference). */
  deltaPpl: number;
  /** Its standard error (the two perplexities' covariance accounted for). */
  deltaPplError: number;
  /** PPL(model) / PPL(reference). */
  pplRatio: number;
  /** Its standard error. */
  pplRatioError: number;
  /** ln(PPL(model) / PPL(reference)): the mean per-token NLL difference. */
  logPplRatio: number;
  /** Its standard error. */
  logPplRatioError: number;
  /** Correlation of the two models' per-token NLLs (0 when undefined). */
  nllCorrelation: number;
  /** KL(reference || model) per token over the whole vocabulary, in nats. */
  kl: SeriesStats;
  /** Fraction of tokens where both models' most probable next token is the same ("Same top p"). */
  top1: number;
  /** Its standard error. */
  top1Error: number;
  /** Δp: p_model(true token) - p_reference(true token), with its root mean square. */
  deltaP: SeriesStats & {
    /** sqrt(mean(Δp²)). */
    rms: number;
    /** Its standard error. */
    rmsError: number;
  };
}

/** What {@link evaluatePerplexity} returns. */
export interface PerplexityResult {
  /** exp(mean NLL) over the scored tokens. */
  ppl: number;
  /** Its standard error (llama-perplexity's "+/-"). */
  pplError: number;
  /** Mean negative log-likelihood of the scored tokens, in nats. */
  nll: number;
  /** Its standard error. */
  nllError: number;
  /** Tokens per chunk. */
  ctx: number;
  /** Tokens per forward pass used. */
  batch: number;
  /** Chunks evaluated. */
  chunks: number;
  /** Tokens of the whole text (BOS included). */
  textTokens: number;
  /** Tokens scored: chunks × (ctx - 1 - floor(ctx / 2)). */
  scoredTokens: number;
  /** Seconds spent evaluating (tokenization excluded). */
  seconds: number;
  /** Text tokens evaluated per second. */
  tokensPerSecond: number;
  /** With a reference: the comparison. */
  reference?: ReferenceComparison;
  /** With `perToken`: each scored token's values, in text order. */
  perToken?: {
    /** -ln p_model(true token). */
    nll: Float32Array;
    /** KL(reference || model) (with a reference). */
    kl?: Float32Array;
    /** p_model - p_reference of the true token (with a reference). */
    deltaP?: Float32Array;
    /** 1 where both models' argmax agree (with a reference). */
    top1?: Uint8Array;
  };
}

interface Resolved {
  ctx: number;
  batch: number;
  chunks: number;
  reference?: Model;
  signal?: AbortSignal;
  onProgress?: (p: EvalProgress) => void;
  perToken: boolean;
}

function resolve(model: unknown, options: unknown): Resolved {
  if (!(model instanceof Model))
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected a Model (from Model.load) for model");
  const o = checkObject("evaluatePerplexity options", options) as EvaluatePerplexityOptions & Record<string, unknown>;
  checkKeys("evaluatePerplexity options", o, [
    "ctx",
    "batch",
    "chunks",
    "reference",
    "signal",
    "onProgress",
    "perToken",
  ]);
  const ctx = o.ctx === undefined ? EVAL_DEFAULTS.ctx : checkLimit("ctx", o.ctx, EVAL_LIMITS.ctx);
  const batch = o.batch === undefined ? EVAL_DEFAULTS.batch : checkLimit("batch", o.batch, EVAL_LIMITS.batch);
  const chunks = o.chunks === undefined ? Number.POSITIVE_INFINITY : checkLimit("chunks", o.chunks, EVAL_LIMITS.chunks);
  if (o.reference !== undefined && !(o.reference instanceof Model))
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected a Model (from Model.load) for reference");
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal))
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected an AbortSignal for signal");
  if (o.onProgress !== undefined && typeof o.onProgress !== "function")
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected a function for onProgress");
  const perToken = o.perToken === undefined ? false : checkBool("perToken", o.perToken);
  for (const [m, what] of [
    [model, "model"],
    [o.reference, "reference model"],
  ] as const) {
    if (m && ctx > m.info.contextSize)
      throw new LlmserveError(
        "ERR_CONTEXT_OVERFLOW",
        `ctx is ${ctx} tokens but the ${what} was loaded with a context of ${m.info.contextSize}; load it with contextSize >= ${ctx} or use a smaller ctx.`,
      );
  }
  if (o.reference) checkSameVocabulary(model, o.reference);
  return { ctx, batch, chunks, reference: o.reference, signal: o.signal, onProgress: o.onProgress, perToken };
}

/** KL divergence compares distributions over the same tokens: the vocabularies must be equal. */
function checkSameVocabulary(model: Model, reference: Model): void {
  const a = model.tokenizer;
  const b = reference.tokenizer;
  let diff = a.nVocab === b.nVocab ? -1 : Math.min(a.nVocab, b.nVocab);
  for (let id = 0; diff < 0 && id < a.nVocab; id++) if (a.tokenText(id) !== b.tokenText(id)) diff = id;
  if (diff >= 0)
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `The reference model's vocabulary differs from the model's (${a.nVocab} vs ${b.nVocab} tokens, first difference at id ${diff}); KL divergence needs the same vocabulary: use the model the evaluated one was made from.`,
    );
}

function cancelled(): LlmserveError {
  return new LlmserveError("ERR_CANCELLED", "The evaluation was aborted.");
}

/** p, or a rejection with ERR_CANCELLED as soon as the signal aborts. */
function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolveP, reject) => {
    const onAbort = () => reject(cancelled());
    if (signal.aborted) {
      p.catch(() => {});
      return onAbort();
    }
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolveP(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

/** A native call that may throw synchronously or reject, as a promise of LlmserveErrors. */
async function callNative<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (err) {
    throw fromNative(err);
  }
}

/** @internal A read error of a text file as a coded error (ERR_FILE_NOT_FOUND, ERR_IO). */
export function ioError(err: unknown, path: string): LlmserveError {
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === "ENOENT")
    return new LlmserveError("ERR_FILE_NOT_FOUND", `The text file ${path} does not exist; pass an existing file.`, {
      cause: err,
    });
  return new LlmserveError("ERR_IO", `Cannot read the text file ${path}: ${(err as Error)?.message ?? String(err)}`, {
    cause: err,
  });
}

/** @internal A text file as pieces of text, without its one final line break (llama.cpp's `-f`); compress reads its calibration text the same way. */
export async function* fileText(path: string, onBytes: (bytes: number) => void): AsyncGenerator<string> {
  const stream = createReadStream(path, { encoding: "utf8", highWaterMark: 1 << 20 });
  let carry = "";
  try {
    for await (const piece of stream as AsyncIterable<string>) {
      onBytes(stream.bytesRead);
      const s = carry + piece;
      carry = s.endsWith("\n") ? "\n" : "";
      if (s.length > carry.length) yield carry ? s.slice(0, -1) : s;
    }
  } catch (err) {
    throw ioError(err, path);
  } finally {
    stream.destroy();
  }
}

async function inputTokens(model: Model, input: EvalInput, r: Resolved): Promise<Int32Array> {
  const t0 = performance.now();
  const report = (fraction: number, textTokens: number) =>
    r.onProgress?.({
      phase: "tokenize",
      fraction,
      textTokens,
      chunksDone: 0,
      chunks: 0,
      elapsedSeconds: (performance.now() - t0) / 1000,
      tokensPerSecond: 0,
      etaSeconds: 0,
    });
  let tokens: Int32Array;
  if (typeof input === "string") {
    tokens = await encodeStream(model.tokenizer, [input], { signal: r.signal });
  } else if (Array.isArray(input) || input instanceof Int32Array) {
    tokens = Int32Array.from(checkTokenIds(Array.from(input as ArrayLike<number>), model.info.nVocab));
  } else if (typeof input === "object" && input !== null && "file" in input) {
    const path = checkPath("file", input.file);
    let size: number;
    try {
      const st = await stat(path);
      if (!st.isFile()) throw Object.assign(new Error("it is not a regular file"), { code: "EISDIR" });
      size = st.size;
    } catch (err) {
      throw ioError(err, path);
    }
    let bytes = 0;
    tokens = await encodeStream(
      model.tokenizer,
      fileText(path, (b) => {
        bytes = b;
      }),
      { signal: r.signal, onPart: (n) => report(size > 0 ? Math.min(1, bytes / size) : 1, n) },
    );
  } else {
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      "Expected a string, an array of token ids or { file: path } for the text to evaluate",
    );
  }
  report(1, tokens.length);
  return tokens;
}

function series(mean: number | undefined, error: number | undefined, q: NativeQuantiles | undefined): SeriesStats {
  if (mean === undefined || error === undefined || q === undefined)
    throw new LlmserveError("ERR_INTERNAL", "the native summary lacks the reference statistics");
  return { mean, meanError: error, ...q };
}

function comparison(s: NativeEvalStats): ReferenceComparison {
  const n = (v: number | undefined) => v ?? Number.NaN;
  return {
    ppl: n(s.refPpl),
    pplError: n(s.refPplError),
    deltaPpl: n(s.pplDiff),
    deltaPplError: n(s.pplDiffError),
    pplRatio: n(s.pplRatio),
    pplRatioError: n(s.pplRatioError),
    logPplRatio: n(s.logRatio),
    logPplRatioError: n(s.logRatioError),
    nllCorrelation: n(s.correlation),
    kl: series(s.klMean, s.klError, s.klQuantiles),
    top1: n(s.sameTop),
    top1Error: n(s.sameTopError),
    deltaP: {
      ...series(s.pDiffMean, s.pDiffError, s.pDiffQuantiles),
      rms: n(s.pDiffRms),
      rmsError: n(s.pDiffRmsError),
    },
  };
}

/**
 * Perplexity of `model` over a text, as llama.cpp's `llama-perplexity -c ctx` computes it (the same
 * chunks, BOS handling, scored tokens and error formula), and with `reference` the statistics of
 * `llama-perplexity --kl-divergence`: KL divergence (mean ± error, median, percentiles, max), top-1
 * agreement, Δp and the perplexity ratio. The models run chunk after chunk on their own engine
 * threads (requests being served meanwhile wait for each chunk); nothing heavy runs on the event
 * loop. The text must have at least 2 × ctx tokens.
 *
 * Errors (LlmserveError): ERR_INVALID_ARGUMENT (options; a text shorter than 2 × ctx tokens; a
 * reference with another vocabulary), ERR_CONTEXT_OVERFLOW (ctx over a model's contextSize),
 * ERR_FILE_NOT_FOUND / ERR_IO (the text file), ERR_CANCELLED (aborted), ERR_DISPOSED.
 * @example
 * const q4 = await Model.load("model-q4_k_m.gguf", { contextSize: 512 });
 * const f16 = await Model.load("model-f16.gguf", { contextSize: 512 });
 * const r = await evaluatePerplexity(q4, { file: "wiki.test.raw" }, { ctx: 512, reference: f16 });
 * console.log(`PPL ${r.ppl.toFixed(4)} ± ${r.pplError.toFixed(4)}, KL ${r.reference?.kl.mean}`);
 */
export async function evaluatePerplexity(
  model: Model,
  input: EvalInput,
  options: EvaluatePerplexityOptions = {},
): Promise<PerplexityResult> {
  const r = resolve(model, options);
  if (r.signal?.aborted) throw cancelled();
  const tokens = await inputTokens(model, input, r);
  const { ctx } = r;
  if (tokens.length < 2 * ctx)
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `The text has ${tokens.length} tokens, but a perplexity with ctx ${ctx} needs at least ${2 * ctx} (2 × ctx, as llama-perplexity): give a longer text or a ctx of at most ${Math.max(EVAL_LIMITS.ctx.min, Math.floor(tokens.length / 2))}.`,
    );
  const chunks = Math.min(r.chunks, Math.floor(tokens.length / ctx));
  const batch = Math.min(r.batch, ctx);
  const tok = model.tokenizer;
  const bos = tok.addBos ? tok.bos : undefined;
  const evaluation: NativeEvaluation = await callNative(async () =>
    loadAddon().createEvaluation(model.nativeModel, r.reference?.nativeModel ?? null, batch),
  );
  const t0 = performance.now();
  let seconds = 0;
  for (let i = 0; i < chunks; i++) {
    if (r.signal?.aborted) throw cancelled();
    // llama-perplexity: each chunk from scratch, BOS in place of its first token.
    const chunk = tokens.slice(i * ctx, (i + 1) * ctx);
    if (bos !== undefined) chunk[0] = bos;
    const s = await abortable(
      callNative(() => evaluation.chunk(chunk)),
      r.signal,
    );
    seconds = (performance.now() - t0) / 1000;
    const done = i + 1;
    r.onProgress?.({
      phase: "evaluate",
      fraction: done / chunks,
      textTokens: tokens.length,
      chunksDone: done,
      chunks,
      elapsedSeconds: seconds,
      tokensPerSecond: (done * ctx) / seconds,
      etaSeconds: (seconds / done) * (chunks - done),
      ppl: s.ppl,
      pplError: s.pplError,
      ...(r.reference ? { kl: s.klMean, top1: s.sameTop } : {}),
    });
  }
  const s = await abortable(
    callNative(() => evaluation.summary(r.perToken)),
    r.signal,
  );
  const result: PerplexityResult = {
    ppl: s.ppl,
    pplError: s.pplError,
    nll: s.nllMean,
    nllError: s.nllError,
    ctx,
    batch,
    chunks,
    textTokens: tokens.length,
    scoredTokens: s.count,
    seconds,
    tokensPerSecond: seconds > 0 ? (chunks * ctx) / seconds : 0,
  };
  if (r.reference) result.reference = comparison(s);
  if (s.perToken) {
    const p = s.perToken;
    result.perToken = { nll: p.nll, ...(p.kl ? { kl: p.kl, deltaP: p.pDiff, top1: p.sameTop } : {}) };
  }
  return result;
}
