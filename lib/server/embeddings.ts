/**
 * OpenAI's POST /v1/embeddings over Model.embed:
 * `{input: string | string[] | number[] | number[][], model?, encoding_format?: "float" | "base64",
 * dimensions?, user?}` -> `{object: "list", data: [{object: "embedding", index, embedding}], model,
 * usage: {prompt_tokens, total_tokens}}`. base64 is the little-endian float32 bytes of the vector
 * (what the openai client decodes). Vectors are the library's defaults (EMBED_DEFAULTS: last-token
 * pooling, unit length). `dimensions` cannot shorten these vectors (the model was not trained
 * for it): any value but the model's n_embd is a 400. The model's LoRA adapters are refused (the
 * evaluation path runs the base model only).
 */
import type { FastifyInstance } from "fastify";
import { LlmserveError } from "../errors.js";
import { INT32_MAX } from "../limits.js";
import type { Model } from "../model.js";
import { ApiError } from "./errors.js";
import { checkModelName } from "./request.js";
import { SERVER_LIMITS } from "./schemas.js";

/** The body of POST /v1/embeddings. */
export interface EmbeddingsBody {
  input: string | string[] | number[] | number[][];
  model?: string | null;
  encoding_format?: "float" | "base64" | null;
  dimensions?: number | null;
  user?: string | null;
}

const L = SERVER_LIMITS;
const text = { type: "string", maxLength: L.textLength } as const;
const tokens = { type: "array", minItems: 1, items: { type: "integer", minimum: 0, maximum: INT32_MAX } } as const;

export const embeddingsSchema = {
  type: "object",
  required: ["input"],
  properties: {
    input: {
      anyOf: [
        text,
        { type: "array", minItems: 1, maxItems: L.prompts, items: text },
        tokens,
        { type: "array", minItems: 1, maxItems: L.prompts, items: tokens },
      ],
    },
    model: { anyOf: [{ type: "string", maxLength: L.nameLength }, { type: "null" }] },
    encoding_format: { anyOf: [{ type: "string", enum: ["float", "base64"] }, { type: "null" }] },
    dimensions: { anyOf: [{ type: "integer", minimum: 1, maximum: INT32_MAX }, { type: "null" }] },
    user: { anyOf: [{ type: "string", maxLength: L.nameLength }, { type: "null" }] },
  },
} as const;

/** The inputs of a body as the library takes them: strings or token id arrays. */
function inputsOf(input: EmbeddingsBody["input"]): (string | number[])[] {
  if (typeof input === "string") return [input];
  if (input.length > 0 && typeof input[0] === "number") return [input as number[]];
  return input as (string | number[])[];
}

function base64(v: Float32Array): string {
  // Float32Array is platform-endian; OpenAI's base64 is little-endian (every platform we build for).
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64");
}

/** Registers POST /v1/embeddings (API key required, as every route but /health). */
export function registerEmbeddingRoutes(app: FastifyInstance, model: Model, modelName: string): void {
  app.post("/v1/embeddings", { schema: { body: embeddingsSchema } }, async (request, reply) => {
    const b = request.body as EmbeddingsBody;
    const adapter = checkModelName(
      modelName,
      b.model,
      model.adapters().map((a) => a.name),
    );
    if (adapter !== undefined)
      throw new ApiError(400, `Embeddings run on the base model only; use \`model: "${modelName}"\`.`, {
        code: "invalid_value",
        param: "model",
      });
    const nEmbd = model.info.nEmbd;
    if (b.dimensions !== undefined && b.dimensions !== null && b.dimensions !== nEmbd)
      throw new ApiError(
        400,
        `Invalid value for dimensions: this model's embeddings have ${nEmbd} dimensions and cannot be shortened; omit dimensions or pass ${nEmbd}.`,
        { code: "invalid_value", param: "dimensions" },
      );
    const inputs = inputsOf(b.input);
    const empty = inputs.findIndex((x) => x.length === 0);
    if (empty >= 0)
      throw new ApiError(400, `Invalid value for input[${empty}]: an empty input has no embedding; remove it.`, {
        code: "invalid_value",
        param: "input",
      });
    // Tokenized here once (BOS as the vocabulary asks, as Model.embed does): the token counts are
    // the usage, and the library's cache key.
    const seqs: number[][] = [];
    for (const x of inputs)
      seqs.push(typeof x === "string" ? await model.tokenizeAsync(x, { parseSpecial: false }) : x);
    const promptTokens = seqs.reduce((n, t) => n + t.length, 0);
    // The client went away: texts not yet on the engine are not computed.
    const ac = new AbortController();
    const onClose = () => {
      if (!reply.raw.writableFinished) ac.abort();
    };
    reply.raw.on("close", onClose);
    let vectors: Float32Array[];
    try {
      vectors = await model.embed(seqs, { signal: ac.signal });
    } catch (err) {
      if (err instanceof LlmserveError && err.code === "ERR_CONTEXT_OVERFLOW")
        throw new ApiError(400, err.message, { code: "context_length_exceeded", param: "input", cause: err });
      throw err;
    } finally {
      reply.raw.off("close", onClose);
    }
    const asBase64 = b.encoding_format === "base64";
    return {
      object: "list",
      data: vectors.map((v, index) => ({
        object: "embedding",
        index,
        embedding: asBase64 ? base64(v) : Array.from(v),
      })),
      model: modelName,
      usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
    };
  });
}
