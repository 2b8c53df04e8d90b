/**
 * Tool calling in lib/chat: each fixture template's family is detected, renders tools and a
 * follow-up turn (the assistant's call and the tool's result), and each family's parser turns the
 * family's markup back into OpenAI calls: one call, several, nested and unicode arguments, text
 * before a call, malformed or truncated calls (plain content, nothing guessed).
 */
import { existsSync, readFileSync } from "node:fs";
import { beforeAll, describe, expect, it } from "vitest";
import { ChatTemplate, type ChatMessage } from "../../../lib/chat/index.js";
import {
  argumentsAsString,
  detectToolFamily,
  messagesForTemplate,
  parseToolCalls,
  toolCallGrammar,
  toolsForTemplate,
  type ToolDefinition,
  type ToolFamily,
} from "../../../lib/chat/tools.js";
import { Tokenizer } from "../../../lib/tokenizer/index.js";
import { fixture, haveFixtures, synthModel } from "../../helpers.js";

const templatesDir = fixture("chat-templates");
const haveTemplates = haveFixtures && existsSync(templatesDir);

/** Each fixture template's family (undefined: the template defines no tool-call format). */
const EXPECTED: Record<string, ToolFamily | undefined> = {
  "CohereForAI-c4ai-command-r-plus-tool_use.jinja": "command-r-plus",
  "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja": "command-r7b",
  "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja": "hermes",
  "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja": "hermes",
  "Qwen-Qwen2.5-7B-Instruct.jinja": "hermes",
  "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja": undefined,
  "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": undefined,
  "fireworks-ai-llama-3-firefunction-v2.jinja": "firefunction-v2",
  "google-gemma-2-2b-it.jinja": undefined,
  "meetkai-functionary-medium-v3.1.jinja": "functionary-v3.1",
  "meta-llama-Llama-3.1-8B-Instruct.jinja": "llama3",
  "meta-llama-Llama-3.2-3B-Instruct.jinja": "llama3",
  "meta-llama-Llama-3.3-70B-Instruct.jinja": "llama3",
  "microsoft-Phi-3.5-mini-instruct.jinja": undefined,
  "mistralai-Mistral-Nemo-Instruct-2407.jinja": "mistral",
};
const read = (f: string) => readFileSync(`${templatesDir}/${f}`, "utf8");

const weather: ToolDefinition = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather of a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

let tok: Tokenizer;
beforeAll(async () => {
  tok = await Tokenizer.fromGguf(
    await synthModel("chat-synth", { dim: 32, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocabSize: 512 }),
  );
});

describe.skipIf(!haveTemplates)("fixture templates: family detection and rendering", () => {
  it.each(Object.entries(EXPECTED))("%s is detected as %s", (file, family) => {
    expect(detectToolFamily(read(file))).toBe(family);
  });

  it("functionary v3.2 is detected but refused with the reason (its template does not render here)", () => {
    expect(() => detectToolFamily(read("meetkai-functionary-medium-v3.2.jinja"))).toThrow(/tuple unpacking/);
  });

  const withTools = Object.entries(EXPECTED).filter(([, f]) => f !== undefined) as [string, ToolFamily][];

  it.each(withTools)(
    "%s renders the tools, then a follow-up turn with the call and its result",
    async (file, family) => {
      const t = new ChatTemplate(read(file), tok);
      const opts = {
        tools: toolsForTemplate([weather]),
        toolCallArguments: argumentsAsString(family) ? ("string" as const) : ("object" as const),
      };
      const first = await t.render([{ role: "user", content: "Weather in Paris?" }], opts);
      expect(first).toContain("get_weather");
      expect(first).toContain("Current weather of a city");
      const followUp: ChatMessage[] = [
        { role: "user", content: "Weather in Paris?" },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            { id: "call_abc", type: "function", function: { name: "get_weather", arguments: '{"city":"Parisville"}' } },
          ],
        },
        { role: "tool", tool_call_id: "call_abc", name: "get_weather", content: '{"temp":"TOOL-RESULT-21"}' },
      ];
      const out = await t.render(messagesForTemplate(followUp, family), opts);
      expect(out).toContain("Parisville"); // the call's arguments
      expect(out).not.toContain("[object"); // arguments written as text where the template concatenates them
      expect(out).toContain("TOOL-RESULT-21"); // the tool's result
      expect(out.indexOf("TOOL-RESULT-21")).toBeGreaterThan(out.lastIndexOf("Parisville"));
    },
  );

  it("Mistral ids: call and result get the same 9-character id; valid ids are kept", () => {
    const msgs = messagesForTemplate(
      [
        {
          role: "assistant",
          tool_calls: [{ id: "call_1", type: "function", function: { name: "f", arguments: "{}" } }],
        },
        { role: "tool", tool_call_id: "call_1", content: "x" },
        {
          role: "assistant",
          tool_calls: [{ id: "abcDEF123", type: "function", function: { name: "f", arguments: "{}" } }],
        },
      ],
      "mistral",
    );
    const id = ((msgs[0].tool_calls ?? [])[0] as { id: string }).id;
    expect(id).toMatch(/^[a-zA-Z0-9]{9}$/);
    expect(msgs[1].tool_call_id).toBe(id);
    expect(((msgs[2].tool_calls ?? [])[0] as { id: string }).id).toBe("abcDEF123");
  });
});

/** How each family writes calls (name, raw arguments JSON text), as its template teaches the model. */
const WRITE: Record<ToolFamily, (calls: [string, string][]) => string> = {
  llama3: (cs) => cs.map(([n, a]) => `{"name": "${n}", "parameters": ${a}}`).join("; "),
  hermes: (cs) => cs.map(([n, a]) => `<tool_call>\n{"name": "${n}", "arguments": ${a}}\n</tool_call>`).join("\n"),
  mistral: (cs) => `[TOOL_CALLS][${cs.map(([n, a]) => `{"name": "${n}", "arguments": ${a}}`).join(", ")}]`,
  "functionary-v3.1": (cs) => cs.map(([n, a]) => `<function=${n}>${a}</function>`).join(""),
  "firefunction-v2": (cs) => ` functools[${cs.map(([n, a]) => `{"name": "${n}", "arguments": ${a}}`).join(", ")}]`,
  "command-r7b": (cs) =>
    `<|START_THINKING|>Looking it up.<|END_THINKING|><|START_ACTION|>[\n${cs
      .map(([n, a], i) => `    {"tool_call_id": "${i}", "tool_name": "${n}", "parameters": ${a}}`)
      .join(",\n")}\n]<|END_ACTION|>`,
  "command-r-plus": (cs) =>
    `Action:\n\`\`\`json\n[\n${cs.map(([n, a]) => `    {"tool_name": "${n}", "parameters": ${a}}`).join(",\n")}\n]\n\`\`\``,
};
const FAMILIES = Object.keys(WRITE) as ToolFamily[];

describe("parseToolCalls", () => {
  const nested = { q: { list: [1, { deep: 'x"y\\z}' }], ok: true }, note: "naïve café 東京 🚀", n: -1.5e3 };

  it.each(FAMILIES)("%s: one call", (family) => {
    const r = parseToolCalls(WRITE[family]([["get_weather", '{"city": "Paris"}']]), family);
    expect(r.content).toBeNull();
    expect(r.toolCalls).toHaveLength(1);
    const c = r.toolCalls[0];
    expect(c.type).toBe("function");
    expect(c.function.name).toBe("get_weather");
    expect(JSON.parse(c.function.arguments)).toEqual({ city: "Paris" });
    expect(c.id).toMatch(family === "mistral" ? /^[a-zA-Z0-9]{9}$/ : /^call_[a-zA-Z0-9]{24}$/);
  });

  it.each(FAMILIES)("%s: several calls, nested JSON and unicode arguments, distinct ids", (family) => {
    const r = parseToolCalls(
      WRITE[family]([
        ["get_weather", '{"city": "Zürich"}'],
        ["search", JSON.stringify(nested)],
      ]),
      family,
    );
    expect(r.toolCalls.map((c) => c.function.name)).toEqual(["get_weather", "search"]);
    expect(JSON.parse(r.toolCalls[0].function.arguments)).toEqual({ city: "Zürich" });
    expect(JSON.parse(r.toolCalls[1].function.arguments)).toEqual(nested);
    expect(r.toolCalls[0].id).not.toBe(r.toolCalls[1].id);
  });

  it.each(FAMILIES)("%s: text before a call is the content", (family) => {
    const call = WRITE[family]([["get_weather", '{"city": "Paris"}']]);
    const text = `Let me check that for you.\n${call}`;
    const r = parseToolCalls(text, family);
    expect(r.content).toBe("Let me check that for you.");
    expect(r.toolCalls.map((c) => c.function.name)).toEqual(["get_weather"]);
    expect(r.callStart).toBe(text.indexOf(call.trimStart()));
  });

  it.each(FAMILIES)("%s: plain text has no calls", (family) => {
    const r = parseToolCalls("It is sunny in Paris today.", family);
    expect(r).toEqual({ content: "It is sunny in Paris today.", toolCalls: [], callStart: 27 });
  });

  it.each(FAMILIES)("%s: a malformed or truncated call is plain content, never a guessed call", (family) => {
    for (const text of [
      WRITE[family]([["get_weather", '{"city": "Par']]), // unterminated arguments
      WRITE[family]([["get_weather", "[1, 2]"]]), // arguments that are not an object
      WRITE[family]([["get_weather", '{"city": "Paris"}']]).slice(0, -12), // cut short
    ]) {
      const r = parseToolCalls(text, family);
      if (r.toolCalls.length > 0) {
        // Cutting only the closing tag/list end may leave a complete call (e.g. Hermes' closing tag is optional).
        expect(JSON.parse(r.toolCalls[0].function.arguments)).toEqual({ city: "Paris" });
        continue;
      }
      // Command R7B's thinking is never content.
      const expected = family === "command-r7b" ? text.replace(/<\|START_THINKING\|>.*<\|END_THINKING\|>/, "") : text;
      expect(r.content).toBe(expected.trim());
    }
  });

  it("Mistral keeps a model's own 9-character id; Command R+ directly-answer is not a call", () => {
    const m = parseToolCalls('[TOOL_CALLS][{"name": "f", "arguments": {}, "id": "Ab3De6Gh9"}]', "mistral");
    expect(m.toolCalls[0].id).toBe("Ab3De6Gh9");
    const d = parseToolCalls(
      'Action:\n```json\n[{"tool_name": "directly-answer", "parameters": {}}]\n```',
      "command-r-plus",
    );
    expect(d.toolCalls).toEqual([]);
  });

  it.each(FAMILIES)("%s: with the tools' names, a call of another name is plain content", (family) => {
    const text = WRITE[family]([["Bob", '{"age": 3}']]);
    expect(parseToolCalls(text, family).toolCalls).toHaveLength(1);
    const r = parseToolCalls(text, family, { tools: ["get_weather"] });
    expect(r.toolCalls).toEqual([]);
    expect(r.content).toBe(
      (family === "command-r7b" ? text.replace(/<\|START_THINKING\|>.*<\|END_THINKING\|>/, "") : text).trim(),
    );
    expect(parseToolCalls(text, family, { tools: ["Bob"] }).toolCalls).toHaveLength(1);
  });

  it("Llama 3: the <|python_tag|> form; a name without arguments gets {}", () => {
    const r = parseToolCalls('<|python_tag|>{"name": "now"}', "llama3");
    expect(r.toolCalls.map((c) => [c.function.name, c.function.arguments])).toEqual([["now", "{}"]]);
    expect(r.content).toBeNull();
  });
});

describe("toolCallGrammar", () => {
  it.each(FAMILIES)("%s: one start rule, each tool's argument rules once, the forced prefix", (family) => {
    const search: ToolDefinition = {
      type: "function",
      function: { name: "search", parameters: { type: "object", properties: { q: { type: "string" } } } },
    };
    const g = toolCallGrammar(family, [weather, search]);
    expect(g.grammar.match(/^root ::= /gm)).toHaveLength(1);
    expect(g.grammar).toContain("targs0 ::= ");
    expect(g.grammar).toContain("targs1 ::= ");
    expect(g.grammar.match(/^string ::= /gm)).toHaveLength(1);
    const named = toolCallGrammar(family, [weather, search], { name: "search" });
    expect(named.grammar).not.toContain("get_weather");
    expect(g.prefix).toBe(
      { mistral: "[TOOL_CALLS]", "command-r7b": "<|START_ACTION|>", "command-r-plus": "Action:\n```json\n" }[
        family as string
      ] ?? "",
    );
  });

  it("refuses an unknown tool name and a schema the compiler cannot honor", () => {
    expect(() => toolCallGrammar("hermes", [weather], { name: "nope" })).toThrow(/No tool is named nope/);
    const bad: ToolDefinition = {
      type: "function",
      function: { name: "f", parameters: { type: "string", pattern: "^a+$" } },
    };
    expect(() => toolCallGrammar("hermes", [bad])).toThrow(expect.objectContaining({ code: "ERR_GRAMMAR" }));
  });
});
