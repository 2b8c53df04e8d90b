/**
 * lib/server/openai.ts, request -> engine: what each request parameter becomes in the options the
 * engine gets (sampling, seeds per choice, stop strings and tokens, max tokens, logprobs), the token
 * prompts (strings, token ids, several prompts), the refusals before anything is generated, and the
 * response envelope (ids, created, echo offsets, usage in streams, latency metrics).
 */
import type { FastifyInstance } from "fastify";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { Model } from "../../lib/index.js";
import type { ResolvedOptions } from "../../lib/generate.js";
import { createServer } from "../../lib/server/index.js";
import { ApiError } from "../../lib/server/errors.js";
import { finishReasonOf, handleGeneration, type EndpointContext } from "../../lib/server/openai.js";
import { synthModel } from "../helpers.js";

let model: Model;
let app: FastifyInstance;
const MODEL = "tiny";
const CTX = 256;
const CHAT = "/v1/chat/completions";
const COMPLETIONS = "/v1/completions";
const user = [{ role: "user", content: "Hi" }];

beforeAll(async () => {
  const path = await synthModel("server-openai-options", {
    dim: 32,
    layers: 1,
    heads: 2,
    kvHeads: 1,
    ffn: 64,
    vocabSize: 512,
  });
  model = await Model.load(path, { threads: 1, contextSize: CTX, kvCacheTokens: 4096 });
  app = createServer(model, { modelName: MODEL, chatTemplate: "chatml", defaultMetrics: false });
  await app.ready();
});
afterAll(async () => {
  await app?.close();
  await model?.dispose();
});
afterEach(() => {
  vi.restoreAllMocks();
});

type Err = { error: { message: string; type: string; code: string | null; param: string | null } };

async function post(url: string, body: object) {
  const r = await app.inject({
    method: "POST",
    url,
    headers: { "content-type": "application/json" },
    payload: JSON.stringify(body),
  });
  return { status: r.statusCode, json: () => r.json() as Record<string, unknown> & Err, text: r.body };
}

/** Runs a request and returns what model.startSubmitted was called with, one entry per choice. */
async function starts(url: string, body: object): Promise<{ tokens: number[]; opts: ResolvedOptions }[]> {
  const spy = vi.spyOn(model, "startSubmitted");
  const r = await post(url, body);
  expect(r.status, r.text.slice(0, 300)).toBe(200);
  const calls = spy.mock.calls.map(([tokens, opts]) => ({ tokens: tokens as number[], opts: opts as ResolvedOptions }));
  spy.mockRestore();
  return calls;
}

/** Parses an SSE body into its JSON events (the final [DONE] left out). */
function events(text: string): Record<string, unknown>[] {
  const out = text
    .split("\n\n")
    .filter((e) => e.startsWith("data: "))
    .map((e) => e.slice(6));
  expect(out[out.length - 1]).toBe("[DONE]");
  return out.slice(0, -1).map((e) => JSON.parse(e) as Record<string, unknown>);
}

async function metric(name: string): Promise<number> {
  const r = await app.inject({ method: "GET", url: "/metrics" });
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(r.body);
  expect(m, name).not.toBeNull();
  return Number(m![1]);
}

describe("finishReasonOf", () => {
  it("eos and stop -> stop; length or none -> length; abort -> cancelled", () => {
    expect(finishReasonOf("eos")).toBe("stop");
    expect(finishReasonOf("stop")).toBe("stop");
    expect(finishReasonOf("length")).toBe("length");
    expect(finishReasonOf(undefined)).toBe("length");
    expect(finishReasonOf("abort")).toBe("cancelled");
  });
});

describe("sampling parameters -> engine options", () => {
  it("each parameter is passed through; top_p 0 is nearly greedy, top_k -1 is 0 (off)", async () => {
    const [c] = await starts(CHAT, {
      messages: user,
      max_tokens: 2,
      temperature: 0.3,
      top_p: 0.5,
      top_k: 7,
      min_p: 0.2,
      presence_penalty: 0.5,
      frequency_penalty: -0.3,
      repetition_penalty: 1.2,
    });
    expect(c.opts.params).toMatchObject({
      temperature: 0.3,
      topP: 0.5,
      topK: 7,
      minP: 0.2,
      presencePenalty: 0.5,
      frequencyPenalty: -0.3,
      repeatPenalty: 1.2,
      maxTokens: 2,
    });
    const [z] = await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 1, top_p: 0, top_k: -1 });
    expect(z.opts.params.topP).toBe(1e-6);
    expect(z.opts.params.topK).toBe(0);
    const [one] = await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 1, top_p: 1, top_k: 0 });
    expect([one.opts.params.topP, one.opts.params.topK]).toEqual([1, 0]);
  });

  it("omitted and null parameters keep the library's defaults", async () => {
    const defaults = {
      temperature: 0.8,
      topK: 40,
      topP: 0.95,
      minP: 0.05,
      repeatPenalty: 1,
      frequencyPenalty: 0,
      presencePenalty: 0,
    };
    const [a] = await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 1 });
    expect(a.opts.params).toMatchObject(defaults);
    const [b] = await starts(COMPLETIONS, {
      prompt: "Hi",
      max_tokens: 1,
      temperature: null,
      top_p: null,
      top_k: null,
      min_p: null,
      presence_penalty: null,
      frequency_penalty: null,
      repetition_penalty: null,
      stop: null,
      seed: null,
      n: null,
      logprobs: null,
      echo: null,
      stream: null,
    });
    expect(b.opts.params).toMatchObject(defaults);
    expect(b.opts.stop).toEqual([]);
  });

  it("seeds: the request's seed for the first choice, +1 for each next, modulo 2^32; random without one", async () => {
    const three = await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 1, seed: 5, n: 3 });
    expect(three.map((c) => c.opts.params.seed)).toEqual([5, 6, 7]);
    const wrap = await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 1, seed: -1, n: 2 });
    expect(wrap.map((c) => c.opts.params.seed)).toEqual([2 ** 32 - 1, 0]);
    const big = await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 1, seed: 2 ** 32 + 3 });
    expect(big[0].opts.params.seed).toBe(3);
    const seeds = new Set<number>();
    for (let i = 0; i < 3; i++) {
      for (const c of await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 1, n: 2 })) {
        expect(Number.isInteger(c.opts.params.seed) && c.opts.params.seed >= 0 && c.opts.params.seed < 2 ** 32).toBe(
          true,
        );
        seeds.add(c.opts.params.seed);
      }
    }
    expect(seeds.size).toBeGreaterThan(1);
    const nullSeeds = new Set<number>();
    for (let i = 0; i < 3; i++)
      for (const c of await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 1, n: 2, seed: null }))
        nullSeeds.add(c.opts.params.seed);
    expect(nullSeeds.size).toBeGreaterThan(2); // null is "no seed": random, not 0, 1
  });

  it("stop: a string or a list, empty strings dropped; chat adds the template's end-of-turn text", async () => {
    expect((await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 1, stop: "ab" }))[0].opts.stop).toEqual(["ab"]);
    expect((await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 1, stop: "" }))[0].opts.stop).toEqual([]);
    expect((await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 1, stop: ["x", "", "yz"] }))[0].opts.stop).toEqual([
      "x",
      "yz",
    ]);
    expect((await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 1 }))[0].opts.stop).toEqual([]);
    // chatml's <|im_end|> is not a token of the synth vocabulary: it is a stop string.
    expect((await starts(CHAT, { messages: user, max_tokens: 1, stop: ["x"] }))[0].opts.stop).toEqual([
      "x",
      "<|im_end|>",
    ]);
    expect((await starts(CHAT, { messages: user, max_tokens: 1 }))[0].opts.stop).toEqual(["<|im_end|>"]);
  });

  it("stop tokens: end-of-generation plus the template's end-of-turn tokens; none with ignore_eos", async () => {
    const eog = model.tokenizer.eogTokens;
    expect(eog.length).toBeGreaterThan(0);
    expect((await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 1 }))[0].opts.params.stopTokens).toEqual(eog);
    expect(
      (await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 1, ignore_eos: false }))[0].opts.params.stopTokens,
    ).toEqual(eog);
    expect(
      (await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 1, ignore_eos: true }))[0].opts.params.stopTokens,
    ).toEqual([]);
    expect((await starts(CHAT, { messages: user, max_tokens: 1 }))[0].opts.params.stopTokens).toEqual(eog);
    // A template whose end-of-turn marker is a vocabulary token (and one that is also end-of-generation).
    const template = await (
      app as unknown as { llmserve: { chatTemplate: () => Promise<{ stopTokens: number[] }> } }
    ).llmserve.chatTemplate();
    const saved = template.stopTokens;
    Object.defineProperty(template, "stopTokens", { value: [77, eog[0]], configurable: true });
    try {
      expect((await starts(CHAT, { messages: user, max_tokens: 1 }))[0].opts.params.stopTokens).toEqual([...eog, 77]);
      expect(
        (await starts(CHAT, { messages: user, max_tokens: 1, ignore_eos: true }))[0].opts.params.stopTokens,
      ).toEqual([]);
    } finally {
      Object.defineProperty(template, "stopTokens", { value: saved, configurable: true });
    }
  });

  it("max tokens: max_completion_tokens before max_tokens; default 16 (completions) or the room left (chat); clamped to the room", async () => {
    const [chatDefault] = await starts(CHAT, { messages: user, temperature: 0 });
    expect(chatDefault.opts.params.maxTokens).toBe(CTX - chatDefault.tokens.length);
    expect((await starts(COMPLETIONS, { prompt: "Hi", temperature: 0 }))[0].opts.params.maxTokens).toBe(16);
    expect(
      (await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 9, max_completion_tokens: 3 }))[0].opts.params.maxTokens,
    ).toBe(3);
    const [clamped] = await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 100000 });
    expect(clamped.opts.params.maxTokens).toBe(CTX - clamped.tokens.length);
    // 16 is also clamped: a prompt leaving 10 tokens of room.
    const ids = Array.from({ length: CTX - 10 }, (_, i) => 10 + (i % 400));
    expect((await starts(COMPLETIONS, { prompt: ids }))[0].opts.params.maxTokens).toBe(10);
  });

  it("logprobs: chat's boolean with top_logprobs (0 without), completions' integer; none when not asked", async () => {
    const a = (await starts(CHAT, { messages: user, max_tokens: 1, logprobs: true, top_logprobs: 3 }))[0].opts;
    expect([a.wantLogprobs, a.params.logprobs]).toEqual([true, 3]);
    const b = (await starts(CHAT, { messages: user, max_tokens: 1, logprobs: true }))[0].opts;
    expect([b.wantLogprobs, b.params.logprobs]).toEqual([true, 0]);
    const c = (await starts(CHAT, { messages: user, max_tokens: 1, logprobs: false, top_logprobs: 3 }))[0].opts;
    expect(c.wantLogprobs).toBe(false);
    const d = (await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 1, logprobs: 2 }))[0].opts;
    expect([d.wantLogprobs, d.params.logprobs]).toEqual([true, 2]);
    expect((await starts(COMPLETIONS, { prompt: "Hi", max_tokens: 1 }))[0].opts.wantLogprobs).toBe(false);
  });

  it("chat: an empty tools list renders without tools (others are refused); the chat limits reach the template", async () => {
    const template = await (
      app as unknown as {
        llmserve: { chatTemplate: () => Promise<{ tokenize: (...a: unknown[]) => Promise<number[]> }> };
      }
    ).llmserve.chatTemplate();
    const spy = vi.spyOn(template, "tokenize");
    await starts(CHAT, { messages: user, max_tokens: 1, tools: [] });
    await starts(CHAT, { messages: user, max_tokens: 1, tools: null });
    expect(spy.mock.calls[0][1]).toEqual({ tools: undefined, limits: undefined });
    expect(spy.mock.calls[1][1]).toEqual({ tools: undefined, limits: undefined });
  });
});

describe("prompts", () => {
  it("a string is tokenized with BOS and special tokens; token ids are used as given; prompts x n in order", async () => {
    const [s] = await starts(COMPLETIONS, { prompt: "Hello</s>", max_tokens: 1 });
    expect(s.tokens).toEqual(model.tokenizer.encode("Hello</s>", { addSpecial: true, parseSpecial: true }));
    expect(s.tokens[0]).toBe(model.tokenizer.bos);
    expect(s.tokens[s.tokens.length - 1]).toBe(model.tokenizer.eos);
    const ids = [5, 6, 511];
    const [t] = await starts(COMPLETIONS, { prompt: ids, max_tokens: 1 });
    expect(t.tokens).toEqual(ids);
    const many = await starts(COMPLETIONS, { prompt: [[7, 8], [9]], max_tokens: 1, n: 2 });
    expect(many.map((c) => c.tokens)).toEqual([[7, 8], [7, 8], [9], [9]]);
    const strs = await starts(COMPLETIONS, { prompt: ["A", "B"], max_tokens: 1 });
    expect(strs.map((c) => c.tokens)).toEqual([model.tokenize("A"), model.tokenize("B")]);
  });

  it("string prompts of 16 Ki characters in all are tokenized off the event loop", async () => {
    const spy = vi.spyOn(model.tokenizer, "encodeAsync");
    const part = "ab ".repeat(500); // 1500 characters, within the 1792 a prompt may have
    const parts = Array(11).fill(part); // 16500 characters in all
    await post(COMPLETIONS, { prompt: parts, max_tokens: 1 });
    expect(spy.mock.calls.map((a) => a[1])).toEqual(
      Array(11).fill({ addSpecial: true, parseSpecial: true, offThread: true }),
    );
    spy.mockClear();
    await post(COMPLETIONS, { prompt: ["x", "y"], max_tokens: 1 });
    expect(spy.mock.calls.map((a) => a[1]?.offThread)).toEqual([false, false]);
    // The threshold: 16384 characters in all (16 x 1024) go off-thread, one less does not.
    spy.mockClear();
    await post(COMPLETIONS, { prompt: Array(16).fill("ab ".repeat(341) + "a"), max_tokens: 1 });
    expect(spy.mock.calls.map((a) => a[1]?.offThread)).toEqual(Array(16).fill(true));
    spy.mockClear();
    await post(COMPLETIONS, { prompt: [...Array(15).fill("ab ".repeat(341) + "a"), "ab ".repeat(341)], max_tokens: 1 });
    expect(spy.mock.calls.map((a) => a[1]?.offThread)).toEqual(Array(16).fill(false));
  });

  it("token ids outside the vocabulary are a 400 naming the id", async () => {
    const nVocab = model.info.nVocab;
    for (const prompt of [
      [1, nVocab],
      [[1], [2, nVocab + 5]],
    ]) {
      const r = await post(COMPLETIONS, { prompt, max_tokens: 1 });
      expect(r.status).toBe(400);
      const bad = (prompt.flat() as number[]).find((t) => t >= nVocab);
      expect(r.json().error).toEqual({
        message: `Token id ${bad} is outside the vocabulary [0, ${nVocab}).`,
        type: "invalid_request_error",
        code: "invalid_value",
        param: "prompt",
      });
    }
    expect((await post(COMPLETIONS, { prompt: [0, nVocab - 1], max_tokens: 1 })).status).toBe(200);
  });

  it("a prompt string too long to fit is refused before tokenizing; a prompt as long as the context after tokenizing too", async () => {
    const maxChars = CTX * model.tokenizer.maxTokenChars;
    const spy = vi.spyOn(model.tokenizer, "encodeAsync");
    const r = await post(COMPLETIONS, { prompt: ["ok", "x".repeat(maxChars + 1)], max_tokens: 1 });
    expect(r.status).toBe(400);
    expect(r.json().error).toEqual({
      message: `This model's maximum context length is ${CTX} tokens, and a prompt of ${maxChars + 1} characters cannot fit it (at most ${maxChars}: a token stands for at most ${model.tokenizer.maxTokenChars} characters). Please reduce the length of the prompt.`,
      type: "invalid_request_error",
      code: "context_length_exceeded",
      param: "prompt",
    });
    expect(spy).not.toHaveBeenCalled();
    // At the character limit: tokenized, then too many tokens.
    const n = model.tokenize("x".repeat(maxChars)).length;
    const atLimit = await post(COMPLETIONS, { prompt: "x".repeat(maxChars), max_tokens: 1 });
    expect(atLimit.json().error).toEqual({
      message: `This model's maximum context length is ${CTX} tokens. However, your prompt resulted in ${n} tokens (and at least one must be generated). Please reduce the length of the prompt.`,
      type: "invalid_request_error",
      code: "context_length_exceeded",
      param: "prompt",
    });
  });

  it("prompt tokens: one less than the context is served, as many as the context is refused (chat: messages)", async () => {
    const ids = (n: number) => Array.from({ length: n }, (_, i) => 10 + (i % 400));
    expect((await post(COMPLETIONS, { prompt: ids(CTX - 1), max_tokens: 1 })).status).toBe(200);
    const r = await post(COMPLETIONS, { prompt: [[1], ids(CTX)], max_tokens: 1 });
    expect(r.status).toBe(400);
    expect(r.json().error.message).toMatch(new RegExp(`However, your prompt resulted in ${CTX} tokens`));
    const c = await post(CHAT, { messages: [{ role: "user", content: "word ".repeat(CTX) }], max_tokens: 1 });
    expect(c.status).toBe(400);
    expect(c.json().error).toMatchObject({ code: "context_length_exceeded", param: "messages" });
    expect(c.json().error.message).toMatch(
      /However, your messages resulted in \d+ tokens .*reduce the length of the messages\./,
    );
  });

  it("the model name must be the served one (or omitted, or null)", async () => {
    const r = await post(CHAT, { model: "other", messages: user, max_tokens: 1 });
    expect(r.status).toBe(404);
    expect(r.json().error).toEqual({
      message: "The model `other` does not exist. This server serves `tiny` (see GET /v1/models).",
      type: "invalid_request_error",
      code: "model_not_found",
      param: "model",
    });
    expect((await post(CHAT, { model: null, messages: user, max_tokens: 1 })).status).toBe(200);
    expect((await post(COMPLETIONS, { model: MODEL, prompt: "x", max_tokens: 1 })).status).toBe(200);
  });
});

describe("admission", () => {
  it("a request is admitted as prompts x n sequences", async () => {
    const slots = model.info.maxSequences;
    const srv = createServer(model, { modelName: MODEL, maxQueue: 0, defaultMetrics: false });
    try {
      const n = Math.floor(slots / 2) + 1; // 2 prompts x n > slots, while n alone and 2 / n fit
      const r = await srv.inject({
        method: "POST",
        url: COMPLETIONS,
        headers: { "content-type": "application/json" },
        payload: JSON.stringify({ prompt: ["a", "b"], n, max_tokens: 1 }),
      });
      expect(r.statusCode).toBe(400);
      expect((r.json() as Err).error.message).toMatch(new RegExp(`^This request needs ${2 * n} sequences`));
      const ok = await srv.inject({
        method: "POST",
        url: COMPLETIONS,
        headers: { "content-type": "application/json" },
        payload: JSON.stringify({ prompt: ["a", "b"], n: Math.floor(slots / 2), max_tokens: 1 }),
      });
      expect(ok.statusCode).toBe(200);
      // Each finished request releases its sequences (non-streaming, streaming, refused alike).
      for (const stream of [false, true, false]) {
        const again = await srv.inject({
          method: "POST",
          url: COMPLETIONS,
          headers: { "content-type": "application/json" },
          payload: JSON.stringify({ prompt: ["a", "b"], n: Math.floor(slots / 2), max_tokens: 1, stream }),
        });
        expect(again.statusCode).toBe(200);
      }
    } finally {
      await srv.close();
    }
  });

  it("nothing is started once the server is shutting down", async () => {
    const ctx = { closing: () => true } as unknown as EndpointContext;
    const err = await handleGeneration(ctx, "chat", {} as never, {} as never).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).body()).toEqual({
      error: { message: "The server is shutting down.", type: "server_overloaded", code: "shutting_down", param: null },
    });
    expect((err as ApiError).status).toBe(503);
  });
});

describe("responses", () => {
  it("ids, created, fingerprint, and usage", async () => {
    const t = Math.floor(Date.now() / 1000);
    const r = (await post(CHAT, { messages: user, max_tokens: 3, temperature: 0, ignore_eos: true })).json();
    expect(r.id).toMatch(/^chatcmpl-[0-9a-f]{32}$/);
    expect(Math.abs((r.created as number) - t)).toBeLessThanOrEqual(5);
    expect(r.system_fingerprint).toBe("llmserve");
    expect(r.object).toBe("chat.completion");
    expect((r.choices as { message: unknown }[])[0].message).toMatchObject({ role: "assistant", refusal: null });
    const c = (await post(COMPLETIONS, { prompt: "Hi", max_tokens: 3, temperature: 0, ignore_eos: true })).json();
    expect(c.id).toMatch(/^cmpl-[0-9a-f]{32}$/);
    expect(c.object).toBe("text_completion");
    expect(c.usage).toEqual({
      prompt_tokens: model.tokenize("Hi").length,
      completion_tokens: 3,
      total_tokens: model.tokenize("Hi").length + 3,
      prompt_tokens_details: { cached_tokens: 0 },
    });
  });

  it("echo: each prompt's text (token prompts detokenized) before its choices; logprob offsets start after it", async () => {
    const ids = model.tokenize("Hello world", { addSpecial: false });
    const r = (
      await post(COMPLETIONS, {
        prompt: ["Ab", "Cd"],
        max_tokens: 2,
        temperature: 0,
        ignore_eos: true,
        echo: true,
        n: 2,
        logprobs: 1,
      })
    ).json();
    const choices = r.choices as {
      index: number;
      text: string;
      logprobs: { text_offset: number[]; tokens: string[] };
    }[];
    expect(choices.map((c) => c.text.slice(0, 2))).toEqual(["Ab", "Ab", "Cd", "Cd"]);
    for (const c of choices) {
      expect(c.logprobs.text_offset[0]).toBe(2);
      expect(c.logprobs.text_offset[1]).toBe(2 + c.logprobs.tokens[0].length);
      expect(c.text).toBe(c.text.slice(0, 2) + c.logprobs.tokens.join(""));
    }
    // The echo is the prompt as sent, not its detokenization (which drops control tokens such as </s>).
    const special = (await post(COMPLETIONS, { prompt: "Ab</s>", max_tokens: 1, temperature: 0, echo: true })).json();
    expect((special.choices as { text: string }[])[0].text.startsWith("Ab</s>")).toBe(true);
    const specials = (
      await post(COMPLETIONS, { prompt: ["Ab</s>", "Cd</s>"], max_tokens: 1, temperature: 0, echo: true })
    ).json();
    expect((specials.choices as { text: string }[]).map((c) => c.text.slice(0, 6))).toEqual(["Ab</s>", "Cd</s>"]);
    const byIds = (await post(COMPLETIONS, { prompt: ids, max_tokens: 1, temperature: 0, echo: true })).json();
    expect((byIds.choices as { text: string }[])[0].text.startsWith(model.detokenize(ids))).toBe(true);
    const noLogprobs = (await post(COMPLETIONS, { prompt: "Ab", max_tokens: 2, temperature: 0 })).json();
    expect((noLogprobs.choices as { logprobs: unknown }[])[0].logprobs).toBeNull();
    const noEcho = (
      await post(COMPLETIONS, { prompt: "Ab", max_tokens: 2, temperature: 0, ignore_eos: true, logprobs: 1 })
    ).json();
    expect((noEcho.choices as { logprobs: { text_offset: number[] } }[])[0].logprobs.text_offset[0]).toBe(0);
    // echo is a completions field: chat refuses it, naming it (lib/server/fields.ts).
    const chat = await post(CHAT, { messages: user, max_tokens: 2, temperature: 0, echo: true });
    expect([chat.status, chat.json().error.param]).toEqual([400, "echo"]);
  });

  it("streams: usage only with include_usage (null in every chunk, then a usage chunk); logprobs only when asked", async () => {
    const plain = events(
      (await post(COMPLETIONS, { prompt: "Hi", max_tokens: 3, temperature: 0, ignore_eos: true, stream: true })).text,
    );
    for (const e of plain) expect("usage" in e).toBe(false);
    for (const e of plain)
      expect(e).toMatchObject({ object: "text_completion", model: MODEL, system_fingerprint: "llmserve" });
    expect(plain.flatMap((e) => e.choices as { logprobs: unknown }[]).every((c) => c.logprobs === null)).toBe(true);
    const noUsage = events(
      (
        await post(COMPLETIONS, {
          prompt: "Hi",
          max_tokens: 3,
          temperature: 0,
          ignore_eos: true,
          stream: true,
          stream_options: { include_usage: false },
        })
      ).text,
    );
    for (const e of noUsage) expect("usage" in e).toBe(false);
    // include_usage without stream: a plain response.
    const nonStream = await post(COMPLETIONS, { prompt: "Hi", max_tokens: 1, stream_options: { include_usage: true } });
    expect(nonStream.text.startsWith("{")).toBe(true);

    const withUsage = events(
      (
        await post(CHAT, {
          messages: user,
          max_tokens: 3,
          temperature: 0,
          ignore_eos: true,
          stream: true,
          stream_options: { include_usage: true },
          logprobs: true,
        })
      ).text,
    );
    const last = withUsage[withUsage.length - 1];
    expect(last.choices).toEqual([]);
    expect(last).toMatchObject({ object: "chat.completion.chunk", system_fingerprint: "llmserve", model: MODEL });
    expect((last.usage as { completion_tokens: number }).completion_tokens).toBe(3);
    for (const e of withUsage.slice(0, -1)) expect(e.usage).toBeNull();
    const content = withUsage
      .slice(0, -1)
      .flatMap((e) => e.choices as { delta: { content?: string }; logprobs: { content: unknown[] } | null }[])
      .filter((c) => c.delta.content);
    expect(content.length).toBeGreaterThan(0);
    for (const c of content) expect(c.logprobs?.content.length).toBeGreaterThan(0);
    const chatNoLp = events(
      (await post(CHAT, { messages: user, max_tokens: 2, temperature: 0, ignore_eos: true, stream: true })).text,
    );
    expect(chatNoLp.flatMap((e) => e.choices as { logprobs: unknown }[]).every((c) => c.logprobs === null)).toBe(true);
  });

  it("streamed completion logprobs: offsets continue across chunks and start after the echo", async () => {
    const ev = events(
      (
        await post(COMPLETIONS, {
          prompt: "Ab",
          max_tokens: 4,
          temperature: 0,
          ignore_eos: true,
          stream: true,
          echo: true,
          logprobs: 1,
        })
      ).text,
    );
    const choices = ev.flatMap(
      (e) => e.choices as { text: string; logprobs: { text_offset: number[]; tokens: string[] } | null }[],
    );
    expect(choices[0]).toMatchObject({ text: "Ab", logprobs: null });
    // Each chunk's offsets start where the text streamed so far (echo included) ends.
    let textSoFar = 2;
    let n = 0;
    for (const c of choices.slice(1)) {
      if (c.logprobs) {
        expect(c.logprobs.text_offset[0]).toBe(textSoFar);
        for (let i = 1; i < c.logprobs.tokens.length; i++)
          expect(c.logprobs.text_offset[i]).toBe(c.logprobs.text_offset[i - 1] + c.logprobs.tokens[i - 1].length);
        n += c.logprobs.tokens.length;
      }
      textSoFar += c.text.length;
    }
    expect(n).toBe(4);
    // Without echo the offsets start at 0.
    const plain = events(
      (
        await post(COMPLETIONS, {
          prompt: "Ab",
          max_tokens: 2,
          temperature: 0,
          ignore_eos: true,
          stream: true,
          logprobs: 1,
        })
      ).text,
    );
    const first = plain
      .flatMap((e) => e.choices as { logprobs: { text_offset: number[] } | null }[])
      .find((c) => c.logprobs);
    expect(first?.logprobs?.text_offset[0]).toBe(0);
  });

  it("latency metrics: one time-to-first-token per choice, one inter-token latency per later token, in seconds", async () => {
    const ttft0 = await metric("llmserve_time_to_first_token_seconds_count");
    const ttftSum0 = await metric("llmserve_time_to_first_token_seconds_sum");
    const itl0 = await metric("llmserve_inter_token_latency_seconds_count");
    const itlSum0 = await metric("llmserve_inter_token_latency_seconds_sum");
    const t0 = performance.now();
    await post(COMPLETIONS, { prompt: "Hi", max_tokens: 5, temperature: 0, ignore_eos: true, n: 2 });
    const elapsed = (performance.now() - t0) / 1000;
    expect(await metric("llmserve_time_to_first_token_seconds_count")).toBe(ttft0 + 2);
    expect(await metric("llmserve_inter_token_latency_seconds_count")).toBe(itl0 + 8);
    const ttft = (await metric("llmserve_time_to_first_token_seconds_sum")) - ttftSum0;
    const itl = (await metric("llmserve_inter_token_latency_seconds_sum")) - itlSum0;
    expect(ttft).toBeGreaterThan(0);
    expect(ttft).toBeLessThanOrEqual(2 * elapsed);
    expect(itl).toBeGreaterThanOrEqual(0);
    expect(itl).toBeLessThanOrEqual(2 * elapsed);
  });
});
