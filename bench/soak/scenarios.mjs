// The soak benchmark's scenario catalogue: what each client loop may do, with the answers the
// server must give. Valid generation requests (random lengths and parameters), client aborts, abrupt
// disconnects, slow and stalled readers, slow senders, bad payloads and malformed HTTP. Every
// scenario returns one record (see classify.mjs); the weights are in scenarios() at the end.

import { rng } from "../common.mjs";
import { AUTH, METRICS_AUTH, apiKey, raw, rawRequest, request } from "./client.mjs";
import { classify, classifyRaw } from "./classify.mjs";

const WORDS = (
  "I dream of the quiet sea and the stars above neurons whisper in the dark a gentle wave " +
  "of thought drifts through the lattice of memory light bends around the edges of time"
).split(" ");

export function makeRandom(seed) {
  const r = rng(seed);
  const int = (a, b) => a + Math.floor(r() * (b - a + 1));
  const pick = (xs) => xs[Math.floor(r() * xs.length)];
  const words = (n) => Array.from({ length: n }, () => pick(WORDS)).join(" ");
  const chance = (p) => r() < p;
  return { r, int, pick, words, chance };
}

/** Random generation parameters: prompt length, max_tokens (sometimes absent), sampling. */
function genParams(R, ctx) {
  const p = {};
  const m = R.r();
  if (m < 0.45) p.max_tokens = R.int(1, 16);
  else if (m < 0.8) p.max_tokens = R.int(17, 128);
  else if (m < 0.95) p.max_tokens = R.int(129, Math.min(512, ctx / 2));
  // else: no max_tokens (chat: up to the context; completions: 16)
  if (R.chance(0.5)) p.temperature = R.pick([0, 0.3, 0.8, 1.2]);
  if (R.chance(0.2)) p.seed = R.int(0, 1e6);
  if (R.chance(0.1)) p.top_p = 0.9;
  if (R.chance(0.1)) p.stop = [R.pick(WORDS)];
  if (R.chance(0.15)) p.ignore_eos = true;
  if (R.chance(0.1)) p.n = R.int(2, 4);
  return p;
}

function promptWords(R, ctx) {
  const m = R.r();
  return m < 0.6 ? R.int(1, 20) : m < 0.9 ? R.int(21, 80) : R.int(81, Math.max(82, Math.floor(ctx / 8)));
}

function chatMessages(R, ctx) {
  const msgs = [];
  if (R.chance(0.3)) msgs.push({ role: "system", content: R.words(R.int(3, 30)) });
  const turns = R.int(0, 2);
  for (let i = 0; i < turns; i++)
    msgs.push({ role: "user", content: R.words(R.int(1, 20)) }, { role: "assistant", content: R.words(R.int(1, 20)) });
  msgs.push({
    role: "user",
    content: R.chance(0.2) ? [{ type: "text", text: R.words(promptWords(R, ctx)) }] : R.words(promptWords(R, ctx)),
  });
  return msgs;
}

/**
 * The scenarios: [name, weight, run(R) -> record]. `modelName()`: the id the server serves (known
 * once it is up).
 */
export function scenarios(opts, modelName) {
  const T = opts.requestTimeoutS * 1000;
  const ctx = opts.ctx;
  const gen = (kind, stream) => async (R) => {
    const p = genParams(R, ctx);
    const body =
      kind === "chat"
        ? { messages: chatMessages(R, ctx), ...p }
        : { prompt: R.chance(0.1) ? [R.words(5), R.words(9)] : R.words(promptWords(R, ctx)), ...p };
    if (stream) {
      body.stream = true;
      if (R.chance(0.3)) body.stream_options = { include_usage: true };
    }
    if (kind === "completion" && R.chance(0.1)) body.logprobs = R.int(0, 5);
    if (kind === "chat" && R.chance(0.1)) Object.assign(body, { logprobs: true, top_logprobs: R.int(0, 5) });
    if (R.chance(0.2)) body.model = null;
    const n = (body.n ?? 1) * (Array.isArray(body.prompt) ? body.prompt.length : 1);
    const path = kind === "chat" ? "/v1/chat/completions" : "/v1/completions";
    const res = await request({ path, headers: AUTH(), body, stream, timeoutMs: T });
    // 429 (queue full) and 503 (engine overloaded) are typed answers a valid request may get under load.
    return {
      sub: `${kind}${stream ? "-stream" : ""}`,
      ...classify(res, { kind, stream, n, maxTokens: body.max_tokens, expect: [200, 429] }),
    };
  };

  // Client aborts mid-stream (node:http request destroyed) and during a non-streaming request.
  const abort = async (R) => {
    const kind = R.pick(["chat", "completion"]);
    const path = kind === "chat" ? "/v1/chat/completions" : "/v1/completions";
    const stream = R.chance(0.75);
    const body = {
      ...(kind === "chat" ? { messages: chatMessages(R, ctx) } : { prompt: R.words(promptWords(R, ctx)) }),
      max_tokens: R.int(64, 512),
      ignore_eos: true,
      stream,
    };
    const abortAfter = stream && R.chance(0.7) ? { events: R.int(1, 20) } : { ms: R.int(0, 400) };
    const res = await request({ path, headers: AUTH(), body, stream, abortAfter, timeoutMs: T });
    return {
      sub: `abort-${stream ? "stream" : "json"}-${abortAfter.events !== undefined ? "events" : "ms"}`,
      ...classify(res, { kind, stream, maxTokens: body.max_tokens, aborting: true, expect: [200, 429] }),
    };
  };

  // Abrupt disconnects on raw sockets.
  const disconnect = async (R) => {
    const stream = R.chance(0.6);
    const body = { prompt: R.words(promptWords(R, ctx)), max_tokens: R.int(64, 512), ignore_eos: true, stream };
    const req = rawRequest("POST", "/v1/completions", body);
    const v = R.int(0, 4);
    let res;
    let sub;
    if (v === 0) {
      sub = "rst-mid-stream";
      res = await raw({
        chunks: [rawRequest("POST", "/v1/completions", { ...body, stream: true })],
        mode: "rst-after",
        events: R.int(1, 10),
        timeoutMs: T,
      });
    } else if (v === 1) {
      sub = "rst-after-send";
      res = await raw({ chunks: [req], mode: "rst-after", events: 0, ms: R.int(0, 300), timeoutMs: T });
    } else if (v === 2) {
      sub = "half-sent-body";
      const cut = R.int(Math.floor(req.length / 2), req.length - 1);
      res = await raw({ chunks: [req.slice(0, cut)], mode: "destroy-after-ms", ms: R.int(0, 500), timeoutMs: T });
    } else if (v === 3) {
      sub = "half-sent-headers";
      res = await raw({
        chunks: [req.slice(0, R.int(5, req.indexOf("\r\n\r\n")))],
        mode: "destroy-after-ms",
        ms: R.int(0, 500),
        timeoutMs: T,
      });
    } else {
      sub = "destroy-mid-response";
      res = await raw({ chunks: [req], mode: "destroy-after-ms", ms: R.int(5, 300), timeoutMs: T });
    }
    return { sub, ...classifyRaw(res, { expect: [200, 429] }) };
  };

  // Slow readers: read the SSE stream in small sips, or stop reading; big outputs so the server's
  // socket buffer fills (logprobs make every event ~1 KB per choice). Slow senders, and clients that
  // stall before their headers are complete (the server's 10 s header timeout answers them 408).
  const writeTimeoutMs = opts.streamWriteTimeoutS * 1000;
  const slow = async (R) => {
    const v = R.int(0, 4);
    const big = (nMax) => ({
      messages: chatMessages(R, ctx),
      max_tokens: R.int(200, 600),
      ignore_eos: true,
      stream: true,
      n: R.int(2, nMax),
      logprobs: true,
      top_logprobs: 20,
    });
    let res;
    let sub;
    let stalledPastTimeout = false;
    if (v === 0) {
      sub = "slow-reader";
      const budgetMs = R.int(5_000, 20_000);
      res = await raw({
        chunks: [rawRequest("POST", "/v1/chat/completions", big(8))],
        mode: "slow",
        gapMs: R.int(20, 200),
        budgetMs,
        timeoutMs: budgetMs + T,
      });
    } else if (v === 1 && R.chance(0.5)) {
      // Stops reading for less than the server's write timeout, then goes away.
      sub = "stopped-reader";
      // (The server's timer starts only once its buffers are full, after the stall began; 0.5 s of
      // margin under the timeout, or half of a very short one.)
      const hi = Math.floor(Math.max(writeTimeoutMs - 500, writeTimeoutMs / 2));
      const stallMs = R.int(Math.min(1_000, hi), hi);
      res = await raw({
        chunks: [rawRequest("POST", "/v1/chat/completions", big(8))],
        mode: "stall",
        events: R.int(1, 5),
        stallMs,
        timeoutMs: stallMs + T,
      });
    } else if (v === 1) {
      // Stops reading for longer than the write timeout, then reads on: the server must have cut the
      // stream off, or, when everything fit in the socket buffers, the stream is complete. Loopback
      // buffers hold megabytes (the sender's grows to tcp_wmem's 4 MiB), so this one asks for more:
      // a short prompt, n 12-16 x up to the whole context of top-20 logprobs (~10-20 MB of events).
      // Filling the buffers takes a few seconds under load, and the server's timer only starts then:
      // the stall lasts the write timeout plus 5-10 s.
      sub = "stalled-reader";
      const stallMs = writeTimeoutMs + R.int(5_000, 10_000);
      stalledPastTimeout = true;
      const body = {
        ...big(8),
        messages: [{ role: "user", content: R.words(R.int(1, 10)) }],
        max_tokens: ctx,
        n: R.int(12, 16),
      };
      res = await raw({
        chunks: [rawRequest("POST", "/v1/chat/completions", body)],
        mode: "stall",
        events: R.int(1, 5),
        stallMs,
        resume: true,
        timeoutMs: stallMs + T,
      });
    } else if (v === 2) {
      sub = "slow-sender";
      const pieces = [];
      const small = rawRequest("POST", "/v1/completions", {
        prompt: R.words(R.int(5, 40)),
        max_tokens: R.int(1, 32),
        stream: R.chance(0.5),
      });
      for (let i = 0; i < small.length; i += 40) pieces.push(small.slice(i, i + 40));
      res = await raw({
        chunks: pieces,
        gapMs: Math.ceil(R.int(1_000, 4_000) / pieces.length),
        mode: "read",
        timeoutMs: 5_000 + T,
      });
    } else if (v === 3) {
      // Slowloris: half the headers, then silence; the server answers 408 once its header timeout
      // (10 s from connecting) is past.
      sub = "stalled-headers";
      const req = rawRequest("POST", "/v1/completions", { prompt: "x", max_tokens: 1 });
      res = await raw({ chunks: [req.slice(0, R.int(5, req.indexOf("\r\n\r\n")))], mode: "read", timeoutMs: T });
      return { sub, ...classifyRaw(res, { expect: [408], code: "request_timeout", clientFault: true }) };
    } else {
      // Connects and sends nothing: the server closes the connection after its idle/header timeout.
      sub = "idle-connection";
      res = await raw({ chunks: [], mode: "read", timeoutMs: T });
      return {
        sub,
        ...classifyRaw(res, { expect: [408], code: "request_timeout", clientFault: true, closeWithoutResponse: true }),
      };
    }
    return { sub, ...classifyRaw(res, { expect: [200, 429], stalledPastTimeout }) };
  };

  // Bad payloads and requests that are the client's fault; `expect` is the status(es) they must get.
  // `code` / `param`: the OpenAI error code the answer must carry and the field it must name (a
  // schema maximum or a wrong type is a 400 invalid_value naming the field).
  const j = (path, body, expect, sub, headers = AUTH(), code, param) => ({
    path,
    body,
    expect,
    sub,
    headers,
    code,
    param,
  });
  const inval = (path, body, sub, param) => j(path, body, [400], sub, AUTH(), "invalid_value", param);
  const bads = [
    j("/v1/completions", '{"prompt": "x",', [400], "invalid-json", AUTH(), "invalid_json"),
    j(
      "/v1/chat/completions",
      '{"messages": [{"role": "user", "content": "hi"}]',
      [400],
      "invalid-json-chat",
      AUTH(),
      "invalid_json",
    ),
    j("/v1/completions", "", [400], "empty-body", AUTH(), "invalid_json"),
    j("/v1/completions", "null", [400], "null-body"),
    j("/v1/completions", "[1,2,3]", [400], "array-body"),
    inval("/v1/completions", { prompt: 42 }, "prompt-number", "prompt"),
    j("/v1/completions", { prompt: [1, 2.5] }, [400], "prompt-float-ids"),
    j("/v1/completions", { prompt: [1, 1e9] }, [400], "prompt-id-out-of-vocab"),
    j("/v1/completions", { prompt: [-5] }, [400], "prompt-id-negative"),
    j("/v1/completions", {}, [400], "prompt-missing"),
    inval("/v1/completions", { prompt: "x", max_tokens: "10" }, "max-tokens-string", "max_tokens"),
    inval("/v1/completions", { prompt: "x", max_tokens: 0 }, "max-tokens-zero", "max_tokens"),
    inval("/v1/completions", { prompt: "x", max_tokens: -1 }, "max-tokens-negative", "max_tokens"),
    j("/v1/completions", '{"prompt":"x","max_tokens":1e400}', [400], "max-tokens-1e400"),
    inval("/v1/completions", { prompt: "x", temperature: "hot" }, "temperature-string", "temperature"),
    inval("/v1/completions", { prompt: "x", temperature: 1e308 }, "temperature-huge", "temperature"),
    inval("/v1/completions", { prompt: "x", top_p: -1 }, "top-p-negative", "top_p"),
    inval("/v1/completions", { prompt: "x", n: 0 }, "n-zero", "n"),
    inval("/v1/completions", { prompt: "x", n: 1000 }, "n-huge", "n"),
    inval("/v1/completions", { prompt: "x", logprobs: 21 }, "logprobs-21", "logprobs"),
    inval("/v1/completions", { prompt: "x", stop: Array(17).fill("a") }, "stop-17", "stop"),
    inval("/v1/completions", { prompt: "x", stream: "yes" }, "stream-string", "stream"),
    j("/v1/completions", { prompt: "x", model: "gpt-4" }, [404], "unknown-model", AUTH(), "model_not_found"),
    // More sequences (prompts x n: 384) than the server ever admits (the engine's 64 at once + the
    // --max-queue of 256): a 400 naming n, not a 429 to retry.
    inval("/v1/completions", { prompt: ["a", "b", "c"], n: 128, max_tokens: 2 }, "too-many-sequences", "n"),
    j(
      "/v1/completions",
      { prompt: "dream ".repeat(ctx * 2) },
      [400],
      "prompt-over-context",
      AUTH(),
      "context_length_exceeded",
    ),
    j("/v1/completions", { prompt: Array(ctx + 10).fill(5) }, [400], "ids-over-context"),
    ...(opts.hugePromptKiB > 0
      ? [
          j(
            "/v1/completions",
            { prompt: "dream ".repeat(Math.ceil((opts.hugePromptKiB * 1024) / 6)), max_tokens: 1 },
            [400],
            `prompt-${opts.hugePromptKiB}KiB`,
          ),
        ]
      : []),
    j("/v1/completions", '{"prompt":"x","__proto__":{"polluted":1}}', [400], "proto-poisoning"),
    j("/v1/completions", '{"prompt":"x","constructor":{"prototype":{"polluted":1}}}', [400], "constructor-poisoning"),
    j("/v1/completions", "[".repeat(50_000) + "]".repeat(50_000), [400], "deep-nesting"),
    j("/v1/completions", `{"prompt":"${"a".repeat(9 << 20)}"}`, [413], "body-9MiB"),
    inval("/v1/chat/completions", { messages: [] }, "messages-empty", "messages"),
    inval("/v1/chat/completions", { messages: "hi" }, "messages-string", "messages"),
    inval(
      "/v1/chat/completions",
      { messages: [{ role: "wizard", content: "hi" }] },
      "role-unknown",
      "messages[0].role",
    ),
    inval("/v1/chat/completions", { messages: [{ content: "hi" }] }, "role-missing", "messages[0].role"),
    j("/v1/chat/completions", { messages: [{ role: "user", content: 5 }] }, [400], "content-number"),
    j(
      "/v1/chat/completions",
      { messages: [{ role: "user", content: [{ text: "x" }] }] },
      [400],
      "content-part-no-type",
    ),
    inval(
      "/v1/chat/completions",
      { messages: [{ role: "user", content: "hi" }], top_logprobs: 99, logprobs: true },
      "top-logprobs-99",
      "top_logprobs",
    ),
    j(
      "/v1/chat/completions",
      { messages: [{ role: "user", content: "dream ".repeat(ctx * 2) }] },
      [400],
      "chat-over-context",
      AUTH(),
      "context_length_exceeded",
    ),
    inval("/v1/completions", { prompt: "x", stop: "s".repeat(257) }, "stop-string-257", "stop"),
    inval("/v1/completions", { prompt: "x", model: "m".repeat(1025) }, "model-name-1025", "model"),
    inval("/v1/completions", { prompt: "x", user: "u".repeat(1025) }, "user-1025", "user"),
    inval("/v1/completions", { prompt: Array(257).fill("a") }, "prompts-257", "prompt"),
    inval("/v1/completions", { prompt: "x", seed: 2 ** 60 }, "seed-2e60", "seed"),
    inval(
      "/v1/chat/completions",
      { messages: Array(4097).fill({ role: "user", content: "a" }) },
      "messages-4097",
      "messages",
    ),
    inval(
      "/v1/chat/completions",
      { messages: [{ role: "user", content: Array(257).fill({ type: "text", text: "a" }) }] },
      "content-parts-257",
      "messages[0].content",
    ),
    j("/v1/completions", { prompt: "x" }, [401], "auth-missing", {}),
    j("/v1/completions", { prompt: "x" }, [401], "auth-wrong-key", { authorization: "Bearer wrong-key" }),
    j("/v1/chat/completions", { messages: [{ role: "user", content: "x" }] }, [401], "auth-basic", {
      authorization: "Basic dXNlcjpwYXNz",
    }),
    j("/v1/completions", { prompt: "x" }, [401], "auth-empty-bearer", { authorization: "Bearer " }),
    j("/v1/completions", { prompt: "x" }, [401], "auth-key-prefix", {
      authorization: `Bearer ${apiKey().slice(0, -1)}`,
    }),
    { path: "/v1/models", method: "GET", expect: [401], sub: "auth-missing-get", headers: {} },
    // /metrics needs a key (the API key or the scrape-only metrics key), and the metrics key opens
    // nothing else.
    { path: "/metrics", method: "GET", expect: [401], sub: "metrics-no-key", headers: {}, code: "invalid_api_key" },
    {
      path: "/metrics",
      method: "GET",
      expect: [401],
      sub: "metrics-wrong-key",
      headers: { authorization: "Bearer wrong-key" },
      code: "invalid_api_key",
    },
    {
      path: "/v1/models",
      method: "GET",
      expect: [401],
      sub: "metrics-key-on-api",
      headers: METRICS_AUTH(),
      code: "invalid_api_key",
    },
    j("/v1/completions", { prompt: "x" }, [401], "metrics-key-on-completions", METRICS_AUTH(), "invalid_api_key"),
    { path: "/v1/nope", method: "GET", expect: [404], sub: "unknown-route" },
    { path: "/v1/nope", method: "GET", expect: [401, 404], sub: "unknown-route-no-auth", headers: {} },
    { path: "/v2/completions", method: "POST", body: { prompt: "x" }, expect: [404], sub: "unknown-prefix" },
    { path: "/v1/completions", method: "GET", expect: [404, 405], sub: "wrong-method" },
    { path: "/v1/models", method: "DELETE", expect: [404, 405], sub: "wrong-method-delete" },
    { path: "/v1/models/not-this-one", method: "GET", expect: [404], sub: "unknown-model-id" },
    { path: `/v1/${"x".repeat(8000)}`, method: "GET", expect: [404], sub: "long-url" },
    j(
      "/v1/completions",
      "prompt=x",
      [415],
      "form-content-type",
      { ...AUTH(), "content-type": "application/x-www-form-urlencoded" },
      "unsupported_media_type",
    ),
    // fastify reads text/plain as a string, which the schema refuses (the body must be an object).
    j(
      "/v1/completions",
      "hello",
      [400],
      "text-content-type",
      { ...AUTH(), "content-type": "text/plain" },
      "invalid_value",
    ),
  ];
  const bad = async (R) => {
    const b = R.pick(bads);
    const res = await request({
      method: b.method ?? "POST",
      path: b.path,
      headers: b.headers ?? AUTH(),
      body: b.body,
      timeoutMs: T,
    });
    if (b.expect.includes(413) && res.status === 0 && /EPIPE|ECONNRESET/.test(res.error ?? "")) {
      // The server may answer 413 and close before the whole body is written.
      return {
        sub: b.sub,
        status: 413,
        ms: Math.round(res.ms),
        outcome: "typed_error",
        code: "(closed while the body was sent)",
      };
    }
    return {
      sub: b.sub,
      ...classify(res, { kind: "get", expect: b.expect, clientFault: true, code: b.code, param: b.param }),
    };
  };

  // HTTP-level garbage on raw sockets: rejected by Node's HTTP parser before any route runs; the
  // server's clientError handler answers with an OpenAI error body (400 invalid_http, 431).
  const rawBad = [
    { sub: "garbage-request-line", chunks: ["HELLO THERE\r\n\r\n"], expect: [400], code: "invalid_http" },
    {
      sub: "binary-garbage",
      chunks: [Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 37 + 11) % 256))],
      expect: [400],
      code: "invalid_http",
    },
    {
      sub: "cl-and-te",
      chunks: [
        `POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n`,
      ],
      expect: [400],
      code: "invalid_http",
    },
    {
      sub: "bad-content-length",
      chunks: [`POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n`],
      expect: [400],
      code: "invalid_http",
    },
    {
      sub: "huge-header",
      chunks: () => [rawRequest("GET", "/v1/models", undefined, { authorization: `Bearer ${"k".repeat(20_000)}` })],
      expect: [431],
      code: "request_too_large",
    },
    {
      sub: "many-headers",
      chunks: () => [
        rawRequest(
          "GET",
          "/v1/models",
          undefined,
          Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`x-h${i}`, "v"])),
        ),
      ],
      expect: [431],
      code: "request_too_large",
    },
    // Node's parser takes "GET /" as a request for "/": an unmatched route, which needs the API key
    // (deny by default) before it is a 404.
    { sub: "http-0.9", chunks: ["GET /\r\n\r\n"], expect: [400, 401], code: ["invalid_http", "invalid_api_key"] },
    {
      sub: "chunked-bad-size",
      chunks: () => [
        `POST /v1/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${apiKey()}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`,
      ],
      expect: [400],
      code: "invalid_http",
    },
  ];
  const rawBadRun = async (R) => {
    const b = R.pick(rawBad);
    const res = await raw({
      chunks: typeof b.chunks === "function" ? b.chunks() : b.chunks,
      mode: "read",
      timeoutMs: T,
    });
    const c = classifyRaw(res, { expect: b.expect, clientFault: true, code: b.code });
    if (c.outcome === "completed" && !res.status)
      return { sub: b.sub, ...c, outcome: "failed", failure: "no HTTP response" };
    return { sub: b.sub, ...c };
  };

  const gets = async (R) => {
    const g = R.pick(["/v1/models", "/v1/models/:id", "/health", "/metrics"]);
    const path = g === "/v1/models/:id" ? `/v1/models/${encodeURIComponent(modelName())}` : g;
    // /metrics takes the API key or the scrape-only metrics key: both are exercised.
    const metricsKey = g === "/metrics" && R.chance(0.5);
    const res = await request({
      method: "GET",
      path,
      headers: g === "/health" ? {} : metricsKey ? METRICS_AUTH() : AUTH(),
      timeoutMs: T,
    });
    return { sub: `get ${g}${metricsKey ? " (metrics key)" : ""}`, ...classify(res, { kind: "get", expect: [200] }) };
  };

  return [
    ["completion", 13, gen("completion", false)],
    ["completion-stream", 13, gen("completion", true)],
    ["chat", 13, gen("chat", false)],
    ["chat-stream", 13, gen("chat", true)],
    ["client-abort", 8, abort],
    ["disconnect", 8, disconnect],
    ["slow-client", 3, slow],
    ["bad-payload", 20, bad],
    ["bad-http", 4, rawBadRun],
    ["get", 5, gets],
  ];
}
