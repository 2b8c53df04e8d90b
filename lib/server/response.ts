/**
 * The responses of the OpenAI-compatible endpoints: consuming each choice's chunks, mapping finish
 * reasons, logprobs and usage to OpenAI's shapes, and writing them as one JSON body or as
 * Server-Sent Events.
 */
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { Chunk, FinishReason, TokenLogprob } from "../generate.js";
import type { ServerMetrics } from "../metrics.js";
import type { Tokenizer } from "../tokenizer/index.js";
import { toApiError } from "./errors.js";
import type { Kind } from "./request.js";
import { SseStream } from "./sse.js";
import type { ToolCall, ToolFamily } from "../chat/tools.js";
import { ToolReplyParser, toolCallDeltas } from "./tools.js";

/**
 * OpenAI's finish reasons, plus "cancelled": the server cancelled the request (shutdown timeout)
 * while the client was still waiting, so the text is cut short for a reason other than max_tokens.
 */
export type ApiFinishReason = "stop" | "length" | "cancelled" | "tool_calls";

/** eos and stop strings -> "stop"; length -> "length"; a request the server cancelled -> "cancelled". */
export function finishReasonOf(r: FinishReason | undefined): ApiFinishReason {
  if (r === "abort") return "cancelled";
  return r === "eos" || r === "stop" ? "stop" : "length";
}

/** One engine request of an HTTP request: choice `index`, for prompt `promptIndex`. */
export interface Choice {
  index: number;
  promptIndex: number;
  gen: AsyncGenerator<Chunk, void, undefined>;
}

/** What a choice produced. */
export interface ChoiceResult {
  index: number;
  text: string;
  completionTokens: number;
  finishReason: ApiFinishReason;
  logprobs: TokenLogprob[];
  /** Prompt tokens whose KV was reused instead of computed (0 when unknown). */
  cachedTokens: number;
  /** With tools: the reply's content (null when only calls) and its calls. */
  content?: string | null;
  toolCalls?: ToolCall[];
}

/** Everything a response is written from. */
export interface ResponseContext {
  kind: Kind;
  /** See {@link responseIdentity}. */
  id: string;
  created: number;
  modelName: string;
  metrics: ServerMetrics;
  tokenizer: Tokenizer;
  /** performance.now() when the request arrived (time to first token). */
  t0: number;
  /** Choices per prompt. */
  n: number;
  /** Alternatives per token when logprobs were asked for; undefined otherwise. */
  logprobs?: number;
  /** echo (completions): each prompt's text, which its choices start with. */
  echo?: string[];
  promptTokens: number;
  includeUsage: boolean;
  streamWriteTimeoutMs: number;
  /** Chat with tools: replies are parsed for calls (content deltas never hold call markup). */
  tools?: {
    family: ToolFamily;
    /** The forced call's opening marker, appended to the prompt (the reply continues it). */
    prefix: string;
    /** tool_choice "required" or a named function: the whole reply is calls. */
    forced: boolean;
    /** The tools' names (a reply calling another name is content). */
    names: string[];
    stops: string[];
    stopTokens: ReadonlySet<number>;
  };
}

/** The response id and creation time (seconds), fixed when the engine requests were submitted. */
export function responseIdentity(kind: Kind): { id: string; created: number } {
  return {
    id: `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomUUID().replaceAll("-", "")}`,
    created: Math.floor(Date.now() / 1000),
  };
}

/** The envelope fields every body and chunk carries. */
function envelopeOf(r: ResponseContext) {
  return { id: r.id, created: r.created, model: r.modelName, system_fingerprint: "llmserve" };
}

function chatLogprobs(tokenizer: Tokenizer, lps: TokenLogprob[]) {
  return {
    content: lps.map((l) => ({
      token: l.text,
      logprob: l.logprob,
      bytes: Array.from(tokenizer.tokenBytes(l.token)),
      top_logprobs: l.top.map((t) => ({
        token: t.text,
        logprob: t.logprob,
        bytes: Array.from(tokenizer.tokenBytes(t.token)),
      })),
    })),
  };
}

function completionLogprobs(lps: TokenLogprob[], offset0: number) {
  let offset = offset0;
  const text_offset: number[] = [];
  for (const l of lps) {
    text_offset.push(offset);
    offset += l.text.length;
  }
  return {
    tokens: lps.map((l) => l.text),
    token_logprobs: lps.map((l) => l.logprob),
    top_logprobs: lps.map((l) => Object.fromEntries(l.top.map((t) => [t.text, t.logprob]))),
    text_offset,
  };
}

/**
 * Consumes one choice (observing token latencies); `onChunk` sees every chunk that adds text or
 * logprobs. With tools, a chunk's text is the content that is safe to stream (see
 * ToolReplyParser), and the result carries the parsed calls and what content was held back.
 */
async function runChoice(
  r: ResponseContext,
  index: number,
  gen: AsyncGenerator<Chunk, void, undefined>,
  onChunk?: (c: Chunk, textOffset: number) => Promise<void>,
): Promise<ChoiceResult & { heldBack?: string }> {
  const t = r.tools;
  const parser =
    t === undefined
      ? undefined
      : new ToolReplyParser(r.tokenizer, t.family, t.prefix, t.stopTokens, t.stops, t.forced, t.names);
  const out: ChoiceResult = {
    index,
    text: "",
    completionTokens: 0,
    finishReason: "length",
    logprobs: [],
    cachedTokens: 0,
  };
  let last = -1;
  for await (const c of gen) {
    if (c.tokens.length > 0) {
      const t = performance.now();
      if (last < 0) r.metrics.timeToFirstToken.observe((t - r.t0) / 1000);
      else
        for (let k = 0; k < c.tokens.length; k++)
          r.metrics.interTokenLatency.observe((t - last) / 1000 / c.tokens.length);
      last = t;
      out.completionTokens += c.tokens.length;
    }
    const offset = out.text.length;
    const chunk = parser === undefined ? c : { ...c, text: parser.push(c.tokens) };
    out.text += chunk.text;
    if (c.logprobs) out.logprobs.push(...c.logprobs);
    if (onChunk && (chunk.text.length > 0 || (c.logprobs && c.logprobs.length > 0))) await onChunk(chunk, offset);
    if (c.done) {
      out.finishReason = finishReasonOf(c.finishReason);
      out.cachedTokens = c.cachedTokens ?? 0;
    }
  }
  if (parser === undefined) return out;
  const reply = parser.finish();
  out.content = reply.content;
  out.toolCalls = reply.toolCalls;
  // A reply that ended naturally with calls finishes with "tool_calls" (a cut one does not parse).
  if (reply.toolCalls.length > 0 && out.finishReason === "stop") out.finishReason = "tool_calls";
  return { ...out, heldBack: reply.contentDelta };
}

/**
 * OpenAI's usage object (and the token counters). prompt_tokens counts each prompt once (not per
 * choice), so cached_tokens does too: per prompt, the tokens every one of its choices reused.
 */
function usageOf(r: ResponseContext, results: ChoiceResult[]) {
  const completion = results.reduce((a, x) => a + x.completionTokens, 0);
  r.metrics.promptTokens.inc(r.promptTokens);
  r.metrics.completionTokens.inc(completion);
  const cachedPerPrompt = new Map<number, number>();
  for (const x of results) {
    const p = Math.floor(x.index / r.n);
    cachedPerPrompt.set(p, Math.min(cachedPerPrompt.get(p) ?? x.cachedTokens, x.cachedTokens));
  }
  let cached = 0;
  for (const c of cachedPerPrompt.values()) cached += c;
  return {
    prompt_tokens: r.promptTokens,
    completion_tokens: completion,
    total_tokens: r.promptTokens + completion,
    prompt_tokens_details: { cached_tokens: cached },
  };
}

/** Runs a (possibly never started) generator to its end so its native request is released. */
export async function drain(gen: AsyncGenerator<Chunk, void, undefined>): Promise<void> {
  try {
    for await (const _ of gen) {
      /* discard */
    }
  } catch {
    /* already failing */
  }
}

/** The whole response as one JSON body, once every choice has finished. Throws on failure. */
export async function respondJson(r: ResponseContext, choices: Choice[]) {
  const results = await Promise.all(choices.map((g) => runChoice(r, g.index, g.gen)));
  const usage = usageOf(r, results);
  const echoOf = (x: ChoiceResult) => r.echo?.[Math.floor(x.index / r.n)];
  const body = results.map((x) =>
    r.kind === "chat"
      ? {
          index: x.index,
          message: {
            role: "assistant",
            content: x.toolCalls === undefined ? x.text : x.content,
            refusal: null,
            ...(x.toolCalls !== undefined && x.toolCalls.length > 0 ? { tool_calls: x.toolCalls } : {}),
          },
          logprobs: r.logprobs === undefined ? null : chatLogprobs(r.tokenizer, x.logprobs),
          finish_reason: x.finishReason,
        }
      : {
          index: x.index,
          text: (echoOf(x) ?? "") + x.text,
          logprobs: r.logprobs === undefined ? null : completionLogprobs(x.logprobs, echoOf(x)?.length ?? 0),
          finish_reason: x.finishReason,
        },
  );
  const e = envelopeOf(r);
  return {
    id: e.id,
    object: r.kind === "chat" ? "chat.completion" : "text_completion",
    created: e.created,
    model: e.model,
    system_fingerprint: e.system_fingerprint,
    choices: body,
    usage,
  };
}

/**
 * Streams the response as Server-Sent Events (the reply is hijacked: fastify no longer writes it).
 * A failure mid-stream cancels the other choices (`abort`) and ends the stream with an error event.
 */
export async function respondStream(
  r: ResponseContext,
  choices: Choice[],
  request: FastifyRequest,
  reply: FastifyReply,
  abort: () => void,
): Promise<void> {
  reply.hijack();
  const sse = new SseStream(reply.raw, r.streamWriteTimeoutMs, () => r.metrics.streamWriteTimeouts.inc());
  sse.open();
  const { id, created, model, system_fingerprint } = envelopeOf(r);
  const object = r.kind === "chat" ? "chat.completion.chunk" : "text_completion";
  const envelope = (c: unknown[]) => ({
    id,
    object,
    created,
    model,
    system_fingerprint,
    choices: c,
    ...(r.includeUsage ? { usage: null } : {}),
  });
  const delta = (g: Choice, c: Chunk, offset: number) =>
    r.kind === "chat"
      ? {
          index: g.index,
          delta: { content: c.text },
          logprobs: c.logprobs && r.logprobs !== undefined ? chatLogprobs(r.tokenizer, c.logprobs) : null,
          finish_reason: null,
        }
      : {
          index: g.index,
          text: c.text,
          finish_reason: null,
          logprobs:
            c.logprobs && r.logprobs !== undefined
              ? completionLogprobs(c.logprobs, offset + (r.echo?.[g.promptIndex].length ?? 0))
              : null,
        };
  const finish = (g: Choice, reason: ApiFinishReason) =>
    r.kind === "chat"
      ? { index: g.index, delta: {}, logprobs: null, finish_reason: reason }
      : { index: g.index, text: "", logprobs: null, finish_reason: reason };
  try {
    if (r.kind === "chat") {
      await sse.send(
        envelope(
          choices.map((g) => ({
            index: g.index,
            delta: { role: "assistant", content: "" },
            logprobs: null,
            finish_reason: null,
          })),
        ),
      );
    } else if (r.echo) {
      const echo = r.echo;
      await sse.send(
        envelope(
          choices.map((g) => ({ index: g.index, text: echo[g.promptIndex], logprobs: null, finish_reason: null })),
        ),
      );
    }
    const results = await Promise.all(
      choices.map(async (g) => {
        const x = await runChoice(r, g.index, g.gen, (c, offset) => sse.send(envelope([delta(g, c, offset)])));
        if (x.heldBack)
          await sse.send(
            envelope([{ index: g.index, delta: { content: x.heldBack }, logprobs: null, finish_reason: null }]),
          );
        for (const [i, call] of (x.toolCalls ?? []).entries())
          for (const d of toolCallDeltas(call, i))
            await sse.send(
              envelope([{ index: g.index, delta: { tool_calls: [d] }, logprobs: null, finish_reason: null }]),
            );
        await sse.send(envelope([finish(g, x.finishReason)]));
        return x;
      }),
    );
    const usage = usageOf(r, results);
    if (r.includeUsage) await sse.send({ id, object, created, model, system_fingerprint, choices: [], usage });
    sse.end();
  } catch (err) {
    abort();
    await Promise.all(choices.map((g) => drain(g.gen)));
    const e = toApiError(err);
    request.log.error({ err }, "generation failed mid-stream");
    await sse.send(e.body());
    sse.end();
  }
}
