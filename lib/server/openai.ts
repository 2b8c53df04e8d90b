/**
 * The OpenAI-compatible generation endpoints: request -> token prompts -> engine requests (one per
 * choice, submitted together so the engine batches them) -> JSON or Server-Sent Events.
 */
import { randomInt, randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { ChatLimits, ChatTemplate } from "../chat/index.js";
import { resolveOptions, type Chunk, type FinishReason, type GenerateOptions, type TokenLogprob } from "../generate.js";
import type { ServerMetrics } from "../metrics.js";
import type { Model } from "../model.js";
import { OFFTHREAD_MIN_CHARS } from "../tokenizer/index.js";
import { checkTokenIds } from "../validate.js";
import { ApiError, toApiError } from "./errors.js";
import type { ChatBody, CompletionBody, SamplingBody } from "./schemas.js";
import { SseStream } from "./sse.js";

/** What the endpoints share with the server (see createServer). */
export interface EndpointContext {
  model: Model;
  modelName: string;
  metrics: ServerMetrics;
  chatTemplate: () => Promise<ChatTemplate>;
  /**
   * Limits of chat requests instead of the template's (message count, render time, ...); unset
   * fields keep the template's defaults (4096 messages, 2 s, characters bounded by the context).
   */
  chatLimits?: Partial<ChatLimits>;
  /** Admits `sequences` more sequences or throws a 429 ApiError; returns the release function. */
  admit: (sequences: number) => () => void;
  /** Registers a request's AbortController for cancellation at shutdown; returns the unregister function. */
  track: (ac: AbortController) => () => void;
  /** True once shutdown has begun. */
  closing: () => boolean;
  /** See ServerOptions.streamWriteTimeoutMs. */
  streamWriteTimeoutMs: number;
}

type Kind = "chat" | "completion";

interface ChoiceResult {
  index: number;
  text: string;
  completionTokens: number;
  finishReason: ApiFinishReason;
  logprobs: TokenLogprob[];
}

/**
 * OpenAI's finish reasons, plus "cancelled": the server cancelled the request (shutdown timeout)
 * while the client was still waiting, so the text is cut short for a reason other than max_tokens.
 */
export type ApiFinishReason = "stop" | "length" | "cancelled";

/** eos and stop strings -> "stop"; length -> "length"; a request the server cancelled -> "cancelled". */
export function finishReasonOf(r: FinishReason | undefined): ApiFinishReason {
  if (r === "abort") return "cancelled";
  return r === "eos" || r === "stop" ? "stop" : "length";
}

function checkModelName(ctx: EndpointContext, name: string | null | undefined): void {
  if (name !== undefined && name !== null && name !== ctx.modelName) {
    throw new ApiError(404, `The model \`${name}\` does not exist. This server serves \`${ctx.modelName}\` (see GET /v1/models).`, {
      type: "invalid_request_error", code: "model_not_found", param: "model",
    });
  }
}

function stopList(stop: SamplingBody["stop"]): string[] {
  if (stop === undefined || stop === null) return [];
  return (typeof stop === "string" ? [stop] : stop).filter((s) => s.length > 0);
}

/** A 32-bit seed per choice: the request's seed for the first, then +1 each; random without one. */
function seedFor(seed: number | null | undefined, i: number): number {
  if (seed === undefined || seed === null) return randomInt(0, 2 ** 32);
  return (((seed + i) % 2 ** 32) + 2 ** 32) % 2 ** 32;
}

function samplingOptions(body: SamplingBody): GenerateOptions {
  const o: GenerateOptions = {};
  if (body.temperature != null) o.temperature = body.temperature;
  if (body.top_p != null) o.topP = body.top_p === 0 ? 1e-6 : body.top_p;
  if (body.top_k != null) o.topK = Math.max(0, body.top_k);
  if (body.min_p != null) o.minP = body.min_p;
  if (body.presence_penalty != null) o.presencePenalty = body.presence_penalty;
  if (body.frequency_penalty != null) o.frequencyPenalty = body.frequency_penalty;
  if (body.repetition_penalty != null) o.repeatPenalty = body.repetition_penalty;
  return o;
}

function contextError(ctx: EndpointContext, kind: Kind, n: number): ApiError {
  const size = ctx.model.info.contextSize;
  const what = kind === "chat" ? "messages" : "prompt";
  return new ApiError(400, `This model's maximum context length is ${size} tokens. However, your ${what} resulted in ${n} tokens (and at least one must be generated). Please reduce the length of the ${what}.`, {
    code: "context_length_exceeded", param: what,
  });
}

/**
 * The token prompts of a completions request (strings tokenized with special-token parsing). A
 * string longer than the context times the longest token text cannot fit, and is refused before
 * tokenizing; long strings (or many) are tokenized on the tokenizer's worker thread.
 */
async function completionPrompts(ctx: EndpointContext, prompt: CompletionBody["prompt"]): Promise<number[][]> {
  const { nVocab, contextSize } = ctx.model.info;
  const checkIds = (ids: number[]) => {
    try {
      return checkTokenIds(ids, nVocab).slice(); // the library's one token-id check
    } catch (err) {
      throw new ApiError(400, (err as Error).message, { param: "prompt", code: "invalid_value", cause: err });
    }
  };
  const tokenizer = ctx.model.tokenizer;
  const maxChars = contextSize * tokenizer.maxTokenChars;
  const strings = typeof prompt === "string" ? [prompt] : prompt.every((p) => typeof p === "string") ? (prompt as string[]) : undefined;
  if (strings) {
    let total = 0;
    for (const s of strings) {
      if (s.length > maxChars) {
        throw new ApiError(400, `This model's maximum context length is ${contextSize} tokens, and a prompt of ${s.length} characters cannot fit it (at most ${maxChars}: a token stands for at most ${tokenizer.maxTokenChars} characters). Please reduce the length of the prompt.`, {
          code: "context_length_exceeded", param: "prompt",
        });
      }
      total += s.length;
    }
    const offThread = total >= OFFTHREAD_MIN_CHARS;
    return Promise.all(strings.map((s) => tokenizer.encodeAsync(s, { addSpecial: true, parseSpecial: true, offThread })));
  }
  const ids = prompt as number[] | number[][];
  if (ids.every((p) => typeof p === "number")) return [checkIds(ids as number[])];
  return (ids as number[][]).map(checkIds);
}

const now = () => performance.now();

/**
 * Runs one request of either kind. Generation requests (one per prompt x n) are all submitted
 * before anything is written, so a full queue or an overlong prompt is answered with a status.
 */
export async function handleGeneration(ctx: EndpointContext, kind: Kind, request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const t0 = now();
  if (ctx.closing()) throw new ApiError(503, "The server is shutting down.", { code: "shutting_down" });
  const body = request.body as ChatBody & CompletionBody;
  checkModelName(ctx, body.model);
  const model = ctx.model;
  const info = model.info;

  // 1. Token prompts.
  let prompts: number[][];
  let extraStops: string[] = [];
  let extraStopTokens: number[] = [];
  if (kind === "chat") {
    const template = await ctx.chatTemplate();
    // Size limits are checked before rendering; the template renders on a worker thread, and a long
    // prompt is tokenized on the tokenizer's.
    prompts = [await template.tokenize(body.messages, { tools: body.tools ?? undefined, limits: ctx.chatLimits })];
    extraStops = template.stopStrings;
    extraStopTokens = template.stopTokens;
  } else {
    prompts = await completionPrompts(ctx, body.prompt);
  }
  // echo (completions): the prompt text comes first (no prompt logprobs).
  const echo = kind === "completion" && body.echo === true
    ? prompts.map((p, i) => (typeof body.prompt === "string" ? body.prompt : Array.isArray(body.prompt) && typeof body.prompt[i] === "string" ? (body.prompt[i] as string) : model.detokenize(p)))
    : undefined;
  for (const p of prompts) {
    if (p.length === 0) throw new ApiError(400, "The prompt is empty (it has no tokens).", { param: kind === "chat" ? "messages" : "prompt", code: "invalid_value" });
    if (p.length >= info.contextSize) throw contextError(ctx, kind, p.length);
  }

  // 2. Options.
  const n = body.n ?? 1;
  const requested = body.max_completion_tokens ?? body.max_tokens ?? undefined;
  const stop = [...stopList(body.stop), ...extraStops];
  let logprobs: number | undefined;
  if (kind === "chat") logprobs = body.logprobs ? (body.top_logprobs ?? 0) : undefined;
  else logprobs = body.logprobs ?? undefined;
  const base = samplingOptions(body);
  const stream = body.stream === true;
  const includeUsage = stream && body.stream_options?.include_usage === true;

  // 3. Admission and submission (all choices at once, so they batch).
  const release = ctx.admit(prompts.length * n);
  const ac = new AbortController();
  const untrack = ctx.track(ac);
  const res = reply.raw;
  const onClose = () => {
    if (res.writableFinished) return;
    // The client went away: cancel the engine requests now, and drop the half-closed socket.
    ac.abort();
    res.destroy();
  };
  res.on("close", onClose);
  if (res.destroyed || request.raw.socket?.destroyed) ac.abort(); // gone while the prompt was prepared
  const cleanup = () => {
    res.off("close", onClose);
    untrack();
    release();
  };
  const gens: { index: number; promptIndex: number; gen: AsyncGenerator<Chunk, void, undefined> }[] = [];
  try {
    for (let pi = 0; pi < prompts.length; pi++) {
      const room = info.contextSize - prompts[pi].length;
      const maxTokens = Math.min(requested ?? (kind === "chat" ? room : 16), room);
      for (let j = 0; j < n; j++) {
        const stopAtEos = body.ignore_eos !== true;
        const opts = resolveOptions({ ...base, maxTokens, stop, logprobs, seed: seedFor(body.seed, j), signal: ac.signal, stopAtEos }, model.tokenizer.eogTokens);
        if (stopAtEos && extraStopTokens.length > 0) opts.params.stopTokens = [...new Set([...opts.params.stopTokens, ...extraStopTokens])];
        gens.push({ index: pi * n + j, promptIndex: pi, gen: model.start(prompts[pi], opts) });
      }
    }
  } catch (err) {
    ac.abort();
    await Promise.all(gens.map((g) => drain(g.gen)));
    cleanup();
    throw err;
  }

  const promptTokens = prompts.reduce((a, p) => a + p.length, 0);
  ctx.metrics.inFlight.inc();
  const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomUUID().replaceAll("-", "")}`;
  const created = Math.floor(Date.now() / 1000);
  const object = kind === "chat" ? "chat.completion" : "text_completion";
  const tokenizer = model.tokenizer;

  const chatLogprobs = (lps: TokenLogprob[]) => ({
    content: lps.map((l) => ({
      token: l.text, logprob: l.logprob, bytes: Array.from(tokenizer.tokenBytes(l.token)),
      top_logprobs: l.top.map((t) => ({ token: t.text, logprob: t.logprob, bytes: Array.from(tokenizer.tokenBytes(t.token)) })),
    })),
  });
  const completionLogprobs = (lps: TokenLogprob[], offset0: number) => {
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
  };

  /** Consumes one choice; `onChunk` sees every chunk that adds text or logprobs. */
  const run = async (index: number, gen: AsyncGenerator<Chunk, void, undefined>, onChunk?: (c: Chunk, textOffset: number) => Promise<void>): Promise<ChoiceResult> => {
    const r: ChoiceResult = { index, text: "", completionTokens: 0, finishReason: "length", logprobs: [] };
    let last = -1;
    for await (const c of gen) {
      if (c.tokens.length > 0) {
        const t = now();
        if (last < 0) ctx.metrics.timeToFirstToken.observe((t - t0) / 1000);
        else for (let k = 0; k < c.tokens.length; k++) ctx.metrics.interTokenLatency.observe((t - last) / 1000 / c.tokens.length);
        last = t;
        r.completionTokens += c.tokens.length;
      }
      const offset = r.text.length;
      r.text += c.text;
      if (c.logprobs) r.logprobs.push(...c.logprobs);
      if (onChunk && (c.text.length > 0 || (c.logprobs && c.logprobs.length > 0))) await onChunk(c, offset);
      if (c.done) r.finishReason = finishReasonOf(c.finishReason);
    }
    return r;
  };

  const usageOf = (results: ChoiceResult[]) => {
    const completion = results.reduce((a, r) => a + r.completionTokens, 0);
    ctx.metrics.promptTokens.inc(promptTokens);
    ctx.metrics.completionTokens.inc(completion);
    return { prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion };
  };

  if (!stream) {
    try {
      const results = await Promise.all(gens.map((g) => run(g.index, g.gen)));
      const usage = usageOf(results);
      const choices = results.map((r) =>
        kind === "chat"
          ? { index: r.index, message: { role: "assistant", content: r.text, refusal: null }, logprobs: logprobs === undefined ? null : chatLogprobs(r.logprobs), finish_reason: r.finishReason }
          : {
            index: r.index, text: (echo?.[Math.floor(r.index / n)] ?? "") + r.text,
            logprobs: logprobs === undefined ? null : completionLogprobs(r.logprobs, echo?.[Math.floor(r.index / n)].length ?? 0), finish_reason: r.finishReason,
          },
      );
      return { id, object, created, model: ctx.modelName, system_fingerprint: "llmserve", choices, usage };
    } catch (err) {
      ac.abort();
      await Promise.all(gens.map((g) => drain(g.gen)));
      throw err;
    } finally {
      ctx.metrics.inFlight.dec();
      cleanup();
    }
  }

  // Streaming: from here on the response is ours (fastify no longer writes it).
  reply.hijack();
  const sse = new SseStream(res, ctx.streamWriteTimeoutMs, () => ctx.metrics.streamWriteTimeouts.inc());
  sse.open();
  const chunkObject = kind === "chat" ? "chat.completion.chunk" : "text_completion";
  const envelope = (choices: unknown[]) => ({
    id, object: chunkObject, created, model: ctx.modelName, system_fingerprint: "llmserve", choices, ...(includeUsage ? { usage: null } : {}),
  });
  try {
    if (kind === "chat") {
      await sse.send(envelope(gens.map((g) => ({ index: g.index, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }))));
    } else if (echo) {
      await sse.send(envelope(gens.map((g) => ({ index: g.index, text: echo[g.promptIndex], logprobs: null, finish_reason: null }))));
    }
    const results = await Promise.all(
      gens.map(async (g) => {
        const r = await run(g.index, g.gen, (c, offset) =>
          sse.send(envelope([
            kind === "chat"
              ? { index: g.index, delta: { content: c.text }, logprobs: c.logprobs && logprobs !== undefined ? chatLogprobs(c.logprobs) : null, finish_reason: null }
              : {
                index: g.index, text: c.text, finish_reason: null,
                logprobs: c.logprobs && logprobs !== undefined ? completionLogprobs(c.logprobs, offset + (echo?.[g.promptIndex].length ?? 0)) : null,
              },
          ])));
        await sse.send(envelope([
          kind === "chat" ? { index: g.index, delta: {}, logprobs: null, finish_reason: r.finishReason } : { index: g.index, text: "", logprobs: null, finish_reason: r.finishReason },
        ]));
        return r;
      }),
    );
    const usage = usageOf(results);
    if (includeUsage) await sse.send({ id, object: chunkObject, created, model: ctx.modelName, system_fingerprint: "llmserve", choices: [], usage });
    sse.end();
  } catch (err) {
    ac.abort();
    await Promise.all(gens.map((g) => drain(g.gen)));
    const e = toApiError(err);
    request.log.error({ err }, "generation failed mid-stream");
    await sse.send(e.body());
    sse.end();
  } finally {
    ctx.metrics.inFlight.dec();
    cleanup();
  }
  return reply;
}

/** Runs a (possibly never started) generator to its end so its native request is released. */
async function drain(gen: AsyncGenerator<Chunk, void, undefined>): Promise<void> {
  try {
    for await (const _ of gen) {
      /* discard */
    }
  } catch {
    /* already failing */
  }
}
