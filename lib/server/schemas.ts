/**
 * JSON schemas of the request bodies (validated by fastify's Ajv) and their TypeScript shapes.
 * Their properties are the fields each endpoint honors; any other field is refused with a 400
 * naming it (lib/server/fields.ts); `null` means "not given".
 * Every number, array and string has an upper bound (SERVER_LIMITS, inside the library's own
 * ranges of lib/limits.ts), so an oversized value is a 400 naming the field, never a 500.
 */
import { GENERATE_LIMITS, INT32_MAX, LOAD_LIMITS, MAX_CHAT_MESSAGES } from "../limits.js";

/** The largest arrays, strings and counts a request may carry (beyond them: 400 invalid_value). */
export const SERVER_LIMITS = {
  /** Choices per prompt (`n`). */
  n: 128,
  /** Prompts in one /v1/completions request (a list of strings or of token arrays). */
  prompts: 256,
  /** Characters of one prompt string, message content or content part (8 MiB bodies hold fewer anyway). */
  textLength: 1 << 23,
  /** Messages in one chat request. */
  messages: MAX_CHAT_MESSAGES,
  /** Content parts of one message. */
  contentParts: 256,
  /** Stop strings. */
  stop: 16,
  /** Characters of one stop string. */
  stopLength: 256,
  /** Characters of `model`, `user`, a message `name` or `tool_call_id`. */
  nameLength: 1024,
  /** Entries of `tools` and of a message's `tool_calls`. */
  tools: 128,
  /** `logprobs` / `top_logprobs` alternatives per token (the library's maximum). */
  logprobs: GENERATE_LIMITS.logprobs.max,
  /** Entries of `logit_bias`. */
  logitBias: 4096,
  /** `seed`: any safe integer (OpenAI's is an int64; choices use seed + index, modulo 2^32). */
  seed: Number.MAX_SAFE_INTEGER,
} as const;

export interface StreamOptions {
  include_usage?: boolean | null;
}

/** Parameters shared by /v1/completions and /v1/chat/completions. */
export interface SamplingBody {
  model?: string | null;
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  min_p?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  repetition_penalty?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  n?: number | null;
  stream?: boolean | null;
  stream_options?: StreamOptions | null;
  user?: string | null;
  /** llama.cpp extension: keep generating past end-of-generation tokens. */
  ignore_eos?: boolean | null;
  /** Token id (as a decimal string) -> bias in [-100, 100] added to its logit; -100 bans it. */
  logit_bias?: Record<string, number> | null;
  /** Structured output: any JSON object, or JSON valid for a schema (constrained decoding). */
  response_format?: ResponseFormat | null;
  [key: string]: unknown;
}

export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object" }
  | {
      type: "json_schema";
      json_schema: { name?: string; description?: string; schema?: Record<string, unknown>; strict?: boolean | null };
    };

export interface CompletionBody extends SamplingBody {
  prompt: string | string[] | number[] | number[][];
  logprobs?: number | null;
  echo?: boolean | null;
}

export interface ChatBody extends SamplingBody {
  messages: { role: string; content?: string | { type: string; text?: string }[] | null; [key: string]: unknown }[];
  logprobs?: boolean | null;
  top_logprobs?: number | null;
  tools?: unknown[] | null;
  tool_choice?: "none" | "auto" | "required" | { type: "function"; function: { name: string } } | null;
  parallel_tool_calls?: boolean | null;
}

const nullable = (schema: Record<string, unknown>) => ({ anyOf: [schema, { type: "null" }] });

const L = SERVER_LIMITS;
const name = { type: "string", maxLength: L.nameLength } as const;

const sampling = {
  model: nullable(name),
  max_tokens: nullable({ type: "integer", minimum: 1, maximum: GENERATE_LIMITS.maxTokens.max }),
  max_completion_tokens: nullable({ type: "integer", minimum: 1, maximum: GENERATE_LIMITS.maxTokens.max }),
  temperature: nullable({ type: "number", minimum: 0, maximum: 2 }),
  top_p: nullable({ type: "number", minimum: 0, maximum: 1 }),
  top_k: nullable({ type: "integer", minimum: -1, maximum: GENERATE_LIMITS.topK.max }),
  min_p: nullable({ type: "number", minimum: 0, maximum: 1 }),
  presence_penalty: nullable({
    type: "number",
    minimum: GENERATE_LIMITS.presencePenalty.min,
    maximum: GENERATE_LIMITS.presencePenalty.max,
  }),
  frequency_penalty: nullable({
    type: "number",
    minimum: GENERATE_LIMITS.frequencyPenalty.min,
    maximum: GENERATE_LIMITS.frequencyPenalty.max,
  }),
  repetition_penalty: nullable({ type: "number", exclusiveMinimum: 0, maximum: 10 }),
  seed: nullable({ type: "integer", minimum: -L.seed, maximum: L.seed }),
  stop: {
    anyOf: [
      { type: "string", maxLength: L.stopLength },
      { type: "array", items: { type: "string", maxLength: L.stopLength }, maxItems: L.stop },
      { type: "null" },
    ],
  },
  n: nullable({ type: "integer", minimum: 1, maximum: L.n }),
  stream: nullable({ type: "boolean" }),
  stream_options: nullable({ type: "object", properties: { include_usage: nullable({ type: "boolean" }) } }),
  user: nullable(name),
  ignore_eos: nullable({ type: "boolean" }),
  response_format: nullable({
    type: "object",
    required: ["type"],
    properties: {
      type: { type: "string", enum: ["text", "json_object", "json_schema"] },
      json_schema: {
        type: "object",
        required: ["name"],
        properties: {
          name: { type: "string", maxLength: 64 },
          description: { type: "string", maxLength: L.textLength },
          schema: { type: "object" },
          strict: nullable({ type: "boolean" }),
        },
      },
    },
  }),
  logit_bias: nullable({
    type: "object",
    maxProperties: L.logitBias,
    propertyNames: { pattern: "^(0|[1-9][0-9]{0,9})$" },
    additionalProperties: {
      type: "number",
      minimum: GENERATE_LIMITS.logitBias.min,
      maximum: GENERATE_LIMITS.logitBias.max,
    },
  }),
} as const;

const tokenId = { type: "integer", minimum: 0, maximum: INT32_MAX } as const;

export const completionSchema = {
  type: "object",
  required: ["prompt"],
  properties: {
    ...sampling,
    prompt: {
      anyOf: [
        { type: "string", maxLength: L.textLength },
        { type: "array", minItems: 1, maxItems: L.prompts, items: { type: "string", maxLength: L.textLength } },
        { type: "array", minItems: 1, maxItems: LOAD_LIMITS.contextSize.max, items: tokenId },
        {
          type: "array",
          minItems: 1,
          maxItems: L.prompts,
          items: { type: "array", minItems: 1, maxItems: LOAD_LIMITS.contextSize.max, items: tokenId },
        },
      ],
    },
    logprobs: nullable({ type: "integer", minimum: 0, maximum: L.logprobs }),
    echo: nullable({ type: "boolean" }),
  },
} as const;

const contentPart = {
  type: "object",
  required: ["type"],
  properties: { type: name, text: { type: "string", maxLength: L.textLength } },
} as const;

export const chatSchema = {
  type: "object",
  required: ["messages"],
  properties: {
    ...sampling,
    messages: {
      type: "array",
      minItems: 1,
      maxItems: L.messages,
      items: {
        type: "object",
        required: ["role"],
        properties: {
          role: { type: "string", enum: ["system", "developer", "user", "assistant", "tool", "function"] },
          content: {
            anyOf: [
              { type: "string", maxLength: L.textLength },
              { type: "array", maxItems: L.contentParts, items: contentPart },
              { type: "null" },
            ],
          },
          name: nullable(name),
          tool_calls: nullable({ type: "array", maxItems: L.tools }),
          tool_call_id: nullable(name),
        },
      },
    },
    logprobs: nullable({ type: "boolean" }),
    top_logprobs: nullable({ type: "integer", minimum: 0, maximum: L.logprobs }),
    tools: nullable({ type: "array", maxItems: L.tools, items: { type: "object" } }),
    tool_choice: {
      anyOf: [
        { type: "string", enum: ["none", "auto", "required"] },
        {
          type: "object",
          required: ["type", "function"],
          properties: {
            type: { type: "string", enum: ["function"] },
            function: { type: "object", required: ["name"], properties: { name } },
          },
        },
        { type: "null" },
      ],
    },
    parallel_tool_calls: nullable({ type: "boolean" }),
  },
} as const;
