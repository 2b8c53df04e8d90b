/**
 * LoRA adapters over HTTP: /v1/models lists the served model and each loaded adapter (with its
 * parent); a request's `model` field selects an adapter (greedy tokens equal the library's with
 * that adapter); an unknown name is a 404 OpenAI error listing what is served; an adapter
 * unloaded later is unknown from then on.
 */
import type { FastifyInstance } from "fastify";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model, synthLora } from "../../lib/index.js";
import { createServer } from "../../lib/server/index.js";
import { synthModel, tmpRoot } from "../helpers.js";

let model: Model;
let app: FastifyInstance;
let base: string;
const MODEL = "tiny";

beforeAll(async () => {
  const path = await synthModel("server-lora", { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocabSize: 400 });
  model = await Model.load(path, { threads: 1, contextSize: 256 });
  for (const [name, seed] of [
    ["sql", 1],
    ["poet", 2],
  ] as const) {
    const p = join(tmpRoot, `server-lora-${name}-${process.pid}.gguf`);
    await synthLora(path, p, { rank: 4, seed });
    await model.loadAdapter(name, p);
  }
  app = await createServer(model, { modelName: MODEL, logger: false });
  await app.listen({ port: 0, host: "127.0.0.1" });
  const addr = app.server.address();
  if (addr === null || typeof addr === "string") throw new Error("no TCP address");
  base = `http://127.0.0.1:${addr.port}`;
});
afterAll(async () => {
  await app?.close();
  await model?.dispose();
});

const complete = (body: Record<string, unknown>) =>
  fetch(`${base}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 12, temperature: 0, ignore_eos: true, ...body }),
  });

describe("LoRA adapters over HTTP", () => {
  it("/v1/models lists the model and its adapters; /v1/models/:id finds each", async () => {
    const list = (await (await fetch(`${base}/v1/models`)).json()) as { data: { id: string; parent?: string }[] };
    expect(list.data.map((m) => [m.id, m.parent])).toEqual([
      [MODEL, undefined],
      ["sql", MODEL],
      ["poet", MODEL],
    ]);
    expect(((await (await fetch(`${base}/v1/models/poet`)).json()) as { id: string }).id).toBe("poet");
    expect((await fetch(`${base}/v1/models/nope`)).status).toBe(404);
  });

  it("`model` selects an adapter: the same text as the library with it", async () => {
    const texts: Record<string, string> = {};
    for (const name of [MODEL, "sql", "poet"]) {
      const r = await complete({ model: name });
      expect(r.status).toBe(200);
      const body = (await r.json()) as { model: string; choices: { text: string }[] };
      expect(body.model).toBe(name);
      texts[name] = body.choices[0].text;
      const lib = await model.complete("Once upon a time", {
        maxTokens: 12,
        temperature: 0,
        stopAtEos: false,
        adapter: name === MODEL ? undefined : name,
      });
      expect(texts[name]).toBe(lib.text);
    }
    expect(new Set(Object.values(texts)).size).toBe(3);
    // No model field: the base model.
    expect(((await (await complete({})).json()) as { choices: { text: string }[] }).choices[0].text).toBe(texts[MODEL]);
  });

  it("an unknown model is a 404 listing the model and its adapters; an unloaded adapter is unknown", async () => {
    const r = await complete({ model: "nope" });
    expect(r.status).toBe(404);
    const e = ((await r.json()) as { error: { message: string; code: string; param: string; type: string } }).error;
    expect(e).toMatchObject({ code: "model_not_found", param: "model", type: "invalid_request_error" });
    expect(e.message).toBe(
      "The model `nope` does not exist. This server serves `tiny` and the adapters `sql`, `poet` (see GET /v1/models).",
    );
    model.unloadAdapter("poet");
    const gone = await complete({ model: "poet" });
    expect(gone.status).toBe(404);
    expect(((await gone.json()) as { error: { message: string } }).error.message).toContain("the adapters `sql` (");
  });
});
