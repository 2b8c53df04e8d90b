/** Sessions: conversations whose KV stays cached in the engine between turns. */
import { LlmserveError } from "./errors.js";
import { resolveOptions, type Chunk, type GenerateOptions, type ResolvedOptions } from "./generate.js";
import type { Model } from "./model.js";
import { OFFTHREAD_MIN_CHARS } from "./tokenizer/index.js";
import { checkAdapterName, checkKeys, checkObject, checkString } from "./validate.js";

/** Options of {@link Model.createSession}. */
export interface SessionOptions {
  /** Text that starts the conversation (sent with the first turn, after BOS). */
  system?: string;
  /** Defaults for every turn's generate options. */
  defaults?: GenerateOptions;
  /**
   * The LoRA adapter every turn runs under (a name given to {@link Model.loadAdapter}); a turn's
   * own `adapter` option overrides it. The engine keeps a turn's KV for the next only when both run
   * under the same adapter (otherwise the next turn recomputes the history).
   */
  adapter?: string;
}

/**
 * A conversation. Each `send(text)` appends `text` to everything said so far (the tokens of earlier
 * turns and of the model's replies), so the engine prefills only the new tokens; its KV is kept
 * between turns (and evicted under memory pressure, in which case the next turn recomputes,
 * transparently). Format turns yourself (e.g. with a chat template); `send` adds nothing.
 */
export class Session {
  private history: number[] = [];
  private busy = false;
  private closed = false;
  /** Tokens of the conversation so far (prompt and replies). */
  get tokens(): readonly number[] {
    return this.history;
  }

  /**
   * @internal
   * @param id The engine's session id, unique within its model.
   */
  constructor(
    private readonly model: Model,
    readonly id: number,
    private readonly options: SessionOptions,
  ) {
    const o = checkObject("session options", options) as SessionOptions & Record<string, unknown>;
    checkKeys("session options", o, ["system", "defaults", "adapter"]);
    if (o.system !== undefined) checkString("system", o.system);
    if (o.adapter !== undefined) checkAdapterName("adapter", o.adapter);
  }

  /**
   * Streams the reply to `text`; the turn's tokens join the session's history when it ends (an
   * aborted or failed turn leaves the history unchanged). One turn at a time: calling again before
   * the previous stream has finished throws ERR_INVALID_ARGUMENT. `options` override the session's
   * `defaults`; the response cache is not used.
   * @example
   * const chat = model.createSession({ system: "You are terse.\n", defaults: { maxTokens: 64 } });
   * for await (const c of chat.send("User: Hi\nAssistant:")) process.stdout.write(c.text);
   * for await (const c of chat.send("\nUser: And again?\nAssistant:")) process.stdout.write(c.text);
   */
  send(text: string, options: GenerateOptions = {}): AsyncGenerator<Chunk, void, undefined> {
    checkString("text", text);
    if (this.closed) throw new LlmserveError("ERR_DISPOSED", "This session has been disposed; create a new one.");
    if (this.busy)
      throw new LlmserveError(
        "ERR_INVALID_ARGUMENT",
        "This session is still answering; wait for the previous turn to finish.",
      );
    const adapter = this.options.adapter === undefined ? {} : { adapter: this.options.adapter };
    const opts = resolveOptions({ ...adapter, ...this.options.defaults, ...options }, this.model.tokenizer.eogTokens);
    const first = this.history.length === 0;
    const input = first ? (this.options.system ?? "") + text : text;
    const encodeOpts = { addSpecial: first && opts.addSpecial, parseSpecial: opts.parseSpecial };
    if (input.length < OFFTHREAD_MIN_CHARS) return this.begin(this.model.tokenizer.encode(input, encodeOpts), opts);
    // A long turn is tokenized on the tokenizer's worker thread; the turn starts once that is done.
    const contextChars = this.model.maxPromptChars;
    if (input.length > contextChars) {
      throw new LlmserveError(
        "ERR_CONTEXT_OVERFLOW",
        `The turn has ${input.length} characters, more than the model's context can hold (at most ${contextChars}). Send a shorter turn.`,
      );
    }
    this.busy = true;
    const pending = this.model.tokenizer.encodeAsync(input, encodeOpts);
    pending.catch(() => {}); // reported by the first next()
    const self = this;
    return (async function* () {
      let fresh: number[];
      try {
        fresh = await pending;
      } finally {
        self.busy = false;
      }
      yield* self.begin(fresh, opts);
    })();
  }

  private begin(fresh: number[], opts: ResolvedOptions): AsyncGenerator<Chunk, void, undefined> {
    const prompt = [...this.history, ...fresh];
    this.busy = true;
    let gen: AsyncGenerator<Chunk, void, undefined>;
    try {
      gen = this.model.start(
        prompt,
        { ...opts, cacheKey: undefined },
        {
          session: this.id,
          onFinish: (r) => {
            this.history = [...prompt, ...r.tokens];
          },
        },
      );
    } catch (err) {
      this.busy = false;
      throw err;
    }
    const self = this;
    return (async function* () {
      try {
        yield* gen;
      } finally {
        self.busy = false;
      }
    })();
  }

  /** Frees the session's cached KV in the engine. */
  dispose(): void {
    if (this.closed) return;
    this.closed = true;
    this.model.endSession(this.id);
  }

  /** Same as {@link dispose}; lets `using chat = model.createSession()` free the session. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}
