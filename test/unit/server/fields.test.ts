/**
 * lib/server/fields.ts: every request field is honored or refused with a 400 naming it. Each case
 * fails when its field would be silently accepted.
 */
import { describe, expect, it } from "vitest";
import { ApiError } from "../../../lib/server/errors.js";
import { checkFields } from "../../../lib/server/fields.js";
import type { Kind } from "../../../lib/server/request.js";

const chat = { messages: [{ role: "user", content: "Hi" }] };
const completion = { prompt: "Hi" };

function refusal(kind: Kind, body: Record<string, unknown>): ApiError {
  try {
    checkFields(kind, body);
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    return err as ApiError;
  }
  throw new Error(`expected a 400 for ${JSON.stringify(body)}`);
}

describe("checkFields", () => {
  it("accepts every field each endpoint honors", () => {
    const sampling = {
      model: "m",
      max_tokens: 1,
      max_completion_tokens: 1,
      temperature: 0,
      top_p: 1,
      top_k: 1,
      min_p: 0,
      presence_penalty: 0,
      frequency_penalty: 0,
      repetition_penalty: 1,
      seed: 1,
      stop: "x",
      n: 1,
      stream: false,
      stream_options: null,
      user: "u",
      ignore_eos: false,
      logit_bias: { 1: 2 },
    };
    expect(() => checkFields("chat", { ...chat, ...sampling, logprobs: true, top_logprobs: 1 })).not.toThrow();
    expect(() => checkFields("completion", { ...completion, ...sampling, logprobs: 1, echo: true })).not.toThrow();
  });

  it("an unknown field is a 400 naming it (OpenAI's wording), on both endpoints", () => {
    for (const [kind, body] of [
      ["chat", chat],
      ["completion", completion],
    ] as const) {
      const e = refusal(kind, { ...body, cache_prompt: true });
      expect(e.status).toBe(400);
      expect(e.body().error).toEqual({
        message: "Unrecognized request argument supplied: cache_prompt",
        type: "invalid_request_error",
        code: "unknown_parameter",
        param: "cache_prompt",
      });
    }
    // A chat-only field is unknown to /v1/completions, and the other way round.
    expect(refusal("completion", { ...completion, messages: [] }).param).toBe("messages");
    expect(refusal("chat", { ...chat, echo: true }).param).toBe("echo");
  });

  it("features not supported yet are refused with what to do, except in their 'off' forms", () => {
    // response_format json_object / json_schema are implemented (test/server/grammar.test.ts), and
    // so are tools (test/server/tools.test.ts).
    expect(() => checkFields("chat", { ...chat, response_format: { type: "json_object" } })).not.toThrow();
    expect(() =>
      checkFields("chat", {
        ...chat,
        tools: [{ type: "function", function: { name: "f" } }],
        tool_choice: { type: "function", function: { name: "f" } },
        parallel_tool_calls: true,
      }),
    ).not.toThrow();
    const refused: [Record<string, unknown>, string, RegExp][] = [
      [{ functions: [{ name: "f" }] }, "functions", /legacy functions API .* send tools and tool_choice/],
      [{ function_call: { name: "f" } }, "function_call", /legacy functions/],
      [{ audio: { voice: "x" } }, "audio", /audio/],
      [{ modalities: ["text", "audio"] }, "modalities", /text/],
      [{ prediction: { type: "content" } }, "prediction", /predicted/],
      [{ store: true }, "store", /stored/],
      [{ metadata: { a: "b" } }, "metadata", /stored/],
      [{ service_tier: "flex" }, "service_tier", /service tier/],
      [{ reasoning_effort: "low" }, "reasoning_effort", /reasoning/],
      [{ web_search_options: {} }, "web_search_options", /web search/],
    ];
    for (const [extra, param, message] of refused) {
      const e = refusal("chat", { ...chat, ...extra });
      expect([e.status, e.param, e.code], param).toEqual([400, param, "unsupported_parameter"]);
      expect(e.message).toMatch(new RegExp(`^${param} is not supported by this server: `));
      expect(e.message).toMatch(message);
    }
    const off = {
      response_format: { type: "text" },
      tools: [],
      tool_choice: "none",
      parallel_tool_calls: false,
      functions: null,
      function_call: "auto",
      modalities: ["text"],
      store: false,
      metadata: null,
      service_tier: "auto",
      audio: null,
    };
    expect(() => checkFields("chat", { ...chat, ...off })).not.toThrow();
    expect(refusal("completion", { ...completion, suffix: "end" }).param).toBe("suffix");
    expect(refusal("completion", { ...completion, best_of: 3 }).message).toMatch(/best_of is not supported/);
    expect(refusal("completion", { ...completion, best_of: 3, n: 2 }).param).toBe("best_of");
    expect(() => checkFields("completion", { ...completion, best_of: 2, n: 2, suffix: null })).not.toThrow();
    expect(() => checkFields("completion", { ...completion, best_of: 1 })).not.toThrow();
  });

  it("image, audio and file content parts are refused, naming the part", () => {
    const parts = (p: unknown) => ({
      messages: [
        { role: "system", content: "s" },
        { role: "user", content: p },
      ],
    });
    const e = refusal(
      "chat",
      parts([
        { type: "text", text: "What is this?" },
        { type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } },
      ]),
    );
    expect([e.status, e.param, e.code]).toEqual([400, "messages[1].content[1].type", "unsupported_content"]);
    expect(e.message).toBe(
      'Content parts of type "image_url" are not supported: this server runs a text-only model. Send text parts only.',
    );
    expect(refusal("chat", parts([{ type: "input_audio" }])).param).toBe("messages[1].content[0].type");
    expect(refusal("chat", parts([{ type: "file" }])).param).toBe("messages[1].content[0].type");
    expect(() => checkFields("chat", parts([{ type: "text", text: "a" }]))).not.toThrow();
  });
});
