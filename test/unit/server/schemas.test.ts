/**
 * The HTTP schemas keep OpenAI's ranges (narrower than the library's: temperature up to 2, ...),
 * but every value they accept must map into the library's one table of ranges (lib/limits.ts), so
 * a valid request never reaches the library as an invalid option. Fails when either side moves.
 */
import { describe, expect, it } from "vitest";
import { GENERATE_LIMITS } from "../../../lib/limits.js";
import { samplingOptions } from "../../../lib/server/request.js";
import { chatSchema, completionSchema } from "../../../lib/server/schemas.js";
import type { SamplingBody } from "../../../lib/server/schemas.js";
import { checkLimit } from "../../../lib/validate.js";

type NumSchema = { type: string; minimum?: number; maximum?: number; exclusiveMinimum?: number };
const props = chatSchema.properties as unknown as Record<string, { anyOf?: NumSchema[] }>;
const range = (field: string): NumSchema => props[field].anyOf![0];

describe("the server's sampling ranges fit the library's", () => {
  const fields = [
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "max_tokens",
    "max_completion_tokens",
  ];

  it.each(fields)("%s: both ends map to a valid library option", (field) => {
    const r = range(field);
    const lo = r.minimum ?? r.exclusiveMinimum! + 1e-9;
    for (const v of [lo, r.maximum!]) {
      if (field.startsWith("max_")) {
        checkLimit("maxTokens", v, GENERATE_LIMITS.maxTokens);
        continue;
      }
      const o = samplingOptions({ [field]: v } as SamplingBody) as Record<string, number>;
      const [name, value] = Object.entries(o)[0];
      expect(
        () => checkLimit(name, value, GENERATE_LIMITS[name as keyof typeof GENERATE_LIMITS]),
        `${field} = ${v} -> ${name} = ${value}`,
      ).not.toThrow();
    }
  });

  it("completions and chat share the sampling schema", () => {
    for (const f of fields)
      expect(completionSchema.properties[f as keyof typeof completionSchema.properties]).toEqual(
        chatSchema.properties[f as keyof typeof chatSchema.properties],
      );
  });
});
