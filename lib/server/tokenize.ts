/**
 * llama-server's `/tokenize` and `/detokenize`, with its request and response shapes:
 *  - POST /tokenize `{content, add_special?: false, parse_special?: true, with_pieces?: false}` ->
 *    `{tokens: number[]}`, or with_pieces `{tokens: {id, piece}[]}` where a piece is the token's
 *    text, or its bytes as an array of numbers when they are not valid UTF-8 on their own;
 *  - POST /detokenize `{tokens: number[]}` -> `{content}`: the tokens' pieces concatenated, special
 *    tokens rendered as their text and no leading space removed (llama-server's tokens_to_str).
 * Long texts are tokenized on the tokenizer's worker thread, as generation prompts are.
 */
import type { FastifyInstance } from "fastify";
import { INT32_MAX } from "../limits.js";
import type { Model } from "../model.js";
import { ApiError } from "./errors.js";
import { SERVER_LIMITS } from "./schemas.js";

/** The body of POST /tokenize. */
export interface TokenizeBody {
  content: string;
  add_special?: boolean | null;
  parse_special?: boolean | null;
  with_pieces?: boolean | null;
}

/** The body of POST /detokenize. */
export interface DetokenizeBody {
  tokens: number[];
}

/** Most token ids one /detokenize request may carry. */
export const MAX_DETOKENIZE = 1 << 20;

const nullableBool = { anyOf: [{ type: "boolean" }, { type: "null" }] } as const;

export const tokenizeSchema = {
  type: "object",
  required: ["content"],
  properties: {
    content: { type: "string", maxLength: SERVER_LIMITS.textLength },
    add_special: nullableBool,
    parse_special: nullableBool,
    with_pieces: nullableBool,
  },
} as const;

export const detokenizeSchema = {
  type: "object",
  required: ["tokens"],
  properties: {
    tokens: {
      type: "array",
      // Decoded on the event loop: a bound that keeps one request to milliseconds.
      maxItems: MAX_DETOKENIZE,
      items: { type: "integer", minimum: 0, maximum: INT32_MAX },
    },
  },
} as const;

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** A token's piece as llama-server gives it: its text, or its bytes when they are not valid UTF-8. */
function pieceOf(model: Model, id: number): string | number[] {
  const bytes = model.tokenizer.tokenBytes(id, { special: true });
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return Array.from(bytes);
  }
}

/** Registers POST /tokenize and POST /detokenize (API key required, as every route but /health). */
export function registerTokenizeRoutes(app: FastifyInstance, model: Model): void {
  app.post("/tokenize", { schema: { body: tokenizeSchema } }, async (request) => {
    const b = request.body as TokenizeBody;
    const tokens = await model.tokenizeAsync(b.content, {
      addSpecial: b.add_special === true,
      parseSpecial: b.parse_special !== false,
    });
    if (b.with_pieces !== true) return { tokens };
    return { tokens: tokens.map((id) => ({ id, piece: pieceOf(model, id) })) };
  });

  app.post("/detokenize", { schema: { body: detokenizeSchema } }, async (request) => {
    const ids = (request.body as DetokenizeBody).tokens;
    const nVocab = model.info.nVocab;
    const bad = ids.findIndex((id) => id >= nVocab);
    if (bad >= 0)
      throw new ApiError(
        400,
        `Invalid value for tokens[${bad}]: token id ${ids[bad]} is outside the vocabulary [0, ${nVocab}) of this model.`,
        { code: "invalid_value", param: `tokens[${bad}]` },
      );
    return { content: model.tokenizer.decode(ids, { special: true, stripLeadingSpace: false }) };
  });
}
