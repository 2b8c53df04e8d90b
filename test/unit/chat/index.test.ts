/**
 * lib/chat/index.ts beyond the templates themselves: default limits and their overrides, message
 * normalization (content parts, developer role, tool-call arguments), system folding, the template
 * variables, stop markers, BOS handling, and fromModel's fallbacks.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { ChatTemplate, defaultChatLimits, RenderPool, type ChatMessage } from "../../../lib/chat/index.js";
import { Tokenizer } from "../../../lib/tokenizer/index.js";
import { synthModel } from "../../helpers.js";

let tok: Tokenizer;
let path: string;
beforeAll(async () => {
  path = await synthModel("chat-index", { dim: 32, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocabSize: 512 });
  tok = await Tokenizer.fromGguf(path);
});

/** A template that prints every message (role|content) and the variables it was given. */
const DUMP =
  "{% for m in messages %}[{{ m.role }}|{{ m.content }}]{% endfor %}" +
  "bos={{ bos_token }};eos={{ eos_token }};gen={{ add_generation_prompt }};tools={{ tools is defined }}";
const hi: ChatMessage[] = [{ role: "user", content: "hi" }];

async function rejects(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeDefined();
  return err as { code: string; message: string };
}

describe("limits", () => {
  it("defaults: 2 s, 4096 messages, context x longest token characters (16 Mi without a context size)", () => {
    const chars = 100 * tok.maxTokenChars;
    expect(defaultChatLimits(tok, 100)).toEqual({
      timeoutMs: 2000,
      maxMessages: 4096,
      maxInputChars: chars,
      maxOutputChars: chars,
    });
    expect(defaultChatLimits(tok).maxInputChars).toBe(16 * 1024 * 1024);
    expect(defaultChatLimits(tok, 0).maxOutputChars).toBe(16 * 1024 * 1024);
    const t = new ChatTemplate(DUMP, tok, { contextSize: 100, limits: { maxMessages: 3 } });
    expect(t.limits).toEqual({ timeoutMs: 2000, maxMessages: 3, maxInputChars: chars, maxOutputChars: chars });
    expect(new ChatTemplate(DUMP, tok).limits.maxInputChars).toBe(16 * 1024 * 1024);
  });

  it("overrides must be positive numbers; unset fields keep the defaults", async () => {
    expect(() => new ChatTemplate(DUMP, tok, { limits: { timeoutMs: 0 } })).toThrow(
      expect.objectContaining({
        code: "ERR_INVALID_ARGUMENT",
        message: "Expected a positive number for limits.timeoutMs but received 0",
      }),
    );
    expect(() => new ChatTemplate(DUMP, tok, { limits: { maxMessages: -1 } })).toThrow(/limits.maxMessages/);
    expect(() => new ChatTemplate(DUMP, tok, { limits: { maxInputChars: NaN } })).toThrow(
      /limits.maxInputChars but received NaN/,
    );
    expect(() => new ChatTemplate(DUMP, tok, { limits: { maxOutputChars: "5" as never } })).toThrow(
      /limits.maxOutputChars/,
    );
    expect(() => new ChatTemplate(DUMP, tok, { limits: null as never })).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_ARGUMENT", message: "Expected an object for limits" }),
    );
    expect(() => new ChatTemplate(DUMP, tok, { limits: 5 as never })).toThrow("Expected an object for limits");
    const t = new ChatTemplate(DUMP, tok, { limits: { maxMessages: 2, timeoutMs: undefined } });
    expect(t.limits.timeoutMs).toBe(2000);
    // Per-call limits override the template's.
    expect((await rejects(t.render([...hi, ...hi, ...hi]))).message).toMatch(
      /The conversation has 3 messages; at most 2 are accepted/,
    );
    await expect(t.render([...hi, ...hi, ...hi], { limits: { maxMessages: 3 } })).resolves.toContain("[user|hi]");
    await expect(t.render(hi, { limits: { maxMessages: 0 } })).rejects.toThrow(/limits.maxMessages/);
  });

  it("message count and characters are checked before rendering, at their limits exactly", async () => {
    const t = new ChatTemplate(DUMP, tok, { limits: { maxMessages: 2, maxInputChars: 10 } });
    t.checkSize([...hi, ...hi]);
    expect(() => t.checkSize([...hi, ...hi, ...hi])).toThrow(expect.objectContaining({ code: "ERR_CONTEXT_OVERFLOW" }));
    expect(() => t.checkSize([...hi, ...hi, ...hi], { maxMessages: 3 })).not.toThrow();
    await expect(t.render([{ role: "user", content: "0123456789" }])).resolves.toContain("0123456789");
    const e = await rejects(
      t.render([
        { role: "user", content: "01234" },
        { role: "user", content: [{ type: "text", text: "567890" }] },
      ]),
    );
    expect(e.code).toBe("ERR_CONTEXT_OVERFLOW");
    expect(e.message).toBe(
      `The messages hold 11 characters; at most 10 are accepted, as more cannot fit the model's context (each token stands for at most ${tok.maxTokenChars} characters). Shorten the messages.`,
    );
  });
});

describe("messages", () => {
  it("content: strings, joined text parts (other parts contribute nothing), null or absent as empty", async () => {
    const t = new ChatTemplate(DUMP, tok);
    const out = await t.render([
      {
        role: "user",
        content: [
          { type: "text", text: "a" },
          { type: "image_url", url: "x" } as never,
          null as never,
          { type: "text", text: "b" },
        ],
      },
      { role: "assistant", content: null },
      { role: "user" },
    ]);
    expect(out.startsWith("[user|ab][assistant|][user|]")).toBe(true);
    expect(await rejects(t.render([{ role: "user", content: 5 as never }]))).toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
      message: "Expected a string or an array of content parts for a message's content",
    });
    // A part whose text is not a string contributes nothing.
    expect(
      await t.render([
        {
          role: "user",
          content: [
            { type: "text", text: 5 as never },
            { type: "text", text: "z" },
          ],
        },
      ]),
    ).toMatch(/^\[user\|z\]/);
  });

  it("the developer role renders as system; messages must be objects with a string role", async () => {
    const t = new ChatTemplate(DUMP, tok);
    expect(await t.render([{ role: "developer", content: "d" }, ...hi])).toMatch(/^\[system\|d\]\[user\|hi\]/);
    expect((await rejects(t.render([...hi, { content: "x" } as never]))).message).toBe(
      "Expected an object with a string role for messages[1]",
    );
    expect(await rejects(t.render([null as never]))).toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
      message: "Expected an object with a string role for messages[0]",
    });
    expect((await rejects(t.render(["hi" as never]))).message).toBe(
      "Expected an object with a string role for messages[0]",
    );
    expect((await rejects(t.render("hi" as never))).message).toBe("Expected a non-empty array of messages");
  });

  it("tool-call arguments given as JSON text reach the template as objects; other arguments as they are", async () => {
    const t = new ChatTemplate(
      "{% for m in messages %}{% for c in m.tool_calls %}<{{ c.function.arguments.city or c.function.arguments }}>{% endfor %}{% endfor %}",
      tok,
    );
    const calls = (args: unknown) => [
      { role: "assistant", content: "", tool_calls: [{ type: "function", function: { name: "w", arguments: args } }] },
    ];
    expect(await t.render(calls('{"city":"Paris"}'))).toBe("<Paris>");
    expect(await t.render(calls("not json"))).toBe("<not json>");
    expect(await t.render(calls({ city: "Rome" }))).toBe("<Rome>");
    const other = new ChatTemplate(
      "{% for m in messages %}{{ m.tool_calls | length }}:{{ m.tool_calls[0].id }}{% endfor %}",
      tok,
    );
    expect(await other.render([{ role: "assistant", content: "", tool_calls: [{ id: "c1" }] }])).toBe("1:c1");
  });

  it("a template that rejects the system role gets it folded into the first user message", async () => {
    const t = new ChatTemplate(
      "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system') }}{% endif %}[{{ m.role }}|{{ m.content }}]{% endfor %}",
      tok,
    );
    expect(
      await t.render([
        { role: "system", content: "S1" },
        { role: "assistant", content: "A" },
        { role: "system", content: "S2" },
        { role: "user", content: "U" },
      ]),
    ).toBe("[assistant|A][user|S1\n\nS2\n\nU]");
    expect(
      await t.render([
        { role: "system", content: "S" },
        { role: "user", content: "U" },
      ]),
    ).toBe("[user|S\n\nU]");
    // No user message: the system text becomes one, first.
    expect(
      await t.render([
        { role: "system", content: "S" },
        { role: "assistant", content: "A" },
      ]),
    ).toBe("[user|S][assistant|A]");
  });
});

describe("templates without a system role (as llama.cpp: folded, said once)", () => {
  const USER_ONLY = "{% for m in messages %}{% if m.role == 'user' %}[user|{{ m.content }}]{% endif %}{% endfor %}";
  const sys: ChatMessage[] = [
    { role: "system", content: "Be terse." },
    { role: "user", content: "U" },
  ];

  it("a template that silently drops system messages gets the system text in the first user turn, with one warning", async () => {
    const warnings: string[] = [];
    const t = new ChatTemplate(USER_ONLY, tok, { warn: (m) => warnings.push(m) });
    expect(await t.supportsSystemRole()).toBe(false);
    expect(await t.render(sys)).toBe("[user|Be terse.\n\nU]");
    expect(await t.render(sys)).toBe("[user|Be terse.\n\nU]");
    expect(warnings).toEqual([
      'The chat template "custom" has no system role: system messages are folded into the first user message (as llama.cpp does).',
    ]);
    // Without a system message nothing is folded or said.
    const quiet: string[] = [];
    const q = new ChatTemplate(USER_ONLY, tok, { warn: (m) => quiet.push(m) });
    expect(await q.render(hi)).toBe("[user|hi]");
    expect(quiet).toEqual([]);
  });

  it("a template with a system role keeps it and says nothing; the default warning is a coded process warning", async () => {
    const warnings: string[] = [];
    const t = new ChatTemplate(DUMP, tok, { warn: (m) => warnings.push(m) });
    expect(await t.supportsSystemRole()).toBe(true);
    expect(await t.render(sys)).toMatch(/^\[system\|Be terse\.\]\[user\|U\]/);
    expect(warnings).toEqual([]);
    const seen: Error[] = [];
    const onWarning = (w: Error) => seen.push(w);
    process.on("warning", onWarning);
    try {
      await new ChatTemplate(USER_ONLY, tok).render(sys);
      await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
    } finally {
      process.off("warning", onWarning);
    }
    expect(seen.map((w) => [w.name, (w as { code?: string }).code])).toEqual([
      ["LlmserveWarning", "LLMSERVE_SYSTEM_FOLDED"],
    ]);
  });
});

describe("template variables", () => {
  it("bos/eos text of the vocabulary, add_generation_prompt (default true), tools only when given, extra variables", async () => {
    const t = new ChatTemplate(DUMP, tok);
    expect(await t.render(hi)).toBe("[user|hi]bos=<s>;eos=</s>;gen=true;tools=false");
    expect(await t.render(hi, { addGenerationPrompt: false })).toBe("[user|hi]bos=<s>;eos=</s>;gen=false;tools=false");
    expect(await t.render(hi, { tools: [] })).toBe("[user|hi]bos=<s>;eos=</s>;gen=true;tools=true");
    const x = new ChatTemplate("{{ date_string }}|{{ bos_token }}", tok);
    expect(await x.render(hi, { extra: { date_string: "1 Jan", bos_token: "B" } })).toBe("1 Jan|B");
  });

  it("a template that needs tools, functions or datetime gets them on the second attempt", async () => {
    const t = new ChatTemplate(
      "{{ functions }}|{{ tools | length }}|{{ datetime | length }}|{{ messages[0].content }}",
      tok,
    );
    // Undefined variables render empty in the first attempt; force the fallback with a template that calls a method on them.
    const strict = new ChatTemplate(
      "{{ tools | length }}|{{ functions | length }}|{{ datetime.split('-') | length }}",
      tok,
    );
    expect(await strict.render(hi)).toBe(`0|2|3`);
    const tools = [{ type: "function", function: { name: "f" } }];
    expect(await strict.render(hi, { tools })).toBe(`1|${JSON.stringify(tools).length}|3`);
    const dt = new ChatTemplate("{{ datetime.split('-')[0] | length }}:{{ datetime | length }}", tok);
    expect(await dt.render(hi)).toBe("4:10");
    const override = new ChatTemplate("{{ datetime.upper() }}", tok);
    expect(await override.render(hi, { extra: { datetime: "x-y" } })).toBe("X-Y");
    expect(await t.render(hi)).toMatch(/\|hi$/);
  });

  it("renders on the given pool", async () => {
    const pool = new RenderPool({ size: 1 });
    try {
      const t = new ChatTemplate(DUMP, tok, { pool });
      expect(pool.started).toBe(0);
      await t.render(hi);
      expect(pool.started).toBe(1);
    } finally {
      await pool.close();
    }
  });
});

describe("construction", () => {
  it("source and name default to custom; empty or non-string text is refused", () => {
    const t = new ChatTemplate(DUMP, tok);
    expect([t.source, t.name, t.text]).toEqual(["custom", "custom", DUMP]);
    const g = new ChatTemplate(DUMP, tok, { source: "gguf" });
    expect([g.source, g.name]).toEqual(["gguf", "gguf"]);
    expect(new ChatTemplate(DUMP, tok, { name: "mine" }).name).toBe("mine");
    expect(() => new ChatTemplate("", tok)).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_ARGUMENT", message: "Expected a non-empty chat template" }),
    );
    expect(() => new ChatTemplate(5 as never, tok)).toThrow("Expected a non-empty chat template");
    expect(() => new ChatTemplate("{{ a", tok)).toThrow(/^The chat template does not parse: /);
    let parseErr: unknown;
    try {
      new ChatTemplate("{{ a", tok);
    } catch (err) {
      parseErr = err;
    }
    expect((parseErr as Error).cause).toBeInstanceOf(Error);
    expect(() => ChatTemplate.builtin("nope" as never, tok)).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }),
    );
  });

  it("end markers: the well-known ones in the text; vocabulary tokens (not end-of-generation) are stop tokens, others stop strings", () => {
    const t = new ChatTemplate("{{ '<|im_end|>' }}{{ '<|eot_id|>' }}", tok);
    expect(t.stopStrings).toEqual(["<|im_end|>", "<|eot_id|>"]);
    expect(t.stopTokens).toEqual([]);
    const m = new ChatTemplate(DUMP, tok, { endMarkers: ["<s>", "</s>", "<zz>"] });
    expect(m.stopTokens).toEqual([tok.bos]); // </s> is end-of-generation already
    expect(m.stopStrings).toEqual(["<zz>"]);
    expect(new ChatTemplate(DUMP, tok).stopStrings).toEqual([]);
  });

  it("builtin() takes the built-in's markers and source", () => {
    const t = ChatTemplate.builtin("phi3", tok, { limits: { maxMessages: 7 } });
    expect([t.source, t.name, t.stopStrings, t.limits.maxMessages]).toEqual(["builtin", "phi3", ["<|end|>"], 7]);
    expect(ChatTemplate.builtin("llama2", tok).stopStrings).toEqual([]);
  });
});

describe("tokenize and encode", () => {
  it("one BOS at the start whether or not the text has it; special tokens parsed", async () => {
    const bos = tok.bos!;
    const t = new ChatTemplate(DUMP, tok);
    expect(t.encode("hello")).toEqual([bos, ...tok.encode("hello", { addSpecial: false })]);
    expect(t.encode("<s>hello")).toEqual([bos, ...tok.encode("hello", { addSpecial: false })]);
    expect(t.encode("hello</s>").at(-1)).toBe(tok.eos);
    const plain = new ChatTemplate("{{ messages[0].content }}", tok);
    expect(await plain.tokenize([{ role: "user", content: "hello</s>" }])).toEqual([
      bos,
      ...tok.encode("hello", { addSpecial: false }),
      tok.eos,
    ]);
    expect(await plain.tokenize([{ role: "user", content: "<s>hello" }])).toEqual([
      bos,
      ...tok.encode("hello", { addSpecial: false }),
    ]);
  });
});

describe("fromModel", () => {
  it("the context size comes from the model (unless it throws: a disposed model)", async () => {
    const t = await ChatTemplate.fromModel({ path, tokenizer: tok, info: { contextSize: 100 } }, { warn: () => {} });
    expect(t.limits.maxInputChars).toBe(100 * tok.maxTokenChars);
    const disposed = {
      path,
      tokenizer: tok,
      get info(): { contextSize: number } {
        throw new Error("disposed");
      },
    };
    expect((await ChatTemplate.fromModel(disposed, { warn: () => {} })).limits.maxInputChars).toBe(16 * 1024 * 1024);
    const custom = await ChatTemplate.fromModel(
      { path, tokenizer: tok, info: { contextSize: 100 } },
      { template: DUMP, limits: { timeoutMs: 5 } },
    );
    expect([custom.source, custom.limits.timeoutMs, custom.limits.maxOutputChars]).toEqual([
      "custom",
      5,
      100 * tok.maxTokenChars,
    ]);
    const builtin = await ChatTemplate.fromModel(
      { path, tokenizer: tok, info: { contextSize: 100 } },
      { template: "gemma", limits: { timeoutMs: 5 } },
    );
    expect([builtin.source, builtin.name, builtin.limits.timeoutMs, builtin.limits.maxOutputChars]).toEqual([
      "builtin",
      "gemma",
      5,
      100 * tok.maxTokenChars,
    ]);
  });

  it("without a warn option the fallback warning is a process warning", async () => {
    const seen: { name: string; message: string }[] = [];
    const on = (w: Error) => seen.push({ name: w.name, message: w.message });
    process.on("warning", on);
    try {
      await ChatTemplate.fromModel({ path, tokenizer: tok });
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off("warning", on);
    }
    expect(seen).toEqual([
      {
        name: "LlmserveWarning",
        message: `${path} has no tokenizer.chat_template; using the built-in "chatml" chat template.`,
      },
    ]);
  });
});
