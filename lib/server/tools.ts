/**
 * Tool calling on /v1/chat/completions: `tools`, `tool_choice` and `parallel_tool_calls` -> the
 * template family, the tools as the template reads them and, for a forced call ("required" or a
 * named function), the prompt suffix and grammar; then each choice's generated tokens -> content
 * deltas that never contain call markup, and OpenAI `tool_calls` at the end of the reply.
 */
import type { ChatTemplate } from "../chat/index.js";
import {
  argumentsAsString,
  callMarkers,
  checkTools,
  detectToolFamily,
  messagesForTemplate,
  parseToolCalls,
  toolCallGrammar,
  toolsForTemplate,
  type ForcedToolCall,
  type ToolCall,
  type ToolDefinition,
  type ToolFamily,
} from "../chat/tools.js";
import { TOOL_FAMILIES } from "../chat/tools.js";
import { commandR7bText } from "../chat/toolParse.js";
import type { TokenDecoder, Tokenizer } from "../tokenizer/index.js";
import { ApiError } from "./errors.js";
import type { ChatBody } from "./schemas.js";

/** What a chat request with tools renders and generates with. */
export interface ToolPlan {
  family: ToolFamily;
  tools: ToolDefinition[];
  /** Set for tool_choice "required" or a named function: the call is forced by a grammar. */
  forced?: ForcedToolCall;
}

function bad(param: string, message: string, code = "invalid_value"): never {
  throw new ApiError(400, message, { type: "invalid_request_error", code, param });
}

/** The named function of a tool_choice object, or undefined for the string forms. */
function namedChoice(choice: unknown): string | undefined {
  if (typeof choice === "string" || choice === null || choice === undefined) return undefined;
  const name = (choice as { function?: { name?: unknown } }).function?.name;
  if ((choice as { type?: unknown }).type !== "function" || typeof name !== "string")
    bad(
      "tool_choice",
      'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}.',
    );
  return name;
}

/**
 * The tool plan of a chat request, or undefined when it renders without tools (none given, or
 * tool_choice "none"). A 400 names the field for: tools on a template with no tool-call format,
 * malformed tools, a tool_choice naming no tool, a forced call without tools, a parameter schema
 * the grammar cannot honor, and tools combined with a response_format.
 */
export function planTools(body: ChatBody, template: ChatTemplate): ToolPlan | undefined {
  const tools = body.tools ?? [];
  const choice = body.tool_choice ?? "auto";
  const name = namedChoice(choice);
  if (tools.length === 0) {
    if (choice === "required" || name !== undefined)
      bad("tool_choice", "tool_choice requires tools: send the tools the model may call.");
    return undefined;
  }
  if (choice === "none") return undefined;
  let checked: ToolDefinition[];
  try {
    checked = checkTools(tools);
  } catch (err) {
    bad("tools", (err as Error).message);
  }
  let family: ToolFamily | undefined;
  try {
    family = detectToolFamily(template.text);
  } catch (err) {
    bad(
      "tools",
      `${(err as Error).message} Use a chat template of a supported family (--chat-template).`,
      "unsupported_tools",
    );
  }
  if (family === undefined) {
    const families = TOOL_FAMILIES.filter((f) => f.unsupported === undefined).map((f) => f.family);
    bad(
      "tools",
      `This model's chat template (${template.name}) defines no tool-call format, so tool calls could not be parsed from its replies. ` +
        `Serve a model (or pass --chat-template) whose template is one of: ${families.join(", ")}; or remove tools.`,
      "unsupported_tools",
    );
  }
  const rf = body.response_format?.type;
  if (rf !== undefined && rf !== "text")
    bad(
      "response_format",
      "response_format cannot be combined with tools; use one or the other.",
      "unsupported_parameter",
    );
  if (name !== undefined && !checked.some((t) => t.function.name === name))
    bad("tool_choice", `tool_choice names the function ${name}, which is not among the tools.`);
  let forced: ForcedToolCall | undefined;
  if (choice === "required" || name !== undefined) {
    try {
      forced = toolCallGrammar(family, checked, { name, parallel: body.parallel_tool_calls !== false });
    } catch (err) {
      bad("tools", (err as Error).message, "invalid_schema");
    }
  } else if (choice !== "auto") {
    bad(
      "tool_choice",
      'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}.',
    );
  }
  return { family, tools: checked, forced };
}

/** Render options and messages of a chat request (with or without a tool plan). */
export function renderInputs(body: ChatBody, template: ChatTemplate, plan: ToolPlan | undefined) {
  let family = plan?.family;
  if (family === undefined) {
    try {
      family = detectToolFamily(template.text); // past calls still render in the family's form
    } catch {
      family = undefined;
    }
  }
  return {
    messages: family === undefined ? body.messages : messagesForTemplate(body.messages, family),
    tools: plan === undefined ? undefined : toolsForTemplate(plan.tools),
    toolCallArguments: family !== undefined && argumentsAsString(family) ? ("string" as const) : undefined,
    suffix: plan?.forced?.prefix,
  };
}

/** What a finished choice with tools produced. */
export interface ToolReply {
  /** Content still to stream (text before the calls that was held back). */
  contentDelta: string;
  /** The whole reply's content (null when it is only calls). */
  content: string | null;
  toolCalls: ToolCall[];
}

/**
 * One choice's tokens -> content that is safe to stream (text before anything that may start a
 * call, so markup never leaks) and, at the end, the parsed calls. Decodes with special-token text
 * (Mistral's `[TOOL_CALLS]` is a control token), without end-of-generation and stop tokens.
 */
export class ToolReplyParser {
  private readonly decoder: TokenDecoder;
  private text: string;
  private emitted: number;
  private held = false;
  private readonly markers: string[];
  /** The forced call's opening, appended to the prompt: part of what is parsed, never of content. */
  private readonly prefixLength: number;

  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly family: ToolFamily,
    prefix: string,
    private readonly stopTokens: ReadonlySet<number>,
    private readonly stops: readonly string[],
    forced = false,
    /** The tools' names: a call of any other name leaves the reply plain content. */
    private readonly toolNames?: readonly string[],
  ) {
    this.decoder = tokenizer.createDecoder({ special: true });
    this.text = prefix;
    this.prefixLength = prefix.length;
    this.emitted = prefix.length;
    this.markers = [...callMarkers(family), ...stops];
    // A forced call (the prompt ends with its opening, or the grammar starts it) is never content.
    this.held = forced;
  }

  /** Adds generated tokens; returns the content that may be streamed now ("" when none). */
  push(tokens: readonly number[]): string {
    for (const t of tokens) {
      if (this.tokenizer.isEog(t) || this.stopTokens.has(t)) continue;
      this.text += this.decoder.push(t);
    }
    if (this.held) return "";
    let safe = this.text.length;
    for (const m of this.markers) {
      const at = this.text.indexOf(m, this.emitted);
      if (at >= 0 && at < safe) {
        safe = at;
        this.held = true;
      }
    }
    if (!this.held) {
      // A marker may be starting at the end of the text: hold that much back.
      for (const m of this.markers)
        for (let k = Math.min(m.length - 1, this.text.length); k > 0; k--)
          if (this.text.endsWith(m.slice(0, k))) {
            safe = Math.min(safe, this.text.length - k);
            break;
          }
    }
    if (safe <= this.emitted) return "";
    const out = this.text.slice(this.emitted, safe);
    this.emitted = safe;
    return out;
  }

  /** The end of the reply: the content not streamed yet and the parsed calls. */
  finish(): ToolReply {
    this.text += this.decoder.flush();
    let text = this.text;
    for (const s of this.stops) {
      const at = text.indexOf(s);
      if (at >= 0) text = text.slice(0, at);
    }
    const parsed = parseToolCalls(text, this.family, { tools: this.toolNames });
    if (parsed.toolCalls.length === 0) {
      // Command R7B's thinking is not content (the parser drops it); other families answer as written.
      const written = text.slice(this.prefixLength);
      const content = this.family === "command-r7b" ? commandR7bText(written) : written;
      const streamed = this.text.slice(this.prefixLength, this.emitted);
      return {
        contentDelta: content.startsWith(streamed) ? content.slice(streamed.length) : "",
        content,
        toolCalls: [],
      };
    }
    const before = text.slice(0, parsed.callStart).trimEnd();
    return {
      contentDelta: before.length > this.emitted ? before.slice(this.emitted) : "",
      content: parsed.content,
      toolCalls: parsed.toolCalls,
    };
  }
}

/** A call's streamed deltas: its id, type and name, then its arguments in fragments (OpenAI's order). */
export function toolCallDeltas(call: ToolCall, index: number, fragment = 24): object[] {
  const out: object[] = [
    { index, id: call.id, type: "function", function: { name: call.function.name, arguments: "" } },
  ];
  const args = call.function.arguments;
  for (let i = 0; i < args.length; i += fragment)
    out.push({ index, function: { arguments: args.slice(i, i + fragment) } });
  return out;
}
