/** Chat templates: the fixture Jinja templates, the built-in ones, detection, tokenization. */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { beforeAll, describe, expect, it } from "vitest";
import {
  BUILTIN_CHAT_TEMPLATE_NAMES,
  ChatTemplate,
  detectBuiltinTemplate,
  type ChatMessage,
} from "../../../lib/chat/index.js";
import { Tokenizer } from "../../../lib/tokenizer/index.js";
import { fixture, haveFixtures, synthModel } from "../../helpers.js";

const conversation: ChatMessage[] = [
  { role: "system", content: "SYS-ALPHA be brief" },
  { role: "user", content: "USER-BRAVO hello" },
  { role: "assistant", content: "ASSIST-CHARLIE hi there" },
  {
    role: "user",
    content: [
      { type: "text", text: "USER-DELTA " },
      { type: "text", text: "what now?" },
    ],
  },
];
const contents = ["SYS-ALPHA be brief", "USER-BRAVO hello", "ASSIST-CHARLIE hi there", "USER-DELTA what now?"];

const templatesDir = fixture("chat-templates");
const haveTemplates = haveFixtures && existsSync(templatesDir);
const templateFiles = haveTemplates
  ? readdirSync(templatesDir)
      .filter((f) => f.endsWith(".jinja"))
      .sort()
  : [];

let synthTok: Tokenizer;
let synthPath: string;
beforeAll(async () => {
  synthPath = await synthModel("chat-synth", { dim: 32, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocabSize: 512 });
  synthTok = await Tokenizer.fromGguf(synthPath);
});

describe.skipIf(!haveTemplates)("fixture chat templates (../shared/fixtures/chat-templates)", () => {
  if (!haveTemplates) it.skip("skipped: ../shared/fixtures/chat-templates is absent", () => {});

  it("has templates to test", () => {
    expect(templateFiles.length).toBeGreaterThan(10);
  });

  it.each(templateFiles)("%s renders a conversation containing every message", async (file) => {
    const t = new ChatTemplate(readFileSync(`${templatesDir}/${file}`, "utf8"), synthTok);
    const out = await t.render(conversation);
    for (const c of contents) expect(out, `${file} lacks ${JSON.stringify(c)}`).toContain(c);
    // Messages appear in order.
    const at = contents.map((c) => out.lastIndexOf(c));
    expect([...at].sort((a, b) => a - b)).toEqual(at.slice().sort((a, b) => a - b));
    expect(out.lastIndexOf("USER-DELTA")).toBeGreaterThan(out.lastIndexOf("ASSIST-CHARLIE"));
  });

  const render = (file: string, opts = {}): Promise<string> =>
    new ChatTemplate(readFileSync(`${templatesDir}/${file}`, "utf8"), synthTok).render(conversation, opts);

  it("Llama 3.1: header markers, BOS text first, ends with the assistant header", async () => {
    const out = await render("meta-llama-Llama-3.1-8B-Instruct.jinja");
    expect(out.startsWith("<s><|start_header_id|>system<|end_header_id|>\n\n")).toBe(true); // synth vocab's BOS text is <s>
    expect(out).toContain("<|start_header_id|>user<|end_header_id|>\n\nUSER-BRAVO hello<|eot_id|>");
    expect(out).toContain("<|start_header_id|>assistant<|end_header_id|>\n\nASSIST-CHARLIE hi there<|eot_id|>");
    expect(out.endsWith("<|start_header_id|>assistant<|end_header_id|>\n\n")).toBe(true);
    expect(
      (await render("meta-llama-Llama-3.1-8B-Instruct.jinja", { addGenerationPrompt: false })).endsWith(
        "what now?<|eot_id|>",
      ),
    ).toBe(true);
  });

  it("Qwen2.5 (ChatML): im_start/im_end turns, ends with the assistant turn", async () => {
    const out = await render("Qwen-Qwen2.5-7B-Instruct.jinja");
    expect(out).toContain("<|im_start|>system\nSYS-ALPHA be brief<|im_end|>\n");
    expect(out).toContain("<|im_start|>user\nUSER-BRAVO hello<|im_end|>\n");
    expect(out).toContain("<|im_start|>assistant\nASSIST-CHARLIE hi there<|im_end|>\n");
    expect(out.endsWith("<|im_start|>assistant\n")).toBe(true);
  });

  it("Mistral Nemo: [INST] turns with the assistant reply closed by EOS", async () => {
    const out = await render("mistralai-Mistral-Nemo-Instruct-2407.jinja");
    expect(out.startsWith("<s>[INST]")).toBe(true);
    expect(out).toContain("[INST]USER-BRAVO hello[/INST]ASSIST-CHARLIE hi there</s>");
    expect(out.endsWith("what now?[/INST]")).toBe(true);
  });

  it("Phi-3.5: <|role|> turns closed by <|end|>, ends with <|assistant|>", async () => {
    const out = await render("microsoft-Phi-3.5-mini-instruct.jinja");
    expect(out).toContain("<|system|>\nSYS-ALPHA be brief<|end|>\n");
    expect(out).toContain("<|user|>\nUSER-BRAVO hello<|end|>\n");
    expect(out).toContain("<|assistant|>\nASSIST-CHARLIE hi there<|end|>\n");
    expect(out.endsWith("<|assistant|>\n")).toBe(true);
  });

  it("Gemma 2 rejects the system role: it is folded into the first user turn", async () => {
    const out = await render("google-gemma-2-2b-it.jinja");
    expect(out).toContain("<start_of_turn>user\nSYS-ALPHA be brief\n\nUSER-BRAVO hello<end_of_turn>");
    expect(out).toContain("<start_of_turn>model\nASSIST-CHARLIE hi there<end_of_turn>");
    expect(out.endsWith("<start_of_turn>model\n")).toBe(true);
  });

  it("a template that raises on the messages gives ERR_INVALID_ARGUMENT", async () => {
    const t = new ChatTemplate(
      readFileSync(`${templatesDir}/mistralai-Mistral-Nemo-Instruct-2407.jinja`, "utf8"),
      synthTok,
    );
    await expect(
      t.render([
        { role: "assistant", content: "a" },
        { role: "assistant", content: "b" },
      ]),
    ).rejects.toThrow(expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }));
  });

  it("end-of-turn markers absent from the vocabulary become stop strings", () => {
    const t = new ChatTemplate(readFileSync(`${templatesDir}/Qwen-Qwen2.5-7B-Instruct.jinja`, "utf8"), synthTok);
    expect(t.stopStrings).toContain("<|im_end|>");
    expect(t.stopTokens).toEqual([]);
  });
});

describe("built-in chat templates", () => {
  it.each(BUILTIN_CHAT_TEMPLATE_NAMES)("%s renders every message and a generation prompt", async (name) => {
    const t = ChatTemplate.builtin(name, synthTok);
    const out = await t.render(conversation);
    for (const c of contents) expect(out).toContain(c);
    const noGen = await t.render(conversation, { addGenerationPrompt: false });
    if (name !== "llama2") expect(out.length).toBeGreaterThan(noGen.length);
  });

  it("chatml and llama3 produce the expected markers", async () => {
    expect(await ChatTemplate.builtin("chatml", synthTok).render([{ role: "user", content: "hi" }])).toBe(
      "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    );
    expect(await ChatTemplate.builtin("llama3", synthTok).render([{ role: "user", content: " hi " }])).toBe(
      "<s><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    );
    expect(await ChatTemplate.builtin("llama2", synthTok).render(conversation.slice(0, 3))).toBe(
      "<s>[INST] <<SYS>>\nSYS-ALPHA be brief\n<</SYS>>\n\nUSER-BRAVO hello [/INST] ASSIST-CHARLIE hi there </s>",
    );
  });

  it("a template that does not parse is an ERR_INVALID_ARGUMENT naming the problem", () => {
    expect(() => new ChatTemplate("{% for m in %}", synthTok)).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_ARGUMENT", message: expect.stringMatching(/does not parse/) }),
    );
  });

  it("rejects unknown names and empty message lists", async () => {
    expect(() => ChatTemplate.builtin("nope" as never, synthTok)).toThrow(/Expected one of chatml/);
    await expect(ChatTemplate.builtin("chatml", synthTok).render([])).rejects.toThrow(
      expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }),
    );
  });

  it("a file without a template falls back to a detected built-in, with a warning", async () => {
    const warnings: string[] = [];
    const t = await ChatTemplate.fromModel({ path: synthPath, tokenizer: synthTok }, { warn: (m) => warnings.push(m) });
    expect(t.source).toBe("builtin");
    expect(t.name).toBe("chatml");
    expect(detectBuiltinTemplate(synthTok)).toBe("chatml");
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/no tokenizer.chat_template; using the built-in "chatml"/);
  });

  it("an explicit template option wins (built-in name or Jinja text)", async () => {
    const m = { path: synthPath, tokenizer: synthTok };
    expect((await ChatTemplate.fromModel(m, { template: "zephyr" })).name).toBe("zephyr");
    const custom = await ChatTemplate.fromModel(m, {
      template: "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}",
    });
    expect(custom.source).toBe("custom");
    expect(await custom.render([{ role: "user", content: "x" }])).toBe("[user]x");
  });

  it("tokenizes with one BOS whether or not the template writes it", async () => {
    const bos = synthTok.bos!;
    expect(synthTok.addBos).toBe(true);
    const withBos = await ChatTemplate.builtin("llama3", synthTok).tokenize([{ role: "user", content: "hi" }]);
    const withoutBos = await ChatTemplate.builtin("chatml", synthTok).tokenize([{ role: "user", content: "hi" }]);
    for (const ids of [withBos, withoutBos]) {
      expect(ids[0]).toBe(bos);
      expect(ids.filter((t) => t === bos)).toHaveLength(1);
    }
  });
});

describe.skipIf(!haveFixtures)("a vocabulary with its own template (phi-3 vocab fixture)", () => {
  it("reads tokenizer.chat_template, parses special tokens, adds one BOS and stops at <|end|>", async () => {
    const path = fixture("vocab", "ggml-vocab-phi-3.gguf");
    const tok = await Tokenizer.fromGguf(path);
    const t = await ChatTemplate.fromModel(
      { path, tokenizer: tok },
      {
        warn: () => {
          throw new Error("unexpected warning");
        },
      },
    );
    expect(t.source).toBe("gguf");
    const ids = await t.tokenize([{ role: "user", content: "Hello" }]);
    const user = tok.tokenId("<|user|>")!;
    const assistant = tok.tokenId("<|assistant|>")!;
    const end = tok.tokenId("<|end|>")!;
    expect(ids[0]).toBe(tok.bos);
    expect(ids[1]).toBe(user);
    expect(ids.filter((x) => x === tok.bos)).toHaveLength(1);
    expect(ids).toContain(end);
    expect(ids[ids.length - 1] === assistant || ids[ids.length - 2] === assistant).toBe(true);
    expect(tok.decode(ids, { special: true })).toContain("<|user|>");
    expect(detectBuiltinTemplate(tok)).toBe("phi3");
    // <|end|> is a vocabulary token: generation stops at the token (unless the vocabulary already marks it end-of-generation).
    expect(t.stopStrings).not.toContain("<|end|>");
    if (!tok.isEog(end)) expect(t.stopTokens).toContain(end);
  });
});

describe("built-in template texts and detection (lib/chat/templates.ts)", () => {
  const two: ChatMessage[] = [
    { role: "system", content: "S" },
    { role: "user", content: " u " },
    { role: "assistant", content: " a " },
    { role: "user", content: "v" },
  ];

  it("each built-in renders its exact markers, with and without the generation prompt", async () => {
    const r = (name: (typeof BUILTIN_CHAT_TEMPLATE_NAMES)[number], gen = true) =>
      ChatTemplate.builtin(name, synthTok).render(two, { addGenerationPrompt: gen });
    expect(await r("chatml")).toBe(
      "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n u <|im_end|>\n<|im_start|>assistant\n a <|im_end|>\n<|im_start|>user\nv<|im_end|>\n<|im_start|>assistant\n",
    );
    expect(await r("chatml", false)).toBe(
      "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n u <|im_end|>\n<|im_start|>assistant\n a <|im_end|>\n<|im_start|>user\nv<|im_end|>\n",
    );
    expect(await r("llama3", false)).toBe(
      "<s><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nu<|eot_id|>" +
        "<|start_header_id|>assistant<|end_header_id|>\n\na<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nv<|eot_id|>",
    );
    expect(await r("llama2")).toBe("<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nu [/INST] a </s><s>[INST] v [/INST]");
    expect(await ChatTemplate.builtin("llama2", synthTok).render(two.slice(1))).toBe(
      "<s>[INST] u [/INST] a </s><s>[INST] v [/INST]",
    );
    expect(await r("zephyr")).toBe(
      "<|system|>\nS</s>\n<|user|>\n u </s>\n<|assistant|>\n a </s>\n<|user|>\nv</s>\n<|assistant|>\n",
    );
    expect(await r("zephyr", false)).toBe(
      "<|system|>\nS</s>\n<|user|>\n u </s>\n<|assistant|>\n a </s>\n<|user|>\nv</s>\n",
    );
    expect(await r("phi3")).toBe(
      "<|system|>\nS<|end|>\n<|user|>\n u <|end|>\n<|assistant|>\n a <|end|>\n<|user|>\nv<|end|>\n<|assistant|>\n",
    );
    expect(await r("phi3", false)).toBe(
      "<|system|>\nS<|end|>\n<|user|>\n u <|end|>\n<|assistant|>\n a <|end|>\n<|user|>\nv<|end|>\n",
    );
    expect(await r("gemma")).toBe(
      "<s><start_of_turn>user\nS<end_of_turn>\n<start_of_turn>user\nu<end_of_turn>\n<start_of_turn>model\na<end_of_turn>\n<start_of_turn>user\nv<end_of_turn>\n<start_of_turn>model\n",
    );
    expect(await r("gemma", false)).toBe(
      "<s><start_of_turn>user\nS<end_of_turn>\n<start_of_turn>user\nu<end_of_turn>\n<start_of_turn>model\na<end_of_turn>\n<start_of_turn>user\nv<end_of_turn>\n",
    );
  });

  it("each built-in stops at its own end-of-turn markers", () => {
    const markers = Object.fromEntries(
      BUILTIN_CHAT_TEMPLATE_NAMES.map((n) => [n, ChatTemplate.builtin(n, synthTok).stopStrings]),
    );
    expect(markers).toEqual({
      chatml: ["<|im_end|>"],
      llama3: ["<|eot_id|>"],
      llama2: [],
      zephyr: [],
      phi3: ["<|end|>"],
      gemma: ["<end_of_turn>"],
    });
  });

  it("the well-known end-of-turn markers in a custom template's text become its stop strings", () => {
    const known = [
      "<|im_end|>",
      "<|eot_id|>",
      "<|eom_id|>",
      "<|end|>",
      "<end_of_turn>",
      "<|endoftext|>",
      "<｜end▁of▁sentence｜>",
      "<|END_OF_TURN_TOKEN|>",
      "<|end_of_text|>",
    ];
    for (const m of known) expect(new ChatTemplate(`{{ '${m}' }}`, synthTok).stopStrings, m).toEqual([m]);
    expect(new ChatTemplate("{{ '<|unknown_marker|>' }}", synthTok).stopStrings).toEqual([]);
  });

  it("detection: the first matching marker token in the vocabulary, ChatML when none match", () => {
    const vocab = (...tokens: string[]) =>
      ({ tokenId: (t: string) => (tokens.includes(t) ? 100 + tokens.indexOf(t) : undefined) }) as unknown as Tokenizer;
    expect(detectBuiltinTemplate(vocab("<|im_start|>", "<|start_header_id|>"))).toBe("chatml");
    expect(detectBuiltinTemplate(vocab("<|start_header_id|>", "<start_of_turn>"))).toBe("llama3");
    expect(detectBuiltinTemplate(vocab("<start_of_turn>", "<|user|>", "<|end|>"))).toBe("gemma");
    expect(detectBuiltinTemplate(vocab("<|user|>", "<|end|>", "[INST]"))).toBe("phi3");
    expect(detectBuiltinTemplate(vocab("<|user|>", "[INST]"))).toBe("zephyr");
    expect(detectBuiltinTemplate(vocab("<|end|>", "[INST]"))).toBe("llama2");
    expect(detectBuiltinTemplate(vocab("<|end|>"))).toBe("chatml");
    expect(detectBuiltinTemplate(vocab())).toBe("chatml");
  });

  it("built-in names are own properties only", () => {
    expect(BUILTIN_CHAT_TEMPLATE_NAMES).toEqual(["chatml", "llama3", "llama2", "zephyr", "phi3", "gemma"]);
    expect(() => ChatTemplate.builtin("toString" as never, synthTok)).toThrow(
      /Expected one of chatml, llama3, llama2, zephyr, phi3, gemma for the chat template name but received "toString"/,
    );
  });
});
