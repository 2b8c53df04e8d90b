/**
 * lib/server/schemas.ts compiled with Ajv as the server configures it (no coercion, no defaults):
 * each field accepts its range, null and the documented shapes, and refuses values just outside
 * its bounds and values of the wrong type.
 */
import { Ajv } from "ajv";
import { describe, expect, it } from "vitest";
import { GENERATE_LIMITS, INT32_MAX, MAX_CHAT_MESSAGES } from "../../../lib/limits.js";
import { SERVER_LIMITS as L, chatSchema, completionSchema } from "../../../lib/server/schemas.js";

function validators() {
  const ajv = new Ajv({ coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false });
  const chat = ajv.compile(chatSchema);
  const completion = ajv.compile(completionSchema);
  const chatBody = (extra: object) => ({ messages: [{ role: "user", content: "Hi" }], ...extra });
  const completionBody = (extra: object) => ({ prompt: "Hi", ...extra });
  /** Whether both endpoints accept `extra` merged into a minimal valid body (they must agree). */
  const sampling = (extra: object): boolean => {
    const a = chat(chatBody(extra));
    const b = completion(completionBody(extra));
    expect(a, `chat and completions disagree on ${JSON.stringify(extra).slice(0, 100)}`).toBe(b);
    return a;
  };
  return { chat: (b: object) => chat(b), completion: (b: object) => completion(b), chatBody, completionBody, sampling };
}

const s = (n: number) => "x".repeat(n);

describe("shared sampling parameters (both endpoints)", () => {
  it("the minimal bodies are valid; unknown parameters are accepted", () => {
    const v = validators();
    expect(v.sampling({})).toBe(true);
    expect(v.sampling({ some_future_param: { x: 1 } })).toBe(true);
  });

  it.each([
    // [field, accepted values, refused values]
    ["model", ["tiny", s(L.nameLength), null], [s(L.nameLength + 1), 5, ["tiny"]]],
    ["user", ["u1", s(L.nameLength), null], [s(L.nameLength + 1), 5]],
    ["max_tokens", [1, GENERATE_LIMITS.maxTokens.max, null], [0, -1, GENERATE_LIMITS.maxTokens.max + 1, 1.5, "4"]],
    [
      "max_completion_tokens",
      [1, GENERATE_LIMITS.maxTokens.max, null],
      [0, GENERATE_LIMITS.maxTokens.max + 1, 2.5, "4"],
    ],
    ["temperature", [0, 0.7, 2, null], [-0.01, 2.01, "1"]],
    ["top_p", [0, 0.5, 1, null], [-0.01, 1.01, "1"]],
    ["top_k", [-1, 0, 40, GENERATE_LIMITS.topK.max, null], [-2, GENERATE_LIMITS.topK.max + 1, 1.5, "4"]],
    ["min_p", [0, 0.1, 1, null], [-0.01, 1.01, true]],
    [
      "presence_penalty",
      [GENERATE_LIMITS.presencePenalty.min, 0, GENERATE_LIMITS.presencePenalty.max, null],
      [GENERATE_LIMITS.presencePenalty.min - 0.01, GENERATE_LIMITS.presencePenalty.max + 0.01, "0"],
    ],
    [
      "frequency_penalty",
      [GENERATE_LIMITS.frequencyPenalty.min, 0.2, GENERATE_LIMITS.frequencyPenalty.max, null],
      [GENERATE_LIMITS.frequencyPenalty.min - 0.01, GENERATE_LIMITS.frequencyPenalty.max + 0.01, "0"],
    ],
    ["repetition_penalty", [1e-9, 1.1, 10, null], [0, -1, 10.01, "1"]],
    ["seed", [0, -5, L.seed, -L.seed, null], [L.seed + 2, -L.seed - 2, 1.5, "3"]],
    ["n", [1, L.n, null], [0, L.n + 1, 1.5, "2"]],
    ["stream", [true, false, null], ["true", 1]],
    ["ignore_eos", [true, false, null], ["true", 0]],
    [
      "stream_options",
      [{}, { include_usage: true }, { include_usage: null }, { other: 1 }, null],
      [{ include_usage: "yes" }, "x", true],
    ],
    [
      "stop",
      ["\n", s(L.stopLength), [], ["a", "b"], Array(L.stop).fill(s(L.stopLength)), null],
      [s(L.stopLength + 1), [s(L.stopLength + 1)], Array(L.stop + 1).fill("a"), [1], 5],
    ],
  ] as const)("%s", (field, good, bad) => {
    const v = validators();
    for (const x of good)
      expect(v.sampling({ [field]: x }), `${field}: ${JSON.stringify(x).slice(0, 60)} should be accepted`).toBe(true);
    for (const x of bad)
      expect(v.sampling({ [field]: x }), `${field}: ${JSON.stringify(x).slice(0, 60)} should be refused`).toBe(false);
  });
});

describe("completions", () => {
  it("prompt is required: a string, strings, token ids or arrays of token ids", () => {
    const v = validators();
    expect(v.completion({})).toBe(false);
    for (const prompt of [
      "",
      "Hi",
      s(L.textLength),
      ["a", "b"],
      Array(L.prompts).fill("a"),
      [0, 5, INT32_MAX],
      [[1], [2, 3]],
      Array(L.prompts).fill([1]),
    ]) {
      expect(v.completion({ prompt }), JSON.stringify(prompt).slice(0, 60)).toBe(true);
    }
    for (const prompt of [
      null,
      5,
      s(L.textLength + 1),
      [],
      ["a", s(L.textLength + 1)],
      Array(L.prompts + 1).fill("a"),
      ["a", 1],
      [-1],
      [INT32_MAX + 1],
      [1.5],
      [[]],
      [[1], []],
      [[-1]],
      [[1.5]],
      Array(L.prompts + 1).fill([1]),
      [[1], "a"],
      [{}],
      { a: 1 },
    ]) {
      expect(v.completion({ prompt }), JSON.stringify(prompt).slice(0, 60)).toBe(false);
    }
  });

  it("logprobs is an integer in [0, 20]; echo a boolean", () => {
    const v = validators();
    for (const logprobs of [0, 5, L.logprobs, null]) expect(v.completion(v.completionBody({ logprobs }))).toBe(true);
    for (const logprobs of [-1, L.logprobs + 1, 1.5, true])
      expect(v.completion(v.completionBody({ logprobs }))).toBe(false);
    for (const echo of [true, false, null]) expect(v.completion(v.completionBody({ echo }))).toBe(true);
    for (const echo of ["yes", 1]) expect(v.completion(v.completionBody({ echo }))).toBe(false);
    expect(L.logprobs).toBe(GENERATE_LIMITS.logprobs.max);
  });
});

describe("chat completions", () => {
  const msg = (m: object) => ({ messages: [m] });

  it("messages is required: 1 to 4096 objects", () => {
    const v = validators();
    expect(L.messages).toBe(MAX_CHAT_MESSAGES);
    expect(v.chat({})).toBe(false);
    expect(v.chat({ messages: [] })).toBe(false);
    expect(v.chat({ messages: null })).toBe(false);
    expect(v.chat({ messages: "Hi" })).toBe(false);
    expect(v.chat({ messages: ["Hi"] })).toBe(false);
    expect(v.chat({ messages: Array(L.messages).fill({ role: "user", content: "a" }) })).toBe(true);
    expect(v.chat({ messages: Array(L.messages + 1).fill({ role: "user", content: "a" }) })).toBe(false);
  });

  it("role is required and one of the six OpenAI roles", () => {
    const v = validators();
    for (const role of ["system", "developer", "user", "assistant", "tool", "function"])
      expect(v.chat(msg({ role, content: "a" })), role).toBe(true);
    for (const role of ["bot", "", "User", 1, null])
      expect(v.chat(msg({ role, content: "a" })), String(role)).toBe(false);
    expect(v.chat(msg({ content: "a" }))).toBe(false);
  });

  it("content: a string, content parts (type required, text a string) or null", () => {
    const v = validators();
    for (const content of [
      "",
      s(L.textLength),
      null,
      [],
      [
        { type: "text", text: "a" },
        { type: "image_url", image_url: {} },
      ],
      Array(L.contentParts).fill({ type: "text" }),
    ]) {
      expect(v.chat(msg({ role: "user", content })), JSON.stringify(content).slice(0, 60)).toBe(true);
    }
    expect(v.chat(msg({ role: "user" }))).toBe(true);
    for (const content of [
      5,
      s(L.textLength + 1),
      [{ text: "a" }],
      [{ type: 5 }],
      [{ type: s(L.nameLength + 1) }],
      [{ type: "text", text: 5 }],
      [{ type: "text", text: s(L.textLength + 1) }],
      Array(L.contentParts + 1).fill({ type: "text" }),
      ["a"],
      { type: "text" },
    ]) {
      expect(v.chat(msg({ role: "user", content })), JSON.stringify(content).slice(0, 60)).toBe(false);
    }
  });

  it("name, tool_call_id, tool_calls", () => {
    const v = validators();
    for (const extra of [
      { name: "bob" },
      { name: null },
      { name: s(L.nameLength) },
      { tool_call_id: "c1" },
      { tool_call_id: null },
      { tool_calls: [] },
      { tool_calls: null },
      { tool_calls: Array(L.tools).fill({}) },
    ]) {
      expect(v.chat(msg({ role: "assistant", content: "a", ...extra })), JSON.stringify(extra).slice(0, 60)).toBe(true);
    }
    for (const extra of [
      { name: 5 },
      { name: s(L.nameLength + 1) },
      { tool_call_id: 5 },
      { tool_call_id: s(L.nameLength + 1) },
      { tool_calls: {} },
      { tool_calls: Array(L.tools + 1).fill({}) },
    ]) {
      expect(v.chat(msg({ role: "assistant", content: "a", ...extra })), JSON.stringify(extra).slice(0, 60)).toBe(
        false,
      );
    }
  });

  it("logprobs a boolean, top_logprobs an integer in [0, 20], tools an array of at most 128", () => {
    const v = validators();
    for (const extra of [
      { logprobs: true },
      { logprobs: null },
      { top_logprobs: 0 },
      { top_logprobs: L.logprobs },
      { top_logprobs: null },
      { tools: [] },
      { tools: Array(L.tools).fill({}) },
      { tools: null },
    ]) {
      expect(v.chat(v.chatBody(extra)), JSON.stringify(extra).slice(0, 60)).toBe(true);
    }
    for (const extra of [
      { logprobs: 1 },
      { logprobs: "true" },
      { top_logprobs: -1 },
      { top_logprobs: L.logprobs + 1 },
      { top_logprobs: 1.5 },
      { tools: {} },
      { tools: Array(L.tools + 1).fill({}) },
    ]) {
      expect(v.chat(v.chatBody(extra)), JSON.stringify(extra).slice(0, 60)).toBe(false);
    }
  });
});
