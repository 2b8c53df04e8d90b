/**
 * Chat formatting: renders a model's Jinja chat template (`tokenizer.chat_template` in the GGUF file)
 * with @huggingface/jinja, or a built-in one when the file has none, and tokenizes the result.
 * Templates are code from the model file: they render on worker threads (see renderPool.ts) under a
 * time and an output-size limit, and conversations are checked against size limits before rendering.
 */
import { MAX_CHAT_MESSAGES } from "../limits.js";
import { Template } from "@huggingface/jinja";
import { LlmserveError } from "../errors.js";
import { readGguf } from "../gguf.js";
import type { Tokenizer } from "../tokenizer/index.js";
import { sharedRenderPool, type RenderPool } from "./renderPool.js";
import {
  BUILTIN_CHAT_TEMPLATES,
  BUILTIN_CHAT_TEMPLATE_NAMES,
  BUILTIN_END_MARKERS,
  END_OF_TURN_MARKERS,
  detectBuiltinTemplate,
  isBuiltinChatTemplate,
  type BuiltinChatTemplate,
} from "./templates.js";

export {
  BUILTIN_CHAT_TEMPLATES,
  BUILTIN_CHAT_TEMPLATE_NAMES,
  detectBuiltinTemplate,
  type BuiltinChatTemplate,
} from "./templates.js";
export { RenderPool, sharedRenderPool, type RenderPoolOptions, type RenderJob } from "./renderPool.js";

/** The limits a {@link ChatTemplate} renders under; every field has a default. */
export interface ChatLimits {
  /** Milliseconds a render may run on its worker thread before it is stopped (ERR_TEMPLATE_TIMEOUT); default 2000. */
  timeoutMs: number;
  /** Most messages in a conversation (ERR_CONTEXT_OVERFLOW beyond, checked before rendering); default 4096. */
  maxMessages: number;
  /**
   * Most characters of message text in a conversation, checked before rendering (ERR_CONTEXT_OVERFLOW).
   * Default: the model's context size times the tokenizer's {@link Tokenizer.maxTokenChars} (a text
   * longer than that cannot fit the context, whatever the template); 16 Mi without a context size.
   */
  maxInputChars: number;
  /** Most characters of rendered prompt (ERR_TEMPLATE_OUTPUT_TOO_LARGE); default as maxInputChars. */
  maxOutputChars: number;
}

/** The default {@link ChatLimits} for a tokenizer and (when known) a context size in tokens. */
export function defaultChatLimits(tokenizer: Tokenizer, contextSize?: number): ChatLimits {
  const chars = contextSize !== undefined && contextSize > 0 ? contextSize * tokenizer.maxTokenChars : 16 * 1024 * 1024;
  return { timeoutMs: 2000, maxMessages: MAX_CHAT_MESSAGES, maxInputChars: chars, maxOutputChars: chars };
}

/** A text part of an OpenAI-style multi-part message content. */
export interface ChatContentPart {
  /** "text" (other part types, such as images, contribute no text). */
  type: string;
  /** The text of a "text" part. */
  text?: string;
  [key: string]: unknown;
}

/** An OpenAI-style chat message (system, developer, user, assistant or tool). */
export interface ChatMessage {
  /** "system", "developer" (rendered as system), "user", "assistant" or "tool". */
  role: string;
  /** Text, or text parts that are joined; null/absent renders as "". */
  content?: string | ChatContentPart[] | null;
  /** Optional participant name. */
  name?: string;
  /** Assistant tool calls (OpenAI shape; JSON-string arguments are parsed for the template). */
  tool_calls?: unknown[];
  /** The call a tool message answers. */
  tool_call_id?: string;
  [key: string]: unknown;
}

/** Options of {@link ChatTemplate.render} and {@link ChatTemplate.tokenize}. */
export interface RenderOptions {
  /** End with the assistant header so the model answers (default true). */
  addGenerationPrompt?: boolean;
  /** Tool (function) definitions, passed to the template as `tools`. */
  tools?: unknown[];
  /**
   * How past calls' `arguments` reach the template: "object" (default: a JSON-string argument is
   * parsed, for templates that apply tojson) or "string" (as sent, for templates that write it as
   * text: firefunction v2, functionary v3.1; see lib/chat/tools.ts).
   */
  toolCallArguments?: "object" | "string";
  /** Text appended after the rendered prompt (e.g. the opening marker of a forced tool call). */
  suffix?: string;
  /** More template variables (e.g. `date_string`); plain data (they are copied to a worker thread). */
  extra?: Record<string, unknown>;
  /** Limits of this call instead of the template's {@link ChatTemplate.limits}. */
  limits?: Partial<ChatLimits>;
}

/** Options of {@link ChatTemplate.fromModel}. */
export interface ChatTemplateLoadOptions {
  /** A built-in template name or Jinja text to use instead of the file's template. */
  template?: string;
  /** Receives the warning when the file has no template (default: process.emitWarning). */
  warn?: (message: string) => void;
  /** Limits instead of the defaults (see {@link defaultChatLimits}; the context size is the model's). */
  limits?: Partial<ChatLimits>;
}

/** Constructor options of {@link ChatTemplate}. */
export interface ChatTemplateMeta {
  /** Where the template came from (default "custom"). */
  source?: "gguf" | "builtin" | "custom";
  /** Its name in messages (default: the source). */
  name?: string;
  /** End-of-turn markers (default: the well-known markers that appear in the text). */
  endMarkers?: string[];
  /** Limits instead of {@link defaultChatLimits}(tokenizer). */
  limits?: Partial<ChatLimits>;
  /** Context size in tokens the default character limits derive from. */
  contextSize?: number;
  /** The worker pool it renders on (default: the process-wide {@link sharedRenderPool}). */
  pool?: RenderPool;
  /**
   * Receives the one warning that the template has no system role, so system messages are folded
   * into the first user message (default: process.emitWarning, code LLMSERVE_SYSTEM_FOLDED).
   */
  warn?: (message: string) => void;
}

/** The probe text of {@link ChatTemplate.supportsSystemRole} (llama.cpp's minja probes the same way). */
const SYSTEM_NEEDLE = "<llmserve system needle>";

/** Text of the content: strings as they are, the text parts of a multi-part content joined. */
function contentText(content: ChatMessage["content"]): string {
  if (content === undefined || content === null) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((p) => (p && typeof p === "object" && typeof p.text === "string" ? p.text : "")).join("");
  }
  throw new LlmserveError(
    "ERR_INVALID_ARGUMENT",
    "Expected a string or an array of content parts for a message's content",
  );
}

function normalizeMessages(messages: readonly ChatMessage[], parseArguments = true): Record<string, unknown>[] {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected a non-empty array of messages");
  }
  return messages.map((m, i) => {
    if (m === null || typeof m !== "object" || typeof m.role !== "string") {
      throw new LlmserveError("ERR_INVALID_ARGUMENT", `Expected an object with a string role for messages[${i}]`);
    }
    const out: Record<string, unknown> = {
      ...m,
      role: m.role === "developer" ? "system" : m.role,
      content: contentText(m.content),
    };
    if (Array.isArray(m.tool_calls)) {
      // OpenAI sends arguments as a JSON string; most templates expect an object (they apply
      // tojson), a few write the string as it is (parseArguments false: objects are stringified).
      out.tool_calls = m.tool_calls.map((c: unknown) => {
        const call = c as { function?: { name?: string; arguments?: unknown } };
        const args = call?.function?.arguments;
        if (call?.function && typeof args === "string" && parseArguments) {
          try {
            return { ...call, function: { ...call.function, arguments: JSON.parse(args) } };
          } catch {
            return call;
          }
        }
        if (call?.function && typeof args === "object" && args !== null && !parseArguments)
          return { ...call, function: { ...call.function, arguments: JSON.stringify(args) } };
        return call;
      });
    }
    return out;
  });
}

/** System messages folded into the first user message (for templates that reject the system role). */
function foldSystem(messages: Record<string, unknown>[]): Record<string, unknown>[] | undefined {
  const system = messages.filter((m) => m.role === "system").map((m) => String(m.content));
  if (system.length === 0) return undefined;
  const rest = messages.filter((m) => m.role !== "system");
  const first = rest.findIndex((m) => m.role === "user");
  if (first < 0) return [{ role: "user", content: system.join("\n\n") }, ...rest];
  rest[first] = { ...rest[first], content: `${system.join("\n\n")}\n\n${String(rest[first].content)}` };
  return rest;
}

/**
 * A chat template bound to a vocabulary: renders OpenAI-style messages to prompt text with the
 * model's BOS/EOS strings and tokenizes it; knows the end-of-turn markers generation stops at.
 */
export class ChatTemplate {
  /** "gguf" (the file's own), "builtin" or "custom". */
  readonly source: "gguf" | "builtin" | "custom";
  /** The built-in name, "gguf" or "custom". */
  readonly name: string;
  /** The Jinja source. */
  readonly text: string;
  /** End-of-turn marker tokens of this template present in the vocabulary: generation stops at them. */
  readonly stopTokens: number[];
  /** End-of-turn markers that are not single tokens of the vocabulary: generation stops at their text. */
  readonly stopStrings: string[];
  /** The limits renders run under (see {@link ChatLimits}); per-call `limits` override them. */
  readonly limits: ChatLimits;
  private readonly tokenizer: Tokenizer;
  private readonly pool: RenderPool | undefined;
  private readonly bosText: string;
  private readonly eosText: string;
  private readonly warn: (message: string) => void;
  private systemRole?: Promise<boolean>;
  private warnedFold = false;

  /**
   * @param text Jinja source (Hugging Face chat-template dialect)
   * @param tokenizer the model's tokenizer (BOS/EOS text, marker tokens)
   * @param meta where the template came from, its end-of-turn markers (default: the well-known
   *   markers that appear in the text), limits, and the render pool
   */
  constructor(text: string, tokenizer: Tokenizer, meta: ChatTemplateMeta = {}) {
    if (typeof text !== "string" || text.length === 0)
      throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected a non-empty chat template");
    try {
      // Parsing is linear in the text (no template code runs): it is safe here and reports syntax errors early.
      new Template(text);
    } catch (err) {
      throw new LlmserveError("ERR_INVALID_ARGUMENT", `The chat template does not parse: ${(err as Error).message}`, {
        cause: err,
      });
    }
    this.text = text;
    this.tokenizer = tokenizer;
    this.source = meta.source ?? "custom";
    this.name = meta.name ?? this.source;
    this.limits = mergeLimits(defaultChatLimits(tokenizer, meta.contextSize), meta.limits);
    this.pool = meta.pool;
    this.warn =
      meta.warn ?? ((m: string) => process.emitWarning(m, { type: "LlmserveWarning", code: "LLMSERVE_SYSTEM_FOLDED" }));
    this.bosText = tokenizer.bos !== undefined ? tokenizer.tokenText(tokenizer.bos) : "";
    this.eosText = tokenizer.eos !== undefined ? tokenizer.tokenText(tokenizer.eos) : "";
    const markers = meta.endMarkers ?? END_OF_TURN_MARKERS.filter((m) => text.includes(m));
    const stopTokens: number[] = [];
    const stopStrings: string[] = [];
    for (const m of markers) {
      const id = tokenizer.tokenId(m);
      if (id !== undefined) {
        if (!tokenizer.isEog(id)) stopTokens.push(id);
      } else stopStrings.push(m);
    }
    this.stopTokens = stopTokens;
    this.stopStrings = stopStrings;
  }

  /** A built-in template by name ("chatml", "llama3", "llama2", "zephyr", "phi3", "gemma"). */
  static builtin(
    name: BuiltinChatTemplate,
    tokenizer: Tokenizer,
    meta: Omit<ChatTemplateMeta, "source" | "name" | "endMarkers"> = {},
  ): ChatTemplate {
    if (!isBuiltinChatTemplate(name)) {
      throw new LlmserveError(
        "ERR_INVALID_ARGUMENT",
        `Expected one of ${BUILTIN_CHAT_TEMPLATE_NAMES.join(", ")} for the chat template name but received ${JSON.stringify(name)}`,
      );
    }
    return new ChatTemplate(BUILTIN_CHAT_TEMPLATES[name], tokenizer, {
      ...meta,
      source: "builtin",
      name,
      endMarkers: BUILTIN_END_MARKERS[name],
    });
  }

  /**
   * The model file's template (`tokenizer.chat_template`), or a built-in one picked from the
   * vocabulary, with a warning, when the file has none.
   * @example
   * const chat = await ChatTemplate.fromModel(model);
   * const tokens = await chat.tokenize([{ role: "user", content: "Hi" }]);
   */
  static async fromModel(
    model: { path: string; tokenizer: Tokenizer; info?: { contextSize?: number } },
    options: ChatTemplateLoadOptions = {},
  ): Promise<ChatTemplate> {
    let contextSize: number | undefined;
    try {
      contextSize = model.info?.contextSize;
    } catch {
      /* a disposed model: no context size */
    }
    const meta = { limits: options.limits, contextSize, warn: options.warn };
    const t = options.template;
    if (t !== undefined) {
      if (isBuiltinChatTemplate(t)) return ChatTemplate.builtin(t, model.tokenizer, meta);
      return new ChatTemplate(t, model.tokenizer, { ...meta, source: "custom" });
    }
    const { metadata } = await readGguf(model.path, { maxArrayLength: 0, keyPrefix: "tokenizer.chat_template" });
    const text = metadata["tokenizer.chat_template"];
    const name = detectBuiltinTemplate(model.tokenizer);
    const warn = options.warn ?? ((m: string) => process.emitWarning(m, "LlmserveWarning"));
    if (typeof text === "string" && text.length > 0) {
      try {
        return new ChatTemplate(text, model.tokenizer, { ...meta, source: "gguf", name: "gguf" });
      } catch (err) {
        warn(
          `${model.path}: its tokenizer.chat_template does not parse (${(err as Error).message}); using the built-in "${name}" chat template.`,
        );
        return ChatTemplate.builtin(name, model.tokenizer, meta);
      }
    }
    warn(`${model.path} has no tokenizer.chat_template; using the built-in "${name}" chat template.`);
    return ChatTemplate.builtin(name, model.tokenizer, meta);
  }

  /**
   * Checks a conversation against the size limits before anything is rendered or tokenized:
   * ERR_CONTEXT_OVERFLOW when it has more than `maxMessages` messages or more than `maxInputChars`
   * characters of message text. {@link render} calls it; it is cheap (no template code runs).
   */
  checkSize(messages: readonly ChatMessage[], limits: Partial<ChatLimits> = {}): void {
    const l = mergeLimits(this.limits, limits);
    if (Array.isArray(messages) && messages.length > l.maxMessages) {
      throw new LlmserveError(
        "ERR_CONTEXT_OVERFLOW",
        `The conversation has ${messages.length} messages; at most ${l.maxMessages} are accepted. Send fewer messages (drop or summarize the oldest turns).`,
      );
    }
  }

  /**
   * The prompt text for a conversation. Templates that reject a system role get it folded into the
   * first user message; tool-use templates that need `tools` (or firefunction's `functions` and
   * `datetime`) get empty ones. The template runs on a worker thread under {@link limits}: a
   * conversation over the size limits fails with ERR_CONTEXT_OVERFLOW before rendering, a render
   * over the time limit with ERR_TEMPLATE_TIMEOUT, an output over the size limit with
   * ERR_TEMPLATE_OUTPUT_TOO_LARGE, and a template error with ERR_INVALID_ARGUMENT.
   */
  async render(messages: readonly ChatMessage[], options: RenderOptions = {}): Promise<string> {
    const limits = mergeLimits(this.limits, options.limits);
    this.checkSize(messages, limits);
    const msgs = normalizeMessages(messages, options.toolCallArguments !== "string");
    let chars = 0;
    for (const m of msgs) chars += (m.content as string).length;
    if (chars > limits.maxInputChars) {
      throw new LlmserveError(
        "ERR_CONTEXT_OVERFLOW",
        `The messages hold ${chars} characters; at most ${limits.maxInputChars} are accepted, as more cannot fit the model's context (each token stands for at most ${this.tokenizer.maxTokenChars} characters). Shorten the messages.`,
      );
    }
    const { base, fallback } = this.variables(options);
    let messagesToRender = msgs;
    let folded = foldSystem(msgs);
    if (folded !== undefined && !(await this.supportsSystemRole())) {
      // As llama.cpp: a template without a system role gets the system text in the first user turn.
      if (!this.warnedFold) {
        this.warnedFold = true;
        this.warn(
          `The chat template "${this.name}" has no system role: system messages are folded into the first user message (as llama.cpp does).`,
        );
      }
      messagesToRender = folded;
      folded = undefined;
    }
    const rendered = await (this.pool ?? sharedRenderPool()).render({
      text: this.text,
      name: this.name,
      messages: messagesToRender,
      folded,
      base,
      fallback,
      maxOutputChars: limits.maxOutputChars,
      timeoutMs: limits.timeoutMs,
    });
    return options.suffix === undefined ? rendered : rendered + options.suffix;
  }

  /** The variables of a render's first attempt (`base`) and the extras of its second (`fallback`). */
  private variables(options: RenderOptions): { base: Record<string, unknown>; fallback: Record<string, unknown> } {
    const base: Record<string, unknown> = {
      bos_token: this.bosText,
      eos_token: this.eosText,
      add_generation_prompt: options.addGenerationPrompt ?? true,
      ...options.extra,
    };
    if (options.tools !== undefined) base.tools = options.tools;
    // Variables some tool-use templates require (firefunction: functions, datetime).
    const fallback = {
      tools: options.tools ?? [],
      functions: JSON.stringify(options.tools ?? []),
      datetime: new Date().toISOString().slice(0, 10),
      ...options.extra,
    };
    return { base, fallback };
  }

  /**
   * Whether the template renders a system message's text: a probe conversation (a system turn
   * holding a marker, then a user turn) is rendered once, as llama.cpp does; a template that
   * raises on the system role or leaves its text out has none. Rendered once per template.
   */
  supportsSystemRole(): Promise<boolean> {
    this.systemRole ??= (async () => {
      const { base, fallback } = this.variables({});
      try {
        const out = await (this.pool ?? sharedRenderPool()).render({
          text: this.text,
          name: this.name,
          messages: [
            { role: "system", content: SYSTEM_NEEDLE },
            { role: "user", content: "Hi" },
          ],
          base,
          fallback,
          maxOutputChars: this.limits.maxOutputChars,
          timeoutMs: this.limits.timeoutMs,
        });
        return out.includes(SYSTEM_NEEDLE);
      } catch {
        return false; // raised on the system role (or failed outright: folding is the safe side)
      }
    })();
    return this.systemRole;
  }

  /**
   * Renders and tokenizes a conversation: special-token text is parsed, and BOS is added as the
   * vocabulary asks unless the rendered text already starts with it. Long prompts are tokenized on
   * a worker thread ({@link Tokenizer.encodeAsync}).
   */
  async tokenize(messages: readonly ChatMessage[], options: RenderOptions = {}): Promise<number[]> {
    return this.withBos(
      await this.tokenizer.encodeAsync(await this.render(messages, options), { addSpecial: false, parseSpecial: true }),
    );
  }

  /** Tokenizes rendered prompt text (see {@link tokenize}) on the calling thread. */
  encode(text: string): number[] {
    return this.withBos(this.tokenizer.encode(text, { addSpecial: false, parseSpecial: true }));
  }

  private withBos(ids: number[]): number[] {
    const tok = this.tokenizer;
    if (tok.addBos && tok.bos !== undefined && ids[0] !== tok.bos) ids.unshift(tok.bos);
    return ids;
  }
}

/** `base` with the defined fields of `over`, each checked to be a positive number. */
function mergeLimits(base: ChatLimits, over: Partial<ChatLimits> | undefined): ChatLimits {
  if (over === undefined) return base;
  if (over === null || typeof over !== "object")
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected an object for limits");
  const out = { ...base };
  for (const k of Object.keys(base) as (keyof ChatLimits)[]) {
    const v = over[k];
    if (v === undefined) continue;
    if (typeof v !== "number" || !(v > 0))
      throw new LlmserveError(
        "ERR_INVALID_ARGUMENT",
        `Expected a positive number for limits.${k} but received ${String(v)}`,
      );
    out[k] = v;
  }
  return out;
}
