/** Model: load a GGUF file and stream generations from it. */
import { basename } from "node:path";
import { AdapterRegistry, type AdapterInfo, type LoadAdapterOptions } from "./adapters.js";
import { loadAddon } from "./binding.js";
import { LlmserveError, fromNative, wrapNative } from "./errors.js";
import {
  resolveOptions,
  startGeneration,
  type Chunk,
  type FinalChunk,
  type FinishReason,
  type GenerateOptions,
  type GenerationResult,
  type Prompt,
  type ResolvedOptions,
  type Timings,
} from "./generate.js";
import { modelFile } from "./hub/index.js";
import { type LocalKv, kvLocalTokens, kvSplit, kvTokensByDefault, kvTokensForBudget } from "./kvMemory.js";
import { contextSizeFor, resolveLoadOptions, trainingContext, type LoadOptions } from "./loadOptions.js";
import type { NativeModel, NativeModelInfo, NativeStats } from "./native.js";
import { ProgressTracker, type ProgressEvent } from "./progress.js";
import { ResponseCache } from "./responseCache.js";
import { Session, type SessionOptions } from "./session.js";
import { OFFTHREAD_MIN_CHARS, Tokenizer } from "./tokenizer/index.js";
import { ADAPTER_DEFAULTS, EMBED_DEFAULTS, randomSeed } from "./defaults.js";
import { EmbeddingCache, embedInputs, embedTokens, resolveEmbedOptions, type EmbedOptions } from "./embed.js";
import { LORA_LIMITS } from "./limits.js";
import {
  checkAdapterName,
  checkKeys,
  checkLimit,
  checkObject,
  checkPath,
  checkString,
  checkTokenIds,
} from "./validate.js";

export type { AdapterInfo, LoadAdapterOptions } from "./adapters.js";
export { defaultThreads, physicalCores, type LoadOptions } from "./loadOptions.js";

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
  /** Embeddings served from the embedding cache (a repeated text, same pooling and normalize). */
  embeddingCacheHits: number;
  /** Embeddings computed on the engine. */
  embeddingCacheMisses: number;
  /** Prefixes pinned with {@link Model.cachePrefix} and not yet released. */
  pinnedPrefixes: number;
  /** LoRA adapters registered (what {@link Model.adapters} lists), resident or not. */
  adapters: number;
  /** Registered LoRA adapters whose weights are in memory (see {@link LoadOptions.maxAdapters}). */
  adaptersResident: number;
  /** Adapter files read since load: loadAdapter calls and transparent reloads after an eviction. */
  adapterLoads: number;
  /** Adapters evicted to keep at most maxAdapters in memory. */
  adapterEvictions: number;
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
  private readonly embeddings = new EmbeddingCache(EMBED_DEFAULTS.cacheBytes);
  private readonly pins = new Map<string, { session: number; tokens: number[] }>();
  private readonly registry: AdapterRegistry;
  private nextSession = 1;

  private constructor(
    path: string,
    native: NativeModel,
    tokenizer: Tokenizer,
    o: { responseCacheBytes: number; maxAdapters: number },
  ) {
    this.path = path;
    this.native = native;
    this.tokenizer = tokenizer;
    this.nativeInfo = native.info();
    this.eog = tokenizer.eogTokens;
    this.responses = new ResponseCache(o.responseCacheBytes);
    // The one place adapter files reach the engine (loadAdapter and transparent reloads alike).
    this.registry = new AdapterRegistry(o.maxAdapters, {
      load: async (engineName, file, scale) => {
        try {
          return await this.live().loadAdapter(engineName, file, scale);
        } catch (err) {
          throw fromNative(err);
        }
      },
      unload: (engineName) => this.native?.unloadAdapter(engineName),
    });
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
    const { nativeOptions, onProgress, download, contextSizeGiven, kvMemoryBytes, kvCacheTokensGiven, ...rest } =
      resolveLoadOptions(options);
    const toFraction = (e: ProgressEvent) => onProgress?.(e.total > 0 ? Math.min(1, e.done / e.total) : 0, e);
    const path = await modelFile(spec, download, onProgress && toFraction);
    const train = await trainingContext(path);
    nativeOptions.contextSize = contextSizeFor(contextSizeGiven ? nativeOptions.contextSize : undefined, train, path);
    if (!kvCacheTokensGiven) {
      const split = await kvSplit(path, nativeOptions.kvType).catch(() => undefined);
      const perToken = split && split.perToken + split.localPerToken;
      const context = nativeOptions.contextSize === 0 ? train : nativeOptions.contextSize;
      const block = nativeOptions.kvBlockSize;
      // Sliding-window layers: their pool stops growing at maxSequences windows plus one batch.
      const local: LocalKv | undefined =
        split && split.localPerToken > 0
          ? {
              split,
              cap: kvLocalTokens(split, Infinity, block, nativeOptions.maxSequences, nativeOptions.maxBatchTokens),
            }
          : undefined;
      if (kvMemoryBytes !== undefined) {
        if (perToken === undefined)
          throw new LlmserveError(
            "ERR_INVALID_ARGUMENT",
            `${basename(path)} does not give its attention shape in its metadata, so kvMemory cannot be turned into tokens; pass kvCacheTokens instead.`,
          );
        nativeOptions.kvCacheTokens = kvTokensForBudget(kvMemoryBytes, perToken, block, context, local);
      } else if (perToken !== undefined && context > 0) {
        // Neither given: from free memory (else 0 = one context, the engine's own default).
        nativeOptions.kvCacheTokens = kvTokensByDefault(
          perToken,
          block,
          context,
          nativeOptions.maxSequences,
          undefined,
          local,
        );
      }
    }
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
      return new Model(path, native, tokenizer, rest);
    } catch (err) {
      await native.dispose();
      throw err;
    }
  }

  /** @internal The native model (ERR_DISPOSED once disposed), for evaluatePerplexity. */
  get nativeModel(): NativeModel {
    return this.live();
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
      for (const t of all) {
        // Without a seed, each prompt draws its own (as separate generate() calls would).
        const own = options.seed === undefined ? { ...opts, params: { ...opts.params, seed: randomSeed() } } : opts;
        started.push(Array.isArray(t) ? this.start(t, own) : this.startLater(t, own));
      }
    } catch (err) {
      for (const g of started) void g.return(undefined);
      throw err;
    }
    return started;
  }

  /**
   * Loads a LoRA adapter for this model under `name`, off the JS thread: a llama.cpp GGUF adapter
   * file (e.g. from `convert_lora_to_gguf.py` or `llmserve synth-lora`), or a Hugging Face PEFT
   * folder holding `adapter_config.json` and `adapter_model.safetensors` (or the path of that
   * `.safetensors` file), for llama, qwen2 and qwen3 bases. Requests pick it with
   * `generate(prompt, { adapter: name })`; requests with different adapters (or none) are batched
   * together, the base weights are shared. With {@link LoadOptions.maxAdapters}, loading one more
   * evicts the least recently used idle adapter, which a later request reloads transparently from
   * the same file (which must not change meanwhile: ERR_ADAPTER_CHANGED). Errors:
   * ERR_INVALID_ARGUMENT (a name already loaded; a PEFT option llmserve does not apply, such as DoRA
   * or modules_to_save; a malformed file), ERR_FILE_NOT_FOUND, and the adapter's typed load errors
   * (ERR_UNSUPPORTED_ARCH for an adapter of another architecture, ERR_BAD_SHAPE for one of another
   * model size, ERR_UNSUPPORTED_TYPE, ...), each naming the tensor or the config key.
   * @example
   * await model.loadAdapter("sql", "sql-lora.gguf", { scale: 0.8 });
   * await model.loadAdapter("legal", "./legal-peft/"); // PEFT save_pretrained() output
   * const { text } = await model.complete("SELECT", { adapter: "sql", maxTokens: 32 });
   */
  async loadAdapter(name: string, path: string, options: LoadAdapterOptions = {}): Promise<AdapterInfo> {
    this.live();
    checkAdapterName("name", name);
    checkPath("path", path);
    const o = checkObject("adapter options", options);
    checkKeys("adapter options", o, ["scale"]);
    const scale = o.scale === undefined ? ADAPTER_DEFAULTS.scale : checkLimit("scale", o.scale, LORA_LIMITS.scale);
    return this.registry.register(name, path, scale);
  }

  /**
   * Unloads an adapter: new requests naming it throw ERR_ADAPTER_NOT_FOUND; requests already
   * queued, streaming or waiting for its reload finish with it, then its memory is released. An
   * unknown name throws ERR_ADAPTER_NOT_FOUND, listing the loaded ones.
   */
  unloadAdapter(name: string): void {
    this.live();
    checkAdapterName("name", name);
    this.registry.unregister(name);
  }

  /** The loaded (registered) LoRA adapters, in load order, each with whether it is resident now. */
  adapters(): AdapterInfo[] {
    this.live();
    return this.registry.list();
  }

  /** @internal Checks a token prompt and queues it (or replays a response-cache hit). */
  start(
    tokens: number[],
    opts: ResolvedOptions,
    extra: { session?: number; pin?: boolean; onFinish?: (r: GenerationResult) => void } = {},
  ): AsyncGenerator<Chunk, void, undefined> {
    const r = this.begin(tokens, opts, extra);
    if (!(r instanceof Promise)) return r;
    r.catch(() => {}); // reported by the generator's first next(); never an unhandled rejection
    return (async function* () {
      yield* await r;
    })();
  }

  /**
   * @internal {@link start}, resolved once the request is submitted: an evicted adapter's reload
   * has run, so its errors reject here (the server answers them with a status, not mid-stream).
   */
  async startSubmitted(
    tokens: number[],
    opts: ResolvedOptions,
    extra: { session?: number; pin?: boolean; onFinish?: (r: GenerationResult) => void } = {},
  ): Promise<AsyncGenerator<Chunk, void, undefined>> {
    return this.begin(tokens, opts, extra);
  }

  /** The request's iterator now, or a promise of it when its adapter must be reloaded first. */
  private begin(
    tokens: number[],
    opts: ResolvedOptions,
    extra: { session?: number; pin?: boolean; onFinish?: (r: GenerationResult) => void },
  ): AsyncGenerator<Chunk, void, undefined> | Promise<AsyncGenerator<Chunk, void, undefined>> {
    this.live();
    if (tokens.length === 0) throw new LlmserveError("ERR_INVALID_ARGUMENT", "The prompt is empty (it has no tokens).");
    if (tokens.length >= this.nativeInfo.contextSize) {
      throw new LlmserveError(
        "ERR_CONTEXT_OVERFLOW",
        `The prompt has ${tokens.length} tokens but the context holds ${this.nativeInfo.contextSize} (and at least one must be generated). Shorten the prompt or load the model with a larger contextSize.`,
      );
    }
    // Keyed by the adapter's registration (path, scale, file identity), not its engine id, which
    // changes with every reload: an entry stored before an eviction hits after it (a reload refuses
    // a changed file, so the same key means the same weights). The prefix cache and sessions key by
    // engine id (native); after a reload they miss and recompute, which is safe.
    const adapterKey = opts.adapter === undefined ? "none" : this.registry.cacheKey(opts.adapter);
    const key =
      opts.cacheKey !== undefined && this.responses.maxBytes > 0 && extra.session === undefined
        ? ResponseCache.key(this.path, tokens, `${opts.cacheKey}\u0000adapter=${adapterKey}`)
        : undefined;
    if (key !== undefined) {
      const hit = this.responses.get(key);
      if (hit) return replay(hit); // no engine work: an evicted adapter is not reloaded for it
    }
    const submit = (adapter: number, onEnd?: () => void) => {
      const params =
        extra.session === undefined
          ? { ...opts.params, adapter }
          : { ...opts.params, adapter, session: extra.session, pin: extra.pin ?? false };
      const onFinish = (r: GenerationResult) => {
        if (key !== undefined) this.responses.set(key, r.chunks);
        extra.onFinish?.(r);
      };
      try {
        return startGeneration(this.live(), this.tokenizer, tokens, { ...opts, params }, onFinish, onEnd);
      } catch (err) {
        onEnd?.();
        throw err;
      }
    };
    if (opts.adapter === undefined) return submit(0);
    // The request holds its adapter (it cannot be evicted) from here until its native request ends.
    const lease = this.registry.acquire(opts.adapter);
    if (typeof lease.id === "number") return submit(lease.id, lease.release);
    return lease.id.then(
      (id) => {
        try {
          return submit(id, lease.release);
        } finally {
          lease.submitted();
        }
      },
      (err) => {
        lease.release();
        throw err;
      },
    );
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
    const a = this.registry.stats();
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
      embeddingCacheHits: this.embeddings.hits,
      embeddingCacheMisses: this.embeddings.misses,
      pinnedPrefixes: this.pins.size,
      adapters: a.registered,
      adaptersResident: a.resident,
      adapterLoads: a.loads,
      adapterEvictions: a.evictions,
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
    finishReason: FinishReason;
    /** Timings of the last chunk; absent when a stop string ended it or for response-cache hits. */
    timings?: Timings;
    /** The sampling seed used (see {@link FinalChunk.seed}): pass it as `seed` to reproduce this output. */
    seed?: number;
  }> {
    let text = "";
    const tokens: number[] = [];
    let last: FinalChunk | undefined;
    for await (const c of this.generate(prompt, options)) {
      text += c.text;
      tokens.push(...c.tokens);
      if (c.done) last = c;
    }
    return { text, tokens, finishReason: last?.finishReason ?? "length", timings: last?.timings, seed: last?.seed };
  }

  /**
   * Next-token logits for a token sequence evaluated from scratch: [nVocab] for the last token,
   * or [n * nVocab] for every position with `all`; with `adapter`, under that LoRA adapter
   * ({@link loadAdapter}; held, and reloaded if it was evicted, as a generate request would).
   * Used for parity checks and scoring. Errors: ERR_ADAPTER_NOT_FOUND (no adapter of that name).
   */
  async evaluate(tokens: number[], opts: { all?: boolean; adapter?: string } = {}): Promise<Float32Array> {
    const native = this.live();
    const ids = Int32Array.from(this.promptTokens({ tokens }, false, false));
    if (opts.adapter === undefined) return wrapNative(native.evaluate(ids, opts.all === true));
    // Held from here until the native evaluation ends (as a generate request holds its adapter):
    // submitted synchronously when the adapter is resident, so an unloadAdapter() right after this
    // call cannot drop the native copy first; after a reload, submitted before the lease says so.
    const lease = this.registry.acquire(checkAdapterName("adapter", opts.adapter));
    try {
      let pending: Promise<Float32Array>;
      if (typeof lease.id === "number") pending = native.evaluate(ids, opts.all === true, lease.id);
      else {
        const id = await lease.id;
        try {
          pending = native.evaluate(ids, opts.all === true, id);
        } finally {
          lease.submitted();
        }
      }
      return await wrapNative(pending);
    } finally {
      lease.release();
    }
  }

  /**
   * Embeddings: one Float32Array of length nEmbd per text (or token array), in order, from the final
   * hidden states after the output norm, pooled as `pooling` says. Texts are tokenized with BOS as
   * the vocabulary asks; repeated inputs come from a cache (see {@link ModelStats.embeddingCacheHits}).
   * Errors: ERR_INVALID_ARGUMENT (an empty text or token array), ERR_CONTEXT_OVERFLOW (more tokens
   * than contextSize), ERR_CANCELLED (`signal`).
   * @example
   * const [a, b] = await model.embed(["a cat", "a dog"], { pooling: "mean" });
   */
  async embed(
    input: string | readonly (string | readonly number[])[],
    options: EmbedOptions = {},
  ): Promise<Float32Array[]> {
    const o = resolveEmbedOptions(options);
    const seqs = await embedInputs(
      input,
      this.nativeInfo.contextSize,
      (text) => this.promptTokensAsync(text, true, false),
      (ids) => this.promptTokens({ tokens: ids }, false, false),
    );
    return embedTokens(() => this.live(), this.embeddings, seqs, o);
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
