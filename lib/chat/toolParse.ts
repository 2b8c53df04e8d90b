/**
 * Tool-call parsing: a model's reply (decoded with special-token text, end-of-generation tokens
 * left out) -> OpenAI `tool_calls` plus the text outside the calls, for each template family of
 * lib/chat/tools.ts. A call that does not parse (truncated, not JSON, no name) makes the whole
 * reply plain content: the user sees what the model wrote instead of a call that was guessed.
 */
import { randomBytes } from "node:crypto";

/** The template families whose tool-call markup llmserve renders and parses (see lib/chat/tools.ts). */
export type ToolFamily =
  | "llama3"
  | "hermes"
  | "mistral"
  | "functionary-v3.1"
  | "firefunction-v2"
  | "command-r7b"
  | "command-r-plus";

/** One tool call in OpenAI's shape: `arguments` is a JSON string. */
export interface ToolCall {
  /** The call's id, which the tool's result message quotes as `tool_call_id`. */
  id: string;
  /** Always "function". */
  type: "function";
  /** The function called. */
  function: {
    /** The tool's name. */
    name: string;
    /** The arguments object as a JSON string. */
    arguments: string;
  };
}

/** A parsed reply: the calls and the text outside them (null when there is none). */
export interface ParsedToolReply {
  /** The text outside the calls, trimmed (null when there is none). */
  content: string | null;
  /** The calls, in the order written (empty when the reply is plain content). */
  toolCalls: ToolCall[];
  /** Where the first call's markup starts in the text (text.length when there is no call). */
  callStart: number;
}

const ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/** A random id of `n` letters and digits. */
export function randomAlnum(n: number): string {
  const b = randomBytes(n);
  let s = "";
  for (let i = 0; i < n; i++) s += ALNUM[b[i] % ALNUM.length];
  return s;
}

/** A call id: "call_" and 24 letters/digits (OpenAI's shape); Mistral's templates want exactly 9 letters/digits. */
export function newCallId(family?: ToolFamily): string {
  return family === "mistral" ? randomAlnum(9) : `call_${randomAlnum(24)}`;
}

/**
 * The end of the JSON object or array starting at `start` (strings and escapes respected), or -1
 * when it is not closed in the text.
 */
function jsonEnd(text: string, start: number): number {
  const open = text[start];
  if (open !== "{" && open !== "[") return -1;
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  return -1;
}

/** The JSON value at `start` (after whitespace) and where it ends; undefined when it does not parse. */
function jsonAt(text: string, start: number): { value: unknown; end: number } | undefined {
  let i = start;
  while (i < text.length && /\s/.test(text[i])) i++;
  const end = jsonEnd(text, i);
  if (end < 0) return undefined;
  try {
    return { value: JSON.parse(text.slice(i, end)), end };
  } catch {
    return undefined;
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** A call from an object with a name key and an arguments key (either given as names to try). */
function callOf(v: unknown, family: ToolFamily, nameKey: string, argKeys: string[]): ToolCall | undefined {
  if (!isObject(v) || typeof v[nameKey] !== "string" || (v[nameKey] as string).length === 0) return undefined;
  const key = argKeys.find((k) => v[k] !== undefined);
  let args = key === undefined ? {} : v[key];
  if (typeof args === "string") {
    // Some models write the arguments as a JSON string: keep it when it is an object's JSON.
    try {
      args = JSON.parse(args);
    } catch {
      return undefined;
    }
  }
  if (!isObject(args)) return undefined;
  const id =
    family === "mistral" && typeof v.id === "string" && /^[a-zA-Z0-9]{9}$/.test(v.id) ? v.id : newCallId(family);
  return { id, type: "function", function: { name: v[nameKey] as string, arguments: JSON.stringify(args) } };
}

/** The text outside the calls, trimmed; null when empty. */
function contentOf(parts: string[]): string | null {
  const s = parts.join("").trim();
  return s.length > 0 ? s : null;
}

const plain = (text: string): ParsedToolReply => ({
  content: text.trim().length > 0 ? text.trim() : null,
  toolCalls: [],
  callStart: text.length,
});

/**
 * Calls written as `open` JSON-list `close?`: Mistral's `[TOOL_CALLS][...]`, firefunction's
 * `functools[...]`, Command-R's action lists. `open` may end with the list's "[" (it is kept).
 */
function parseList(
  text: string,
  family: ToolFamily,
  open: string,
  close: string,
  nameKey: string,
  argKeys: string[],
  skip: (name: string) => boolean = () => false,
): ParsedToolReply {
  const at = text.indexOf(open);
  if (at < 0) return plain(text);
  const listStart = open.endsWith("[") ? at + open.length - 1 : at + open.length;
  const j = jsonAt(text, listStart);
  if (j === undefined || !Array.isArray(j.value)) return plain(text);
  const calls: ToolCall[] = [];
  for (const v of j.value) {
    if (isObject(v) && typeof v[nameKey] === "string" && skip(v[nameKey] as string)) continue;
    const c = callOf(v, family, nameKey, argKeys);
    if (c === undefined) return plain(text);
    calls.push(c);
  }
  let end = j.end;
  const rest = text.slice(end);
  const closeAt = close === "" ? -1 : rest.indexOf(close);
  if (closeAt >= 0 && rest.slice(0, closeAt).trim() === "") end += closeAt + close.length;
  return { content: contentOf([text.slice(0, at), text.slice(end)]), toolCalls: calls, callStart: at };
}

/** Calls each wrapped in `open` ... `close` (Hermes `<tool_call>`, functionary `<function=name>`). */
function parseWrapped(
  text: string,
  open: RegExp,
  close: string,
  callFrom: (m: RegExpExecArray, json: unknown) => ToolCall | undefined,
): ParsedToolReply {
  const calls: ToolCall[] = [];
  const outside: string[] = [];
  let pos = 0;
  let first = -1;
  const re = new RegExp(open.source, "g");
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const j = jsonAt(text, m.index + m[0].length);
    const call = j === undefined ? undefined : callFrom(m, j.value);
    if (j === undefined || call === undefined) return plain(text);
    if (first < 0) first = m.index;
    outside.push(text.slice(pos, m.index));
    calls.push(call);
    let end = j.end;
    const rest = text.slice(end);
    const closeAt = rest.indexOf(close);
    // The closing tag is optional at the very end (generation may stop at it as a stop string).
    if (closeAt >= 0 && rest.slice(0, closeAt).trim() === "") end += closeAt + close.length;
    else if (rest.trim() !== "" && rest.trimStart().search(open) !== 0) return plain(text);
    pos = end;
    re.lastIndex = end;
  }
  if (calls.length === 0) return plain(text);
  outside.push(text.slice(pos));
  return { content: contentOf(outside), toolCalls: calls, callStart: first };
}

/** Llama 3.x: `{"name": ..., "parameters": {...}}` (optionally after `<|python_tag|>`, several joined by ";"). */
function parseLlama3(text: string): ParsedToolReply {
  const tag = text.indexOf("<|python_tag|>");
  const brace = /\{\s*"name"\s*:/.exec(text);
  const at = tag >= 0 && (brace === null || tag < brace.index) ? tag : (brace?.index ?? -1);
  if (at < 0) return plain(text);
  let pos = tag === at ? at + "<|python_tag|>".length : at;
  const calls: ToolCall[] = [];
  for (;;) {
    const j = jsonAt(text, pos);
    const call = j && callOf(j.value, "llama3", "name", ["parameters", "arguments"]);
    if (!j || !call) return plain(text);
    calls.push(call);
    pos = j.end;
    const m = /^\s*;?\s*/.exec(text.slice(pos));
    const next = pos + (m ? m[0].length : 0);
    if (next >= text.length) break;
    if (text[next] !== "{") return plain(text);
    pos = next;
  }
  return { content: contentOf([text.slice(0, at)]), toolCalls: calls, callStart: at };
}

/** Command R7B's reply without its thinking and response markers (they are not content). */
export function commandR7bText(text: string): string {
  return text
    .replace(/<\|START_THINKING\|>[\s\S]*?<\|END_THINKING\|>/g, "")
    .replace(/<\|START_RESPONSE\|>|<\|END_RESPONSE\|>/g, "");
}

/** Command R7B: calls are in `<|START_ACTION|>[...]<|END_ACTION|>`. */
function parseCommandR7b(text: string): ParsedToolReply {
  const t = commandR7bText(text);
  const r = parseList(t, "command-r7b", "<|START_ACTION|>", "<|END_ACTION|>", "tool_name", ["parameters"]);
  // callStart indexes the cleaned text: map it back to where the thinking or action starts in `text`.
  const marks = ["<|START_THINKING|>", "<|START_ACTION|>"].map((m) => text.indexOf(m)).filter((i) => i >= 0);
  return { ...r, callStart: r.toolCalls.length > 0 && marks.length > 0 ? Math.min(...marks) : text.length };
}

/** Command R+: `Action: ```json [...] ``` ` (the `directly-answer` tool is not a call). */
function parseCommandRPlus(text: string): ParsedToolReply {
  const m = /Action:\s*(```(?:json)?\s*)?/.exec(text);
  if (m === null) return plain(text);
  const open = text.slice(m.index, m.index + m[0].length);
  const r = parseList(text, "command-r-plus", open, "```", "tool_name", ["parameters"], (n) => n === "directly-answer");
  if (r.toolCalls.length === 0 && r.callStart < text.length) {
    // Only directly-answer: the reply is the text outside the action.
    return { content: r.content, toolCalls: [], callStart: text.length };
  }
  return r;
}

/**
 * Parses a reply written in a family's tool-call markup into OpenAI tool calls and the text
 * outside them. `text` must hold special-token text (decode with `{ special: true }`) without the
 * end-of-generation token. With `tools` (the names that may be called), a reply calling any other
 * name is plain content (a Llama 3 answer that happens to be `{"name": "Bob"}` is not a call).
 * @example parseToolCalls('<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>', "hermes")
 *   // { content: null, toolCalls: [{ id, type: "function", function: { name: "f", arguments: '{"x":1}' } }], callStart: 0 }
 */
export function parseToolCalls(
  text: string,
  family: ToolFamily,
  options: { tools?: readonly string[] } = {},
): ParsedToolReply {
  const r = parseFamily(text, family);
  const known = options.tools;
  if (known === undefined || r.toolCalls.every((c) => known.includes(c.function.name))) return r;
  return plain(family === "command-r7b" ? commandR7bText(text) : text);
}

function parseFamily(text: string, family: ToolFamily): ParsedToolReply {
  switch (family) {
    case "llama3":
      return parseLlama3(text);
    case "hermes":
      return parseWrapped(text, /<tool_call>/, "</tool_call>", (_m, v) =>
        callOf(v, family, "name", ["arguments", "parameters"]),
      );
    case "functionary-v3.1":
      return parseWrapped(text, /<function=([^>]+)>/, "</function>", (m, v) =>
        isObject(v) ? callOf({ name: m[1], arguments: v }, family, "name", ["arguments"]) : undefined,
      );
    case "mistral":
      return parseList(text, family, "[TOOL_CALLS]", "", "name", ["arguments", "parameters"]);
    case "firefunction-v2":
      return parseList(text, family, "functools[", "", "name", ["arguments", "parameters"]);
    case "command-r7b":
      return parseCommandR7b(text);
    case "command-r-plus":
      return parseCommandRPlus(text);
  }
}
