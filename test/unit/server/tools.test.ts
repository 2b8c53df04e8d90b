/**
 * ToolReplyParser (tool_choice "auto", streamed): fed a reply one token at a time, the content it
 * releases is exactly the text before the call (never a byte of call markup, even a partial
 * marker), the calls come out at the end, and a reply without a call streams all of its text.
 * toolCallDeltas: OpenAI's order (id, type and name, then argument fragments that join back).
 */
import { beforeAll, describe, expect, it } from "vitest";
import type { ToolFamily } from "../../../lib/chat/tools.js";
import { ToolReplyParser, toolCallDeltas } from "../../../lib/server/tools.js";
import { Tokenizer } from "../../../lib/tokenizer/index.js";
import { synthModel } from "../../helpers.js";

let tok: Tokenizer;
beforeAll(async () => {
  tok = await Tokenizer.fromGguf(
    await synthModel("chat-synth", { dim: 32, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocabSize: 512 }),
  );
});

const CALLS: Record<ToolFamily, string> = {
  llama3: '{"name": "get_weather", "parameters": {"city": "Köln"}}',
  hermes: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Köln"}}\n</tool_call>',
  mistral: '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Köln"}}]',
  "functionary-v3.1": '<function=get_weather>{"city": "Köln"}</function>',
  "firefunction-v2": ' functools[{"name": "get_weather", "arguments": {"city": "Köln"}}]',
  "command-r7b":
    '<|START_THINKING|>Need the weather.<|END_THINKING|><|START_ACTION|>[{"tool_call_id": "0", "tool_name": "get_weather", "parameters": {"city": "Köln"}}]<|END_ACTION|>',
  "command-r-plus": 'Action:\n```json\n[{"tool_name": "get_weather", "parameters": {"city": "Köln"}}]\n```',
};

/**
 * Feeds `text` one token at a time; returns each release, the finish, the joined content and the
 * text as the tokens decode (this vocabulary's space prefix makes it start with a space).
 */
function run(text: string, family: ToolFamily, stops: string[] = []) {
  const p = new ToolReplyParser(tok, family, "", new Set(), stops);
  const released: string[] = [];
  const ids = tok.encode(text, { addSpecial: false, parseSpecial: true });
  for (const t of ids) released.push(p.push([t]));
  const end = p.finish();
  const decoded = tok.decode(ids, { special: true, stripLeadingSpace: false });
  expect(decoded.trimStart()).toBe(text);
  return { released, end, streamed: released.join("") + end.contentDelta, decoded };
}

describe("ToolReplyParser", () => {
  it.each(Object.keys(CALLS) as ToolFamily[])("%s: text before a call streams, the markup never does", (family) => {
    const before = "Sure, checking the forecast now.";
    const { released, end, streamed, decoded } = run(`${before}\n${CALLS[family]}`, family);
    expect(decoded.startsWith(streamed)).toBe(true); // what streamed is the reply's own text...
    expect(streamed.trim()).toBe(before); // ...up to the call, and nothing of it
    // Streamed while generating, not only at the end.
    expect(released.join("").length).toBeGreaterThan(10);
    expect(end.content).toBe(before);
    expect(end.toolCalls.map((c) => [c.function.name, JSON.parse(c.function.arguments)])).toEqual([
      ["get_weather", { city: "Köln" }],
    ]);
  });

  it.each(Object.keys(CALLS) as ToolFamily[])("%s: a reply without a call streams all of its text", (family) => {
    const text = "No call: {braces} and <tags> and [brackets] stay text.";
    const { streamed, end, decoded } = run(text, family);
    expect(streamed).toBe(decoded);
    expect(end.toolCalls).toEqual([]);
    expect(end.content).toBe(decoded);
  });

  it("a stop string ends the reply and is never streamed", () => {
    const { streamed, end } = run("Hello there<|im_end|>junk", "hermes", ["<|im_end|>"]);
    expect(streamed).toBe(" Hello there");
    expect(end.content).toBe(" Hello there");
  });

  it("a call of a name that is not a tool is content (as written)", () => {
    const p = new ToolReplyParser(tok, "llama3", "", new Set(), [], false, ["get_time"]);
    const ids = tok.encode(CALLS.llama3, { addSpecial: false, parseSpecial: true });
    const released = ids.map((t) => p.push([t])).join("");
    const end = p.finish();
    expect(end.toolCalls).toEqual([]);
    expect(released + end.contentDelta).toBe(tok.decode(ids, { special: true, stripLeadingSpace: false }));
  });

  it("a forced call releases nothing as content", () => {
    const p = new ToolReplyParser(tok, "mistral", "[TOOL_CALLS]", new Set(), [], true);
    const out = tok
      .encode('[{"name": "f", "arguments": {}}]', { addSpecial: false, parseSpecial: true })
      .map((t) => p.push([t]));
    expect(out.join("")).toBe("");
    const end = p.finish();
    expect([end.contentDelta, end.content, end.toolCalls[0].function.name]).toEqual(["", null, "f"]);
    // Cut short (max_tokens): no call, and the content is what was generated, without the prefix.
    const cut = new ToolReplyParser(tok, "mistral", "[TOOL_CALLS]", new Set(), [], true);
    const ids = tok.encode('[{"name": "f", "argu', { addSpecial: false, parseSpecial: true });
    expect(ids.map((t) => cut.push([t])).join("")).toBe("");
    const c = cut.finish();
    const generated = tok.decode(ids, { special: true, stripLeadingSpace: false });
    expect([c.toolCalls, c.content, c.contentDelta]).toEqual([[], generated, generated]);
  });
});

describe("toolCallDeltas", () => {
  it("id, type and name first with empty arguments, then fragments that join to the arguments", () => {
    const args = JSON.stringify({ text: "x".repeat(60), nested: { a: [1, 2, 3] } });
    const d = toolCallDeltas({ id: "call_1", type: "function", function: { name: "f", arguments: args } }, 2, 16) as {
      index: number;
      id?: string;
      type?: string;
      function: { name?: string; arguments: string };
    }[];
    expect(d[0]).toEqual({ index: 2, id: "call_1", type: "function", function: { name: "f", arguments: "" } });
    expect(d.length).toBe(1 + Math.ceil(args.length / 16));
    expect(d.slice(1).every((x) => x.index === 2 && x.id === undefined && x.function.name === undefined)).toBe(true);
    expect(d.map((x) => x.function.arguments).join("")).toBe(args);
  });
});
