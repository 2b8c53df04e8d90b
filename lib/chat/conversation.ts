/** A multi-turn chat over a {@link Session}: messages rendered with the chat template, KV kept between turns. */
import type { Chunk, GenerateOptions } from "../generate.js";
import type { Model } from "../model.js";
import type { Session } from "../session.js";
import { checkKeys, checkObject, checkString } from "../validate.js";
import { ChatTemplate, type ChatMessage } from "./index.js";
import {
  argumentsAsString,
  checkTools,
  detectToolFamily,
  messagesForTemplate,
  parseToolCalls,
  toolCallGrammar,
  toolsForTemplate,
  type ToolCall,
  type ToolDefinition,
  type ToolFamily,
} from "./tools.js";
import { LlmserveError } from "../errors.js";

/** Which tool calls a turn may or must make (OpenAI's tool_choice). */
export type ToolChoice = "auto" | "none" | "required" | NamedToolChoice;

/** A tool choice naming the function that must be called. */
export interface NamedToolChoice {
  /** Always "function". */
  type: "function";
  /** The function to call. */
  function: {
    /** Its name (one of the conversation's tools). */
    name: string;
  };
}

/** Options of one {@link Conversation.send} turn: generate options plus the tool choice. */
export interface TurnOptions extends GenerateOptions {
  /**
   * With {@link ConversationOptions.tools}: "auto" (default: the reply is parsed for calls),
   * "none" (tools are not rendered), "required" or a named function (the call is forced by a
   * grammar, its arguments valid for the tool's parameter schema).
   */
  toolChoice?: ToolChoice;
  /** Whether a forced turn may make several calls (default true). */
  parallelToolCalls?: boolean;
}

/** Options of {@link Conversation.create}. */
export interface ConversationOptions {
  /** The system message the conversation starts with. */
  system?: string;
  /** The chat template (default: the model's, see {@link ChatTemplate.fromModel}). */
  template?: ChatTemplate;
  /** Generate options of every turn (a turn's own options override them). */
  defaults?: GenerateOptions;
  /**
   * Tools the model may call (OpenAI's shape), rendered through the chat template; the template
   * must teach a tool-call format (see lib/chat/tools.ts), else ERR_INVALID_ARGUMENT. A reply's
   * calls are in {@link Conversation.lastToolCalls} and in its assistant message's `tool_calls`.
   */
  tools?: ToolDefinition[];
}

/**
 * A chat: each {@link send} renders the whole conversation with the chat template and sends the
 * session only the text after what it already holds (the end of the last reply, the new user
 * message and the assistant header), tokenized on its own as llama.cpp's chat mode does, so each
 * turn prefills only its new tokens. Generation
 * stops at the template's end-of-turn markers. A stopped (aborted) or failed turn leaves the
 * conversation as it was.
 * @example
 * const chat = await Conversation.create(model, { system: "You are terse." });
 * for await (const c of chat.send("Hi!", { maxTokens: 64 })) process.stdout.write(c.text);
 */
export class Conversation {
  /** The messages so far (system, then user and assistant turns). */
  messages: ChatMessage[];
  private session: Session;
  /** The text the session's tokens stand for: the last rendered prompt plus the reply's tokens. */
  private text = "";

  private constructor(
    private readonly model: Model,
    /** The chat template turns are rendered with. */
    readonly template: ChatTemplate,
    private readonly options: ConversationOptions,
  ) {
    this.messages = this.initial();
    this.session = model.createSession();
  }

  /** A conversation with `model`, its chat template loaded from the file unless one is given. */
  static async create(model: Model, options: ConversationOptions = {}): Promise<Conversation> {
    const o = checkObject("conversation options", options) as ConversationOptions & Record<string, unknown>;
    checkKeys("conversation options", o, ["system", "template", "defaults", "tools"]);
    if (o.system !== undefined) checkString("system", o.system);
    const template = o.template ?? (await ChatTemplate.fromModel(model));
    let family: ToolFamily | undefined;
    if (o.tools !== undefined && o.tools.length > 0) {
      checkTools(o.tools);
      family = detectToolFamily(template.text);
      if (family === undefined)
        throw new LlmserveError(
          "ERR_INVALID_ARGUMENT",
          `The chat template (${template.name}) defines no tool-call format, so tool calls could not be parsed; pass a template of a supported family (see TOOL_FAMILIES) or no tools.`,
        );
    }
    const c = new Conversation(model, template, o);
    c.family = family;
    return c;
  }

  /** The tool-call family of the template, when the conversation has tools. */
  private family?: ToolFamily;

  /** The calls of the last reply (empty when it made none). */
  lastToolCalls: ToolCall[] = [];

  private initial(): ChatMessage[] {
    return this.options.system === undefined ? [] : [{ role: "system", content: this.options.system }];
  }

  /** Tokens the engine holds for this conversation (its KV, unless evicted). */
  get tokens(): readonly number[] {
    return this.session.tokens;
  }

  /**
   * Streams the assistant's reply to `user` (a user message's text, or messages such as the
   * `tool` results answering the last calls); the turn joins {@link messages} when it finishes.
   * With tools, the chunks are the raw reply (call markup included) and the parsed calls are in
   * {@link lastToolCalls}.
   */
  async *send(user: string | ChatMessage[], options: TurnOptions = {}): AsyncGenerator<Chunk, void, undefined> {
    if (!Array.isArray(user)) checkString("user", user);
    const { toolChoice = "auto", parallelToolCalls, ...generateOptions } = options;
    const messages: ChatMessage[] = [
      ...this.messages,
      ...(Array.isArray(user) ? user : [{ role: "user", content: user }]),
    ];
    const family = toolChoice === "none" ? undefined : this.family;
    const tools = this.options.tools ?? [];
    const forced =
      family !== undefined && toolChoice !== "auto"
        ? toolCallGrammar(family, tools, {
            name: typeof toolChoice === "object" ? toolChoice.function.name : undefined,
            parallel: parallelToolCalls,
          })
        : undefined;
    const prompt = await this.template.render(this.family ? messagesForTemplate(messages, this.family) : messages, {
      addGenerationPrompt: true,
      tools: family === undefined ? undefined : toolsForTemplate(tools),
      toolCallArguments: this.family !== undefined && argumentsAsString(this.family) ? "string" : undefined,
      suffix: forced?.prefix,
    });
    let delta: string;
    if (this.text !== "" && prompt.startsWith(this.text)) delta = prompt.slice(this.text.length);
    else {
      // First turn, or the template renders earlier turns differently from what was generated
      // (e.g. it trims replies): start over with the whole prompt (the prefix cache still reuses
      // the blocks the prompts share).
      if (this.text !== "") this.restart();
      delta = prompt;
    }
    const tok = this.model.tokenizer;
    const bosText = tok.bos === undefined ? "" : tok.tokenText(tok.bos);
    const merged = { ...this.options.defaults, ...generateOptions, ...(forced ? { grammar: forced.grammar } : {}) };
    const turn = this.session.send(delta, {
      ...merged,
      // The template writes BOS itself when it wants one; otherwise the vocabulary decides.
      addSpecial: this.session.tokens.length === 0 && !(bosText !== "" && prompt.startsWith(bosText)),
      parseSpecial: true,
      stop: [...(merged.stop ?? []), ...this.template.stopStrings],
      stopTokens: [...(merged.stopTokens ?? []), ...this.template.stopTokens],
    });
    let reply = "";
    const replyTokens: number[] = [];
    let last: Chunk | undefined;
    for await (const c of turn) {
      reply += c.text;
      replyTokens.push(...c.tokens);
      last = c;
      yield c;
    }
    if (last?.done && last.finishReason !== "abort") {
      this.lastToolCalls = [];
      let assistant: ChatMessage = { role: "assistant", content: reply };
      if (family !== undefined) {
        // Parsed from the special-token text (some families' markers are control tokens).
        const text = tok.decode(
          replyTokens.filter((t) => !tok.isEog(t) && !this.template.stopTokens.includes(t)),
          { special: true },
        );
        const parsed = parseToolCalls((forced?.prefix ?? "") + text, family, {
          tools: tools.map((t) => t.function.name),
        });
        if (parsed.toolCalls.length > 0) {
          this.lastToolCalls = parsed.toolCalls;
          assistant = { role: "assistant", content: parsed.content, tool_calls: parsed.toolCalls };
        }
      }
      this.messages = [...messages, assistant];
      // The reply as the template will render it next turn (the streamed text); when a stop string
      // ended it, its tokens also hold the stop text, which the next render has after the reply.
      this.text = prompt + (last.finishReason === "stop" ? tok.decode(replyTokens, { special: true }) : reply);
    }
  }

  private restart(): void {
    this.session.dispose();
    this.session = this.model.createSession();
    this.text = "";
  }

  /** Forgets every turn (the system message stays) and frees the KV. */
  reset(): void {
    this.restart();
    this.messages = this.initial();
  }

  /** Frees the session's KV. */
  dispose(): void {
    this.session.dispose();
  }
}
