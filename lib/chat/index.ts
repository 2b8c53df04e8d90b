/**
 * Chat formatting: renders a model's Jinja chat template (`tokenizer.chat_template` in the GGUF file)
 * with @huggingface/jinja, or a built-in one when the file has none, and tokenizes the result.
 */
import { Template } from "@huggingface/jinja";
import { LlmserveError } from "../errors.js";
import { readGguf } from "../gguf.js";
import type { Tokenizer } from "../tokenizer/index.js";
import {
  BUILTIN_CHAT_TEMPLATES, BUILTIN_CHAT_TEMPLATE_NAMES, BUILTIN_END_MARKERS, END_OF_TURN_MARKERS, detectBuiltinTemplate, isBuiltinChatTemplate,
  type BuiltinChatTemplate,
} from "./templates.js";

export { BUILTIN_CHAT_TEMPLATES, BUILTIN_CHAT_TEMPLATE_NAMES, detectBuiltinTemplate, type BuiltinChatTemplate } from "./templates.js";

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
  /** More template variables (e.g. `date_string`). */
  extra?: Record<string, unknown>;
}

/** Options of {@link ChatTemplate.fromModel}. */
export interface ChatTemplateLoadOptions {
  /** A built-in template name or Jinja text to use instead of the file's template. */
  template?: string;
  /** Receives the warning when the file has no template (default: process.emitWarning). */
  warn?: (message: string) => void;
}

/** Text of the content: strings as they are, the text parts of a multi-part content joined. */
function contentText(content: ChatMessage["content"]): string {
  if (content === undefined || content === null) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((p) => (p && typeof p === "object" && typeof p.text === "string" ? p.text : "")).join("");
  }
  throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected a string or an array of content parts for a message's content");
}

function normalizeMessages(messages: readonly ChatMessage[]): Record<string, unknown>[] {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected a non-empty array of messages");
  }
  return messages.map((m, i) => {
    if (m === null || typeof m !== "object" || typeof m.role !== "string") {
      throw new LlmserveError("ERR_INVALID_ARGUMENT", `Expected an object with a string role for messages[${i}]`);
    }
    const out: Record<string, unknown> = { ...m, role: m.role === "developer" ? "system" : m.role, content: contentText(m.content) };
    if (Array.isArray(m.tool_calls)) {
      // OpenAI sends arguments as a JSON string; templates expect an object (they apply tojson).
      out.tool_calls = m.tool_calls.map((c: unknown) => {
        const call = c as { function?: { name?: string; arguments?: unknown } };
        if (call?.function && typeof call.function.arguments === "string") {
          try {
            return { ...call, function: { ...call.function, arguments: JSON.parse(call.function.arguments) } };
          } catch {
            return call;
          }
        }
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
  private readonly template: Template;
  private readonly tokenizer: Tokenizer;
  private readonly bosText: string;
  private readonly eosText: string;

  /**
   * @param text Jinja source (Hugging Face chat-template dialect)
   * @param tokenizer the model's tokenizer (BOS/EOS text, marker tokens)
   * @param meta where the template came from, and its end-of-turn markers (default: the well-known
   *   markers that appear in the text)
   */
  constructor(text: string, tokenizer: Tokenizer, meta: { source?: "gguf" | "builtin" | "custom"; name?: string; endMarkers?: string[] } = {}) {
    if (typeof text !== "string" || text.length === 0) throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected a non-empty chat template");
    try {
      this.template = new Template(text);
    } catch (err) {
      throw new LlmserveError("ERR_INVALID_ARGUMENT", `The chat template does not parse: ${(err as Error).message}`, { cause: err });
    }
    this.text = text;
    this.tokenizer = tokenizer;
    this.source = meta.source ?? "custom";
    this.name = meta.name ?? this.source;
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
  static builtin(name: BuiltinChatTemplate, tokenizer: Tokenizer): ChatTemplate {
    if (!isBuiltinChatTemplate(name)) {
      throw new LlmserveError("ERR_INVALID_ARGUMENT", `Expected one of ${BUILTIN_CHAT_TEMPLATE_NAMES.join(", ")} for the chat template name but received ${JSON.stringify(name)}`);
    }
    return new ChatTemplate(BUILTIN_CHAT_TEMPLATES[name], tokenizer, { source: "builtin", name, endMarkers: BUILTIN_END_MARKERS[name] });
  }

  /**
   * The model file's template (`tokenizer.chat_template`), or a built-in one picked from the
   * vocabulary, with a warning, when the file has none.
   * @example
   * const chat = await ChatTemplate.fromModel(model);
   * const tokens = chat.tokenize([{ role: "user", content: "Hi" }]);
   */
  static async fromModel(model: { path: string; tokenizer: Tokenizer }, options: ChatTemplateLoadOptions = {}): Promise<ChatTemplate> {
    const t = options.template;
    if (t !== undefined) {
      if (isBuiltinChatTemplate(t)) return ChatTemplate.builtin(t, model.tokenizer);
      return new ChatTemplate(t, model.tokenizer, { source: "custom" });
    }
    const { metadata } = await readGguf(model.path, { maxArrayLength: 0, keyPrefix: "tokenizer.chat_template" });
    const text = metadata["tokenizer.chat_template"];
    const name = detectBuiltinTemplate(model.tokenizer);
    const warn = options.warn ?? ((m: string) => process.emitWarning(m, "LlmserveWarning"));
    if (typeof text === "string" && text.length > 0) {
      try {
        return new ChatTemplate(text, model.tokenizer, { source: "gguf", name: "gguf" });
      } catch (err) {
        warn(`${model.path}: its tokenizer.chat_template does not parse (${(err as Error).message}); using the built-in "${name}" chat template.`);
        return ChatTemplate.builtin(name, model.tokenizer);
      }
    }
    warn(`${model.path} has no tokenizer.chat_template; using the built-in "${name}" chat template.`);
    return ChatTemplate.builtin(name, model.tokenizer);
  }

  /**
   * The prompt text for a conversation. Templates that reject a system role get it folded into the
   * first user message; tool-use templates that need `tools` (or firefunction's `functions` and
   * `datetime`) get empty ones.
   */
  render(messages: readonly ChatMessage[], options: RenderOptions = {}): string {
    const msgs = normalizeMessages(messages);
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
    const attempts: Record<string, unknown>[] = [{ ...base, messages: msgs }, { ...fallback, ...base, messages: msgs }];
    const folded = foldSystem(msgs);
    if (folded) attempts.push({ ...base, messages: folded }, { ...fallback, ...base, messages: folded });
    let first: unknown;
    for (const ctx of attempts) {
      try {
        return this.template.render(ctx);
      } catch (err) {
        first ??= err;
      }
    }
    throw new LlmserveError("ERR_INVALID_ARGUMENT", `The chat template (${this.name}) rejected the messages: ${(first as Error)?.message ?? String(first)}`, { cause: first });
  }

  /**
   * Renders and tokenizes a conversation: special-token text is parsed, and BOS is added as the
   * vocabulary asks unless the rendered text already starts with it.
   */
  tokenize(messages: readonly ChatMessage[], options: RenderOptions = {}): number[] {
    return this.encode(this.render(messages, options));
  }

  /** Tokenizes rendered prompt text (see {@link tokenize}). */
  encode(text: string): number[] {
    const tok = this.tokenizer;
    const ids = tok.encode(text, { addSpecial: false, parseSpecial: true });
    if (tok.addBos && tok.bos !== undefined && ids[0] !== tok.bos) ids.unshift(tok.bos);
    return ids;
  }
}
