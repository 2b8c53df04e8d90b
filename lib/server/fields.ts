/**
 * Every field of an OpenAI request body is either honored or refused with a 400 that names it,
 * never silently ignored (a client asking for JSON output, tool calls or an image description
 * must not get plain text with a 200). Three kinds:
 *  - honored: the endpoint's schema properties (lib/server/schemas.ts), the one list of what is
 *    implemented (tools: lib/server/tools.ts);
 *  - OpenAI features llmserve does not have yet: accepted only in their "off" forms
 *    (`functions: []`, `audio: null`, ...), refused otherwise
 *    with a message saying what to do;
 *  - anything else: "Unrecognized request argument", as OpenAI answers.
 */
import { ApiError } from "./errors.js";
import type { Kind } from "./request.js";
import { chatSchema, completionSchema } from "./schemas.js";

/** A refused feature: whether a value is its harmless "off" form, and why other values are refused. */
interface Unsupported {
  off: (v: unknown) => boolean;
  why: string;
}

const isNull = (v: unknown) => v === null;
const emptyList = (v: unknown) => v === null || (Array.isArray(v) && v.length === 0);
const noCall = (v: unknown) => v === null || v === "none" || v === "auto";
const LEGACY_FUNCTIONS = "the legacy functions API is not supported; send tools and tool_choice instead.";

/** OpenAI's chat fields that llmserve does not implement (yet). */
const CHAT_UNSUPPORTED: Record<string, Unsupported> = {
  functions: { off: emptyList, why: LEGACY_FUNCTIONS },
  function_call: { off: noCall, why: LEGACY_FUNCTIONS },
  audio: { off: isNull, why: "audio output is not supported (this server runs a text model); remove it." },
  modalities: {
    off: (v) => v === null || (Array.isArray(v) && v.every((m) => m === "text")),
    why: 'only the "text" modality is supported; remove it or send ["text"].',
  },
  prediction: { off: isNull, why: "predicted outputs are not supported; remove it." },
  web_search_options: { off: isNull, why: "web search is not supported; remove it." },
  reasoning_effort: { off: isNull, why: "reasoning effort is not supported; remove it." },
  store: { off: (v) => v === null || v === false, why: "stored completions are not supported; remove it." },
  metadata: { off: isNull, why: "metadata is only kept with stored completions, which are not supported; remove it." },
  service_tier: {
    off: (v) => v === null || v === "auto" || v === "default",
    why: 'this server has one service tier; remove it or send "auto".',
  },
};

/** OpenAI's legacy-completions fields that llmserve does not implement (yet). */
const COMPLETION_UNSUPPORTED: Record<string, Unsupported> = {
  suffix: { off: isNull, why: "suffix (fill-in-the-middle) is not supported; remove it." },
  // best_of = n (or 1) generates exactly the choices returned; more would be ranked by logprob.
  best_of: {
    off: (v) => v === null || v === 1,
    why: "best_of is not supported (only best_of 1, or equal to n); remove it and use n.",
  },
  store: CHAT_UNSUPPORTED.store,
  metadata: CHAT_UNSUPPORTED.metadata,
  service_tier: CHAT_UNSUPPORTED.service_tier,
};

const HONORED: Record<Kind, ReadonlySet<string>> = {
  chat: new Set(Object.keys(chatSchema.properties)),
  completion: new Set(Object.keys(completionSchema.properties)),
};

function refuse(param: string, message: string, code: string): never {
  throw new ApiError(400, message, { type: "invalid_request_error", code, param });
}

/** Content part types a message may carry: text only (no multimodal model is supported yet). */
function checkContentParts(messages: unknown): void {
  if (!Array.isArray(messages)) return;
  messages.forEach((m, i) => {
    const content = (m as { content?: unknown } | null)?.content;
    if (!Array.isArray(content)) return;
    content.forEach((part, j) => {
      const type = (part as { type?: unknown } | null)?.type;
      if (type === "text") return;
      refuse(
        `messages[${i}].content[${j}].type`,
        `Content parts of type ${JSON.stringify(type)} are not supported: this server runs a text-only model. Send text parts only.`,
        "unsupported_content",
      );
    });
  });
}

/**
 * Throws a 400 naming the first field of `body` that is neither honored by this endpoint nor an
 * unsupported feature in its "off" form; image and other non-text content parts are refused too.
 */
export function checkFields(kind: Kind, body: Record<string, unknown>): void {
  const unsupported = kind === "chat" ? CHAT_UNSUPPORTED : COMPLETION_UNSUPPORTED;
  for (const [field, value] of Object.entries(body)) {
    const u = Object.hasOwn(unsupported, field) ? unsupported[field] : undefined;
    if (u === undefined) {
      if (!HONORED[kind].has(field))
        refuse(field, `Unrecognized request argument supplied: ${field}`, "unknown_parameter");
      continue;
    }
    if (kind === "completion" && field === "best_of" && value === (body.n ?? 1)) continue;
    if (!u.off(value === undefined ? null : value))
      refuse(field, `${field} is not supported by this server: ${u.why}`, "unsupported_parameter");
  }
  if (kind === "chat") checkContentParts(body.messages);
}
