/** Generation options, their validation, and the streaming iterator over native events. */
import { LlmserveError, fromNative } from "./errors.js";
import type { NativeEvent, NativeGenerateParams, NativeModel } from "./native.js";
import type { Tokenizer } from "./tokenizer/index.js";
import { GENERATE_DEFAULTS, randomSeed } from "./defaults.js";
import { jsonObjectGbnf, jsonSchemaToGbnf } from "./grammar/jsonSchema.js";
import { GENERATE_LIMITS as G } from "./limits.js";
import { checkAdapterName, checkBool, checkInt, checkKeys, checkLimit, checkObject } from "./validate.js";

/** Sampling and stopping options of {@link Model.generate} and related calls; every field is optional. */
export interface GenerateOptions {
  /** Most tokens to generate, in [0, 2147483647] (default 256). */
  maxTokens?: number;
  /** In [0, 100]; 0 = greedy (default 0.8). */
  temperature?: number;
  /** Keep the k most likely tokens, in [0, 2147483647]; 0 disables (default 40). */
  topK?: number;
  /** Nucleus sampling mass in (0, 1]; 1 disables (default 0.95). */
  topP?: number;
  /** Drop tokens below minP x the top probability; 0 disables (default 0.05). */
  minP?: number;
  /** llama.cpp repeat penalty, in (0, 100]; 1 disables (default 1). */
  repeatPenalty?: number;
  /** Window of recent tokens the penalties look at, in [-1, 2147483647]; -1 = all (default 64). */
  repeatLastN?: number;
  /** Subtract count x this from a token's logit for each time it occurs in the window; in [-2, 2], 0 disables (default 0). */
  frequencyPenalty?: number;
  /** Subtract this from the logit of every token present in the window; in [-2, 2], 0 disables (default 0). */
  presencePenalty?: number;
  /**
   * Same seed, same prompt, same options -> same output; an integer in [0, 2^53 - 1]. Default: a
   * random seed per request, reported as `seed` on the last chunk.
   */
  seed?: number;
  /** Generation stops before any of these strings; it is not included in the output. */
  stop?: string[];
  /** Report the chosen token's logprob and this many alternatives per token (0..20). */
  logprobs?: number;
  /** Stop at the model's end-of-generation tokens (default true). */
  stopAtEos?: boolean;
  /**
   * OpenAI's `logit_bias`: token id -> bias in [-100, 100], added to that token's logit before
   * sampling (greedy included) and before the penalties; -100 bans the token, +100 makes it all
   * but certain. At most 65536 entries; each id must lie in the vocabulary (ERR_INVALID_ARGUMENT
   * otherwise). Reported logprobs stay those of the unbiased model.
   * @example model.generate(p, { logitBias: { [model.tokenize(" no", { addSpecial: false })[0]]: -100 } })
   */
  logitBias?: Readonly<Record<number, number>> | ReadonlyMap<number, number>;
  /**
   * Constrain the output to a grammar in llama.cpp's GBNF format (start rule `root`): only tokens
   * that keep the text inside the grammar are sampled, and generation ends at an end-of-generation
   * token only where the grammar can end. A bad grammar throws ERR_GRAMMAR saying what to fix; a
   * generation that reaches a point no token of the vocabulary can continue ends with ERR_GRAMMAR.
   * @example model.generate("Answer yes or no: ", { grammar: 'root ::= "yes" | "no"' })
   */
  grammar?: string;
  /**
   * Constrain the output to JSON valid for this JSON schema (compiled to a grammar; see
   * {@link jsonSchemaToGbnf} for the keywords supported, others throw ERR_GRAMMAR naming them).
   * @example model.generate(p, { jsonSchema: { type: "object", properties: { name: { type: "string", maxLength: 20 } }, required: ["name"] } })
   */
  jsonSchema?: object | boolean;
  /** Constrain the output to a JSON object (OpenAI's `json_object` response format). */
  json?: boolean;
  /**
   * More token ids that end generation as EOS does (not emitted; finishReason "eos"), such as a chat
   * template's end-of-turn markers (`ChatTemplate.stopTokens`); at most 1024, each in [0, 2^31 - 1].
   */
  stopTokens?: number[];
  /** Parse special-token text such as "<|im_start|>" in a text prompt (default true). */
  parseSpecial?: boolean;
  /** Add BOS/EOS to a text prompt as the vocabulary asks (default true). */
  addSpecial?: boolean;
  /** Cancels the request; the iterator then ends with finishReason "abort". */
  signal?: AbortSignal;
  /** Scheduling priority in [-1000000, 1000000]: higher runs first and is preempted last (default 0). */
  priority?: number;
  /**
   * Serve from / store in the response cache (deterministic requests only: temperature 0, or an
   * explicit seed). A hit streams the stored output without computing.
   */
  cache?: boolean;
  /**
   * Run under the LoRA adapter loaded with this name ({@link Model.loadAdapter}); absent: the base
   * model. An unknown name throws ERR_ADAPTER_NOT_FOUND, listing the loaded ones.
   */
  adapter?: string;
}

/**
 * Why a generation ended: "length" (maxTokens reached or the context is full), "stop" (a stop
 * string matched), "eos" (an end-of-generation token was sampled; it is not emitted) or "abort"
 * (cancelled by the signal, by leaving the loop, or by disposing the model).
 */
export type FinishReason = "length" | "stop" | "eos" | "abort";

/** One generated token's log probability and the most likely alternatives (see {@link GenerateOptions.logprobs}). */
export interface TokenLogprob {
  /** The chosen token id. */
  token: number;
  /** The token's text on its own (see {@link Tokenizer.piece}). */
  text: string;
  /** Natural log of its probability under the model's raw distribution (before penalties, temperature and filters). */
  logprob: number;
  /** The most likely tokens at this position, most likely first; as many as `logprobs` asked for. */
  top: {
    /** Token id. */
    token: number;
    /** The token's text on its own. */
    text: string;
    /** Natural log of its raw probability. */
    logprob: number;
  }[];
}

/** How long a request took, measured on the engine thread. */
export interface Timings {
  /** Milliseconds from the request's first engine step to its first token (prefill; queueing excluded). */
  promptMs: number;
  /** Milliseconds from the first token to the end of the generation. */
  generateMs: number;
  /** Tokens in the prompt, reused ones included (0 if it ended before its first token). */
  promptTokens: number;
  /** Tokens generated and emitted (an end-of-generation token is not counted). */
  generatedTokens: number;
  /** Prompt tokens whose KV was reused (prefix cache, session or pinned prefix) instead of computed. */
  reusedTokens: number;
  /** Prompt tokens actually computed (promptTokens - reusedTokens) per second of promptMs; 0 when promptMs is 0. */
  promptTokensPerSecond: number;
  /** generatedTokens per second of generateMs; 0 when generateMs is 0. */
  generateTokensPerSecond: number;
}

/** What every chunk of a generation carries (see {@link Chunk}). */
export interface ChunkBase {
  /** Text added by this chunk (complete UTF-8 characters only). */
  text: string;
  /** Token ids added by this chunk. */
  tokens: number[];
  /** Per-token logprobs of this chunk's tokens; present only when the `logprobs` option was set and the chunk has tokens. */
  logprobs?: TokenLogprob[];
}

/** A chunk before the last: text and tokens only (`done` absent). */
export interface PartialChunk extends ChunkBase {
  /** Absent (or false) on every chunk but the last. */
  done?: false;
  /** Only on the last chunk ({@link FinalChunk.finishReason}). */
  finishReason?: never;
  /** Only on the last chunk ({@link FinalChunk.seed}). */
  seed?: never;
  /** Only on the last chunk ({@link FinalChunk.cachedTokens}). */
  cachedTokens?: never;
  /** Only on the last chunk ({@link FinalChunk.timings}). */
  timings?: never;
}

/**
 * One piece of a streamed generation, as yielded by {@link Model.generate} and {@link Session.send}:
 * a union discriminated on `done`, so `if (chunk.done)` gives the {@link FinalChunk} with its
 * finishReason, seed and timings.
 */
export type Chunk = PartialChunk | FinalChunk;

/** The last chunk of a generation. */
export interface FinalChunk extends ChunkBase {
  /** True on the last chunk. */
  done: true;
  /** Why the generation ended. */
  finishReason: FinishReason;
  /**
   * The sampling seed this request used (the one given, or the random one drawn when none was):
   * pass it as `seed` to reproduce the output. On the last chunk only.
   */
  seed?: number;
  /**
   * Prompt tokens whose KV was reused (prefix cache, session or pinned prefix) instead of computed,
   * as `timings.reusedTokens`; on the last chunk, also when a stop string ended the generation
   * (absent when it was cancelled before its first step; a response-cache replay repeats the
   * stored run's).
   */
  cachedTokens?: number;
  /**
   * Request timings; on the last chunk only, and absent when a stop string ended the generation,
   * when the signal was aborted before it started, or on a response-cache replay.
   */
  timings?: Timings;
}

/** A prompt: text, or token ids used as they are. */
export type Prompt =
  | string
  | {
      /** Token ids (each in [0, nVocab)); no BOS or other special token is added. */
      tokens: number[];
    };

const KNOWN = [
  "maxTokens",
  "temperature",
  "topK",
  "topP",
  "minP",
  "repeatPenalty",
  "repeatLastN",
  "frequencyPenalty",
  "presencePenalty",
  "seed",
  "stop",
  "logprobs",
  "stopAtEos",
  "stopTokens",
  "logitBias",
  "parseSpecial",
  "addSpecial",
  "signal",
  "priority",
  "cache",
  "adapter",
  "grammar",
  "jsonSchema",
  "json",
] as const;

export interface ResolvedOptions {
  params: NativeGenerateParams;
  stop: string[];
  wantLogprobs: boolean;
  parseSpecial: boolean;
  addSpecial: boolean;
  signal?: AbortSignal;
  /** Response-cache key material (undefined: not cacheable); Model.start adds the adapter's id. */
  cacheKey?: string;
  /** The adapter's name (Model.start maps it to the id in params.adapter). */
  adapter?: string;
}

function checkStopTokens(v: unknown): number[] {
  if (!Array.isArray(v) || v.length > 1024)
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected an array of at most 1024 token ids for stopTokens");
  return v.map((id, i) => checkInt(`stopTokens[${i}]`, id, 0, 2 ** 31 - 1));
}

const CANONICAL_ID = /^(0|[1-9][0-9]*)$/;

/** logitBias as [token, bias] pairs sorted by token (one canonical form for the response cache's key). */
function checkLogitBias(v: unknown): [number, number][] {
  let entries: [unknown, unknown][];
  if (v instanceof Map) entries = [...v.entries()];
  else if (typeof v === "object" && v !== null && !Array.isArray(v)) {
    entries = Object.entries(v).map(([k, b]) => {
      if (!CANONICAL_ID.test(k))
        throw new LlmserveError(
          "ERR_INVALID_ARGUMENT",
          `Expected token ids as the keys of logitBias but received "${k}"`,
        );
      return [Number(k), b];
    });
  } else {
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      "Expected an object or a Map of token id -> bias in [-100, 100] for logitBias",
    );
  }
  checkLimit("logitBias.length", entries.length, G["logitBias.length"]);
  const pairs = entries.map(([k, b]): [number, number] => {
    const token = checkLimit("logitBias token id", k, G["logitBias.token"]);
    return [token, checkLimit(`logitBias[${token}]`, b, G.logitBias)];
  });
  return pairs.sort((a, b) => a[0] - b[0]);
}

/** The GBNF text of the grammar / jsonSchema / json options ("" when none is set). */
function resolveGrammar(o: GenerateOptions): string {
  const set = (["grammar", "jsonSchema", "json"] as const).filter((k) => o[k] !== undefined && o[k] !== false);
  if (set.length > 1)
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `Pass at most one of grammar, jsonSchema and json (received ${set.join(", ")})`,
    );
  if (o.grammar !== undefined) {
    if (typeof o.grammar !== "string" || o.grammar.length === 0)
      throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected a non-empty GBNF string for grammar");
    return o.grammar;
  }
  if (o.jsonSchema !== undefined) return jsonSchemaToGbnf(o.jsonSchema);
  if (o.json !== undefined && checkBool("json", o.json)) return jsonObjectGbnf();
  return "";
}

export function resolveOptions(raw: unknown, eogTokens: number[]): ResolvedOptions {
  const o = checkObject("generate options", raw) as GenerateOptions & Record<string, unknown>;
  checkKeys("generate options", o, KNOWN);
  const stop = o.stop ?? [];
  if (!Array.isArray(stop) || stop.some((s) => typeof s !== "string" || s.length === 0)) {
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected an array of non-empty strings for stop");
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) {
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected an AbortSignal for signal");
  }
  const D = GENERATE_DEFAULTS;
  const stopAtEos = o.stopAtEos === undefined ? D.stopAtEos : checkBool("stopAtEos", o.stopAtEos);
  const extraStops = o.stopTokens === undefined ? [] : checkStopTokens(o.stopTokens);
  const logprobs = o.logprobs === undefined ? undefined : checkLimit("logprobs", o.logprobs, G.logprobs);
  const opt = (name: Exclude<keyof typeof G & keyof typeof D, "seed">): number =>
    o[name] === undefined ? D[name] : checkLimit(name, o[name], G[name]);
  // Every field of the native request is set here (the addon has no defaults of its own).
  const params: NativeGenerateParams = {
    maxTokens: opt("maxTokens"),
    temperature: opt("temperature"),
    topK: opt("topK"),
    topP: opt("topP"),
    minP: opt("minP"),
    repeatPenalty: opt("repeatPenalty"),
    repeatLastN: opt("repeatLastN"),
    frequencyPenalty: opt("frequencyPenalty"),
    presencePenalty: opt("presencePenalty"),
    seed: o.seed === undefined ? randomSeed() : checkLimit("seed", o.seed, G.seed),
    logprobs: logprobs ?? 0,
    wantLogprobs: logprobs !== undefined,
    priority: opt("priority"),
    session: 0,
    pin: false,
    adapter: 0,
    stopTokens: stopAtEos ? [...new Set([...eogTokens, ...extraStops])] : extraStops,
    logitBias: o.logitBias === undefined ? [] : checkLogitBias(o.logitBias),
    grammar: resolveGrammar(o),
  };
  const cache = o.cache === undefined ? D.cache : checkBool("cache", o.cache);
  const deterministic = params.temperature === 0 || o.seed !== undefined;
  if (cache && !deterministic) {
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      "cache: true needs a deterministic request: set temperature to 0 or pass a seed",
    );
  }
  return {
    params,
    stop,
    wantLogprobs: logprobs !== undefined,
    parseSpecial: o.parseSpecial === undefined ? D.parseSpecial : checkBool("parseSpecial", o.parseSpecial),
    addSpecial: o.addSpecial === undefined ? D.addSpecial : checkBool("addSpecial", o.addSpecial),
    signal: o.signal,
    adapter: o.adapter === undefined ? undefined : checkAdapterName("adapter", o.adapter),
    // Greedy output does not depend on the seed: leave it out, so an unseeded greedy request hits.
    cacheKey: cache
      ? JSON.stringify({
          ...params,
          seed: params.temperature === 0 ? undefined : params.seed,
          priority: undefined,
          session: undefined,
          pin: undefined,
          stop,
        })
      : undefined,
  };
}

/** A queue fed by native callbacks and drained by the async iterator. */
class EventQueue {
  private items: NativeEvent[] = [];
  private waiter?: (e: NativeEvent) => void;
  push(e: NativeEvent): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w(e);
    } else this.items.push(e);
  }
  next(): Promise<NativeEvent> {
    const e = this.items.shift();
    if (e) return Promise.resolve(e);
    return new Promise((resolve) => (this.waiter = resolve));
  }
}

/** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
function heldBack(text: string, stops: string[]): number {
  let best = 0;
  for (const s of stops) {
    for (let k = Math.min(s.length - 1, text.length); k > best; k--) {
      if (text.endsWith(s.slice(0, k))) {
        best = k;
        break;
      }
    }
  }
  return best;
}

function timingsOf(t: NonNullable<NativeEvent["timings"]>): Timings {
  return {
    ...t,
    promptTokensPerSecond: t.promptMs > 0 ? ((t.promptTokens - t.reusedTokens) * 1000) / t.promptMs : 0,
    generateTokensPerSecond: t.generateMs > 0 ? (t.generatedTokens * 1000) / t.generateMs : 0,
  };
}

/** What a finished generation produced (for sessions and the response cache). */
export interface GenerationResult {
  chunks: Chunk[];
  tokens: number[];
  finishReason: FinishReason;
}

/** The requests waiting on one AbortSignal, behind the signal's single "abort" listener. */
interface AbortFanout {
  cancels: Set<() => void>;
  fire: () => void;
}
const fanouts = new WeakMap<AbortSignal, AbortFanout>();

/**
 * Runs `cancel` when `signal` aborts; returns the unsubscribe function (idempotent). However many
 * requests share a signal (generateBatch, a server request's n choices), the signal holds one
 * listener, removed when the last request unsubscribes: no MaxListenersExceededWarning, no leak.
 */
export function onAbort(signal: AbortSignal, cancel: () => void): () => void {
  let f = fanouts.get(signal);
  if (!f) {
    const cancels = new Set<() => void>();
    const fire = () => {
      fanouts.delete(signal);
      const all = [...cancels];
      cancels.clear();
      let first: unknown;
      for (const c of all) {
        try {
          c();
        } catch (err) {
          first ??= err;
        }
      }
      if (first !== undefined) throw first;
    };
    f = { cancels, fire };
    fanouts.set(signal, f);
    signal.addEventListener("abort", fire, { once: true });
  }
  const entry = f;
  const own = () => cancel(); // a fresh function: the same `cancel` may be subscribed twice
  entry.cancels.add(own);
  return () => {
    if (!entry.cancels.delete(own) || entry.cancels.size > 0 || fanouts.get(signal) !== entry) return;
    fanouts.delete(signal);
    signal.removeEventListener("abort", entry.fire);
  };
}

/**
 * Submits one request to the engine now (errors such as a full queue throw here) and returns an
 * iterator over its chunks. Breaking out of the loop (or aborting the signal) cancels the native
 * request at once; the signal cancels it even if the iterator was never started. `onFinish` sees
 * every completed (not aborted, not failed) generation. `onEnd` runs once when the native request
 * is over (its last event arrived, whether or not anyone reads it), or at once when nothing was
 * submitted (an aborted signal); not when this throws.
 */
const vocabSent = new WeakSet<NativeModel>();

/**
 * Hands the vocabulary's token bytes to the engine once per model (its grammar masks walk a trie of
 * them). Control tokens get no bytes: a grammar never allows them (end-of-generation tokens are the
 * engine's, allowed where the grammar can end). One pass over the vocabulary, on the first grammar
 * request only.
 */
function sendGrammarVocab(native: NativeModel, tokenizer: Tokenizer): void {
  if (vocabSent.has(native)) return;
  const n = tokenizer.nVocab;
  const pieces: Uint8Array[] = new Array(n);
  const offsets = new Int32Array(n + 1);
  let total = 0;
  for (let i = 0; i < n; i++) {
    pieces[i] = tokenizer.isControl(i) ? new Uint8Array(0) : tokenizer.tokenBytes(i);
    total += pieces[i].length;
    offsets[i + 1] = total;
  }
  const bytes = new Uint8Array(total);
  for (let i = 0; i < n; i++) bytes.set(pieces[i], offsets[i]);
  native.setGrammarVocab(bytes, offsets);
  vocabSent.add(native);
}

export function startGeneration(
  native: NativeModel,
  tokenizer: Tokenizer,
  promptTokens: number[],
  opts: ResolvedOptions,
  onFinish?: (r: GenerationResult) => void,
  onEnd?: () => void,
): AsyncGenerator<Chunk, void, undefined> {
  if (opts.signal?.aborted) {
    onEnd?.();
    return (async function* () {
      yield { text: "", tokens: [], done: true, finishReason: "abort", seed: opts.params.seed } satisfies FinalChunk;
    })();
  }
  const queue = new EventQueue();
  let unsubscribe = () => {};
  let id: number;
  try {
    if (opts.params.grammar !== "") sendGrammarVocab(native, tokenizer);
    id = native.generate(Int32Array.from(promptTokens), opts.params, (e) => {
      if (e.done) {
        unsubscribe(); // the native request is over: nothing left to cancel
        onEnd?.();
      }
      queue.push(e);
    });
  } catch (err) {
    throw fromNative(err);
  }
  // Events arrive on later turns of the event loop, so this runs before the first one.
  if (opts.signal) unsubscribe = onAbort(opts.signal, () => native.cancel(id));
  return consume(native, tokenizer, id, queue, opts, () => unsubscribe(), onFinish);
}

async function* consume(
  native: NativeModel,
  tokenizer: Tokenizer,
  id: number,
  queue: EventQueue,
  opts: ResolvedOptions,
  unsubscribe: () => void,
  onFinish?: (r: GenerationResult) => void,
): AsyncGenerator<Chunk, void, undefined> {
  let finished = false;
  const decoder = tokenizer.createDecoder();
  const record: Chunk[] = [];
  const allTokens: number[] = [];
  const done = (c: FinalChunk) => {
    record.push(c);
    if (onFinish && c.finishReason !== "abort")
      onFinish({ chunks: record, tokens: allTokens, finishReason: c.finishReason });
  };
  // The last chunk: chunk's text, tokens and logprobs, with why and how the generation ended.
  const final = (chunk: PartialChunk, finishReason: FinishReason, timings?: Timings): FinalChunk => ({
    ...chunk,
    done: true,
    finishReason,
    seed: opts.params.seed,
    ...(cachedTokens !== undefined ? { cachedTokens } : {}),
    ...(timings ? { timings } : {}),
  });
  let pending = ""; // decoded text not yet emitted (may be the start of a stop string)
  let cachedTokens: number | undefined; // from the first token's event (or the done event's timings)
  try {
    for (;;) {
      const ev = await queue.next();
      const chunk: PartialChunk = { text: "", tokens: ev.tokens ?? [] };
      if (ev.reusedTokens !== undefined) cachedTokens = ev.reusedTokens;
      else if (ev.timings && cachedTokens === undefined && ev.timings.promptTokens > 0)
        cachedTokens = ev.timings.reusedTokens;
      if (ev.tokens) {
        for (const t of ev.tokens) pending += decoder.push(t);
        allTokens.push(...ev.tokens);
      }
      if (ev.logprobs && opts.wantLogprobs) {
        chunk.logprobs = ev.logprobs.map((l) => ({
          token: l.token,
          text: tokenizer.piece(l.token),
          logprob: l.logprob,
          top: l.top.map((t) => ({ token: t.token, text: tokenizer.piece(t.token), logprob: t.logprob })),
        }));
      }
      if (ev.done) {
        finished = true;
        if (ev.error) throw new LlmserveError(ev.error.code as never, ev.error.message);
        pending += decoder.flush();
      }
      if (opts.stop.length > 0) {
        let cut = -1;
        for (const s of opts.stop) {
          const at = pending.indexOf(s);
          if (at >= 0 && (cut < 0 || at < cut)) cut = at;
        }
        if (cut >= 0) {
          chunk.text = pending.slice(0, cut);
          const last = final(chunk, "stop");
          if (!finished) native.cancel(id);
          finished = true;
          done(last);
          yield last;
          return;
        }
        const hold = ev.done ? 0 : heldBack(pending, opts.stop);
        chunk.text = pending.slice(0, pending.length - hold);
        pending = pending.slice(pending.length - hold);
      } else {
        chunk.text = pending;
        pending = "";
      }
      if (ev.done) {
        const last = final(chunk, ev.finishReason ?? "length", ev.timings ? timingsOf(ev.timings) : undefined);
        done(last);
        yield last;
        return;
      }
      record.push(chunk);
      yield chunk;
    }
  } finally {
    unsubscribe();
    if (!finished) native.cancel(id);
  }
}
