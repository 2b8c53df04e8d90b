/**
 * LoRA adapters over HTTP under maxAdapters: every registered adapter is served (and listed) whether
 * resident or not, a request for an evicted one reloads it and answers the library's text, the
 * adapter gauges and counters in /metrics equal stats(), and an adapter whose file was deleted is a
 * 500 `adapter_unavailable` (before anything is streamed), not a hang.
 */
import type { FastifyInstance } from "fastify";
import { copyFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model, synthLora } from "../../lib/index.js";
import { createServer } from "../../lib/server/index.js";
import { synthModel, tmpRoot } from "../helpers.js";

let model: Model;
let app: FastifyInstance;
let base: string;
let copy: string;
const MODEL = "tiny";

beforeAll(async () => {
  const path = await synthModel("server-lora", { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocabSize: 400 });
  model = await Model.load(path, { threads: 1, contextSize: 256, maxAdapters: 1 });
  for (const [name, seed] of [
    ["sql", 1],
    ["poet", 2],
    ["gone", 3],
  ] as const) {
    const p = join(tmpRoot, `server-lora-lru-${name}-${process.pid}.gguf`);
    await synthLora(path, p, { rank: 4, seed });
    if (name === "gone") copy = p;
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

/** The value of an unlabelled metric in a Prometheus text exposition. */
function metric(body: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(body);
  if (!m) throw new Error(`${name} not in /metrics`);
  return Number(m[1]);
}

describe("LoRA adapters over HTTP with maxAdapters 1", () => {
  it("serves evicted adapters (reloaded per request) with the library's text; /metrics counts it", async () => {
    const list = (await (await fetch(`${base}/v1/models`)).json()) as { data: { id: string }[] };
    expect(list.data.map((m) => m.id)).toEqual([MODEL, "sql", "poet", "gone"]);
    expect(model.adapters().map((a) => a.resident)).toEqual([false, false, true]);
    const lib: Record<string, string> = {};
    for (const name of ["sql", "poet"]) {
      lib[name] = (
        await model.complete("Once upon a time", { maxTokens: 12, temperature: 0, stopAtEos: false, adapter: name })
      ).text;
    }
    expect(lib.sql).not.toBe(lib.poet);
    const loads0 = model.stats().adapterLoads;
    for (const name of ["sql", "poet", "sql", "poet"]) {
      const r = await complete({ model: name });
      expect(r.status).toBe(200);
      expect(((await r.json()) as { choices: { text: string }[] }).choices[0].text).toBe(lib[name]);
      expect(model.adapters().find((a) => a.name === name)?.resident).toBe(true);
    }
    const s = model.stats();
    expect(s.adapterLoads).toBe(loads0 + 4); // each request found the other adapter resident
    const body = await (await fetch(`${base}/metrics`)).text();
    expect(metric(body, "llmserve_adapters_registered")).toBe(3);
    expect(metric(body, "llmserve_adapters_resident")).toBe(1);
    expect(metric(body, "llmserve_adapter_bytes")).toBe(s.adapterBytes);
    expect(s.adapterBytes).toBeGreaterThan(0);
    expect(metric(body, "llmserve_adapter_loads_total")).toBe(s.adapterLoads);
    expect(metric(body, "llmserve_adapter_evictions_total")).toBe(s.adapterEvictions);
    // 3 loadAdapter + 2 library + 4 HTTP reloads; every load but the first evicted one.
    expect(s.adapterLoads).toBe(9);
    expect(s.adapterEvictions).toBe(8);
    // A counter only moves forward between scrapes.
    await complete({ model: "sql" });
    const again = await (await fetch(`${base}/metrics`)).text();
    expect(metric(again, "llmserve_adapter_loads_total")).toBe(10);
    expect(metric(again, "llmserve_adapter_evictions_total")).toBe(9);
  });

  it("an evicted adapter whose file was deleted is a 500 adapter_unavailable, streamed or not", async () => {
    expect(model.adapters().find((a) => a.name === "gone")?.resident).toBe(false);
    rmSync(copy);
    try {
      for (const stream of [false, true]) {
        const r = await complete({ model: "gone", stream });
        expect(r.status).toBe(500);
        const e = ((await r.json()) as { error: { code: string; type: string; message: string } }).error;
        expect(e).toMatchObject({ code: "adapter_unavailable", type: "server_error" });
        expect(e.message).toContain('Cannot reload the LoRA adapter "gone"');
      }
      // The other adapters and the base model are unaffected.
      expect((await complete({ model: "sql" })).status).toBe(200);
      expect((await complete({})).status).toBe(200);
    } finally {
      copyFileSync(join(tmpRoot, `server-lora-lru-poet-${process.pid}.gguf`), copy);
    }
  });
});
