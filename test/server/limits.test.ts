/**
 * Oversized values in a request body (huge numbers, long arrays, long strings) are OpenAI-style
 * 400 invalid_value errors naming the field (lib/server/schemas.ts SERVER_LIMITS), never a 500,
 * a hang or a crash; values at the limits are served.
 */
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model } from "../../lib/index.js";
import { INT32_MAX } from "../../lib/limits.js";
import { createServer } from "../../lib/server/index.js";
import { SERVER_LIMITS } from "../../lib/server/schemas.js";
import { synthModel } from "../helpers.js";

let model: Model;
let app: FastifyInstance;
const MODEL = "tiny";
const L = SERVER_LIMITS;

beforeAll(async () => {
  const path = await synthModel("server-limits", {
    dim: 64,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    ffn: 128,
    vocabSize: 512,
  });
  model = await Model.load(path, { threads: 2, contextSize: 256, kvCacheTokens: 4096 });
  app = createServer(model, {
    modelName: MODEL,
    chatTemplate: "chatml",
    defaultMetrics: false,
    bodyLimit: 32 * 1024 * 1024,
  });
});
afterAll(async () => {
  await app?.close();
  await model?.dispose();
});

/** Posts a body (an object, or raw JSON text for numbers JSON.stringify cannot write, like 1e400). */
async function post(url: string, body: unknown) {
  const r = await app.inject({
    method: "POST",
    url,
    headers: { "content-type": "application/json" },
    payload: typeof body === "string" ? body : JSON.stringify(body),
  });
  return {
    status: r.statusCode,
    body: r.json() as { error?: { message: string; type: string; code: string | null; param: string | null } } & Record<
      string,
      unknown
    >,
  };
}

async function expect400(url: string, body: unknown, param: string, message?: RegExp) {
  const r = await post(url, body);
  expect(r.status, JSON.stringify(r.body).slice(0, 300)).toBe(400);
  expect(r.body.error?.type).toBe("invalid_request_error");
  expect(r.body.error?.code).toBe("invalid_value");
  expect(r.body.error?.param).toBe(param);
  if (message) expect(r.body.error?.message).toMatch(message);
}

const chat = { model: MODEL, messages: [{ role: "user", content: "Hi" }], max_tokens: 2, temperature: 0 };
const long = (n: number) => "x".repeat(n);
const CHAT = "/v1/chat/completions";
const COMPLETIONS = "/v1/completions";

describe("huge numbers", () => {
  it.each([
    ["max_tokens", 1e300],
    ["max_tokens", INT32_MAX + 1],
    ["max_tokens", -1e300],
    ["max_completion_tokens", 2 ** 53],
    ["n", 1e300],
    ["n", L.n + 1],
    ["top_k", 1e300],
    ["top_k", 2 ** 40],
    ["top_k", -1e300],
    ["seed", 1e300],
    ["seed", 2 ** 53],
    ["seed", -1e300],
    ["temperature", 1e300],
    ["temperature", -1e300],
    ["top_p", 1e300],
    ["min_p", -1e300],
    ["presence_penalty", 1e300],
    ["frequency_penalty", -1e300],
    ["repetition_penalty", 1e300],
    ["repetition_penalty", 0],
    ["top_logprobs", 1e300],
  ])("chat: %s = %s", async (field, value) => {
    await expect400(CHAT, { ...chat, logprobs: true, [field]: value }, field);
  });

  it.each([["temperature"], ["top_p"], ["max_tokens"], ["seed"], ["top_k"]])(
    "chat: %s = 1e400 (Infinity once parsed)",
    async (field) => {
      await expect400(CHAT, JSON.stringify(chat).replace(/}$/, `,"${field}":1e400}`), field);
    },
  );

  it.each([
    ["logprobs", 1e300],
    ["n", 1e300],
    ["max_tokens", 2 ** 53],
    ["seed", 2 ** 53],
  ])("completions: %s = %s", async (field, value) => {
    await expect400(COMPLETIONS, { model: MODEL, prompt: "x", [field]: value }, field);
  });

  it.each([
    ["an id of 1e300", [1, 1e300], "prompt[1]"],
    ["an id of 2^31", [1, INT32_MAX + 1], "prompt[1]"],
    ["a negative id", [1, -1], "prompt[1]"],
    [
      "an id of 1e300 in the second prompt",
      [
        [1, 2],
        [3, 1e300],
      ],
      "prompt[1][1]",
    ],
  ])("completions: token prompt with %s", async (_name, prompt, param) => {
    await expect400(COMPLETIONS, { model: MODEL, prompt }, param, /must be (<=|>=)/);
  });
});

describe("long arrays and strings", () => {
  it.each([
    [
      "stop: too many strings",
      { ...chat, stop: Array.from({ length: L.stop + 1 }, (_, i) => `s${i}`) },
      "stop",
      /more than 16 items/,
    ],
    ["stop: a long string", { ...chat, stop: long(L.stopLength + 1) }, "stop", /more than 256 characters/],
    [
      "stop: a long string in the list",
      { ...chat, stop: ["a", long(L.stopLength + 1)] },
      "stop[1]",
      /more than 256 characters/,
    ],
    [
      "messages: too many",
      { ...chat, messages: Array.from({ length: L.messages + 1 }, () => ({ role: "user", content: "x" })) },
      "messages",
      /more than 4096 items/,
    ],
    [
      "content: too many parts",
      {
        ...chat,
        messages: [
          { role: "user", content: Array.from({ length: L.contentParts + 1 }, () => ({ type: "text", text: "x" })) },
        ],
      },
      "messages[0].content",
    ],
    [
      "content part: long text",
      { ...chat, messages: [{ role: "user", content: [{ type: "text", text: long(L.textLength + 1) }] }] },
      "messages[0].content[0].text",
    ],
    [
      "content: a long string",
      { ...chat, messages: [{ role: "user", content: long(L.textLength + 1) }] },
      "messages[0].content",
    ],
    [
      "name: long",
      { ...chat, messages: [{ role: "user", content: "x", name: long(L.nameLength + 1) }] },
      "messages[0].name",
    ],
    [
      "tool_calls: too many",
      {
        ...chat,
        messages: [{ role: "assistant", content: "x", tool_calls: Array.from({ length: L.tools + 1 }, () => ({})) }],
      },
      "messages[0].tool_calls",
    ],
    ["tools: too many", { ...chat, tools: Array.from({ length: L.tools + 1 }, () => ({ type: "function" })) }, "tools"],
    ["model: long", { ...chat, model: long(L.nameLength + 1) }, "model"],
    ["user: long", { ...chat, user: long(L.nameLength + 1) }, "user"],
  ])("chat: %s", async (_name, body, param, message?: RegExp) => {
    await expect400(CHAT, body, param, message);
  });

  it.each([
    [
      "too many prompts",
      { model: MODEL, prompt: Array.from({ length: L.prompts + 1 }, () => "x") },
      "prompt",
      /more than 256 items/,
    ],
    [
      "too many token prompts",
      { model: MODEL, prompt: Array.from({ length: L.prompts + 1 }, () => [1, 2]) },
      "prompt",
      /more than 256 items/,
    ],
    ["a long prompt string", { model: MODEL, prompt: long(L.textLength + 1) }, "prompt"],
    ["a long string in a prompt list", { model: MODEL, prompt: ["a", long(L.textLength + 1)] }, "prompt[1]"],
  ])("completions: %s", async (_name, body, param, message?: RegExp) => {
    await expect400(COMPLETIONS, body, param, message);
  });
});

describe("values at the limits are served", () => {
  it("max_tokens, top_k and seed at their maxima; stop with 16 strings of 256 characters; top_logprobs 20", async () => {
    const r = await post(CHAT, {
      ...chat,
      max_tokens: INT32_MAX,
      top_k: INT32_MAX,
      seed: L.seed,
      logprobs: true,
      top_logprobs: L.logprobs,
      stop: Array.from({ length: L.stop }, (_, i) => String(i).padEnd(L.stopLength, "~")),
      presence_penalty: 2,
      frequency_penalty: -2,
      repetition_penalty: 10,
      temperature: 2,
      top_p: 1,
      min_p: 0,
    });
    expect(r.status, JSON.stringify(r.body).slice(0, 300)).toBe(200);
    const choice = (
      r.body.choices as { finish_reason: string; logprobs: { content: { top_logprobs: unknown[] }[] } }[]
    )[0];
    expect(["length", "stop"]).toContain(choice.finish_reason); // max_tokens is clamped to the context's room
    expect(choice.logprobs.content[0].top_logprobs).toHaveLength(L.logprobs);
  });

  it("a negative seed and top_k -1 are accepted (OpenAI and llama.cpp spellings)", async () => {
    const r = await post(COMPLETIONS, { model: MODEL, prompt: "x", max_tokens: 2, seed: -L.seed, top_k: -1 });
    expect(r.status).toBe(200);
  });

  it("the server still answers after all of the above", async () => {
    const r = await post(CHAT, chat);
    expect(r.status).toBe(200);
  });
});
