/**
 * Connection-level limits: slow or silent clients are cut off (headers timeout, idle keep-alive),
 * open connections are capped, a streaming client that stops reading has its request cancelled and
 * its KV blocks freed, and a request the server cancels at shutdown says so in finish_reason.
 */
import { connect, type Socket } from "node:net";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model } from "../../lib/index.js";
import { createServer, type ServerOptions } from "../../lib/server/index.js";
import { synthModel, until } from "../helpers.js";

let path: string;
let model: Model;

async function start(opts: ServerOptions, m: Model = model): Promise<{ app: FastifyInstance; port: number }> {
  const app = createServer(m, { modelName: "tiny", chatTemplate: "chatml", defaultMetrics: false, ...opts });
  await app.listen({ port: 0, host: "127.0.0.1" });
  const addr = app.server.address();
  if (addr === null || typeof addr === "string") throw new Error("no TCP address");
  return { app, port: addr.port };
}

/** Opens a socket and resolves once connected; `closed` resolves with the ms it stayed open. */
function open(port: number): Promise<{ sock: Socket; closed: Promise<number>; data: () => string }> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const sock = connect(port, "127.0.0.1");
    let data = "";
    sock.setEncoding("utf8");
    sock.on("data", (d) => (data += d));
    const closed = new Promise<number>((r) => sock.on("close", () => r(Date.now() - t0)));
    sock.on("error", () => {}); // a reset is a close here
    sock.once("connect", () => resolve({ sock, closed, data: () => data }));
    sock.once("error", reject);
  });
}

const within = <T>(p: Promise<T>, ms: number): Promise<T | "timeout"> =>
  Promise.race([p, new Promise<"timeout">((r) => setTimeout(() => r("timeout"), ms).unref())]);

beforeAll(async () => {
  path = await synthModel("server-conn", {
    dim: 64,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    ffn: 128,
    vocabSize: 512,
    context: 8192,
  });
  model = await Model.load(path, { threads: 2, contextSize: 8192, kvCacheTokens: 65536, maxBatchTokens: 256 });
});

afterAll(async () => {
  await model?.dispose();
});

describe("slow and idle clients", () => {
  it("a client that never finishes its headers (slowloris) is cut off after headersTimeoutMs", async () => {
    const { app, port } = await start({ headersTimeoutMs: 1000, requestTimeoutMs: 2000 });
    try {
      const silent = await open(port); // connects and says nothing
      const slow = await open(port);
      slow.sock.write("GET /health HTTP/1.1\r\nHost: x\r\n"); // headers never end
      const dribble = setInterval(() => slow.sock.write("X-A: b\r\n"), 200); // and keeps trickling
      try {
        const [a, b] = await Promise.all([within(silent.closed, 8000), within(slow.closed, 8000)]);
        expect(a).not.toBe("timeout");
        expect(b).not.toBe("timeout");
        expect(b as number).toBeGreaterThanOrEqual(900);
      } finally {
        clearInterval(dribble);
      }
      // The server still answers normal requests.
      expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);
    } finally {
      await app.close();
    }
  });

  it("a client that sends a body too slowly is cut off after requestTimeoutMs", async () => {
    const { app, port } = await start({ headersTimeoutMs: 1000, requestTimeoutMs: 1500 });
    try {
      const c = await open(port);
      c.sock.write(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
      );
      const dribble = setInterval(() => c.sock.write(" "), 200);
      try {
        expect(await within(c.closed, 8000)).not.toBe("timeout");
      } finally {
        clearInterval(dribble);
      }
    } finally {
      await app.close();
    }
  });

  it("an idle keep-alive connection is closed after keepAliveTimeoutMs", async () => {
    const { app, port } = await start({ keepAliveTimeoutMs: 500 });
    try {
      const c = await open(port);
      c.sock.write("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
      expect(await until(() => c.data().includes("\r\n\r\n"), 5000)).toBe(true);
      expect(c.data()).toMatch(/^HTTP\/1\.1 200/);
      expect(await within(c.closed, 8000)).not.toBe("timeout");
    } finally {
      await app.close();
    }
  });

  it("connections beyond maxConnections are closed at once and counted", async () => {
    const { app, port } = await start({ maxConnections: 3, headersTimeoutMs: 20_000, requestTimeoutMs: 20_000 });
    const held = [] as Awaited<ReturnType<typeof open>>[];
    try {
      for (let i = 0; i < 3; i++) held.push(await open(port));
      const extra = await open(port);
      expect(await within(extra.closed, 3000)).not.toBe("timeout");
      expect(await within(held[0].closed, 200)).toBe("timeout"); // the first three stay open
      expect(await app.llmserve.metrics.droppedConnections.get().then((m) => m.values[0]?.value)).toBe(1);
      for (const h of held) h.sock.destroy();
      await new Promise((r) => setTimeout(r, 300)); // let the closes land
      expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);
    } finally {
      for (const h of held) h.sock.destroy();
      await app.close();
    }
  });
});

describe("answers before any route runs are OpenAI error objects", () => {
  async function rawExchange(port: number, text: string): Promise<{ status: number; body: string }> {
    const c = await open(port);
    c.sock.write(text);
    await within(c.closed, 5000);
    const d = c.data();
    const m = /^HTTP\/1\.1 (\d{3})/.exec(d);
    return { status: m ? Number(m[1]) : 0, body: d.slice(d.indexOf("\r\n\r\n") + 4) };
  }

  it("malformed HTTP (400), oversized headers (431), invalid JSON (400 invalid_json)", async () => {
    const { app, port } = await start({});
    try {
      const bad = await rawExchange(port, "GARBAGE\r\n\r\n");
      expect(bad.status).toBe(400);
      expect(JSON.parse(bad.body).error).toMatchObject({ code: "invalid_http", type: "invalid_request_error" });
      const big = await rawExchange(port, `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(64 * 1024)}\r\n\r\n`);
      expect(big.status).toBe(431);
      expect(JSON.parse(big.body).error.code).toBe("request_too_large");
      for (const body of ["{not json", ""]) {
        const r = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body,
        });
        expect(r.status).toBe(400);
        expect(((await r.json()) as { error: { code: string } }).error.code).toBe("invalid_json");
      }
    } finally {
      await app.close();
    }
  });

  it("a request needing more sequences than the server ever admits is a 400, not a 429", async () => {
    const { app, port } = await start({ maxQueue: 4 });
    try {
      const r = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ prompt: ["a", "b", "c"], n: 128, max_tokens: 1 }),
      });
      expect(r.status).toBe(400);
      expect(((await r.json()) as { error: { message: string } }).error.message).toMatch(/needs 384 sequences/);
      expect(model.stats().waiting).toBe(0); // nothing was queued
    } finally {
      await app.close();
    }
  });
});

describe("a streaming client that stops reading", () => {
  it("is cut off after streamWriteTimeoutMs: its request is cancelled and its KV blocks freed", async () => {
    const { app, port } = await start({ streamWriteTimeoutMs: 1000 });
    const before = model.stats();
    try {
      const c = await open(port);
      c.sock.pause(); // never read: the socket buffers fill and writes stall
      // Big chunks (20 logprobs with their bytes) fill the loopback buffers in a few thousand tokens.
      const body = JSON.stringify({
        prompt: "Hello",
        max_tokens: 7000,
        n: 4,
        logprobs: 20,
        temperature: 1,
        seed: 3,
        ignore_eos: true,
        stream: true,
      });
      c.sock.write(
        `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      );
      expect(await until(() => model.stats().running === 4, 10_000)).toBe(true);
      // It ends long before 4 x 7000 tokens could have been generated and sent.
      expect(await until(() => model.stats().running === 0, 60_000)).toBe(true);
      const after = model.stats();
      expect(after.aborted).toBe(before.aborted + 4);
      expect(after.blocksUsed).toBe(before.blocksUsed);
      expect(await app.llmserve.metrics.streamWriteTimeouts.get().then((m) => m.values[0]?.value)).toBe(1);
      c.sock.destroy();
    } finally {
      await app.close();
    }
  });
});

describe("cancelled at shutdown", () => {
  it("a non-streaming request cut off by the shutdown timeout reports finish_reason cancelled", async () => {
    const m = await Model.load(path, { threads: 2, contextSize: 8192, kvCacheTokens: 16384 });
    const { app, port } = await start({}, m);
    try {
      const res = fetch(`http://127.0.0.1:${port}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ prompt: "Hello", max_tokens: 8000, ignore_eos: true }),
      });
      expect(await until(() => m.stats().running === 1, 5000)).toBe(true);
      await app.llmserve.shutdown({ timeoutMs: 200 });
      const r = await res;
      expect(r.status).toBe(200);
      const body = (await r.json()) as { choices: { finish_reason: string }[]; usage: { completion_tokens: number } };
      expect(body.choices[0].finish_reason).toBe("cancelled");
      expect(body.usage.completion_tokens).toBeLessThan(8000);
    } finally {
      await app.close().catch(() => {});
      await m.dispose();
    }
  });
});
