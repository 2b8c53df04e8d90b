/**
 * The OpenAI-compatible generation endpoints: request -> token prompts -> engine requests (one per
 * choice, submitted together so the engine batches them) -> JSON or Server-Sent Events.
 * The steps each live in their own place: request mapping (request.ts), admission and submission
 * (here), the response (response.ts).
 */
import { performance } from "node:perf_hooks";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { ChatLimits, ChatTemplate } from "../chat/index.js";
import { resolveOptions } from "../generate.js";
import type { ServerMetrics } from "../metrics.js";
import type { Model } from "../model.js";
import { ApiError } from "./errors.js";
import { checkFields } from "./fields.js";
import {
  checkLogitBias,
  checkModelName,
  maxTokensFor,
  preparePrompts,
  requestOptions,
  seedFor,
  type GenerationBody,
  type Kind,
  type Prompts,
  type RequestOptions,
} from "./request.js";
import { drain, respondJson, respondStream, responseIdentity, type Choice, type ResponseContext } from "./response.js";

export { finishReasonOf, type ApiFinishReason } from "./response.js";

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

/** An admitted request: its cancellation and the release of everything it holds. */
interface Admission {
  ac: AbortController;
  /** Unregisters the request and returns its admitted sequences (idempotent per request). */
  release: () => void;
}

/**
 * Admits the request's sequences (or throws 429 / 400) and ties its cancellation to the client's
 * connection and to server shutdown.
 */
function admitRequest(
  ctx: EndpointContext,
  sequences: number,
  request: FastifyRequest,
  reply: FastifyReply,
): Admission {
  const releaseSlots = ctx.admit(sequences);
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
  return {
    ac,
    release: () => {
      res.off("close", onClose);
      untrack();
      releaseSlots();
    },
  };
}

/**
 * Submits one engine request per prompt x n, all before anything is written, so a full queue, an
 * overlong prompt or an adapter that cannot be reloaded is answered with a status. On failure the ones already submitted are cancelled.
 */
async function submitChoices(
  ctx: EndpointContext,
  kind: Kind,
  p: Prompts,
  o: RequestOptions,
  ac: AbortController,
): Promise<Choice[]> {
  const model = ctx.model;
  const contextSize = model.info.contextSize;
  const choices: Choice[] = [];
  try {
    for (let pi = 0; pi < p.prompts.length; pi++) {
      const maxTokens = maxTokensFor(kind, o.requested, contextSize - p.prompts[pi].length);
      for (let j = 0; j < o.n; j++) {
        const stopAtEos = !o.ignoreEos;
        const opts = resolveOptions(
          {
            ...o.base,
            maxTokens,
            stop: o.stop,
            logprobs: o.logprobs,
            seed: seedFor(o.seed, j),
            signal: ac.signal,
            stopAtEos,
          },
          model.tokenizer.eogTokens,
        );
        if (stopAtEos && p.extraStopTokens.length > 0)
          opts.params.stopTokens = [...new Set([...opts.params.stopTokens, ...p.extraStopTokens])];
        // Awaited: a LoRA adapter evicted under maxAdapters is reloaded first, and a failed reload is
        // answered with a status like any other submit error (each later choice finds it resident).
        const gen = await model.startSubmitted(p.prompts[pi], opts);
        choices.push({ index: pi * o.n + j, promptIndex: pi, gen });
      }
    }
  } catch (err) {
    ac.abort();
    await Promise.all(choices.map((g) => drain(g.gen)));
    throw err;
  }
  return choices;
}

/**
 * Runs one request of either kind: map it, admit it, submit every choice, then answer with one JSON
 * body or a stream.
 */
export async function handleGeneration(
  ctx: EndpointContext,
  kind: Kind,
  request: FastifyRequest,
  reply: FastifyReply,
): Promise<unknown> {
  const t0 = performance.now();
  if (ctx.closing()) throw new ApiError(503, "The server is shutting down.", { code: "shutting_down" });
  const body = request.body as GenerationBody;
  checkFields(kind, body);
  checkLogitBias(body, ctx.model.info.nVocab);
  const adapter = checkModelName(
    ctx.modelName,
    body.model,
    ctx.model.adapters().map((a) => a.name),
  );

  const prompts = await preparePrompts(ctx, kind, body);
  const o = requestOptions(kind, body, prompts.extraStops, prompts.tools);
  if (adapter !== undefined) o.base = { ...o.base, adapter };
  const { ac, release } = admitRequest(ctx, prompts.prompts.length * o.n, request, reply);
  let choices: Choice[];
  try {
    choices = await submitChoices(ctx, kind, prompts, o, ac);
  } catch (err) {
    release();
    throw err;
  }

  ctx.metrics.inFlight.inc();
  const r: ResponseContext = {
    kind,
    ...responseIdentity(kind),
    modelName: adapter ?? ctx.modelName,
    metrics: ctx.metrics,
    tokenizer: ctx.model.tokenizer,
    t0,
    n: o.n,
    logprobs: o.logprobs,
    echo: prompts.echo,
    promptTokens: prompts.prompts.reduce((a, p) => a + p.length, 0),
    includeUsage: o.includeUsage,
    streamWriteTimeoutMs: ctx.streamWriteTimeoutMs,
    tools:
      prompts.tools === undefined
        ? undefined
        : {
            family: prompts.tools.family,
            prefix: prompts.tools.forced?.prefix ?? "",
            forced: prompts.tools.forced !== undefined,
            names: prompts.tools.tools.map((t) => t.function.name),
            stops: o.stop,
            stopTokens: new Set(prompts.extraStopTokens),
          },
  };
  try {
    if (!o.stream) {
      try {
        return await respondJson(r, choices);
      } catch (err) {
        ac.abort();
        await Promise.all(choices.map((g) => drain(g.gen)));
        throw err;
      }
    }
    await respondStream(r, choices, request, reply, () => ac.abort());
    return reply;
  } finally {
    ctx.metrics.inFlight.dec();
    release();
  }
}
