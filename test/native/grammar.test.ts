/**
 * Constrained decoding end to end on a random-weight model: JSON schemas of every feature we claim
 * give output that ajv validates (several seeds), where the same requests unconstrained do not;
 * GBNF grammars hold; batched equals solo under a grammar; bad grammars and schemas are typed
 * errors before anything runs.
 */
import { Ajv } from "ajv";
import formatsModule from "ajv-formats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type LlmserveError, Model, type Chunk } from "../../lib/index.js";
import { synthModel } from "../helpers.js";

let model: Model;
beforeAll(async () => {
  const path = await synthModel("grammar", { dim: 64, layers: 1, heads: 2, kvHeads: 1, ffn: 128, vocabSize: 512 });
  model = await Model.load(path, { threads: 2, contextSize: 512, kvCacheTokens: 8192 });
});
afterAll(async () => {
  await model?.dispose();
});

async function run(prompt: string, options: object): Promise<{ text: string; tokens: number[]; last: Chunk }> {
  let text = "";
  const tokens: number[] = [];
  let last: Chunk | undefined;
  for await (const c of model.generate(prompt, { maxTokens: 400, temperature: 1, ...options })) {
    text += c.text;
    tokens.push(...c.tokens);
    last = c;
  }
  return { text, tokens, last: last as Chunk };
}

const str = (maxLength: number, minLength = 0) => ({ type: "string", minLength, maxLength });

/** Every keyword the compiler claims, strings and arrays bounded so a random model finishes. */
const SCHEMAS: Record<string, object> = {
  nested: {
    type: "object",
    properties: {
      name: str(6, 1),
      age: { type: "integer" },
      score: { type: "number" },
      ok: { type: "boolean" },
      nothing: { type: "null" },
      address: {
        type: "object",
        properties: { city: str(5), zip: { type: "string", minLength: 3, maxLength: 3 } },
        required: ["city", "zip"],
        additionalProperties: false,
      },
    },
    required: ["name", "address", "ok"],
    additionalProperties: false,
  },
  arrays: {
    type: "object",
    properties: {
      tags: { type: "array", items: str(4), minItems: 2, maxItems: 4 },
      empty: { type: "array", items: { type: "integer" }, maxItems: 0 },
      grid: { type: "array", items: { type: "array", items: { type: "boolean" }, maxItems: 2 }, maxItems: 2 },
    },
    required: ["tags", "empty", "grid"],
    additionalProperties: false,
  },
  enums: {
    type: "object",
    properties: {
      color: { enum: ["red", "green", "blue"] },
      mixed: { enum: [1, "two", null, true, { k: [3] }] },
      fixed: { const: "v1" },
    },
    required: ["color", "mixed", "fixed"],
  },
  anyOf: {
    type: "array",
    minItems: 3,
    maxItems: 3,
    items: {
      anyOf: [
        { type: "integer" },
        str(3),
        { type: "object", properties: { x: { type: ["null", "boolean"] } }, required: ["x"] },
      ],
    },
  },
  oneOfFormats: {
    type: "object",
    properties: {
      when: { type: "string", format: "date" },
      at: { type: "string", format: "date-time" },
      id: { type: "string", format: "uuid" },
      v: { oneOf: [{ type: "integer" }, { type: "boolean" }] },
    },
    required: ["when", "at", "id", "v"],
  },
  refs: {
    $defs: {
      node: {
        type: "object",
        properties: { v: { type: "integer" }, next: { anyOf: [{ $ref: "#/$defs/node" }, { type: "null" }] } },
        required: ["v", "next"],
        additionalProperties: false,
      },
    },
    type: "object",
    properties: { head: { $ref: "#/$defs/node" }, label: str(3) },
    required: ["head"],
  },
};

describe("JSON schema -> constrained output", () => {
  const ajv = new Ajv({ strict: false });
  // ajv-formats is CommonJS: its default export arrives as the module object under NodeNext typing.
  const addFormats = ((formatsModule as unknown as { default?: unknown }).default ?? formatsModule) as (a: Ajv) => void;
  addFormats(ajv);
  const SEEDS = [1, 2, 3];

  it.each(Object.keys(SCHEMAS))("%s: every seed's output validates; unconstrained output does not", async (name) => {
    const schema = SCHEMAS[name];
    const validate = ajv.compile(schema);
    for (const seed of SEEDS) {
      const r = await run("Reply in JSON:", { jsonSchema: schema, seed });
      expect(r.last.finishReason, `${name} seed ${seed}: ${r.text}`).toBe("eos");
      const value = JSON.parse(r.text);
      expect(validate(value), `${name} seed ${seed}: ${r.text} ${ajv.errorsText(validate.errors)}`).toBe(true);
      const free = await run("Reply in JSON:", { seed, maxTokens: 40 });
      let parsed: unknown;
      try {
        parsed = JSON.parse(free.text);
      } catch {}
      expect(parsed !== undefined && validate(parsed), `unconstrained ${free.text}`).toBe(false);
    }
  });

  it("json: true gives a JSON object (and composes with logitBias)", async () => {
    // A random model's free strings rarely close: favor the closing tokens with logitBias so most
    // objects complete within maxTokens; what completes must parse as an object.
    const logitBias: Record<number, number> = {};
    for (let id = 0; id < model.tokenizer.nVocab; id++) {
      const b = model.tokenizer.tokenBytes(id);
      if (b.length === 1 && (b[0] === 0x22 || b[0] === 0x7d)) logitBias[id] = 6;
    }
    expect(Object.keys(logitBias).length).toBe(2);
    let complete = 0;
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const r = await run("{", { json: true, seed, maxTokens: 120, logitBias });
      expect(r.text.startsWith("{")).toBe(true);
      if (r.last.finishReason !== "eos") continue;
      complete++;
      const v = JSON.parse(r.text);
      expect(typeof v === "object" && v !== null && !Array.isArray(v)).toBe(true);
    }
    expect(complete).toBeGreaterThan(0);
  });
});

describe("GBNF grammars", () => {
  it("a grammar's language holds for sampled output", async () => {
    const grammar = 'root ::= ("yes" | "no") " " [0-9]{1,3} ("," [a-c]{2})*  "."\n';
    for (const seed of [1, 2, 3, 4]) {
      const r = await run("Q:", { grammar, seed, maxTokens: 60 });
      expect(r.last.finishReason).toBe("eos");
      expect(r.text).toMatch(/^(yes|no) [0-9]{1,3}(,[a-c]{2})*\.$/);
    }
  });

  it("batched equals solo under a grammar (the mask depends only on the sequence's own state)", async () => {
    const opts = (seed: number) => ({ jsonSchema: SCHEMAS.nested, seed, maxTokens: 200 });
    const solo: number[][] = [];
    for (let i = 0; i < 6; i++) solo.push((await run(`p${i}`, opts(10 + i))).tokens);
    const together = await Promise.all(Array.from({ length: 6 }, (_, i) => run(`p${i}`, opts(10 + i))));
    expect(together.map((r) => r.tokens)).toEqual(solo);
    expect(model.stats().maxBatchSequencesSeen).toBeGreaterThan(1);
  });

  it("a cold and a warm shared mask cache give the same tokens (long bounded strings, batched first)", async () => {
    // maxLength 120 expands into 120 generated rules per string; requests of one grammar share
    // masks, first computed by the batch (cold, walked in parallel), then served to the solo runs.
    const schema = {
      type: "object",
      properties: { a: str(120, 40), b: { type: "array", items: str(120), maxItems: 3 } },
      required: ["a", "b"],
    };
    const opts = (seed: number) => ({ jsonSchema: schema, seed, maxTokens: 120 });
    const together = await Promise.all(Array.from({ length: 4 }, (_, i) => run(`q${i}`, opts(40 + i))));
    const solo: number[][] = [];
    for (let i = 0; i < 4; i++) solo.push((await run(`q${i}`, opts(40 + i))).tokens);
    expect(together.map((r) => r.tokens)).toEqual(solo);
    expect(solo.every((t) => t.length > 10)).toBe(true);
  });

  it("bad grammars and unsupported schemas are typed errors naming the problem", async () => {
    const fail = async (options: object) => {
      try {
        await run("x", options);
      } catch (e) {
        return e as LlmserveError;
      }
      throw new Error("expected an error");
    };
    let e = await fail({ grammar: 'root ::= root "a"\n' });
    expect(e.code).toBe("ERR_GRAMMAR");
    expect(e.message).toMatch(/left-recursive/);
    e = await fail({ grammar: "root ::= undefined-rule\n" });
    expect(e.code).toBe("ERR_GRAMMAR");
    expect(e.message).toMatch(/undefined-rule/);
    e = await fail({ jsonSchema: { type: "string", pattern: "^a+$" } });
    expect(e.code).toBe("ERR_GRAMMAR");
    expect(e.message).toMatch(/pattern/);
    e = await fail({ jsonSchema: { type: "object", properties: { a: { $ref: "#/$defs/missing" } } } });
    expect(e.message).toMatch(/points to nothing/);
    e = await fail({ grammar: 'root ::= "a"', json: true });
    expect(e.code).toBe("ERR_INVALID_ARGUMENT");
  });
});
