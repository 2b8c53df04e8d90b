/**
 * Request semantics of the OpenAI server (issue 16, part 4) end to end on a random-weight model:
 * logit_bias changes what is generated, usage reports cached prompt tokens, unsupported fields and
 * image parts are 400s naming them, CORS headers only when enabled, llama-server's /tokenize and
 * /detokenize, random seeds unless one is given, and the README's client example as written.
 */
import type { FastifyInstance } from "fastify";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model } from "../../lib/index.js";
import { createServer } from "../../lib/server/index.js";
import { synthModel } from "../helpers.js";

let model: Model;
let app: FastifyInstance;
const CHAT = "/v1/chat/completions";
const COMPLETIONS = "/v1/completions";

beforeAll(async () => {
  const path = await synthModel("server-semantics", {
    dim: 32,
    layers: 1,
    heads: 2,
    kvHeads: 1,
    ffn: 64,
    vocabSize: 512,
  });
  model = await Model.load(path, { threads: 1, contextSize: 256, kvCacheTokens: 4096 });
  app = createServer(model, { modelName: "tiny", chatTemplate: "chatml", defaultMetrics: false });
  await app.ready();
});
afterAll(async () => {
  await app?.close();
  await model?.dispose();
});

type Body = Record<string, unknown> & {
  error: { message: string; type: string; code: string | null; param: string | null };
  choices: { text: string; finish_reason: string }[];
  usage: { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } };
};

async function post(url: string, body: object, a: FastifyInstance = app, headers: Record<string, string> = {}) {
  const r = await a.inject({
    method: "POST",
    url,
    headers: { "content-type": "application/json", ...headers },
    payload: JSON.stringify(body),
  });
  return { status: r.statusCode, body: r.json() as Body, headers: r.headers };
}

/** Generated text as the server streams it (the space prefix of a continuation kept). */
const textOf = (ids: number[]) => model.tokenizer.decode(ids, { stripLeadingSpace: false });

/** The greedy continuation of `prompt` as token ids, from the library. */
async function greedy(prompt: number[], n: number, extra: object = {}): Promise<number[]> {
  const r = await model.complete({ tokens: prompt }, { temperature: 0, maxTokens: n, stopAtEos: false, ...extra });
  return r.tokens;
}

describe("logit_bias", () => {
  it("-100 bans the greedy token, +100 forces another one, in the library and through the server", async () => {
    const prompt = [1, 40, 41, 42];
    const [first] = await greedy(prompt, 1);
    const banned = await greedy(prompt, 4, { logitBias: { [first]: -100 } });
    expect(banned[0]).not.toBe(first);
    expect(banned).not.toContain(first);
    const other = (first + 7) % 512;
    expect(await greedy(prompt, 4, { logitBias: { [other]: 100 } })).toEqual([other, other, other, other]);
    // Ids beyond the vocabulary are the engine's check (the library does not know the vocabulary).
    await expect(model.complete({ tokens: prompt }, { logitBias: { 512: 1 } })).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
      message: "Token id 512 in logitBias is outside the vocabulary [0, 512).",
    });
    // The bias is added to the logit: the runner-up wins just past the gap, not just short of it.
    const logits = await model.evaluate(prompt);
    const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
    expect(order[0]).toBe(first);
    const gap = logits[first] - logits[order[1]];
    expect(gap).toBeLessThan(99);
    expect((await greedy(prompt, 1, { logitBias: { [order[1]]: gap + 0.01 } }))[0]).toBe(order[1]);
    if (gap > 0.02) expect((await greedy(prompt, 1, { logitBias: { [order[1]]: gap - 0.01 } }))[0]).toBe(first);

    const base = { prompt, max_tokens: 4, temperature: 0, ignore_eos: true };
    const plain = await post(COMPLETIONS, base);
    const forced = await post(COMPLETIONS, { ...base, logit_bias: { [other]: 100 } });
    expect(forced.status).toBe(200);
    expect(forced.body.choices[0].text).toBe(textOf([other, other, other, other]));
    const ban = await post(COMPLETIONS, { ...base, logit_bias: { [first]: -100 } });
    expect(ban.body.choices[0].text).toBe(textOf(banned));
    expect(ban.body.choices[0].text).not.toBe(plain.body.choices[0].text);
  });

  it("bad logit_bias values are 400s naming the field", async () => {
    const base = { prompt: "Hi", max_tokens: 1 };
    const outside = await post(COMPLETIONS, { ...base, logit_bias: { 512: 1 } });
    expect([outside.status, outside.body.error.param]).toEqual([400, "logit_bias"]);
    expect(outside.body.error.message).toMatch(/token id 512 is outside the vocabulary \[0, 512\)/);
    const big = await post(COMPLETIONS, { ...base, logit_bias: { 5: 101 } });
    expect([big.status, big.body.error.param]).toEqual([400, "logit_bias[5]"]);
    const key = await post(CHAT, { messages: [{ role: "user", content: "x" }], logit_bias: { abc: 1 } });
    expect([key.status, key.body.error.param]).toEqual([400, "logit_bias"]);
  });
});

describe("usage.prompt_tokens_details.cached_tokens", () => {
  it("0 on a new prompt, the reused full blocks on a repeat (streaming too); stop strings keep it", async () => {
    const prompt = Array.from({ length: 40 }, (_, i) => 3 + ((i * 7) % 500)); // 2 full blocks of 16 + 8
    const body = { prompt, max_tokens: 2, temperature: 0, ignore_eos: true };
    const first = await post(COMPLETIONS, body);
    expect(first.body.usage.prompt_tokens_details).toEqual({ cached_tokens: 0 });
    const again = await post(COMPLETIONS, body);
    expect(again.body.usage.prompt_tokens).toBe(40);
    expect(again.body.usage.prompt_tokens_details.cached_tokens).toBe(32);
    const r = await app.inject({
      method: "POST",
      url: COMPLETIONS,
      headers: { "content-type": "application/json" },
      payload: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
    });
    const events = r.body
      .split("\n\n")
      .filter((e) => e.startsWith("data: {"))
      .map((e) => JSON.parse(e.slice(6)) as Body);
    expect(events[events.length - 1].usage.prompt_tokens_details.cached_tokens).toBe(32);
    // A stop string ends the request before the engine reports its timings: still counted.
    const text = (await post(COMPLETIONS, { ...body, max_tokens: 8 })).body.choices[0].text;
    expect(text.length).toBeGreaterThan(0);
    const stopped = await post(COMPLETIONS, { ...body, max_tokens: 8, stop: [text.slice(0, 1)] });
    expect(stopped.body.choices[0].finish_reason).toBe("stop");
    expect(stopped.body.usage.prompt_tokens_details.cached_tokens).toBe(32);
  });
});

describe("fields that are not supported are refused, not ignored", () => {
  it("unsupported response_format schemas, tools, images and unknown fields: 400 naming the field; their 'off' forms: 200", async () => {
    const messages = [{ role: "user", content: "Hi" }];
    const cases: [object, string][] = [
      // response_format is implemented (test/server/grammar.test.ts); what it cannot honor is refused.
      [
        {
          response_format: {
            type: "json_schema",
            json_schema: { name: "x", schema: { type: "string", format: "email" } },
          },
        },
        "response_format.json_schema.schema",
      ],
      // Tools on a template with no tool-call format (chatml here; test/server/tools.test.ts has the rest).
      [{ tools: [{ type: "function", function: { name: "f", parameters: {} } }] }, "tools"],
      [{ tool_choice: "required" }, "tool_choice"],
      [{ whatever: 1 }, "whatever"],
      [
        {
          messages: [
            {
              role: "user",
              content: [
                { type: "text", text: "what is it?" },
                { type: "image_url", image_url: { url: "https://example.com/a.png" } },
              ],
            },
          ],
        },
        "messages[0].content[1].type",
      ],
    ];
    for (const [extra, param] of cases) {
      const r = await post(CHAT, { messages, max_tokens: 1, ...extra });
      expect([r.status, r.body.error.type, r.body.error.param], param).toEqual([400, "invalid_request_error", param]);
    }
    const off = await post(CHAT, {
      messages,
      max_tokens: 1,
      response_format: { type: "text" },
      tools: [],
      tool_choice: "none",
    });
    expect(off.status).toBe(200);
    const suffix = await post(COMPLETIONS, { prompt: "Hi", max_tokens: 1, suffix: "end" });
    expect([suffix.status, suffix.body.error.param]).toEqual([400, "suffix"]);
  });
});

describe("seeds", () => {
  it("without a seed, sampling differs between calls; the reported seed reproduces a call", async () => {
    const prompt = { tokens: [1, 50, 60] };
    const opts = { temperature: 1.5, topK: 0, topP: 1, minP: 0, maxTokens: 24, stopAtEos: false };
    const a = await model.complete(prompt, opts);
    const b = await model.complete(prompt, opts);
    expect(a.seed).not.toBe(b.seed);
    expect(a.tokens).not.toEqual(b.tokens);
    const again = await model.complete(prompt, { ...opts, seed: a.seed });
    expect(again.tokens).toEqual(a.tokens);
    expect(again.seed).toBe(a.seed);
    // The server: the same without a seed, reproducible with one.
    const body = { prompt: [1, 50, 60], max_tokens: 24, temperature: 1.5, top_k: -1, ignore_eos: true };
    const texts = new Set<string>();
    for (let i = 0; i < 3; i++) texts.add((await post(COMPLETIONS, body)).body.choices[0].text);
    expect(texts.size).toBeGreaterThan(1);
    const s1 = (await post(COMPLETIONS, { ...body, seed: 11 })).body.choices[0].text;
    expect((await post(COMPLETIONS, { ...body, seed: 11 })).body.choices[0].text).toBe(s1);
  });
});

describe("CORS (off unless enabled)", () => {
  it("headers only when enabled; preflight answered without the API key; requests still need it", async () => {
    const origin = "https://app.example.com";
    const preflight = (a: FastifyInstance) =>
      a.inject({
        method: "OPTIONS",
        url: CHAT,
        headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization" },
      });
    const off = await app.inject({ method: "GET", url: "/v1/models", headers: { origin } });
    expect(off.statusCode).toBe(200);
    expect(off.headers["access-control-allow-origin"]).toBeUndefined();
    expect((await preflight(app)).headers["access-control-allow-origin"]).toBeUndefined();

    const on = createServer(model, { modelName: "tiny", defaultMetrics: false, apiKey: "k", cors: origin });
    try {
      await on.ready();
      const p = await preflight(on);
      expect(p.statusCode).toBe(204);
      expect(p.headers["access-control-allow-origin"]).toBe(origin);
      expect(String(p.headers["access-control-allow-methods"])).toMatch(/POST/);
      const denied = await on.inject({ method: "GET", url: "/v1/models", headers: { origin } });
      expect(denied.statusCode).toBe(401);
      expect(denied.headers["access-control-allow-origin"]).toBe(origin); // the page can read the error
      const ok = await on.inject({ method: "GET", url: "/v1/models", headers: { origin, authorization: "Bearer k" } });
      expect([ok.statusCode, ok.headers["access-control-allow-origin"]]).toEqual([200, origin]);
      const stranger = await on.inject({
        method: "GET",
        url: "/v1/models",
        headers: { origin: "https://evil.example", authorization: "Bearer k" },
      });
      expect(stranger.headers["access-control-allow-origin"]).toBeUndefined();
    } finally {
      await on.close();
    }
    expect(() => createServer(model, { cors: [] })).toThrow(/for cors/);
  });
});

describe("/tokenize and /detokenize (llama-server's shapes)", () => {
  it("tokenize: ids without BOS by default, with add_special, with pieces; detokenize renders them back", async () => {
    const content = "Hello world";
    const plain = await post("/tokenize", { content });
    expect(plain.status).toBe(200);
    const ids = model.tokenize(content, { addSpecial: false });
    expect(plain.body).toEqual({ tokens: ids });
    const bos = await post("/tokenize", { content, add_special: true });
    expect((bos.body.tokens as number[])[0]).toBe(model.tokenizer.bos);
    const special = (await post("/tokenize", { content: "</s>", parse_special: false })).body.tokens as number[];
    expect(special).not.toEqual([model.tokenizer.eos]);
    expect((await post("/tokenize", { content: "</s>" })).body.tokens).toEqual([model.tokenizer.eos]);
    const pieces = (await post("/tokenize", { content, with_pieces: true })).body.tokens as {
      id: number;
      piece: string | number[];
    }[];
    expect(pieces.map((p) => p.id)).toEqual(ids);
    const back = await post("/detokenize", { tokens: ids });
    expect(back.body).toEqual({ content: pieces.map((p) => p.piece).join("") });
    expect((back.body.content as string).trim()).toBe(content);
    const eos = await post("/detokenize", { tokens: [model.tokenizer.eos] });
    expect(eos.body.content).toBe("</s>");
    const bad = await post("/detokenize", { tokens: [1, 512] });
    expect([bad.status, bad.body.error.param]).toEqual([400, "tokens[1]"]);
    const missing = await post("/tokenize", {});
    expect([missing.status, missing.body.error.param]).toEqual([400, "content"]);
  });
});

describe("the README's client example works as written", () => {
  it("`new OpenAI({ baseURL, apiKey: 'KEY' })` + chat.completions.create({ model: 'model', ... })", async () => {
    // `llmserve serve -m model.gguf`: the model's id is the file name without .gguf.
    for (const apiKey of [undefined, "KEY"]) {
      const srv = createServer(model, { modelName: "model", defaultMetrics: false, chatTemplate: "chatml", apiKey });
      try {
        const url = await srv.listen({ port: 0, host: "127.0.0.1" });
        const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "KEY" });
        const r = await client.chat.completions.create({ model: "model", messages: [{ role: "user", content: "Hi" }] });
        expect(r.object).toBe("chat.completion");
        expect(typeof r.choices[0].message.content).toBe("string");
        expect(r.usage?.prompt_tokens_details?.cached_tokens).toBeGreaterThanOrEqual(0);
      } finally {
        await srv.close();
      }
    }
  });
});
