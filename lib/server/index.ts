/**
 * An OpenAI-compatible HTTP server (fastify) over one loaded Model:
 * POST /v1/completions, POST /v1/chat/completions (JSON or Server-Sent Events), GET /v1/models,
 * POST /v1/embeddings, POST /tokenize and /detokenize (llama-server's shapes), GET /health, GET /metrics (Prometheus).
 * @example
 * const model = await Model.load("model.gguf");
 * const app = createServer(model, { apiKey: "secret" });
 * await app.listen({ port: 8080, host: "127.0.0.1" });
 */
import type { Socket } from "node:net";
import { basename } from "node:path";
import { performance } from "node:perf_hooks";
import fastifyCors from "@fastify/cors";
import Fastify, {
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerOptions,
} from "fastify";
import { ChatTemplate } from "../chat/index.js";
import { SERVER_DEFAULTS } from "../defaults.js";
import { LlmserveError } from "../errors.js";
import { INT32_MAX } from "../limits.js";
import { ServerMetrics } from "../metrics.js";
import type { Model, ModelStats } from "../model.js";
import { Authorizer } from "./auth.js";
import { ApiError, clientErrorResponse, toApiError } from "./errors.js";
import { handleGeneration, type EndpointContext } from "./openai.js";
import { chatSchema, completionSchema } from "./schemas.js";
import { registerEmbeddingRoutes } from "./embeddings.js";
import { registerTokenizeRoutes } from "./tokenize.js";

export { Authorizer, type AuthKeys, type RouteAccess } from "./auth.js";
export { ApiError, toApiError, type OpenAIErrorBody } from "./errors.js";
export type { ChatBody, CompletionBody, SamplingBody } from "./schemas.js";

/** Options of {@link createServer}. */
export interface ServerOptions {
  /**
   * Require `Authorization: Bearer <apiKey>` on every route but `/health` (checked on the route that
   * matched, deny by default; `/metrics` too unless `metricsKey` is set).
   */
  apiKey?: string;
  /** A scrape-only key accepted on `/metrics` (the API key works there too). */
  metricsKey?: string;
  /** Time a client has to send a request's headers, from connecting (default 10 s; slowloris). */
  headersTimeoutMs?: number;
  /** Time a client has to send a whole request, headers and body (default 30 s). */
  requestTimeoutMs?: number;
  /** An idle keep-alive connection is closed after this long (default 10 s). */
  keepAliveTimeoutMs?: number;
  /** Most open connections; further ones are closed at once (default 1024). */
  maxConnections?: number;
  /**
   * A streaming client that takes no data for this long (its socket buffer full) is cut off and its
   * request cancelled, freeing its KV blocks (default 30 s).
   */
  streamWriteTimeoutMs?: number;
  /**
   * Most sequences waiting for a slot beyond those the engine runs at once (its maxSequences);
   * more are answered 429 at once. Unset: only the engine's own queue limit (ERR_QUEUE_FULL -> 429).
   */
  maxQueue?: number;
  /** The model id clients pass as `model` (default: the file name without .gguf). */
  modelName?: string;
  /** A built-in chat template name ("chatml", "llama3", ...) or Jinja text instead of the file's. */
  chatTemplate?: string;
  /** fastify logger option (default false). */
  logger?: FastifyServerOptions["logger"];
  /** Largest request body in bytes (default 8 MiB). */
  bodyLimit?: number;
  /** Collect prom-client's default process metrics too (default true). */
  defaultMetrics?: boolean;
  /**
   * Origins that browser pages may call the API from (CORS, via @fastify/cors): one origin such as
   * "https://app.example.com", several, or "*" for any. Default: none (no CORS headers, so pages
   * of other origins cannot read responses). Preflight requests need no API key (browsers send
   * none); the actual requests still do.
   */
  cors?: string | string[];
}

/** Options of {@link LlmserveServerState.shutdown}. */
export interface ShutdownOptions {
  /** How long in-flight requests may run before they are cancelled (default 10 s). */
  timeoutMs?: number;
  /** Dispose the model once the server has closed (default false). */
  disposeModel?: boolean;
}

/** Server state reachable as `app.llmserve`. */
export interface LlmserveServerState {
  /** The model being served. */
  model: Model;
  /** The model id clients pass as `model`. */
  modelName: string;
  /** The server's Prometheus metrics (its own Registry). */
  metrics: ServerMetrics;
  /** Generation requests being served. */
  readonly inFlight: number;
  /** Resolves with the chat template (loaded at creation). */
  chatTemplate(): Promise<ChatTemplate>;
  /**
   * Stops accepting requests, lets in-flight ones finish (cancelling them after the timeout), closes
   * the server and optionally disposes the model.
   */
  shutdown(options?: ShutdownOptions): Promise<void>;
}

declare module "fastify" {
  interface FastifyInstance {
    llmserve: LlmserveServerState;
  }
}

/** The default model id: the file name without its .gguf extension. */
export function defaultModelName(path: string): string {
  return basename(path).replace(/\.gguf$/i, "");
}

/** createServer's options, checked, with every default applied (SERVER_DEFAULTS). */
interface ResolvedServerOptions {
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  keepAliveTimeoutMs: number;
  maxConnections: number;
  streamWriteTimeoutMs: number;
  bodyLimit: number;
  maxQueue?: number;
  /** CORS origins; undefined: CORS off. */
  cors?: string[];
}

function resolveCors(cors: ServerOptions["cors"]): string[] | undefined {
  if (cors === undefined) return undefined;
  const list = typeof cors === "string" ? [cors] : cors;
  if (!Array.isArray(list) || list.length === 0 || list.some((o) => typeof o !== "string" || o.length === 0))
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `Expected an origin such as "https://app.example.com", a non-empty array of them, or "*" for cors but received ${JSON.stringify(cors)}`,
    );
  return list;
}

function resolveServerOptions(options: ServerOptions): ResolvedServerOptions {
  const D = SERVER_DEFAULTS;
  const int = (name: keyof ServerOptions & keyof typeof D, min = 1) => {
    const v = options[name] ?? D[name];
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > INT32_MAX) {
      throw new LlmserveError(
        "ERR_INVALID_ARGUMENT",
        `Expected an integer in [${min}, ${INT32_MAX}] for ${name} but received ${String(v)}`,
      );
    }
    return v;
  };
  const headersTimeoutMs = int("headersTimeoutMs");
  const requestTimeoutMs = int("requestTimeoutMs");
  if (headersTimeoutMs > requestTimeoutMs) {
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `headersTimeoutMs (${headersTimeoutMs}) must not exceed requestTimeoutMs (${requestTimeoutMs})`,
    );
  }
  if (options.maxQueue !== undefined && (!Number.isInteger(options.maxQueue) || options.maxQueue < 0)) {
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `Expected a non-negative integer for maxQueue but received ${options.maxQueue}`,
    );
  }
  return {
    headersTimeoutMs,
    requestTimeoutMs,
    keepAliveTimeoutMs: int("keepAliveTimeoutMs"),
    maxConnections: int("maxConnections"),
    streamWriteTimeoutMs: int("streamWriteTimeoutMs"),
    bodyLimit: options.bodyLimit ?? D.bodyLimit,
    maxQueue: options.maxQueue,
    cors: resolveCors(options.cors),
  };
}

/** The fastify instance with the server's timeouts, body limit and validation settings. */
function buildFastify(o: ResolvedServerOptions, logger: ServerOptions["logger"]): FastifyInstance {
  return Fastify({
    logger: logger ?? false,
    bodyLimit: o.bodyLimit,
    forceCloseConnections: "idle",
    requestTimeout: o.requestTimeoutMs,
    clientErrorHandler(err, socket) {
      const code = (err as { code?: unknown }).code;
      if (code === "ECONNRESET" || code === "EPIPE" || !socket.writable) return void socket.destroy();
      socket.end(clientErrorResponse(err));
    },
    keepAliveTimeout: o.keepAliveTimeoutMs,
    // Node checks header/request deadlines on this interval (default 30 s): check often enough that
    // a slow client is cut off close to its deadline.
    http: { connectionsCheckingInterval: Math.min(1_000, o.headersTimeoutMs), headersTimeout: o.headersTimeoutMs },
    return503OnClosing: false, // requests on open connections while closing get OpenAI-style 503s from the routes
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false } },
  });
}

/**
 * Admission of sequences beyond the engine's maxSequences: at most `maxQueue` more (unset: no limit
 * here, only the engine's queue). Returns EndpointContext.admit.
 */
function admission(maxSequences: number, maxQueue: number | undefined): EndpointContext["admit"] {
  let active = 0; // sequences admitted
  return (sequences) => {
    if (maxQueue !== undefined && sequences > maxSequences + maxQueue) {
      // Could never be admitted, however idle the server: not a "retry later".
      throw new ApiError(
        400,
        `This request needs ${sequences} sequences (prompts x n); this server admits at most ${maxSequences + maxQueue} at once. Send fewer prompts or a smaller n.`,
        { code: "invalid_value", param: "n" },
      );
    }
    if (maxQueue !== undefined && active + sequences > maxSequences + maxQueue) {
      throw new ApiError(
        429,
        `The server is busy (${active} sequences running or queued, at most ${maxSequences + maxQueue}); retry later.`,
        { code: "queue_full" },
      );
    }
    active += sequences;
    let released = false;
    return () => {
      if (!released) active -= sequences;
      released = true;
    };
  };
}

/** Requests in flight, their AbortControllers, and the graceful shutdown that waits for them. */
class Lifecycle {
  closing = false;
  inFlight = 0;
  readonly controllers = new Set<AbortController>();
  private idleWaiters: (() => void)[] = [];
  private shutdownPromise?: Promise<void>;

  constructor(
    private readonly app: FastifyInstance,
    private readonly model: Model,
  ) {}

  /** Wraps a route handler so the request counts as in flight until it returns. */
  track<A extends unknown[], R>(f: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
    return async (...args: A) => {
      this.inFlight++;
      try {
        return await f(...args);
      } finally {
        this.requestDone();
      }
    };
  }

  private requestDone(): void {
    this.inFlight--;
    if (this.inFlight === 0) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of w) f();
    }
  }

  private idle(): Promise<void> {
    return this.inFlight === 0 ? Promise.resolve() : new Promise<void>((r) => this.idleWaiters.push(r));
  }

  /** See {@link LlmserveServerState.shutdown}. */
  shutdown(opts: ShutdownOptions = {}): Promise<void> {
    this.shutdownPromise ??= (async () => {
      this.closing = true;
      const closed = this.app.close();
      const timeoutMs = opts.timeoutMs ?? SERVER_DEFAULTS.shutdownTimeoutMs;
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        this.idle().then(() => false),
        new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeoutMs))),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        for (const ac of this.controllers) ac.abort();
        await Promise.race([this.idle(), new Promise((r) => setTimeout(r, 5_000).unref())]);
      }
      this.app.server.closeAllConnections();
      await closed;
      if (opts.disposeModel) await this.model.dispose();
    })();
    return this.shutdownPromise;
  }
}

/**
 * Connection tracking (so that closing does not wait on idle keep-alive sockets, including ones a
 * client opened without sending a request yet), per-request accounting (also for hijacked
 * streaming replies), auth on the matched route, and the error and not-found handlers.
 */
function registerHooks(
  app: FastifyInstance,
  auth: Authorizer,
  metrics: ServerMetrics,
  life: Lifecycle,
  maxConnections: number,
): void {
  app.server.maxConnections = maxConnections;
  app.server.on("drop", () => metrics.droppedConnections.inc());
  const sockets = new Map<Socket, number>(); // connection -> requests in flight on it
  let serverClosing = false;
  app.server.on("connection", (socket: Socket) => {
    sockets.set(socket, 0);
    socket.once("close", () => sockets.delete(socket));
  });
  app.addHook("preClose", async () => {
    serverClosing = true;
    life.closing = true;
    for (const [socket, busy] of sockets) if (busy === 0) socket.destroy();
  });

  app.addHook("onRequest", async (request, reply) => {
    const start = performance.now();
    const res = reply.raw;
    const socket = request.raw.socket;
    if (sockets.has(socket)) sockets.set(socket, (sockets.get(socket) ?? 0) + 1);
    if (serverClosing) res.setHeader("connection", "close");
    res.once("close", () => {
      const busy = (sockets.get(socket) ?? 1) - 1;
      if (sockets.has(socket)) sockets.set(socket, busy);
      if (serverClosing && busy === 0) socket.end();
      const route = request.routeOptions.url ?? "unmatched";
      metrics.requests.inc({ route, method: request.method, status: String(res.statusCode) });
      metrics.requestDuration.observe({ route }, (performance.now() - start) / 1000);
    });
    auth.authorize(request); // on the matched route: see auth.ts
  });

  app.setErrorHandler((err, request, reply) => {
    const e = toApiError(err);
    if (e.status >= 500) request.log.error({ err }, "request failed");
    if (e.status === 429) reply.header("retry-after", "1");
    void reply.status(e.status).send(e.body());
  });
  app.setNotFoundHandler((request, reply) => {
    const e = new ApiError(404, `Unknown route ${request.method} ${request.url.split("?")[0]}.`, {
      code: "unknown_url",
    });
    void reply.status(404).send(e.body());
  });
}

/** The routes: the two generation endpoints, /v1/models, /health and /metrics. */
function registerRoutes(app: FastifyInstance, ctx: EndpointContext, auth: Authorizer, life: Lifecycle): void {
  const { model, modelName, metrics } = ctx;
  const generation = (kind: "chat" | "completion") =>
    life.track((request: FastifyRequest, reply: FastifyReply) => handleGeneration(ctx, kind, request, reply));
  app.post("/v1/completions", { schema: { body: completionSchema } }, generation("completion"));
  app.post("/v1/chat/completions", { schema: { body: chatSchema } }, generation("chat"));
  registerTokenizeRoutes(app, model);
  registerEmbeddingRoutes(app, model, modelName);

  const modelObject = (id = modelName) => ({
    id,
    object: "model",
    created: Math.floor(Date.now() / 1000),
    owned_by: "llmserve",
    // A LoRA adapter (Model.loadAdapter): requests select it with `model: <its name>`.
    ...(id === modelName ? {} : { parent: modelName }),
  });
  const adapterNames = () => model.adapters().map((a) => a.name);
  // Every route below is "api" (key required) unless its config says otherwise.
  app.get("/v1/models", async () => ({
    object: "list",
    data: [modelObject(), ...adapterNames().map((n) => modelObject(n))],
  }));
  app.get<{ Params: { id: string } }>("/v1/models/:id", async (request) => {
    const id = request.params.id;
    if (id !== modelName && !adapterNames().includes(id)) {
      throw new ApiError(404, `The model \`${id}\` does not exist.`, {
        code: "model_not_found",
        param: "model",
      });
    }
    return modelObject(id);
  });

  app.get("/health", { config: { access: "public" } }, async (request, reply) => {
    if (life.closing) return reply.status(503).send({ status: "shutting_down" });
    if (!auth.hasApiKey(request)) return { status: "ok" }; // the details are for key holders
    let s: ModelStats;
    try {
      s = model.stats();
    } catch {
      return reply.status(503).send({ status: "unavailable" });
    }
    return { status: "ok", model: modelName, running: s.running, waiting: s.waiting, inFlight: life.inFlight };
  });

  app.get("/metrics", { config: { access: "metrics" } }, async (_request, reply) => {
    const { contentType, body } = await metrics.scrape();
    return reply.type(contentType).send(body);
  });
}

/**
 * Builds the server (not yet listening). Call `listen({ port, host })` on the result; close it with
 * `app.llmserve.shutdown()` or `app.close()`.
 */
export function createServer(model: Model, options: ServerOptions = {}): FastifyInstance {
  const auth = new Authorizer({ apiKey: options.apiKey, metricsKey: options.metricsKey });
  const o = resolveServerOptions(options);
  const modelName = options.modelName ?? defaultModelName(model.path);
  const app = buildFastify(o, options.logger);

  const metrics = new ServerMetrics(() => model.stats(), { defaultMetrics: options.defaultMetrics });
  const warn = (m: string) => (options.logger ? app.log.warn(m) : process.emitWarning(m, "LlmserveWarning"));
  const templatePromise = ChatTemplate.fromModel(model, { template: options.chatTemplate, warn });
  templatePromise.catch(() => {}); // reported on the first chat request

  const life = new Lifecycle(app, model);
  const ctx: EndpointContext = {
    model,
    modelName,
    metrics,
    chatTemplate: () => templatePromise,
    closing: () => life.closing,
    streamWriteTimeoutMs: o.streamWriteTimeoutMs,
    admit: admission(model.info.maxSequences, o.maxQueue),
    track(ac) {
      life.controllers.add(ac);
      return () => life.controllers.delete(ac);
    },
  };
  const state: LlmserveServerState = {
    model,
    modelName,
    metrics,
    get inFlight() {
      return life.inFlight;
    },
    chatTemplate: () => templatePromise,
    shutdown: (opts) => life.shutdown(opts),
  };
  app.decorate("llmserve", state);
  if (o.cors) {
    // @fastify/cors's onRequest hook must run before the key check: it answers preflights (which
    // never carry credentials) itself, and puts its headers on every answer, 401s included, so a
    // page can read why it was refused. Hooks run in the order they are added, and a plugin's are
    // added when it loads: the server's own hooks are added after it.
    void app.register(fastifyCors, {
      origin: o.cors.includes("*") ? "*" : o.cors,
      methods: ["GET", "POST", "OPTIONS"],
      allowedHeaders: ["authorization", "content-type"],
      maxAge: 600,
    });
    app.after(() => registerHooks(app, auth, metrics, life, o.maxConnections));
  } else registerHooks(app, auth, metrics, life, o.maxConnections);
  registerRoutes(app, ctx, auth, life);
  return app;
}

/** Options of {@link serve}: the server's options plus where to listen and how to shut down. */
export interface ServeOptions extends ServerOptions {
  /** TCP port (default 8080; 0 = any free port). */
  port?: number;
  /** Address to listen on (default "127.0.0.1"). */
  host?: string;
  /** Milliseconds in-flight requests get to finish on SIGINT/SIGTERM (default 10 s). */
  shutdownTimeoutMs?: number;
  /** Exit the process after a signal-triggered shutdown (default true). */
  exitOnSignal?: boolean;
}

/** What {@link serve} resolves with. */
export interface ServeResult {
  /** The listening fastify instance (`app.llmserve` holds the server state). */
  app: FastifyInstance;
  /** The base URL, e.g. "http://127.0.0.1:8080" (the API is under /v1). */
  url: string;
}

/**
 * Creates the server, listens, and shuts down gracefully on SIGINT/SIGTERM (stop accepting, let
 * in-flight streams finish within the timeout, cancel the rest, dispose the model, exit 0).
 * @returns the fastify instance and the URL it listens on.
 */
export async function serve(model: Model, options: ServeOptions = {}): Promise<ServeResult> {
  const app = createServer(model, options);
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      process.stderr.write(`llmserve: ${signal} again, exiting now\n`);
      process.exit(1);
    }
    signalled = true;
    process.stderr.write(`llmserve: ${signal} received, finishing ${app.llmserve.inFlight} request(s)...\n`);
    app.llmserve
      .shutdown({ timeoutMs: options.shutdownTimeoutMs ?? SERVER_DEFAULTS.shutdownTimeoutMs, disposeModel: true })
      .then(
        () => {
          if (options.exitOnSignal ?? true) process.exit(0);
        },
        (err: unknown) => {
          process.stderr.write(`llmserve: shutdown failed: ${(err as Error)?.message ?? String(err)}\n`);
          process.exit(1);
        },
      );
  };
  app.addHook("onClose", async () => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  });
  let url: string;
  try {
    url = await app.listen({ port: options.port ?? SERVER_DEFAULTS.port, host: options.host ?? SERVER_DEFAULTS.host });
  } catch (err) {
    await app.close();
    throw err;
  }
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return { app, url };
}
