/**
 * Request mapping for the OpenAI-compatible endpoints: an HTTP body -> token prompts and the
 * library's generate options. Only OpenAI's own conventions live here (n, max_tokens, echo,
 * top_k = -1, top_p = 0, per-choice seeds); every range and default is the library's (lib/limits.ts,
 * lib/defaults.ts), applied by resolveOptions when the engine requests are made.
 */
import { randomSeed } from "../defaults.js";
import type { ChatLimits, ChatTemplate } from "../chat/index.js";
import type { GenerateOptions } from "../generate.js";
import type { Model } from "../model.js";
import { OFFTHREAD_MIN_CHARS } from "../tokenizer/index.js";
import { checkTokenIds } from "../validate.js";
import { jsonObjectGbnf, jsonSchemaToGbnf } from "../grammar/jsonSchema.js";
import { ApiError } from "./errors.js";
import { planTools, renderInputs, type ToolPlan } from "./tools.js";
import type { ChatBody, CompletionBody, SamplingBody } from "./schemas.js";

/** The two generation endpoints: /v1/chat/completions and /v1/completions. */
export type Kind = "chat" | "completion";

/** A request body of either endpoint (fields of the other one are absent). */
export type GenerationBody = ChatBody & CompletionBody;

/** What mapping a request needs from the server. */
export interface MappingContext {
  model: Model;
  modelName: string;
  chatTemplate: () => Promise<ChatTemplate>;
  chatLimits?: Partial<ChatLimits>;
}

/**
 * Which model a request's `model` field selects: undefined for the served model (or no field), the
 * adapter's name for one of its loaded LoRA adapters; a 404 listing what is served otherwise.
 */
export function checkModelName(
  modelName: string,
  name: string | null | undefined,
  adapters: readonly string[] = [],
): string | undefined {
  if (name === undefined || name === null || name === modelName) return undefined;
  if (adapters.includes(name)) return name;
  const also = adapters.length ? ` and the adapters ${adapters.map((a) => `\`${a}\``).join(", ")}` : "";
  throw new ApiError(
    404,
    `The model \`${name}\` does not exist. This server serves \`${modelName}\`${also} (see GET /v1/models).`,
    {
      type: "invalid_request_error",
      code: "model_not_found",
      param: "model",
    },
  );
}

function stopList(stop: SamplingBody["stop"]): string[] {
  if (stop === undefined || stop === null) return [];
  return (typeof stop === "string" ? [stop] : stop).filter((s) => s.length > 0);
}

/** A 32-bit seed per choice: the request's seed for the first, then +1 each; random without one. */
export function seedFor(seed: number | null | undefined, i: number): number {
  if (seed === undefined || seed === null) return randomSeed();
  return (((seed + i) % 2 ** 32) + 2 ** 32) % 2 ** 32;
}

/**
 * The sampling fields of a body as library options; unset fields stay unset so the library's
 * defaults apply. OpenAI's spellings map into the library's ranges: top_p 0 -> 1e-6 (the library's
 * range excludes 0), top_k -1 -> 0 (both "off").
 */
export function samplingOptions(body: SamplingBody): GenerateOptions {
  const o: GenerateOptions = {};
  if (body.temperature != null) o.temperature = body.temperature;
  if (body.top_p != null) o.topP = body.top_p === 0 ? 1e-6 : body.top_p;
  if (body.top_k != null) o.topK = Math.max(0, body.top_k);
  if (body.min_p != null) o.minP = body.min_p;
  if (body.presence_penalty != null) o.presencePenalty = body.presence_penalty;
  if (body.frequency_penalty != null) o.frequencyPenalty = body.frequency_penalty;
  if (body.repetition_penalty != null) o.repeatPenalty = body.repetition_penalty;
  if (body.logit_bias != null && Object.keys(body.logit_bias).length > 0) o.logitBias = body.logit_bias;
  const rf = body.response_format;
  if (rf?.type === "json_object") o.grammar = jsonObjectGbnf();
  else if (rf?.type === "json_schema") o.grammar = schemaGrammar(rf.json_schema);
  return o;
}

/**
 * response_format json_schema -> GBNF; a schema the compiler cannot honor is a 400 naming what
 * (strict or not: output that might not validate is never produced silently).
 */
function schemaGrammar(js: { schema?: Record<string, unknown> } | undefined): string {
  const param = "response_format.json_schema.schema";
  if (js?.schema === undefined)
    throw new ApiError(400, "response_format of type json_schema needs json_schema.schema (a JSON schema object).", {
      type: "invalid_request_error",
      code: "invalid_value",
      param,
    });
  try {
    return jsonSchemaToGbnf(js.schema);
  } catch (err) {
    throw new ApiError(400, (err as Error).message, { type: "invalid_request_error", code: "invalid_schema", param });
  }
}

/** logit_bias names tokens of this model's vocabulary (the schema checked the rest). */
export function checkLogitBias(body: SamplingBody, nVocab: number): void {
  for (const id of Object.keys(body.logit_bias ?? {})) {
    if (Number(id) >= nVocab)
      throw new ApiError(
        400,
        `Invalid value for logit_bias: token id ${id} is outside the vocabulary [0, ${nVocab}) of this model.`,
        { code: "invalid_value", param: "logit_bias" },
      );
  }
}

function contextError(model: Model, kind: Kind, n: number): ApiError {
  const size = model.info.contextSize;
  const what = kind === "chat" ? "messages" : "prompt";
  return new ApiError(
    400,
    `This model's maximum context length is ${size} tokens. However, your ${what} resulted in ${n} tokens (and at least one must be generated). Please reduce the length of the ${what}.`,
    {
      code: "context_length_exceeded",
      param: what,
    },
  );
}

/**
 * The token prompts of a completions request (strings tokenized with special-token parsing). A
 * string longer than the context times the longest token text cannot fit, and is refused before
 * tokenizing; long strings (or many) are tokenized on the tokenizer's worker thread.
 */
async function completionPrompts(model: Model, prompt: CompletionBody["prompt"]): Promise<number[][]> {
  const { nVocab, contextSize } = model.info;
  const checkIds = (ids: number[]) => {
    try {
      return checkTokenIds(ids, nVocab).slice(); // the library's one token-id check
    } catch (err) {
      throw new ApiError(400, (err as Error).message, { param: "prompt", code: "invalid_value", cause: err });
    }
  };
  const tokenizer = model.tokenizer;
  const maxChars = contextSize * tokenizer.maxTokenChars;
  const strings =
    typeof prompt === "string"
      ? [prompt]
      : prompt.every((p) => typeof p === "string")
        ? (prompt as string[])
        : undefined;
  if (strings) {
    let total = 0;
    for (const s of strings) {
      if (s.length > maxChars) {
        throw new ApiError(
          400,
          `This model's maximum context length is ${contextSize} tokens, and a prompt of ${s.length} characters cannot fit it (at most ${maxChars}: a token stands for at most ${tokenizer.maxTokenChars} characters). Please reduce the length of the prompt.`,
          {
            code: "context_length_exceeded",
            param: "prompt",
          },
        );
      }
      total += s.length;
    }
    const offThread = total >= OFFTHREAD_MIN_CHARS;
    return Promise.all(
      strings.map((s) => tokenizer.encodeAsync(s, { addSpecial: true, parseSpecial: true, offThread })),
    );
  }
  const ids = prompt as number[] | number[][];
  if (ids.every((p) => typeof p === "number")) return [checkIds(ids as number[])];
  return (ids as number[][]).map(checkIds);
}

/** A request's prompts, ready to submit. */
export interface Prompts {
  /** One token prompt per prompt of the request (chat: exactly one). */
  prompts: number[][];
  /** The chat template's stop strings and tokens (completions: none). */
  extraStops: string[];
  extraStopTokens: number[];
  /** echo (completions): the text each prompt's choices start with. */
  echo?: string[];
  /** Chat with tools (not tool_choice "none"): the family, tools and forced-call grammar. */
  tools?: ToolPlan;
}

/** Renders / tokenizes the request's prompts and checks each fits the context. */
export async function preparePrompts(ctx: MappingContext, kind: Kind, body: GenerationBody): Promise<Prompts> {
  const model = ctx.model;
  let prompts: number[][];
  let extraStops: string[] = [];
  let extraStopTokens: number[] = [];
  let tools: ToolPlan | undefined;
  if (kind === "chat") {
    const template = await ctx.chatTemplate();
    tools = planTools(body, template);
    const { messages, ...render } = renderInputs(body, template, tools);
    // Size limits are checked before rendering; the template renders on a worker thread, and a long
    // prompt is tokenized on the tokenizer's.
    prompts = [await template.tokenize(messages, { ...render, limits: ctx.chatLimits })];
    extraStops = template.stopStrings;
    extraStopTokens = template.stopTokens;
  } else {
    prompts = await completionPrompts(model, body.prompt);
  }
  // echo (completions): the prompt text comes first (no prompt logprobs).
  const echo =
    kind === "completion" && body.echo === true
      ? prompts.map((p, i) =>
          typeof body.prompt === "string"
            ? body.prompt
            : Array.isArray(body.prompt) && typeof body.prompt[i] === "string"
              ? (body.prompt[i] as string)
              : model.detokenize(p),
        )
      : undefined;
  const contextSize = model.info.contextSize;
  for (const p of prompts) {
    if (p.length === 0)
      throw new ApiError(400, "The prompt is empty (it has no tokens).", {
        param: kind === "chat" ? "messages" : "prompt",
        code: "invalid_value",
      });
    if (p.length >= contextSize) throw contextError(model, kind, p.length);
  }
  return { prompts, extraStops, extraStopTokens, echo, tools };
}

/** The per-request options of a body (the same for every choice but the seed and maxTokens). */
export interface RequestOptions {
  /** Choices per prompt. */
  n: number;
  /** max_completion_tokens / max_tokens, when given. */
  requested?: number;
  stop: string[];
  /** Alternatives per token when logprobs were asked for; undefined otherwise. */
  logprobs?: number;
  /** The sampling fields the body sets. */
  base: GenerateOptions;
  stream: boolean;
  includeUsage: boolean;
  ignoreEos: boolean;
  seed?: number | null;
}

/** Maps the body's generation parameters (the prompts' own stop strings appended). */
export function requestOptions(
  kind: Kind,
  body: GenerationBody,
  extraStops: string[],
  tools?: ToolPlan,
): RequestOptions {
  const stream = body.stream === true;
  const base = samplingOptions(body);
  // A forced tool call (tool_choice "required" or a named function) is decoded under its grammar.
  if (tools?.forced) base.grammar = tools.forced.grammar;
  return {
    n: body.n ?? 1,
    requested: body.max_completion_tokens ?? body.max_tokens ?? undefined,
    stop: [...stopList(body.stop), ...extraStops],
    logprobs: kind === "chat" ? (body.logprobs ? (body.top_logprobs ?? 0) : undefined) : (body.logprobs ?? undefined),
    base,
    stream,
    includeUsage: stream && body.stream_options?.include_usage === true,
    ignoreEos: body.ignore_eos === true,
    seed: body.seed,
  };
}

/**
 * The most tokens a choice may generate: what the request asked for, else OpenAI's default (16 for
 * completions, the rest of the context for chat), never more than the context has room for.
 */
export function maxTokensFor(kind: Kind, requested: number | undefined, room: number): number {
  return Math.min(requested ?? (kind === "chat" ? room : 16), room);
}
