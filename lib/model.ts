/** Model: load a GGUF file and stream generations from it. */
import { basename } from "node:path";
import { loadAddon } from "./binding.js";
import { physicalCores } from "./cpu.js";
import { LlmserveError, fromNative, wrapNative } from "./errors.js";
import {
  resolveOptions,
  startGeneration,
  type Chunk,
  type GenerateOptions,
  type GenerationResult,
  type Prompt,
  type ResolvedOptions,
} from "./generate.js";
import type { NativeAdapterInfo, NativeModel, NativeModelInfo, NativeModelOptions, NativeStats } from "./native.js";
import { modelFile, type ResolveOptions } from "./hub/index.js";
import { ProgressTracker, type ProgressEvent } from "./progress.js";
import { ResponseCache } from "./responseCache.js";
import { Session, type SessionOptions } from "./session.js";
import { OFFTHREAD_MIN_CHARS, Tokenizer } from "./tokenizer/index.js";
import { ADAPTER_DEFAULTS, LOAD_DEFAULTS } from "./defaults.js";
import { LOAD_LIMITS as L, LORA_LIMITS } from "./limits.js";
import {
  checkAdapterName,
  checkBool,
  checkInt,
  checkKeys,
  checkLimit,
  checkObject,
  checkPath,
  checkString,
  checkTokenIds,
} from "./validate.js";

export { physicalCores };

/** Options of {@link Model.load}; every field is optional. */
export interface LoadOptions {
  /** Compute threads, in [1, 512] (default: the number of physical cores). */
  threads?: number;
  /** Most tokens one sequence may hold, in [0, 16777216] (default 4096; 0 = the model's training context). */
  contextSize?: number;
  /** KV cache element type: "f16" (default, as llama.cpp), "f32", or "q8_0" (half the memory of f16, as llama.cpp's `--cache-type-k/v q8_0`; needs a head size that is a multiple of 32). */
  kvType?: "f16" | "f32" | "q8_0";
  /** Total KV cache size in tokens, shared by all sequences, in [0, 67108864] (default and 0: contextSize). */
  kvCacheTokens?: number;
  /** Tokens per KV block (default 16). */
  kvBlockSize?: number;
  /** Most tokens computed per engine step: decode tokens plus prompt chunks (default 512). */
  maxBatchTokens?: number;
  /**
   * Most prompt tokens per step while other requests are generating (default 128; 0 = only
   * maxBatchTokens limits them). Long prompts then arrive in smaller chunks, so generating requests
   * keep a low inter-token latency; a step with nothing generating uses all of maxBatchTokens.
   */
  prefillChunk?: number;
  /** Most sequences running at once (default 64). */
  maxSequences?: number;
  /** Most requests waiting before generate() throws ERR_QUEUE_FULL (default 1024). */
  maxQueue?: number;
  /** Reuse KV blocks of identical prompt prefixes across requests (default true). */
  prefixCache?: boolean;
  /** "continuous" (default) or "static" (a batch runs to completion before the next is formed; a benchmark baseline). */
  batching?: "continuous" | "static";
  /** Byte budget of the response cache for `cache: true` requests (default 64 MiB; 0 disables). */
  responseCacheBytes?: number;
  /**
   * Copy quantized weight matrices at load into the GEMM kernels' interleaved layout and release the
   * file's pages for them (default true): the same memory, faster decode. `false` keeps every weight
   * in the file's memory mapping: faster load, and the pages are shared by every process mapping the file.
   */
  repack?: boolean;
  /**
   * Called while work progresses: with the fraction done in [0, 1] and the full
   * {@link ProgressEvent} (phase "download" with bytes, rate and ETA while an `hf:` or URL model
   * is downloaded, then "load" while weights are mapped and paged in).
   */
  onProgress?: (fraction: number, event: ProgressEvent) => void;
  /**
   * How `hf:` and `https://` models are fetched into the model cache: cache folder, offline mode,
   * token, endpoint, timeouts (see {@link ResolveOptions}; progress goes to `onProgress`).
   */
  download?: Omit<ResolveOptions, "onProgress">;
}

/** Engine counters and KV state; see {@link Model.stats}. */
export interface ModelStats extends NativeStats {
  /** Mean tokens computed per engine step. */
  tokensPerStep: number;
  /** Mean sequences per engine step. */
  sequencesPerStep: number;
  /** Fraction of prefix-cache block lookups that hit. */
  prefixHitRate: number;
  /** Fraction of the KV held by used blocks that holds no token (the unfilled tails). */
  kvWaste: number;
  /** Response-cache lookups (`cache: true` requests) that found a stored output. */
  responseCacheHits: number;
  /** Response-cache lookups that found nothing (the request was computed). */
  responseCacheMisses: number;
  /** Outputs held in the response cache now. */
  responseCacheEntries: number;
  /** Prefixes pinned with {@link Model.cachePrefix} and not yet released. */
  pinnedPrefixes: number;
}

/** What {@link Model.info} returns: the model's shape and engine limits, plus file and tokenizer facts. */
export interface ModelInfo extends NativeModelInfo {
  /** The path the model was loaded from. */
  path: string;
  /** Tokenizer model from the file ("llama" = SentencePiece, "gpt2" = byte-level BPE). */
  tokenizer: string;
  /** BOS token id; undefined when the vocabulary defines none. */
  bos?: number;
  /** EOS token id; undefined when the vocabulary defines none. */
  eos?: number;
}

/** A LoRA adapter loaded with {@link Model.loadAdapter}. */
export interface AdapterInfo extends NativeAdapterInfo {}

/** Options of {@link Model.loadAdapter}. */
export interface LoadAdapterOptions {
  /**
   * Strength of the adapter, in [-100, 100] (default 1; 0 = the base model's outputs). As llama.cpp,
   * the delta is scaled by scale × alpha / rank when the file has an `adapter.lora.alpha`.
   */
  scale?: number;
}

/** The default of {@link LoadOptions.threads}: the physical cores, at most the threads limit (512). */
export function defaultThreads(): number {
  return Math.min(physicalCores(), L.threads.max);
}

/**
 * @internal Validates load options and fills every absent one from LOAD_DEFAULTS: the complete
 * options the addon needs (it has no defaults of its own), plus the TypeScript-only ones.
 */
export function resolveLoadOptions(options: unknown): {
  nativeOptions: NativeModelOptions;
  responseCacheBytes: number;
  onProgress?: (fraction: number, event: ProgressEvent) => void;
  download?: ResolveOptions;
} {
  const o = checkObject("load options", options) as LoadOptions & Record<string, unknown>;
  checkKeys("load options", o, [
    "threads",
    "contextSize",
    "kvType",
    "kvCacheTokens",
    "kvBlockSize",
    "maxBatchTokens",
    "maxSequences",
    "maxQueue",
    "prefixCache",
    "batching",
    "responseCacheBytes",
    "repack",
    "prefillChunk",
    "onProgress",
    "download",
  ]);
  const D = LOAD_DEFAULTS;
  const int = (name: keyof typeof L & keyof typeof D): number =>
    o[name] === undefined ? D[name] : checkLimit(name, o[name], L[name]);
  // Every field of the native options is set here (the addon has no defaults of its own).
  const nativeOptions: NativeModelOptions = {
    threads: o.threads === undefined ? defaultThreads() : checkLimit("threads", o.threads, L.threads),
    contextSize: int("contextSize"),
    kvType:
      o.kvType === undefined
        ? D.kvType
        : (checkString("kvType", o.kvType, ["f16", "f32", "q8_0"]) as NativeModelOptions["kvType"]),
    kvCacheTokens: int("kvCacheTokens"),
    kvBlockSize: int("kvBlockSize"),
    maxBatchTokens: int("maxBatchTokens"),
    maxSequences: int("maxSequences"),
    maxQueue: int("maxQueue"),
    prefixCache: o.prefixCache === undefined ? D.prefixCache : checkBool("prefixCache", o.prefixCache),
    staticBatching:
      (o.batching === undefined ? D.batching : checkString("batching", o.batching, ["continuous", "static"])) ===
      "static",
    repack: o.repack === undefined ? D.repack : checkBool("repack", o.repack),
    prefillChunk: int("prefillChunk"),
  };
  const responseCacheBytes =
    o.responseCacheBytes === undefined ? D.responseCacheBytes : checkInt("responseCacheBytes", o.responseCacheBytes, 0);
  if (o.onProgress !== undefined && typeof o.onProgress !== "function") {
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected a function for onProgress");
  }
  const download = o.download === undefined ? undefined : (checkObject("download", o.download) as ResolveOptions);
  return { nativeOptions, responseCacheBytes, onProgress: o.onProgress, download };
}

/**
 * A loaded GGUF model and its engine thread, which batches all concurrent requests. Create one
 * with {@link Model.load}; free it with {@link Model.dispose} (or `await using`).
 */
export class Model {
  /** The path the model was loaded from. */
  readonly path: string;
  /** The tokenizer read from the same file. */
  readonly tokenizer: Tokenizer;
  private native: NativeModel | undefined;
  private readonly eog: number[];
  private readonly nativeInfo: NativeModelInfo;
  private readonly responses: ResponseCache;
  private readonly pins = new Map<string, { session: number; tokens: number[] }>();
  private nextSession = 1;

  private constructor(path: string, native: NativeModel, tokenizer: Tokenizer, responseCacheBytes: number) {
    this.path = path;
    this.native = native;
    this.tokenizer = tokenizer;
    this.nativeInfo = native.info();
    this.eog = tokenizer.eogTokens;
    this.responses = new ResponseCache(responseCacheBytes);
  }

  /**
   * Loads a GGUF model: a file path, or a model to fetch into the model cache first
   * (`hf:OWNER/REPO/FILE.gguf`, `hf:OWNER/REPO:Q4_K_M`, an `https://` URL; see
   * {@link resolveModel}). Weights stay memory-mapped; loading runs off the JS thread. Throws
   * LlmserveError on invalid options, a failed download, or an unreadable, corrupt or unsupported file.
   * @example
   * const model = await Model.load("model.gguf", { threads: 2, contextSize: 4096 });
   * const chat = await Model.load("hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF:Q4_K_M");
   */
  static async load(spec: string, options: LoadOptions = {}): Promise<Model> {
    checkPath("path", spec);
    const { nativeOptions, responseCacheBytes, onProgress, download } = resolveLoadOptions(options);
    const toFraction = (e: ProgressEvent) => onProgress?.(e.total > 0 ? Math.min(1, e.done / e.total) : 0, e);
    const path = await modelFile(spec, download, onProgress && toFraction);
    const addon = loadAddon();
    const tracker = onProgress && new ProgressTracker("load", basename(path), 1, "fraction", toFraction);
    const native = await wrapNative(addon.loadModel(path, nativeOptions, tracker && ((f) => tracker.update(f))));
    try {
      tracker?.finish();
      const tokenizer = await Tokenizer.fromGguf(path);
      const info = native.info();
      if (tokenizer.nVocab !== info.nVocab) {
        throw new LlmserveError(
          "ERR_GGUF_CORRUPT",
          `The vocabulary has ${tokenizer.nVocab} tokens but the model's embedding has ${info.nVocab} rows; the file is inconsistent.`,
        );
      }
      return new Model(path, native, tokenizer, responseCacheBytes);
    } catch (err) {
      await native.dispose();
      throw err;
    }
  }

  private live(): NativeModel {
    if (!this.native)
      throw new LlmserveError("ERR_DISPOSED", "This model has been disposed; load it again with Model.load().");
    return this.native;
  }

  /** Architecture, shapes, weight types, kernels in use. */
  get info(): ModelInfo {
    this.live();
    return {
      ...this.nativeInfo,
      path: this.path,
      tokenizer: this.tokenizer.model,
      bos: this.tokenizer.bos,
      eos: this.tokenizer.eos,
    };
  }

  /** Text -> token ids (BOS added when the vocabulary asks for it, unless addSpecial is false). */
  tokenize(text: string, opts: { addSpecial?: boolean; parseSpecial?: boolean } = {}): number[] {
    checkString("text", text);
    return this.tokenizer.encode(text, opts);
  }

  /**
   * {@link tokenize} without holding the event loop: a text of 16 KiB or more is tokenized on the
   * tokenizer's worker thread (see {@link Tokenizer.encodeAsync}).
   */
  async tokenizeAsync(text: string, opts: { addSpecial?: boolean; parseSpecial?: boolean } = {}): Promise<number[]> {
    checkString("text", text);
    return this.tokenizer.encodeAsync(text, opts);
  }

  /**
   * The most characters of prompt text that can fit the context: contextSize times the longest
   * token text ({@link Tokenizer.maxTokenChars}). A longer prompt is refused with
   * ERR_CONTEXT_OVERFLOW before it is tokenized.
   */
  get maxPromptChars(): number {
    return this.nativeInfo.contextSize * this.tokenizer.maxTokenChars;
  }

  /** Throws ERR_CONTEXT_OVERFLOW for a prompt text that cannot fit the context, before tokenizing it. */
  private checkPromptChars(text: string): void {
    if (text.length > this.maxPromptChars) {
      throw new LlmserveError(
        "ERR_CONTEXT_OVERFLOW",
        `The prompt has ${text.length} characters, more than the context of ${this.nativeInfo.contextSize} tokens can hold (at most ${this.maxPromptChars}: a token stands for at most ${this.tokenizer.maxTokenChars} characters). Shorten the prompt or load the model with a larger contextSize.`,
      );
    }
  }

  /** @internal Token ids of a prompt: at once, or a promise when a long text is tokenized off the event loop. */
  promptTokensAsync(prompt: Prompt, addSpecial: boolean, parseSpecial: boolean): number[] | Promise<number[]> {
    if (typeof prompt === "string") {
      this.checkPromptChars(prompt);
      if (prompt.length >= OFFTHREAD_MIN_CHARS) {
        const p = this.tokenizer.encodeAsync(prompt, { addSpecial, parseSpecial });
        p.catch(() => {}); // reported by the generator's first next(); never an unhandled rejection
        return p;
      }
    }
    return this.promptTokens(prompt, addSpecial, parseSpecial);
  }

  /** Token ids -> text (control tokens give "" unless `special`); see {@link Tokenizer.decode}. */
  detokenize(tokens: number[], opts: { special?: boolean } = {}): string {
    return this.tokenizer.decode(tokens, opts);
  }

  /** @internal */
  promptTokens(prompt: Prompt, addSpecial: boolean, parseSpecial: boolean): number[] {
    if (typeof prompt === "string") return this.tokenizer.encode(prompt, { addSpecial, parseSpecial });
    if (typeof prompt === "object" && prompt !== null && Array.isArray(prompt.tokens)) {
      return checkTokenIds(prompt.tokens, this.nativeInfo.nVocab).slice();
    }
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected a string or { tokens: number[] } for prompt");
  }

  /**
   * Streams a completion. The request is queued at once; concurrent calls are batched together by
   * the engine. Each chunk carries the text and token ids it adds; the last has `done`.
   * @example
   * for await (const chunk of model.generate("Once upon a time", { maxTokens: 64, seed: 1 })) {
   *   process.stdout.write(chunk.text);
   * }
   */
  generate(prompt: Prompt, options: GenerateOptions = {}): AsyncGenerator<Chunk, void, undefined> {
    const opts = resolveOptions(options, this.eog);
    const tokens = this.promptTokensAsync(prompt, opts.addSpecial, opts.parseSpecial);
    return Array.isArray(tokens) ? this.start(tokens, opts) : this.startLater(tokens, opts);
  }

  /**
   * A prompt of 16 KiB or more is tokenized on a worker thread: the request is queued once that is
   * done (its errors, e.g. ERR_CONTEXT_OVERFLOW, then come from the first `next()`).
   */
  private async *startLater(tokens: Promise<number[]>, opts: ResolvedOptions): AsyncGenerator<Chunk, void, undefined> {
    yield* this.start(await tokens, opts);
  }

  /**
   * Several prompts in one call, one iterator each; all are queued together and batched.
   * @example
   * const streams = model.generateBatch(["Hello", "Bonjour"], { maxTokens: 16 });
   * const texts = await Promise.all(streams.map(async (s) => { let t = ""; for await (const c of s) t += c.text; return t; }));
   */
  generateBatch(prompts: Prompt[], options: GenerateOptions = {}): AsyncGenerator<Chunk, void, undefined>[] {
    if (!Array.isArray(prompts))
      throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected an array of prompts for generateBatch");
    const opts = resolveOptions(options, this.eog);
    const all = prompts.map((p) => this.promptTokensAsync(p, opts.addSpecial, opts.parseSpecial));
    const started: AsyncGenerator<Chunk, void, undefined>[] = [];
    try {
      for (const t of all) started.push(Array.isArray(t) ? this.start(t, opts) : this.startLater(t, opts));
    } catch (err) {
      for (const g of started) void g.return(undefined);
      throw err;
    }
    return started;
  }

  /**
   * Loads a LoRA adapter (llama.cpp's GGUF adapter format, e.g. from `convert_lora_to_gguf.py` or
   * `llmserve synth-lora`) for this model under `name`, off the JS thread. Requests pick it with
   * `generate(prompt, { adapter: name })`; requests with different adapters (or none) are batched
   * together, the base weights are shared. Errors: ERR_INVALID_ARGUMENT (a name already loaded),
   * ERR_FILE_NOT_FOUND, and the adapter's typed load errors (ERR_UNSUPPORTED_ARCH for an adapter of
   * another architecture, ERR_BAD_SHAPE for one of another model size, ...).
   * @example
   * await model.loadAdapter("sql", "sql-lora.gguf", { scale: 0.8 });
   * const { text } = await model.complete("SELECT", { adapter: "sql", maxTokens: 32 });
   */
  async loadAdapter(name: string, path: string, options: LoadAdapterOptions = {}): Promise<AdapterInfo> {
    const native = this.live();
    checkAdapterName("name", name);
    checkPath("path", path);
    const o = checkObject("adapter options", options);
    checkKeys("adapter options", o, ["scale"]);
    const scale = o.scale === undefined ? ADAPTER_DEFAULTS.scale : checkLimit("scale", o.scale, LORA_LIMITS.scale);
    let pending: Promise<AdapterInfo>;
    try {
      pending = native.loadAdapter(name, path, scale);
    } catch (err) {
      throw fromNative(err); // a name already loaded: thrown before any work starts
    }
    return wrapNative(pending);
  }

  /**
   * Unloads an adapter: new requests naming it throw ERR_ADAPTER_NOT_FOUND; requests already
   * queued or streaming with it finish with it, then its memory is released. An unknown name throws
   * ERR_ADAPTER_NOT_FOUND, listing the loaded ones.
   */
  unloadAdapter(name: string): void {
    const native = this.live();
    checkAdapterName("name", name);
    try {
      native.unloadAdapter(name);
    } catch (err) {
      throw fromNative(err);
    }
  }

  /** The loaded LoRA adapters, in load order. */
  adapters(): AdapterInfo[] {
    return this.live().adapters();
  }

  /** The id of a loaded adapter's name; ERR_ADAPTER_NOT_FOUND listing the loaded ones otherwise. */
  private adapterId(native: NativeModel, name: string): number {
    const all = native.adapters();
    const a = all.find((x) => x.name === name);
    if (a) return a.id;
    const loaded = all.length ? all.map((x) => JSON.stringify(x.name)).join(", ") : "none";
    throw new LlmserveError(
      "ERR_ADAPTER_NOT_FOUND",
      `No adapter named ${JSON.stringify(name)} is loaded (loaded: ${loaded}). Load it with model.loadAdapter() first.`,
    );
  }

  /** @internal Checks a token prompt and queues it (or replays a response-cache hit). */
  start(
    tokens: number[],
    opts: ResolvedOptions,
    extra: { session?: number; pin?: boolean; onFinish?: (r: GenerationResult) => void } = {},
  ): AsyncGenerator<Chunk, void, undefined> {
    const native = this.live();
    if (tokens.length === 0) throw new LlmserveError("ERR_INVALID_ARGUMENT", "The prompt is empty (it has no tokens).");
    if (tokens.length >= this.nativeInfo.contextSize) {
      throw new LlmserveError(
        "ERR_CONTEXT_OVERFLOW",
        `The prompt has ${tokens.length} tokens but the context holds ${this.nativeInfo.contextSize} (and at least one must be generated). Shorten the prompt or load the model with a larger contextSize.`,
      );
    }
    // The adapter's id, not its name: a name loaded again is another adapter (ids are never reused).
    const adapter = opts.adapter === undefined ? 0 : this.adapterId(native, opts.adapter);
    const key =
      opts.cacheKey !== undefined && this.responses.maxBytes > 0 && extra.session === undefined
        ? ResponseCache.key(this.path, tokens, `${opts.cacheKey}\u0000adapter=${adapter}`)
        : undefined;
    if (key !== undefined) {
      const hit = this.responses.get(key);
      if (hit) return replay(hit);
    }
    const params =
      extra.session === undefined
        ? { ...opts.params, adapter }
        : { ...opts.params, adapter, session: extra.session, pin: extra.pin ?? false };
    const onFinish = (r: GenerationResult) => {
      if (key !== undefined) this.responses.set(key, r.chunks);
      extra.onFinish?.(r);
    };
    return startGeneration(native, this.tokenizer, tokens, { ...opts, params }, onFinish);
  }

  /**
   * A conversation whose KV stays cached between turns: each turn prefills only its new tokens.
   * @example
   * const chat = model.createSession({ system: "You are terse.\n" });
   * for await (const c of chat.send("User: Hi\nAssistant:")) process.stdout.write(c.text);
   */
  createSession(options: SessionOptions = {}): Session {
    this.live();
    return new Session(this, this.nextSession++, options);
  }

  /** @internal */
  endSession(id: number): void {
    this.native?.endSession(id);
  }

  /**
   * Computes and pins the KV of a prefix (a long system prompt, a knowledge-base entry). Requests
   * whose prompt starts with the same tokens prefill only the remainder; the prefix stays resident
   * until {@link releasePrefix}. Caching under an existing name replaces that prefix. `addSpecial`
   * and `parseSpecial` default to true; the text must encode to at least 2 tokens.
   * @returns The prefix's token ids.
   * @example
   * await model.cachePrefix("kb:pricing", longDocumentText);
   * for await (const c of model.generate(longDocumentText + "\nQ: What does the Pro plan cost?\nA:")) {
   *   process.stdout.write(c.text);
   * }
   */
  async cachePrefix(
    name: string,
    text: string,
    options: { addSpecial?: boolean; parseSpecial?: boolean } = {},
  ): Promise<{
    /** The prefix's token ids (BOS included when the vocabulary adds it). */
    tokens: number[];
  }> {
    checkString("name", name);
    checkString("text", text);
    this.checkPromptChars(text);
    const tokens = await this.tokenizer.encodeAsync(text, {
      addSpecial: options.addSpecial ?? true,
      parseSpecial: options.parseSpecial ?? true,
    });
    if (tokens.length < 2) throw new LlmserveError("ERR_INVALID_ARGUMENT", "A cached prefix needs at least 2 tokens");
    this.releasePrefix(name);
    const session = this.nextSession++;
    const opts = resolveOptions({ maxTokens: 0, temperature: 0 }, this.eog);
    for await (const _ of this.start(tokens, opts, { session, pin: true })) {
      /* prefill only */
    }
    this.pins.set(name, { session, tokens });
    return { tokens };
  }

  /** Unpins a prefix cached with {@link cachePrefix}; returns false if there was none. */
  releasePrefix(name: string): boolean {
    const p = this.pins.get(name);
    if (!p) return false;
    this.pins.delete(name);
    this.native?.endSession(p.session);
    return true;
  }

  /** Engine counters and KV state: steps, batch sizes, blocks used/free/cached, cache hits. */
  stats(): ModelStats {
    const s = this.live().stats();
    const blockTokens = s.blocksUsed * s.blockSize;
    return {
      ...s,
      tokensPerStep: s.steps ? s.batchTokens / s.steps : 0,
      sequencesPerStep: s.steps ? s.batchSequences / s.steps : 0,
      prefixHitRate: s.prefixLookups ? s.prefixHits / s.prefixLookups : 0,
      kvWaste: blockTokens ? Math.max(0, 1 - s.kvTokensHeld / blockTokens) : 0,
      responseCacheHits: this.responses.hits,
      responseCacheMisses: this.responses.misses,
      responseCacheEntries: this.responses.entries,
      pinnedPrefixes: this.pins.size,
    };
  }

  /** Runs the whole generation (as {@link generate}) and returns its text, tokens and finish reason. */
  async complete(
    prompt: Prompt,
    options: GenerateOptions = {},
  ): Promise<{
    /** The generated text (stop string excluded). */
    text: string;
    /** The generated token ids. */
    tokens: number[];
    /** Why generation ended: a {@link FinishReason} ("length" if no chunk said). */
    finishReason: string;
    /** Timings of the last chunk; absent when a stop string ended it or for response-cache hits. */
    timings?: Chunk["timings"];
  }> {
    let text = "";
    const tokens: number[] = [];
    let last: Chunk | undefined;
    for await (const c of this.generate(prompt, options)) {
      text += c.text;
      tokens.push(...c.tokens);
      last = c;
    }
    return { text, tokens, finishReason: last?.finishReason ?? "length", timings: last?.timings };
  }

  /**
   * Next-token logits for a token sequence evaluated from scratch: [nVocab] for the last token,
   * or [n * nVocab] for every position with `all`. Used for parity checks and scoring.
   */
  async evaluate(tokens: number[], opts: { all?: boolean } = {}): Promise<Float32Array> {
    const native = this.live();
    return wrapNative(native.evaluate(Int32Array.from(this.promptTokens({ tokens }, false, false)), opts.all === true));
  }

  /** Stops the engine thread (pending requests end with "abort") and unmaps the weights. */
  async dispose(): Promise<void> {
    const n = this.native;
    this.native = undefined;
    await this.tokenizer.closeThread();
    if (n) await n.dispose();
  }

  /** Same as {@link dispose}; lets `await using model = await Model.load(...)` free the model. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

async function* replay(chunks: Chunk[]): AsyncGenerator<Chunk, void, undefined> {
  for (const c of chunks) yield { ...c };
}
