/** A multi-turn chat over a {@link Session}: messages rendered with the chat template, KV kept between turns. */
import type { Chunk, GenerateOptions } from "../generate.js";
import type { Model } from "../model.js";
import type { Session } from "../session.js";
import { checkKeys, checkObject, checkString } from "../validate.js";
import { ChatTemplate, type ChatMessage } from "./index.js";

/** Options of {@link Conversation.create}. */
export interface ConversationOptions {
  /** The system message the conversation starts with. */
  system?: string;
  /** The chat template (default: the model's, see {@link ChatTemplate.fromModel}). */
  template?: ChatTemplate;
  /** Generate options of every turn (a turn's own options override them). */
  defaults?: GenerateOptions;
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
    checkKeys("conversation options", o, ["system", "template", "defaults"]);
    if (o.system !== undefined) checkString("system", o.system);
    const template = o.template ?? (await ChatTemplate.fromModel(model));
    return new Conversation(model, template, o);
  }

  private initial(): ChatMessage[] {
    return this.options.system === undefined ? [] : [{ role: "system", content: this.options.system }];
  }

  /** Tokens the engine holds for this conversation (its KV, unless evicted). */
  get tokens(): readonly number[] {
    return this.session.tokens;
  }

  /** Streams the assistant's reply to `user`; the turn joins {@link messages} when it finishes. */
  async *send(user: string, options: GenerateOptions = {}): AsyncGenerator<Chunk, void, undefined> {
    checkString("user", user);
    const messages: ChatMessage[] = [...this.messages, { role: "user", content: user }];
    const prompt = await this.template.render(messages, { addGenerationPrompt: true });
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
    const merged = { ...this.options.defaults, ...options };
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
      this.messages = [...messages, { role: "assistant", content: reply }];
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
