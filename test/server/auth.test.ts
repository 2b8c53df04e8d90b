/**
 * Authorization is decided on the route that matched, deny by default: no spelling of a request
 * target (percent-encoding, dot segments, doubled slashes, case, absolute form) reaches a keyed route
 * without the key. Requests are written on raw sockets so the targets reach the server as written
 * (fetch would normalise them).
 */
import { connect } from "node:net";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model } from "../../lib/index.js";
import { createServer } from "../../lib/server/index.js";
import { synthModel } from "../helpers.js";

const KEY = "sk-auth-test";
const METRICS_KEY = "scrape-only";
let model: Model;
let app: FastifyInstance;
let port: number;

/** Sends one raw HTTP/1.1 request and resolves with its status code and body. */
function raw(
  method: string,
  target: string,
  opts: { key?: string; body?: unknown } = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, "127.0.0.1");
    const payload = opts.body === undefined ? "" : JSON.stringify(opts.body);
    const head = [
      `${method} ${target} HTTP/1.1`,
      `Host: 127.0.0.1:${port}`,
      "Connection: close",
      ...(opts.key ? [`Authorization: Bearer ${opts.key}`] : []),
      ...(payload ? ["Content-Type: application/json", `Content-Length: ${Buffer.byteLength(payload)}`] : []),
    ].join("\r\n");
    let data = "";
    sock.setEncoding("utf8");
    sock.on("data", (d) => (data += d));
    sock.on("error", reject);
    sock.on("close", () => {
      const m = /^HTTP\/1\.1 (\d{3})/.exec(data);
      if (!m) return reject(new Error(`no HTTP response: ${JSON.stringify(data.slice(0, 200))}`));
      resolve({ status: Number(m[1]), body: data.slice(data.indexOf("\r\n\r\n") + 4) });
    });
    sock.write(`${head}\r\n\r\n${payload}`);
  });
}

const completion = { prompt: "Hello", max_tokens: 2, temperature: 0 };

beforeAll(async () => {
  const path = await synthModel("server-auth", { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocabSize: 512 });
  model = await Model.load(path, { threads: 1, contextSize: 128, kvCacheTokens: 1024 });
  app = createServer(model, {
    modelName: "tiny",
    apiKey: KEY,
    metricsKey: METRICS_KEY,
    chatTemplate: "chatml",
    defaultMetrics: false,
  });
  await app.listen({ port: 0, host: "127.0.0.1" });
  const addr = app.server.address();
  if (addr === null || typeof addr === "string") throw new Error("no TCP address");
  port = addr.port;
});

afterAll(async () => {
  await app?.close();
  await model?.dispose();
});

describe("the API key is checked on the matched route", () => {
  // Each target names /v1/completions in a way a URL-prefix check would not recognise.
  const spellings = [
    "/v1/completions",
    "/%761/completions", // percent-encoded 'v'
    "/v1/%63ompletions", // percent-encoded 'c'
    "/%76%31/completions",
    "//v1/completions",
    "/v1//completions",
    "/./v1/completions",
    "/health/../v1/completions",
    "/V1/completions",
    "/v1/completions/",
    "/v1/completions?x=/health",
    "/v1/completions#/health",
  ];

  it.each(spellings)("POST %s without the key is refused", async (target) => {
    const r = await raw("POST", target, { body: completion });
    expect(r.status, r.body).toBe(401);
    expect(JSON.parse(r.body).error.code).toBe("invalid_api_key");
  });

  it.each([
    "http://127.0.0.1/v1/completions",
    "http://evil.example/v1/completions",
    "http://127.0.0.1/%761/completions",
  ])("absolute-form target %s without the key is refused", async (target) => {
    const r = await raw("POST", target, { body: completion });
    expect(r.status, r.body).toBe(401);
  });

  it("encoded and absolute-form targets do reach the route (so the refusals above are about the key)", async () => {
    for (const target of ["/%761/completions", "http://127.0.0.1/v1/completions"]) {
      const r = await raw("POST", target, { key: KEY, body: completion });
      expect(r.status, `${target}: ${r.body}`).toBe(200);
      expect(JSON.parse(r.body).object).toBe("text_completion");
    }
    expect((await raw("GET", "/%761/models", { key: KEY })).status).toBe(200);
  });

  it("a wrong key, a key without Bearer, and the metrics key are refused on the API", async () => {
    expect((await raw("POST", "/v1/completions", { key: "wrong", body: completion })).status).toBe(401);
    expect((await raw("POST", "/v1/completions", { key: METRICS_KEY, body: completion })).status).toBe(401);
    expect((await raw("GET", "/v1/models", { key: METRICS_KEY })).status).toBe(401);
  });

  it("unknown routes need the key too (deny by default: no route probing)", async () => {
    expect((await raw("GET", "/nope")).status).toBe(401);
    expect((await raw("GET", "/v2/models")).status).toBe(401);
    const r = await raw("GET", "/nope", { key: KEY });
    expect(r.status).toBe(404);
  });
});

describe("public and metrics routes", () => {
  it("/health is public but tells only its status without the key", async () => {
    const anon = await raw("GET", "/health");
    expect(anon.status).toBe(200);
    expect(JSON.parse(anon.body)).toEqual({ status: "ok" });
    const keyed = await raw("GET", "/health", { key: KEY });
    expect(JSON.parse(keyed.body)).toMatchObject({ status: "ok", model: "tiny" });
    // Any spelling that matches /health is public, and HEAD works like GET.
    expect((await raw("GET", "/%68ealth")).status).toBe(200);
    expect((await raw("HEAD", "/health")).status).toBe(200);
  });

  it("/metrics takes the metrics key or the API key, nothing else", async () => {
    expect((await raw("GET", "/metrics")).status).toBe(401);
    expect((await raw("GET", "/%6detrics")).status).toBe(401);
    expect((await raw("GET", "/metrics", { key: "wrong" })).status).toBe(401);
    const scrape = await raw("GET", "/metrics", { key: METRICS_KEY });
    expect(scrape.status).toBe(200);
    expect(scrape.body).toMatch(/llmserve_kv_blocks_used/);
    expect((await raw("GET", "/metrics", { key: KEY })).status).toBe(200);
  });

  it("without a metrics key, /metrics needs the API key", async () => {
    const other = createServer(model, { apiKey: KEY, defaultMetrics: false });
    await other.listen({ port: 0, host: "127.0.0.1" });
    try {
      const addr = other.server.address();
      if (addr === null || typeof addr === "string") throw new Error("no TCP address");
      const url = `http://127.0.0.1:${addr.port}`;
      expect((await fetch(`${url}/metrics`)).status).toBe(401);
      expect((await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${KEY}` } })).status).toBe(200);
    } finally {
      await other.close();
    }
  });
});
