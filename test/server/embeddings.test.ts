/**
 * POST /v1/embeddings (issue 16, part 3) through fastify's inject: OpenAI's response shape, the
 * library's vectors (float and base64 alike, base64 being little-endian float32), usage counting
 * every input's tokens (BOS included), token-array inputs, the API key, and 400s for bad inputs
 * and for `dimensions` other than n_embd.
 */
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model } from "../../lib/index.js";
import { createServer } from "../../lib/server/index.js";
import { synthModel } from "../helpers.js";

let model: Model;
let app: FastifyInstance;
const URL = "/v1/embeddings";

beforeAll(async () => {
  const path = await synthModel("server-embed", { dim: 32, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocabSize: 512 });
  model = await Model.load(path, { threads: 1, contextSize: 128, kvCacheTokens: 1024 });
  app = createServer(model, { modelName: "tiny", apiKey: "k", defaultMetrics: false });
  await app.ready();
});
afterAll(async () => {
  await app?.close();
  await model?.dispose();
});

interface Body {
  object: string;
  model: string;
  data: { object: string; index: number; embedding: number[] | string }[];
  usage: { prompt_tokens: number; total_tokens: number };
  error: { message: string; code: string | null; param: string | null };
}

async function post(body: object, key = "k") {
  const r = await app.inject({
    method: "POST",
    url: URL,
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    payload: JSON.stringify(body),
  });
  return { status: r.statusCode, body: r.json() as Body };
}

function fromBase64(s: string): Float32Array {
  const b = Buffer.from(s, "base64");
  const out = new Float32Array(b.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = b.readFloatLE(i * 4);
  return out;
}

describe("POST /v1/embeddings", () => {
  it("returns OpenAI's list shape with the library's vectors and token usage", async () => {
    const texts = ["hello world", "a second, longer sentence"];
    const r = await post({ model: "tiny", input: texts });
    expect(r.status).toBe(200);
    expect(r.body.object).toBe("list");
    expect(r.body.model).toBe("tiny");
    const want = await model.embed(texts);
    expect(r.body.data.map((d) => [d.object, d.index])).toEqual([
      ["embedding", 0],
      ["embedding", 1],
    ]);
    for (const [i, d] of r.body.data.entries()) expect(d.embedding).toEqual(Array.from(want[i]));
    const n = texts.reduce((s, t) => s + model.tokenize(t, { parseSpecial: false }).length, 0);
    expect(r.body.usage).toEqual({ prompt_tokens: n, total_tokens: n });
  });

  it("base64 is the little-endian float32 bytes of the same vector", async () => {
    const f = await post({ input: "base64 please" });
    const b = await post({ input: "base64 please", encoding_format: "base64" });
    expect(b.status).toBe(200);
    const decoded = fromBase64(b.body.data[0].embedding as string);
    expect(decoded.length).toBe(model.info.nEmbd);
    expect(Array.from(decoded)).toEqual(f.body.data[0].embedding);
  });

  it("takes token arrays, one or many", async () => {
    const t = model.tokenize("some tokens");
    const one = await post({ input: t });
    const many = await post({ input: [t, t] });
    expect(one.status).toBe(200);
    expect(one.body.usage.prompt_tokens).toBe(t.length);
    expect(many.body.data.length).toBe(2);
    expect(many.body.data[1].embedding).toEqual(one.body.data[0].embedding);
    expect(one.body.data[0].embedding).toEqual(Array.from((await model.embed("some tokens"))[0]));
  });

  it("accepts dimensions equal to n_embd and refuses any other value", async () => {
    expect((await post({ input: "x", dimensions: model.info.nEmbd })).status).toBe(200);
    const r = await post({ input: "x", dimensions: 8 });
    expect(r.status).toBe(400);
    expect(r.body.error.param).toBe("dimensions");
    expect(r.body.error.message).toContain(String(model.info.nEmbd));
  });

  it("answers 400 for bad inputs, 404 for an unknown model, 401 without the key", async () => {
    for (const input of ["", [], ["ok", ""], [[]], [1.5], [[model.info.nVocab + 5]], [-1], 42, null]) {
      const r = await post({ input });
      expect(r.status, JSON.stringify(input)).toBe(400);
      expect(r.body.error.message.length).toBeGreaterThan(0);
    }
    expect((await post({})).status).toBe(400);
    expect((await post({ input: "x", encoding_format: "int8" })).status).toBe(400);
    const long = await post({ input: new Array(200).fill(5) }); // more tokens than the context (128)
    expect(long.status).toBe(400);
    expect([long.body.error.code, long.body.error.param]).toEqual(["context_length_exceeded", "input"]);
    expect((await post({ input: "x", model: "nope" })).status).toBe(404);
    expect((await post({ input: "x" }, "wrong")).status).toBe(401);
  });
});
