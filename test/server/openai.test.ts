/**
 * The OpenAI-compatible server driven by the official `openai` client: chat and completions,
 * streaming and not, n > 1, stop sequences, logprobs, usage; plus /v1/models, /health, /metrics.
 */
import OpenAI from "openai";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model } from "../../lib/index.js";
import { createServer } from "../../lib/server/index.js";
import { METRIC_NAMES } from "../../lib/metrics.js";
import { synthModel } from "../helpers.js";

let model: Model;
let app: FastifyInstance;
let base: string;
let client: OpenAI;
const MODEL = "tiny";
const hi = [
  { role: "system" as const, content: "You are terse." },
  { role: "user" as const, content: "Say something." },
];

beforeAll(async () => {
  const path = await synthModel("server-openai", {
    dim: 64,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    ffn: 128,
    vocabSize: 512,
  });
  model = await Model.load(path, { threads: 2, contextSize: 512, kvCacheTokens: 8192 });
  app = createServer(model, { modelName: MODEL, defaultMetrics: false });
  await app.listen({ port: 0, host: "127.0.0.1" });
  const addr = app.server.address();
  if (addr === null || typeof addr === "string") throw new Error("no TCP address");
  base = `http://127.0.0.1:${addr.port}`;
  client = new OpenAI({ apiKey: "unused", baseURL: `${base}/v1`, maxRetries: 0, timeout: 30_000 });
});

afterAll(async () => {
  await app?.close();
  await model?.dispose();
});

describe("chat completions", () => {
  it("non-streaming: one assistant message, usage, finish_reason length at max_tokens", async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: hi,
      max_tokens: 12,
      temperature: 0,
      ignore_eos: true,
    } as never);
    expect(r.object).toBe("chat.completion");
    expect(r.id).toMatch(/^chatcmpl-/);
    expect(r.model).toBe(MODEL);
    expect(r.choices).toHaveLength(1);
    const c = r.choices[0];
    expect(c.index).toBe(0);
    expect(c.message.role).toBe("assistant");
    expect(typeof c.message.content).toBe("string");
    expect(c.message.content!.length).toBeGreaterThan(0);
    expect(c.finish_reason).toBe("length");
    const promptTokens = (await (await app.llmserve.chatTemplate()).tokenize(hi)).length;
    expect(r.usage).toEqual({
      prompt_tokens: promptTokens,
      completion_tokens: 12,
      total_tokens: promptTokens + 12,
      prompt_tokens_details: { cached_tokens: expect.any(Number) },
    });
  });

  it("temperature 0 is deterministic, and streaming yields the same text with a role delta first and usage last", async () => {
    const params = { model: MODEL, messages: hi, max_tokens: 16, temperature: 0 };
    const a = await client.chat.completions.create(params);
    const b = await client.chat.completions.create(params);
    expect(b.choices[0].message.content).toBe(a.choices[0].message.content);

    const stream = await client.chat.completions.create({
      ...params,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let roleSeen = false;
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      expect(chunk.object).toBe("chat.completion.chunk");
      expect(chunk.id).toMatch(/^chatcmpl-/);
      if (chunk.usage) usage = chunk.usage;
      for (const ch of chunk.choices) {
        if (ch.delta.role) roleSeen = true;
        text += ch.delta.content ?? "";
        if (ch.finish_reason) finish = ch.finish_reason;
      }
    }
    expect(roleSeen).toBe(true);
    expect(chunks).toBeGreaterThan(2);
    expect(text).toBe(a.choices[0].message.content);
    expect(finish).toBe(a.choices[0].finish_reason);
    expect(usage).toEqual(a.usage);
  });

  it("n > 1 returns n choices (distinct seeds), batched, with usage summed over choices", async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: hi,
      max_tokens: 10,
      temperature: 1,
      seed: 11,
      n: 3,
      ignore_eos: true,
    } as never);
    expect(r.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    expect(new Set(r.choices.map((c) => c.message.content)).size).toBeGreaterThan(1);
    expect(r.usage!.completion_tokens).toBe(30);
    // Same seed, same choices.
    const again = await client.chat.completions.create({
      model: MODEL,
      messages: hi,
      max_tokens: 10,
      temperature: 1,
      seed: 11,
      n: 3,
      ignore_eos: true,
    } as never);
    expect(again.choices.map((c) => c.message.content)).toEqual(r.choices.map((c) => c.message.content));
  });

  it("n > 1 streams every choice, each ending with its finish_reason", async () => {
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages: hi,
      max_tokens: 6,
      temperature: 0,
      n: 2,
      stream: true,
    });
    const texts = ["", ""];
    const finishes: (string | null)[] = [null, null];
    for await (const chunk of stream) {
      for (const ch of chunk.choices) {
        texts[ch.index] += ch.delta.content ?? "";
        if (ch.finish_reason) finishes[ch.index] = ch.finish_reason;
      }
    }
    expect(texts[0]).toBe(texts[1]); // greedy: both the same
    expect(finishes.every((f) => f === "stop" || f === "length")).toBe(true);
  });

  it("stop sequences end the text before the stop string with finish_reason stop", async () => {
    const full = (
      await client.chat.completions.create({
        model: MODEL,
        messages: hi,
        max_tokens: 40,
        temperature: 0,
        ignore_eos: true,
      } as never)
    ).choices[0].message.content!;
    expect(full.length).toBeGreaterThan(12);
    const stop = full.slice(8, 11);
    const expected = full.slice(0, full.indexOf(stop));
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: hi,
      max_tokens: 40,
      temperature: 0,
      stop: [stop, "\u0000never"],
      ignore_eos: true,
    } as never);
    expect(r.choices[0].message.content).toBe(expected);
    expect(r.choices[0].finish_reason).toBe("stop");
    // A single string works too, and streaming agrees.
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages: hi,
      max_tokens: 40,
      temperature: 0,
      stop,
      stream: true,
      ignore_eos: true,
    } as never);
    let text = "";
    let finish: string | null = null;
    for await (const chunk of stream as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>) {
      text += chunk.choices[0]?.delta.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(text).toBe(expected);
    expect(finish).toBe("stop");
  });

  it("logprobs with top_logprobs: one entry per token, sorted alternatives, chosen token among them at temperature 0", async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: hi,
      max_tokens: 8,
      temperature: 0,
      logprobs: true,
      top_logprobs: 3,
      ignore_eos: true,
    } as never);
    const content = r.choices[0].logprobs!.content!;
    expect(content).toHaveLength(8);
    for (const t of content) {
      expect(t.logprob).toBeLessThanOrEqual(0);
      expect(Array.isArray(t.bytes)).toBe(true);
      expect(t.top_logprobs).toHaveLength(3);
      const lps = t.top_logprobs.map((x) => x.logprob);
      expect(lps).toEqual([...lps].sort((a, b) => b - a));
      expect(t.logprob).toBeCloseTo(lps[0], 5); // greedy picks the most likely token
    }
    const none = await client.chat.completions.create({ model: MODEL, messages: hi, max_tokens: 2, temperature: 0 });
    expect(none.choices[0].logprobs).toBeNull();
  });

  it("accepts multi-part content and sampling params; refuses unknown params naming them", async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "Hello " },
            { type: "text", text: "there" },
          ],
        },
      ],
      max_completion_tokens: 4,
      temperature: 0.7,
      top_p: 0.9,
      presence_penalty: 0.5,
      frequency_penalty: 0.2,
      seed: 3,
      user: "u1",
      top_k: 20,
      min_p: 0.1,
      repetition_penalty: 1.1,
    } as never);
    expect(r.choices[0].message.content).toBeTypeOf("string");
    expect(r.usage!.completion_tokens).toBeLessThanOrEqual(4);
    const err = await client.chat.completions
      .create({ model: MODEL, messages: [{ role: "user", content: "x" }], some_future_param: { x: 1 } } as never)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("some_future_param");
  });
});

describe("completions", () => {
  it("non-streaming text prompt: text, usage, default of 16 tokens", async () => {
    const r = await client.completions.create({
      model: MODEL,
      prompt: "Once upon a time",
      temperature: 0,
      ignore_eos: true,
    } as never);
    expect(r.object).toBe("text_completion");
    expect(r.id).toMatch(/^cmpl-/);
    expect(r.choices[0].text.length).toBeGreaterThan(0);
    expect(r.choices[0].finish_reason).toBe("length");
    const promptTokens = model.tokenize("Once upon a time").length;
    expect(r.usage).toEqual({
      prompt_tokens: promptTokens,
      completion_tokens: 16,
      total_tokens: promptTokens + 16,
      prompt_tokens_details: { cached_tokens: expect.any(Number) },
    });
  });

  it("streaming equals non-streaming; usage in the last chunk", async () => {
    const params = { model: MODEL, prompt: "The cat", max_tokens: 20, temperature: 0 };
    const whole = await client.completions.create(params);
    const stream = await client.completions.create({
      ...params,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage: OpenAI.CompletionUsage | undefined;
    let finish: string | null = null;
    for await (const chunk of stream) {
      expect(chunk.object).toBe("text_completion");
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        text += c.text;
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    expect(text).toBe(whole.choices[0].text);
    expect(finish).toBe(whole.choices[0].finish_reason);
    expect(usage).toEqual(whole.usage);
  });

  it("several prompts (text and token ids) x n: choices indexed prompt-major", async () => {
    const ids = model.tokenize("Hello");
    const r = await client.completions.create({
      model: MODEL,
      prompt: ["Hello", "Bonjour"],
      max_tokens: 5,
      temperature: 0,
      n: 2,
      ignore_eos: true,
    } as never);
    expect(r.choices.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    expect(r.choices[0].text).toBe(r.choices[1].text);
    expect(r.usage!.prompt_tokens).toBe(ids.length + model.tokenize("Bonjour").length);
    expect(r.usage!.completion_tokens).toBe(20);
    const byIds = await client.completions.create({
      model: MODEL,
      prompt: ids,
      max_tokens: 5,
      temperature: 0,
      ignore_eos: true,
    } as never);
    expect(byIds.choices[0].text).toBe(r.choices[0].text);
  });

  it("logprobs (integer): tokens, token_logprobs, top_logprobs, text_offset per token", async () => {
    const r = await client.completions.create({
      model: MODEL,
      prompt: "Hello",
      max_tokens: 6,
      temperature: 0,
      logprobs: 2,
      ignore_eos: true,
    } as never);
    const lp = r.choices[0].logprobs!;
    expect(lp.tokens).toHaveLength(6);
    expect(lp.token_logprobs).toHaveLength(6);
    expect(lp.top_logprobs).toHaveLength(6);
    expect(lp.text_offset![0]).toBe(0);
    for (let i = 0; i < 6; i++) {
      expect(lp.token_logprobs![i]).toBeLessThanOrEqual(0);
      expect(Object.keys(lp.top_logprobs![i]).length).toBeGreaterThanOrEqual(1);
    }
  });

  it("echo puts the prompt text before the completion (streaming too)", async () => {
    const plain = await client.completions.create({ model: MODEL, prompt: "Echo me", max_tokens: 5, temperature: 0 });
    const echoed = await client.completions.create({
      model: MODEL,
      prompt: "Echo me",
      max_tokens: 5,
      temperature: 0,
      echo: true,
    });
    expect(echoed.choices[0].text).toBe(`Echo me${plain.choices[0].text}`);
    const stream = await client.completions.create({
      model: MODEL,
      prompt: "Echo me",
      max_tokens: 5,
      temperature: 0,
      echo: true,
      stream: true,
    });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
    expect(text).toBe(echoed.choices[0].text);
  });

  it("stop strings apply to completions too", async () => {
    const full = (
      await client.completions.create({
        model: MODEL,
        prompt: "Hello",
        max_tokens: 30,
        temperature: 0,
        ignore_eos: true,
      } as never)
    ).choices[0].text;
    const stop = full.slice(6, 9);
    const r = await client.completions.create({
      model: MODEL,
      prompt: "Hello",
      max_tokens: 30,
      temperature: 0,
      stop,
      ignore_eos: true,
    } as never);
    expect(r.choices[0].text).toBe(full.slice(0, full.indexOf(stop)));
    expect(r.choices[0].finish_reason).toBe("stop");
  });
});

describe("models, health, metrics", () => {
  it("GET /v1/models lists the served model; /v1/models/:id finds it", async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual([MODEL]);
    expect((await client.models.retrieve(MODEL)).id).toBe(MODEL);
  });

  it("GET /health returns ok", async () => {
    const r = await fetch(`${base}/health`);
    expect(r.status).toBe(200);
    expect(await r.json()).toMatchObject({ status: "ok", model: MODEL });
  });

  it("GET /metrics exposes every metric, with request counts and token totals", async () => {
    const r = await fetch(`${base}/metrics`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toMatch(/^text\/plain/);
    const text = await r.text();
    for (const name of METRIC_NAMES) expect(text, name).toMatch(new RegExp(`^# TYPE ${name} `, "m"));
    expect(text).toMatch(
      /^llmserve_http_requests_total\{route="\/v1\/chat\/completions",method="POST",status="200"\} [1-9]\d*$/m,
    );
    expect(Number(/^llmserve_completion_tokens_total (\d+)/m.exec(text)![1])).toBeGreaterThan(50);
    expect(Number(/^llmserve_time_to_first_token_seconds_count (\d+)/m.exec(text)![1])).toBeGreaterThan(5);
    expect(Number(/^llmserve_inter_token_latency_seconds_count (\d+)/m.exec(text)![1])).toBeGreaterThan(50);
    const stats = model.stats();
    expect(Number(/^llmserve_kv_blocks_total (\d+)/m.exec(text)![1])).toBe(stats.blocksTotal);
    expect(Number(/^llmserve_running_sequences (\d+)/m.exec(text)![1])).toBe(0);
    const hit = Number(/^llmserve_prefix_cache_hit_rate (\S+)/m.exec(text)![1]);
    expect(hit).toBeGreaterThan(0); // the same chat prompt was sent many times
    expect(hit).toBeLessThanOrEqual(1);
  });

  it("two servers in one process keep separate registries", async () => {
    const other = createServer(model, { modelName: "other" });
    try {
      const r = await other.inject({ method: "GET", url: "/metrics" });
      expect(r.statusCode).toBe(200);
      expect(r.body).not.toMatch(/llmserve_http_requests_total\{/); // nothing served yet
      expect(r.body).toContain("llmserve_process_cpu_user_seconds_total"); // default metrics on by default
    } finally {
      await other.close();
    }
  });
});
