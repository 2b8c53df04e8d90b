/**
 * Every user error is an OpenAI error object with the right status (never 500): 400 bad params,
 * 401 API key, 404 unknown model / route, 400 context_length_exceeded, 429 queue full.
 */
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model } from "../../lib/index.js";
import { createServer } from "../../lib/server/index.js";
import { synthModel } from "../helpers.js";

let path: string;
let model: Model;
let app: FastifyInstance;
let base: string;
const MODEL = "tiny";
const KEY = "sk-test-123";

async function listen(a: FastifyInstance): Promise<string> {
  await a.listen({ port: 0, host: "127.0.0.1" });
  const addr = a.server.address();
  if (addr === null || typeof addr === "string") throw new Error("no TCP address");
  return `http://127.0.0.1:${addr.port}`;
}

function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

async function expectError(
  r: Response | Promise<Response>,
  status: number,
  match: { code?: string | null; type?: string; param?: string | null; message?: RegExp } = {},
) {
  const res = await r;
  const text = await res.text();
  expect(res.status, text).toBe(status);
  const body = JSON.parse(text) as {
    error: { message: string; type: string; code: string | null; param: string | null };
  };
  expect(Object.keys(body)).toEqual(["error"]);
  expect(Object.keys(body.error).sort()).toEqual(["code", "message", "param", "type"]);
  expect(body.error.message.length).toBeGreaterThan(0);
  if (match.code !== undefined) expect(body.error.code).toBe(match.code);
  if (match.type !== undefined) expect(body.error.type).toBe(match.type);
  if (match.param !== undefined) expect(body.error.param).toBe(match.param);
  if (match.message) expect(body.error.message).toMatch(match.message);
  return body.error;
}

const chat = { model: MODEL, messages: [{ role: "user", content: "Hi" }], max_tokens: 4, temperature: 0 };

beforeAll(async () => {
  path = await synthModel("server-errors", { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocabSize: 512 });
  model = await Model.load(path, { threads: 2, contextSize: 256, kvCacheTokens: 4096 });
  app = createServer(model, { modelName: MODEL, chatTemplate: "chatml", defaultMetrics: false });
  base = await listen(app);
});

afterAll(async () => {
  await app?.close();
  await model?.dispose();
});

describe("400: invalid parameters", () => {
  it.each([
    ["temperature above 2", { ...chat, temperature: 3 }, "temperature"],
    ["temperature as a string", { ...chat, temperature: "0.5" }, "temperature"],
    ["top_p above 1", { ...chat, top_p: 1.5 }, "top_p"],
    ["negative max_tokens", { ...chat, max_tokens: -1 }, "max_tokens"],
    ["fractional max_tokens", { ...chat, max_tokens: 1.5 }, "max_tokens"],
    ["n = 0", { ...chat, n: 0 }, "n"],
    ["presence_penalty out of range", { ...chat, presence_penalty: 5 }, "presence_penalty"],
    ["stop as a number", { ...chat, stop: 5 }, "stop"],
    ["stop with a number", { ...chat, stop: ["a", 5] }, "stop"],
    ["top_logprobs above 20", { ...chat, logprobs: true, top_logprobs: 21 }, "top_logprobs"],
    ["missing messages", { model: MODEL }, "messages"],
    ["empty messages", { ...chat, messages: [] }, "messages"],
    ["message without role", { ...chat, messages: [{ content: "x" }] }, "messages[0].role"],
    ["unknown role", { ...chat, messages: [{ role: "wizard", content: "x" }] }, "messages[0].role"],
    ["content as a number", { ...chat, messages: [{ role: "user", content: 7 }] }, "messages[0].content"],
    ["stream as a string", { ...chat, stream: "yes" }, "stream"],
  ])("chat: %s", async (_name, body, param) => {
    await expectError(post(`${base}/v1/chat/completions`, body), 400, { type: "invalid_request_error", param });
  });

  it.each([
    ["missing prompt", { model: MODEL }, "prompt"],
    ["prompt as an object", { model: MODEL, prompt: { a: 1 } }, "prompt"],
    ["empty prompt list", { model: MODEL, prompt: [] }, "prompt"],
    ["logprobs as a boolean", { model: MODEL, prompt: "x", logprobs: true }, "logprobs"],
    ["logprobs above 20", { model: MODEL, prompt: "x", logprobs: 50 }, "logprobs"],
  ])("completions: %s", async (_name, body, param) => {
    await expectError(post(`${base}/v1/completions`, body), 400, { type: "invalid_request_error", param });
  });

  it("token ids outside the vocabulary", async () => {
    await expectError(post(`${base}/v1/completions`, { model: MODEL, prompt: [1, 999999], max_tokens: 2 }), 400, {
      param: "prompt",
      message: /outside the vocabulary/,
    });
  });

  it("malformed JSON, empty body, wrong content type", async () => {
    await expectError(post(`${base}/v1/chat/completions`, "{not json"), 400, { type: "invalid_request_error" });
    await expectError(
      fetch(`${base}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" } }),
      400,
    );
    await expectError(
      fetch(`${base}/v1/chat/completions`, { method: "POST", headers: { "content-type": "text/plain" }, body: "hi" }),
      400,
    );
    await expectError(
      fetch(`${base}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/xml" },
        body: "<a/>",
      }),
      415,
    );
  });

  it("a chat template that rejects the conversation is a 400, not a 500", async () => {
    const strict = createServer(model, {
      modelName: MODEL,
      chatTemplate: "{{ raise_exception('roles must alternate') }}",
      defaultMetrics: false,
    });
    try {
      const r = await strict.inject({ method: "POST", url: "/v1/chat/completions", payload: chat });
      expect(r.statusCode).toBe(400);
      expect(r.json().error.message).toMatch(/roles must alternate/);
    } finally {
      await strict.close();
    }
  });

  it("unsupported features in their 'off' forms are accepted (200); an unknown parameter is a 400 naming it", async () => {
    const r = await post(`${base}/v1/chat/completions`, {
      ...chat,
      response_format: { type: "text" },
      tool_choice: "none",
      parallel_tool_calls: false,
    });
    expect(r.status).toBe(200);
    expect(((await r.json()) as { choices: unknown[] }).choices).toHaveLength(1);
    await expectError(post(`${base}/v1/chat/completions`, { ...chat, whatever: 1 }), 400, {
      code: "unknown_parameter",
      param: "whatever",
    });
  });
});

describe("400: context_length_exceeded", () => {
  it("a token prompt as long as the context", async () => {
    const ids = Array.from({ length: 256 }, (_, i) => 3 + (i % 500));
    await expectError(post(`${base}/v1/completions`, { model: MODEL, prompt: ids, max_tokens: 2 }), 400, {
      code: "context_length_exceeded",
      param: "prompt",
      message: /maximum context length is 256 tokens/,
    });
  });

  it("a chat conversation longer than the context (streaming too: no SSE is started)", async () => {
    const long = "word ".repeat(400);
    await expectError(
      post(`${base}/v1/chat/completions`, { ...chat, messages: [{ role: "user", content: long }] }),
      400,
      { code: "context_length_exceeded", param: "messages" },
    );
    await expectError(
      post(`${base}/v1/chat/completions`, { ...chat, stream: true, messages: [{ role: "user", content: long }] }),
      400,
      { code: "context_length_exceeded" },
    );
  });

  it("a prompt that fits but asks for more tokens than remain is clamped, not refused", async () => {
    const ids = Array.from({ length: 250 }, (_, i) => 3 + (i % 500));
    const r = await post(`${base}/v1/completions`, {
      model: MODEL,
      prompt: ids,
      max_tokens: 100,
      temperature: 0,
      ignore_eos: true,
    });
    expect(r.status).toBe(200);
    const body = (await r.json()) as { usage: { completion_tokens: number }; choices: { finish_reason: string }[] };
    expect(body.usage.completion_tokens).toBeLessThanOrEqual(6);
    expect(body.choices[0].finish_reason).toBe("length");
  });
});

describe("404", () => {
  it("unknown model", async () => {
    await expectError(post(`${base}/v1/chat/completions`, { ...chat, model: "gpt-4o" }), 404, {
      code: "model_not_found",
      param: "model",
      message: /gpt-4o/,
    });
    await expectError(post(`${base}/v1/completions`, { model: "nope", prompt: "x" }), 404, { code: "model_not_found" });
    await expectError(fetch(`${base}/v1/models/nope`), 404, { code: "model_not_found" });
  });

  it("unknown route", async () => {
    await expectError(fetch(`${base}/v1/audio/speech`, { method: "POST" }), 404);
    await expectError(fetch(`${base}/nope`), 404);
  });

  it("model may be omitted", async () => {
    const r = await post(`${base}/v1/completions`, { prompt: "Hello", max_tokens: 2 });
    expect(r.status).toBe(200);
  });
});

describe("401: API key", () => {
  let keyed: FastifyInstance;
  let url: string;
  beforeAll(async () => {
    keyed = createServer(model, { modelName: MODEL, apiKey: KEY, defaultMetrics: false });
    url = await listen(keyed);
  });
  afterAll(async () => {
    await keyed?.close();
  });

  it("missing or wrong key is refused on /v1/*", async () => {
    await expectError(post(`${url}/v1/chat/completions`, chat), 401, { code: "invalid_api_key" });
    await expectError(post(`${url}/v1/chat/completions`, chat, { authorization: "Bearer wrong" }), 401, {
      code: "invalid_api_key",
      message: /Incorrect API key/,
    });
    await expectError(post(`${url}/v1/chat/completions`, chat, { authorization: KEY }), 401);
    await expectError(fetch(`${url}/v1/models`), 401);
  });

  it("the right key works; health stays open, metrics need the key (see auth.test.ts)", async () => {
    const r = await post(`${url}/v1/chat/completions`, chat, { authorization: `Bearer ${KEY}` });
    expect(r.status).toBe(200);
    expect((await fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${KEY}` } })).status).toBe(200);
    expect((await fetch(`${url}/health`)).status).toBe(200);
    expect((await fetch(`${url}/metrics`)).status).toBe(401);
    expect((await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${KEY}` } })).status).toBe(200);
  });
});

describe("429: queue full", () => {
  /** Opens a streaming request and resolves once its first token has arrived (so it is running). */
  async function openStream(url: string, ac: AbortController) {
    const r = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      signal: ac.signal,
      body: JSON.stringify({ prompt: "Hello", max_tokens: 4000, temperature: 0, ignore_eos: true, stream: true }),
    });
    expect(r.status).toBe(200);
    const reader = r.body!.getReader();
    await reader.read();
    return reader;
  }

  it("the engine's queue (ERR_QUEUE_FULL from generate) gives 429 with retry-after", async () => {
    const small = await Model.load(path, {
      threads: 2,
      contextSize: 8192,
      kvCacheTokens: 16384,
      maxSequences: 1,
      maxQueue: 1,
    });
    const srv = createServer(small, { modelName: MODEL, defaultMetrics: false });
    const url = await listen(srv);
    const ac = new AbortController();
    try {
      const reader = await openStream(url, ac); // runs (the only sequence slot)
      const waiting = post(`${url}/v1/completions`, { prompt: "Hi", max_tokens: 2 }); // queues (the only queue slot)
      const t0 = Date.now();
      while (small.stats().waiting < 1 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 5));
      expect(small.stats().waiting).toBe(1);
      const r = await post(`${url}/v1/chat/completions`, chat);
      expect(r.headers.get("retry-after")).toBe("1");
      await expectError(r, 429, { code: "queue_full", type: "rate_limit_error" });
      ac.abort();
      await reader.cancel().catch(() => {});
      expect((await waiting).status).toBe(200); // the queued one runs once the stream is gone
    } finally {
      ac.abort();
      await srv.close();
      await small.dispose();
    }
  });

  it("the server's maxQueue (sequences beyond the engine's slots) gives 429 at once", async () => {
    const small = await Model.load(path, { threads: 2, contextSize: 8192, kvCacheTokens: 16384, maxSequences: 1 });
    const srv = createServer(small, { modelName: MODEL, maxQueue: 0, defaultMetrics: false });
    const url = await listen(srv);
    const ac = new AbortController();
    try {
      // More sequences than the server ever admits is not "busy, retry later" but a request to change.
      await expectError(post(`${url}/v1/chat/completions`, { ...chat, n: 2 }), 400, {
        code: "invalid_value",
        param: "n",
        message: /needs 2 sequences/,
      });
      const reader = await openStream(url, ac);
      await expectError(post(`${url}/v1/chat/completions`, chat), 429, { code: "queue_full" });
      ac.abort();
      await reader.cancel().catch(() => {});
      // Once the stream is gone the slot is free again.
      const t0 = Date.now();
      let status = 0;
      while (Date.now() - t0 < 5000) {
        status = (await post(`${url}/v1/chat/completions`, chat)).status;
        if (status === 200) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(status).toBe(200);
    } finally {
      ac.abort();
      await srv.close();
      await small.dispose();
    }
  });
});
