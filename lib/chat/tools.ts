/**
 * Tool calling through a model's own chat template: which tool-call markup a template teaches
 * (one detector table, {@link TOOL_FAMILIES}), the tool definitions and past calls as its Jinja
 * expects them, and the grammar that makes a forced call (`tool_choice` "required" or a named
 * function) always a valid call for the tool's parameter schema. Parsing the reply back is in
 * toolParse.ts.
 *
 * Forced calls: the family's `forcedPrefix` (its opening marker, often a control token such as
 * Mistral's `[TOOL_CALLS]` that a grammar cannot produce) is appended to the prompt, and the
 * grammar produces the rest: the calls' markup around each tool's argument grammar (compiled from
 * its JSON schema by lib/grammar/jsonSchema.ts).
 */
import { LlmserveError } from "../errors.js";
import { gbnfLiteral, jsonSchemaRules } from "../grammar/jsonSchema.js";
import type { ChatMessage } from "./index.js";
import { type ToolFamily, randomAlnum } from "./toolParse.js";

export {
  newCallId,
  parseToolCalls,
  type ParsedToolReply,
  type ToolCall,
  type ToolFamily,
} from "./toolParse.js";

/** An OpenAI tool definition (only "function" tools exist). */
export interface ToolDefinition {
  /** Always "function". */
  type: "function";
  /** The function the model may call. */
  function: {
    /** Letters, digits, "_" and "-", at most 64 characters (OpenAI's rule). */
    name: string;
    /** What it does (shown to the model by the template). */
    description?: string;
    /** JSON schema of the arguments object (default: any object). */
    parameters?: Record<string, unknown>;
    /** Accepted for OpenAI compatibility: forced calls always follow the schema. */
    strict?: boolean | null;
  };
}

/** How one family writes calls; see {@link TOOL_FAMILIES}. */
export interface ToolFamilySpec {
  /** The family's name. */
  family: ToolFamily | "functionary-v3.2";
  /** Whether a template's text is of this family (checked in table order, first match wins). */
  detect: (template: string) => boolean;
  /** Why the family cannot be served, when it cannot. */
  unsupported?: string;
  /**
   * Text in a reply where calls may begin: a streamed reply's content is held back from the first
   * of them (or a partial one at its end) so call markup never leaks as content.
   */
  markers: string[];
  /** Appended to the prompt for a forced call (the grammar produces the rest). */
  forcedPrefix: string;
  /** The template writes a past call's arguments as text (a JSON string), not through tojson. */
  argumentsAsString: boolean;
  /** GBNF of one call of tool `name` whose arguments are rule `args`. */
  call: (name: string, args: string) => string;
  /** GBNF of the calls after forcedPrefix, given the rule `call` (one call) and whether several may follow. */
  calls: (parallel: boolean) => string;
}

const lit = gbnfLiteral;
/** `"{\"<k1>\": " name ", \"<k2>\": " args "}"` */
const objectCall = (nameKey: string, argsKey: string) => (name: string, args: string) =>
  `${lit(`{"${nameKey}": `)} ${lit(JSON.stringify(name))} ${lit(`, "${argsKey}": `)} ${args} ${lit("}")}`;
const list = (sep: string) => (parallel: boolean) => (parallel ? `"[" call (${lit(sep)} call)* "]"` : `"[" call "]"`);

/**
 * The tool-call families, detected from the template's text in this order (first match wins):
 * - command-r7b: `<|START_ACTION|>[{"tool_call_id": "0", "tool_name": ..., "parameters": {...}}]<|END_ACTION|>`
 * - command-r-plus: `Action: ```json [{"tool_name": ..., "parameters": {...}}] ``` ` (template mentions `directly-answer`)
 * - functionary-v3.2 (`>>>all`): detected so the answer is a clear 400 (its template does not render with @huggingface/jinja)
 * - functionary-v3.1: `<function=name>{...}</function>`
 * - firefunction-v2: ` functools[{"name": ..., "arguments": {...}}]`
 * - mistral (Nemo and later): `[TOOL_CALLS][{"name": ..., "arguments": {...}, "id": "<9 letters/digits>"}]`
 * - hermes (Qwen2.5, Hermes 2 Pro / 3): `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`
 * - llama3 (3.1 / 3.2 / 3.3): `{"name": ..., "parameters": {...}}`, or after `<|python_tag|>`
 * Templates matching none (Phi-3.5, Gemma 2, DeepSeek R1 distills: they define no tools) have no
 * tool support: a request with tools is refused rather than answered with plain text.
 */
export const TOOL_FAMILIES: readonly ToolFamilySpec[] = [
  {
    family: "command-r7b",
    detect: (t) => t.includes("<|START_ACTION|>"),
    markers: ["<|START_THINKING|>", "<|START_ACTION|>"],
    forcedPrefix: "<|START_ACTION|>",
    argumentsAsString: false,
    call: (name, args) =>
      `${lit('{"tool_call_id": "')} [0-9]{1,3} ${lit('", "tool_name": ')} ${lit(JSON.stringify(name))} ${lit(', "parameters": ')} ${args} "}"`,
    calls: list(", "),
  },
  {
    family: "command-r-plus",
    detect: (t) => t.includes("directly-answer"),
    markers: ["Action:"],
    forcedPrefix: "Action:\n```json\n",
    argumentsAsString: false,
    call: objectCall("tool_name", "parameters"),
    calls: (p) => `${list(", ")(p)} ${lit("\n```")}`,
  },
  {
    family: "functionary-v3.2",
    detect: (t) => t.includes(">>>all"),
    unsupported:
      "functionary v3.2's chat template uses Jinja tuple unpacking that the template engine (@huggingface/jinja) cannot run",
    markers: [],
    forcedPrefix: "",
    argumentsAsString: true,
    call: () => '""',
    calls: () => '""',
  },
  {
    family: "functionary-v3.1",
    detect: (t) => t.includes("<function="),
    markers: ["<function="],
    forcedPrefix: "",
    argumentsAsString: true,
    call: (name, args) => `${lit(`<function=${name}>`)} ${args} ${lit("</function>")}`,
    calls: (p) => (p ? "call+" : "call"),
  },
  {
    family: "firefunction-v2",
    detect: (t) => t.includes("functools["),
    markers: [" functools[", "functools["],
    forcedPrefix: "",
    argumentsAsString: true,
    call: objectCall("name", "arguments"),
    calls: (p) => `${lit(" functools")} ${list(", ")(p)}`,
  },
  {
    family: "mistral",
    detect: (t) => t.includes("[TOOL_CALLS]"),
    markers: ["[TOOL_CALLS]"],
    forcedPrefix: "[TOOL_CALLS]",
    argumentsAsString: false,
    call: objectCall("name", "arguments"),
    calls: list(", "),
  },
  {
    family: "hermes",
    detect: (t) => t.includes("<tool_call>"),
    markers: ["<tool_call>"],
    forcedPrefix: "",
    argumentsAsString: false,
    call: objectCall("name", "arguments"),
    calls: (p) => {
      const one = `${lit("<tool_call>\n")} call ${lit("\n</tool_call>")}`;
      return p ? `${one} (${lit("\n")} ${one})*` : one;
    },
  },
  {
    family: "llama3",
    detect: (t) => t.includes("<|python_tag|>") || t.includes('{"name": function name, "parameters"'),
    // A reply that is a call starts with "{": any brace is held back until the reply is parsed.
    markers: ["<|python_tag|>", "{"],
    forcedPrefix: "",
    argumentsAsString: false,
    call: objectCall("name", "parameters"),
    calls: (p) => (p ? `call (${lit("; ")} call)*` : "call"),
  },
];

/** The family spec of a supported family. */
export function familySpec(family: ToolFamily): ToolFamilySpec {
  const s = TOOL_FAMILIES.find((f) => f.family === family);
  if (s === undefined) throw new LlmserveError("ERR_INVALID_ARGUMENT", `Unknown tool-call family ${family}`);
  return s;
}

/**
 * The tool-call family of a chat template's Jinja text, or undefined when the template teaches
 * no tool-call format. Throws ERR_INVALID_ARGUMENT for a family that is detected but cannot be
 * served (its message says why).
 */
export function detectToolFamily(template: string): ToolFamily | undefined {
  const s = TOOL_FAMILIES.find((f) => f.detect(template));
  if (s === undefined) return undefined;
  if (s.unsupported !== undefined)
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `Tool calls are not supported for this chat template: ${s.unsupported}.`,
    );
  return s.family as ToolFamily;
}

const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

/**
 * Checks tool definitions (OpenAI's shape; function names of letters, digits, "_" and "-", at most
 * 64, unique) and returns them; ERR_INVALID_ARGUMENT naming the first bad one.
 */
export function checkTools(tools: unknown): ToolDefinition[] {
  if (!Array.isArray(tools)) throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected an array of tools");
  const names = new Set<string>();
  tools.forEach((t, i) => {
    const f = (t as ToolDefinition | null)?.function;
    if ((t as ToolDefinition | null)?.type !== "function" || typeof f !== "object" || f === null)
      throw new LlmserveError("ERR_INVALID_ARGUMENT", `tools[${i}] must be {type: "function", function: {name, ...}}`);
    if (typeof f.name !== "string" || !TOOL_NAME.test(f.name))
      throw new LlmserveError(
        "ERR_INVALID_ARGUMENT",
        `tools[${i}].function.name must be 1-64 letters, digits, "_" or "-" (received ${JSON.stringify(f.name)})`,
      );
    if (names.has(f.name))
      throw new LlmserveError("ERR_INVALID_ARGUMENT", `tools[${i}].function.name ${f.name} is defined twice`);
    names.add(f.name);
    if (
      f.parameters !== undefined &&
      (typeof f.parameters !== "object" || f.parameters === null || Array.isArray(f.parameters))
    )
      throw new LlmserveError("ERR_INVALID_ARGUMENT", `tools[${i}].function.parameters must be a JSON schema object`);
  });
  return tools as ToolDefinition[];
}

/**
 * Tools as templates read them: a description and a parameters object are always present, and so
 * is each parameter's description (Hermes 2 Pro and Command-R templates concatenate them; a
 * missing one fails the render). A copy: the caller's definitions are not changed.
 */
export function toolsForTemplate(tools: readonly ToolDefinition[]): ToolDefinition[] {
  return tools.map((t) => {
    const params = { type: "object", properties: {}, ...(t.function.parameters ?? {}) } as Record<string, unknown>;
    const props = params.properties;
    if (typeof props === "object" && props !== null && !Array.isArray(props)) {
      params.properties = Object.fromEntries(
        Object.entries(props as Record<string, unknown>).map(([k, v]) => [
          k,
          typeof v === "object" &&
          v !== null &&
          !Array.isArray(v) &&
          (v as { description?: unknown }).description === undefined
            ? { ...v, description: "" }
            : v,
        ]),
      );
    }
    return {
      type: "function",
      function: { ...t.function, description: t.function.description ?? "", parameters: params },
    };
  });
}

/** A 9-letter/digit id for Mistral templates (which refuse others): kept when it already is one, else derived from it. */
function mistralId(id: unknown, seen: Map<string, string>): string {
  const s = typeof id === "string" ? id : "";
  if (/^[a-zA-Z0-9]{9}$/.test(s)) return s;
  let out = seen.get(s);
  if (out === undefined) {
    out = randomAlnum(9);
    seen.set(s, out);
  }
  return out;
}

/**
 * Messages as a family's template expects them: call ids Mistral accepts (the assistant's calls and
 * the tool results answering them mapped alike).
 */
export function messagesForTemplate(messages: readonly ChatMessage[], family: ToolFamily): ChatMessage[] {
  if (family !== "mistral") return messages.slice();
  const seen = new Map<string, string>();
  return messages.map((m) => {
    const out: ChatMessage = { ...m };
    if (Array.isArray(m.tool_calls))
      out.tool_calls = m.tool_calls.map((c) =>
        typeof c === "object" && c !== null ? { ...c, id: mistralId((c as { id?: unknown }).id, seen) } : c,
      );
    if (m.role === "tool" && m.tool_call_id !== undefined) out.tool_call_id = mistralId(m.tool_call_id, seen);
    return out;
  });
}

/** Whether a family's templates write past calls' arguments as a JSON string (else as an object). */
export function argumentsAsString(family: ToolFamily): boolean {
  return familySpec(family).argumentsAsString;
}

/** Markup that may start a call in a reply of this family (see streaming in lib/server/tools.ts). */
export function callMarkers(family: ToolFamily): readonly string[] {
  return familySpec(family).markers;
}

/** What {@link toolCallGrammar} returns: text to append to the prompt and the grammar of the rest. */
export interface ForcedToolCall {
  /** Appended to the rendered prompt (the calls' opening marker, when the family has one). */
  prefix: string;
  /** GBNF (start rule `root`) of the reply after `prefix`: one call, or several when `parallel`. */
  grammar: string;
}

/**
 * The prompt suffix and grammar that make the model call one of `tools` (or the one named) in the
 * family's markup, each call's arguments valid for its tool's parameter schema. Throws ERR_GRAMMAR
 * when a parameter schema uses keywords the grammar compiler cannot honor.
 * @example
 * const { prefix, grammar } = toolCallGrammar("hermes", tools, { name: "get_weather" });
 * model.generate(prompt + prefix, { grammar });
 */
export function toolCallGrammar(
  family: ToolFamily,
  tools: readonly ToolDefinition[],
  options: { name?: string; parallel?: boolean } = {},
): ForcedToolCall {
  const spec = familySpec(family);
  const chosen = options.name === undefined ? tools : tools.filter((t) => t.function.name === options.name);
  if (chosen.length === 0)
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      options.name === undefined ? "Expected at least one tool" : `No tool is named ${options.name}`,
    );
  const lines: string[] = [];
  const seen = new Set<string>();
  const alternatives: string[] = [];
  chosen.forEach((t, i) => {
    const start = `targs${i}`;
    let rules: string;
    try {
      rules = jsonSchemaRules(t.function.parameters ?? { type: "object" }, start);
    } catch (err) {
      throw new LlmserveError(
        "ERR_GRAMMAR",
        `tools[${tools.indexOf(t)}].function.parameters: ${(err as Error).message}`,
        { cause: err },
      );
    }
    for (const line of rules.trim().split("\n")) {
      // Primitive rules (string, number, ...) are the same in every schema's rules: keep one copy.
      const name = line.slice(0, line.indexOf(" ::= "));
      if (seen.has(name)) continue;
      seen.add(name);
      lines.push(line);
    }
    alternatives.push(spec.call(t.function.name, start));
  });
  return {
    prefix: spec.forcedPrefix,
    grammar: [
      `root ::= ${spec.calls(options.parallel ?? true)}`,
      `call ::= ${alternatives.join(" | ")}`,
      ...lines,
    ].join("\n"),
  };
}
