/**
 * Server behaviour under load and at the edges of a request's life: a client that disconnects
 * mid-stream frees its sequence at once, 32 concurrent clients are batched, shutdown drains streams.
 */
import OpenAI from "openai";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model } from "../../lib/index.js";
import { createServer } from "../../lib/server/index.js";
import { synthModel, until } from "../helpers.js";

let path: string;
let model: Model;
let app: FastifyInstance;
let base: string;
const MODEL = "tiny";

async function listen(a: FastifyInstance): Promise<string> {
  await a.listen({ port: 0, host: "127.0.0.1" });
  const addr = a.server.address();
  if (addr === null || typeof addr === "string") throw new Error("no TCP address");
  return `http://127.0.0.1:${addr.port}`;
}

/** Starts a long streaming completion; resolves after `chunks` SSE reads. */
async function longStream(url: string, signal: AbortSignal, chunks = 3) {
  const r = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    signal,
    body: JSON.stringify({
      messages: [{ role: "user", content: "Tell me a long story." }],
      max_tokens: 6000,
      temperature: 0.8,
      seed: 1,
      ignore_eos: true,
      stream: true,
    }),
  });
  expect(r.status).toBe(200);
  expect(r.headers.get("content-type")).toMatch(/^text\/event-stream/);
  const reader = r.body!.getReader();
  for (let i = 0; i < chunks; i++) await reader.read();
  return reader;
}

beforeAll(async () => {
  path = await synthModel("server-life", {
    dim: 64,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    ffn: 128,
    vocabSize: 512,
    context: 8192,
  });
  model = await Model.load(path, { threads: 2, contextSize: 8192, kvCacheTokens: 16384, maxBatchTokens: 256 });
  app = createServer(model, { modelName: MODEL, chatTemplate: "chatml", defaultMetrics: false });
  base = await listen(app);
});

afterAll(async () => {
  await app?.close();
  await model?.dispose();
});

describe("client disconnect", () => {
  it("aborting a stream mid-way cancels its engine request and frees its KV blocks", async () => {
    const before = model.stats();
    const ac = new AbortController();
    const reader = await longStream(base, ac.signal);
    expect(model.stats().running).toBe(1);
    expect(model.stats().blocksUsed).toBeGreaterThan(0);
    ac.abort();
    await reader.cancel().catch(() => {});
    expect(await until(() => model.stats().running === 0 && model.stats().blocksUsed === 0, 3000)).toBe(true);
    const after = model.stats();
    expect(after.aborted).toBe(before.aborted + 1); // cancelled, not finished
    expect(after.generatedTokens - before.generatedTokens).toBeLessThan(6000);
    expect(await until(() => app.llmserve.inFlight === 0, 3000)).toBe(true); // the handler has finished too
  });

  it("a client that drops a non-streaming request also cancels it", async () => {
    const before = model.stats();
    const ac = new AbortController();
    const p = fetch(`${base}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      signal: ac.signal,
      body: JSON.stringify({ prompt: "Hello", max_tokens: 6000, ignore_eos: true }),
    }).catch((e: unknown) => e);
    expect(await until(() => model.stats().running === 1, 3000)).toBe(true);
    ac.abort();
    await p;
    expect(await until(() => model.stats().running === 0 && model.stats().blocksUsed === 0, 3000)).toBe(true);
    expect(model.stats().aborted).toBe(before.aborted + 1);
  });
});

describe("concurrency", () => {
  it("32 clients at once all complete, and the engine batched them", async () => {
    expect(model.stats().maxBatchSequencesSeen).toBeLessThanOrEqual(1); // the earlier tests ran one sequence at a time
    const client = new OpenAI({ apiKey: "unused", baseURL: `${base}/v1`, maxRetries: 0, timeout: 60_000 });
    const results = await Promise.all(
      Array.from({ length: 32 }, async (_, i) => {
        if (i % 2 === 0) {
          const r = await client.chat.completions.create({
            model: MODEL,
            messages: [{ role: "user", content: `Client ${i} says hi` }],
            max_tokens: 24,
            temperature: 0.7,
            seed: i,
          });
          return { text: r.choices[0].message.content ?? "", tokens: r.usage!.completion_tokens };
        }
        const stream = await client.completions.create({
          model: MODEL,
          prompt: `Client ${i}:`,
          max_tokens: 24,
          temperature: 0.7,
          seed: i,
          stream: true,
        });
        let text = "";
        for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
        return { text, tokens: -1 };
      }),
    );
    expect(results).toHaveLength(32);
    for (const r of results) expect(typeof r.text).toBe("string");
    expect(results.filter((r) => r.tokens > 0).every((r) => r.tokens <= 24)).toBe(true);
    const s = model.stats();
    expect(s.maxBatchSequencesSeen).toBeGreaterThan(1);
    expect(s.running).toBe(0);
    expect(s.blocksUsed).toBe(0);
  });
});

describe("graceful shutdown", () => {
  it("stops accepting, cancels a stream still running at the timeout (which still ends with [DONE]), then closes", async () => {
    const m = await Model.load(path, { threads: 2, contextSize: 8192, kvCacheTokens: 16384 });
    const srv = createServer(m, { modelName: MODEL, chatTemplate: "chatml", defaultMetrics: false });
    const url = await listen(srv);
    const ac = new AbortController();
    try {
      const reader = await longStream(url, ac.signal);
      let body = "";
      const decoder = new TextDecoder();
      const readAll = (async () => {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return;
          body += decoder.decode(value, { stream: true });
        }
      })();
      const t0 = Date.now();
      const closing = srv.llmserve.shutdown({ timeoutMs: 300 });
      // New connections are refused while the stream drains.
      await expect(fetch(`${url}/health`)).rejects.toThrow();
      await closing;
      await readAll;
      expect(Date.now() - t0).toBeLessThan(5000);
      // The stream was cancelled at the timeout and still ended properly.
      expect(body).toMatch(/"finish_reason":"cancelled"/); // not "length": max_tokens was not reached
      expect(body.trimEnd().endsWith("data: [DONE]")).toBe(true);
      expect(m.stats().running).toBe(0);
      expect(m.stats().aborted).toBe(1);
    } finally {
      ac.abort();
      await srv.close().catch(() => {});
      await m.dispose();
    }
  });

  it("a stream that ends within the timeout is not cancelled; the model can be disposed", async () => {
    const m = await Model.load(path, { threads: 2, contextSize: 8192, kvCacheTokens: 16384 });
    const srv = createServer(m, { modelName: MODEL, chatTemplate: "chatml", defaultMetrics: false });
    const url = await listen(srv);
    try {
      const r = fetch(`${url}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          prompt: "Hi",
          max_tokens: 200,
          ignore_eos: true,
          stream: true,
          stream_options: { include_usage: true },
        }),
      }).then((res) => res.text());
      await until(() => m.stats().running === 1, 3000);
      await srv.llmserve.shutdown({ timeoutMs: 10_000, disposeModel: true });
      const text = await r;
      expect(text.trimEnd().endsWith("data: [DONE]")).toBe(true);
      expect(text).toMatch(/"completion_tokens":200,/); // ran to its end
      expect(() => m.stats()).toThrow(/disposed/);
    } finally {
      await srv.close().catch(() => {});
      await m.dispose();
    }
  });
});
