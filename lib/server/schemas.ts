/**
 * JSON schemas of the request bodies (validated by fastify's Ajv) and their TypeScript shapes.
 * Unknown parameters are accepted and ignored, as OpenAI does; `null` means "not given".
 */

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
  [key: string]: unknown;
}

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
}

const nullable = (schema: Record<string, unknown>) => ({ anyOf: [schema, { type: "null" }] });

const sampling = {
  model: nullable({ type: "string" }),
  max_tokens: nullable({ type: "integer", minimum: 1 }),
  max_completion_tokens: nullable({ type: "integer", minimum: 1 }),
  temperature: nullable({ type: "number", minimum: 0, maximum: 2 }),
  top_p: nullable({ type: "number", minimum: 0, maximum: 1 }),
  top_k: nullable({ type: "integer", minimum: -1 }),
  min_p: nullable({ type: "number", minimum: 0, maximum: 1 }),
  presence_penalty: nullable({ type: "number", minimum: -2, maximum: 2 }),
  frequency_penalty: nullable({ type: "number", minimum: -2, maximum: 2 }),
  repetition_penalty: nullable({ type: "number", exclusiveMinimum: 0, maximum: 10 }),
  seed: nullable({ type: "integer" }),
  stop: { anyOf: [{ type: "string" }, { type: "array", items: { type: "string" }, maxItems: 16 }, { type: "null" }] },
  n: nullable({ type: "integer", minimum: 1, maximum: 128 }),
  stream: nullable({ type: "boolean" }),
  stream_options: nullable({ type: "object", properties: { include_usage: nullable({ type: "boolean" }) } }),
  user: nullable({ type: "string" }),
  ignore_eos: nullable({ type: "boolean" }),
} as const;

export const completionSchema = {
  type: "object",
  required: ["prompt"],
  properties: {
    ...sampling,
    prompt: {
      anyOf: [
        { type: "string" },
        { type: "array", minItems: 1, items: { type: "string" } },
        { type: "array", minItems: 1, items: { type: "integer" } },
        { type: "array", minItems: 1, items: { type: "array", minItems: 1, items: { type: "integer" } } },
      ],
    },
    logprobs: nullable({ type: "integer", minimum: 0, maximum: 20 }),
    echo: nullable({ type: "boolean" }),
  },
} as const;

const contentPart = {
  type: "object",
  required: ["type"],
  properties: { type: { type: "string" }, text: { type: "string" } },
} as const;

export const chatSchema = {
  type: "object",
  required: ["messages"],
  properties: {
    ...sampling,
    messages: {
      type: "array",
      minItems: 1,
      items: {
        type: "object",
        required: ["role"],
        properties: {
          role: { type: "string", enum: ["system", "developer", "user", "assistant", "tool", "function"] },
          content: { anyOf: [{ type: "string" }, { type: "array", items: contentPart }, { type: "null" }] },
          name: nullable({ type: "string" }),
          tool_calls: nullable({ type: "array" }),
          tool_call_id: nullable({ type: "string" }),
        },
      },
    },
    logprobs: nullable({ type: "boolean" }),
    top_logprobs: nullable({ type: "integer", minimum: 0, maximum: 20 }),
    tools: nullable({ type: "array" }),
  },
} as const;
