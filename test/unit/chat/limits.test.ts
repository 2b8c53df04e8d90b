/**
 * Chat templates render on worker threads under limits: a looping template is stopped at the time
 * limit (and the event loop keeps turning meanwhile), a huge output is a typed error, and oversized
 * conversations are refused before any template code runs.
 */
import { Template } from "@huggingface/jinja";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatTemplate, RenderPool, type ChatMessage } from "../../../lib/chat/index.js";
import { Tokenizer } from "../../../lib/tokenizer/index.js";
import { maxStall, synthModel } from "../../helpers.js";

const HOSTILE = "{% for a in range(1000000) %}{% for b in range(1000000) %}{% endfor %}{% endfor %}";
/** 10 x 2^17 = 1310720 characters, quickly (each step doubles the string). */
const HUGE =
  "{% set s = namespace(x='0123456789') %}{% for i in range(17) %}{% set s.x = s.x ~ s.x %}{% endfor %}{{ s.x }}";
const DOUBLING =
  "{% set s = namespace(x='ab') %}{% for i in range(40) %}{% set s.x = s.x ~ s.x %}{% endfor %}{{ s.x }}";
const hi: ChatMessage[] = [{ role: "user", content: "hi" }];

let tok: Tokenizer;
const pool = new RenderPool();
beforeAll(async () => {
  tok = await Tokenizer.fromGguf(
    await synthModel("chat-limits", { dim: 32, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocabSize: 512 }),
  );
});
afterAll(() => pool.close());

describe("rendering limits", () => {
  it("a looping template is stopped at the time limit with ERR_TEMPLATE_TIMEOUT, without holding the event loop", async () => {
    const t = new ChatTemplate(HOSTILE, tok, { source: "gguf", name: "gguf", pool, limits: { timeoutMs: 1000 } });
    const chatml = ChatTemplate.builtin("chatml", tok, { pool });
    expect(await chatml.render(hi)).toBe("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"); // a worker is up
    const before = pool.started;
    const { value, stallMs, ms } = await maxStall(() =>
      t.render(hi).then(
        () => undefined,
        (err: unknown) => err,
      ),
    );
    expect(value).toMatchObject({ code: "ERR_TEMPLATE_TIMEOUT", message: expect.stringMatching(/within 1000 ms/) });
    console.log(
      `hostile template: stopped after ${ms.toFixed(0)} ms, largest event-loop stall ${stallMs.toFixed(0)} ms`,
    );
    expect(ms).toBeGreaterThanOrEqual(990);
    expect(ms).toBeLessThan(10_000);
    expect(stallMs).toBeLessThan(500);
    // The worker was replaced: the next render works.
    expect(await chatml.render(hi)).toBe("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    expect(pool.started).toBeGreaterThan(before);
  }, 120_000);

  it("an output over the limit is ERR_TEMPLATE_OUTPUT_TOO_LARGE", async () => {
    const t = new ChatTemplate(HUGE, tok, { pool, limits: { maxOutputChars: 100_000, timeoutMs: 30_000 } });
    await expect(t.render(hi)).rejects.toMatchObject({
      code: "ERR_TEMPLATE_OUTPUT_TOO_LARGE",
      message: expect.stringMatching(/1310720 characters, more than the limit of 100000/),
    });
    expect((await t.render(hi, { limits: { maxOutputChars: 2_000_000 } })).length).toBe(1_310_720);
  });

  it("a template that doubles a string until memory runs out is ERR_TEMPLATE_OUTPUT_TOO_LARGE, and the process lives on", async () => {
    const t = new ChatTemplate(DOUBLING, tok, { pool, limits: { timeoutMs: 30_000 } });
    await expect(t.render(hi)).rejects.toMatchObject({ code: "ERR_TEMPLATE_OUTPUT_TOO_LARGE" });
    expect(await new ChatTemplate("{{ messages[0].content }}", tok, { pool }).render(hi)).toBe("hi");
  }, 60_000);

  it("a conversation over maxMessages or maxInputChars is ERR_CONTEXT_OVERFLOW before any rendering", async () => {
    const t = new ChatTemplate(HOSTILE, tok, { pool, contextSize: 256 });
    expect(t.limits.maxMessages).toBe(4096);
    expect(t.limits.maxInputChars).toBe(256 * tok.maxTokenChars);
    const many: ChatMessage[] = Array.from({ length: 20_000 }, (_, i) => ({
      role: i % 2 ? "assistant" : "user",
      content: "hello",
    }));
    const { value, ms } = await maxStall(() =>
      t.render(many).then(
        () => undefined,
        (err: unknown) => err,
      ),
    );
    expect(value).toMatchObject({
      code: "ERR_CONTEXT_OVERFLOW",
      message: expect.stringMatching(/20000 messages; at most 4096/),
    });
    expect(ms).toBeLessThan(500); // refused before the (looping) template ran
    const long: ChatMessage[] = [{ role: "user", content: "x".repeat(256 * tok.maxTokenChars + 1) }];
    await expect(t.render(long)).rejects.toMatchObject({
      code: "ERR_CONTEXT_OVERFLOW",
      message: expect.stringMatching(/characters; at most/),
    });
    await expect(t.render(many.slice(0, 10), { limits: { maxMessages: 5 } })).rejects.toMatchObject({
      code: "ERR_CONTEXT_OVERFLOW",
    });
    expect(() => new ChatTemplate(HOSTILE, tok, { limits: { timeoutMs: -1 } })).toThrow(
      /positive number for limits.timeoutMs/,
    );
  });

  it("measures the worker round trip of a small render", async () => {
    const t = ChatTemplate.builtin("llama3", tok, { pool });
    const conv: ChatMessage[] = [
      { role: "system", content: "Be brief." },
      { role: "user", content: "Hello there, how are you?" },
    ];
    await t.render(conv);
    const n = 200;
    let t0 = performance.now();
    for (let i = 0; i < n; i++) await t.render(conv);
    const worker = (performance.now() - t0) / n;
    const inline = new Template(t.text);
    t0 = performance.now();
    for (let i = 0; i < n; i++)
      inline.render({ messages: conv, bos_token: "<s>", eos_token: "</s>", add_generation_prompt: true });
    const direct = (performance.now() - t0) / n;
    console.log(`small render: ${worker.toFixed(3)} ms on the worker vs ${direct.toFixed(3)} ms inline`);
    expect(worker).toBeLessThan(50);
  });
});
