/**
 * The event loop cannot be held by a request: a looping chat template (from the model or the
 * operator) is stopped at its time limit on a worker thread, a huge template output, a
 * 20,000-message chat and an overlong prompt are refused quickly, and a long prompt is tokenized on
 * a worker thread; meanwhile GET /health keeps answering fast.
 */
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model } from "../../lib/index.js";
import { createServer } from "../../lib/server/index.js";
import { synthModel } from "../helpers.js";

const HOSTILE = "{% for a in range(1000000) %}{% for b in range(1000000) %}{{ '' }}{% endfor %}{% endfor %}";
/** 10 x 2^21 characters (quickly: each step doubles the string). */
const HUGE =
  "{% set s = namespace(x='0123456789') %}{% for i in range(21) %}{% set s.x = s.x ~ s.x %}{% endfor %}{{ s.x }}";
/**
 * Largest /health latency we accept while an attack runs: a stalled loop shows seconds (inline
 * rendering of a 10^6-iteration loop: 9 s; inline tokenization of 990 KB: 3.2 s); a free one shows
 * tens of ms, a few hundred on a loaded 2-core machine running the whole suite.
 */
const HEALTH_MS = 1000;

/**
 * Copies a GGUF file with one more string metadata entry (here: tokenizer.chat_template): the
 * entry is appended to the key/value section, and the tensor data moves to the next aligned offset.
 */
function withMetadataString(src: string, dst: string, key: string, value: string): void {
  const buf = readFileSync(src);
  let o = 4 + 4; // magic, version
  const nTensors = Number(buf.readBigUInt64LE(o));
  const nKv = Number(buf.readBigUInt64LE(o + 8));
  o += 16;
  const sizes: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  let alignment = 32;
  const str = () => {
    const n = Number(buf.readBigUInt64LE(o));
    const s = buf.toString("utf8", o + 8, o + 8 + n);
    o += 8 + n;
    return s;
  };
  const skipValue = (type: number) => {
    if (type === 8) str();
    else if (type === 9) {
      const et = buf.readUInt32LE(o);
      const n = Number(buf.readBigUInt64LE(o + 4));
      o += 12;
      for (let i = 0; i < n; i++) skipValue(et);
    } else o += sizes[type];
  };
  for (let i = 0; i < nKv; i++) {
    const k = str();
    const type = buf.readUInt32LE(o);
    o += 4;
    if (k === "general.alignment") alignment = buf.readUInt32LE(o);
    skipValue(type);
  }
  const kvEnd = o;
  for (let i = 0; i < nTensors; i++) {
    str();
    const nDims = buf.readUInt32LE(o);
    o += 4 + 8 * nDims + 4 + 8;
  }
  const infoEnd = o;
  const dataStart = Math.ceil(infoEnd / alignment) * alignment;
  const k = Buffer.from(key, "utf8");
  const v = Buffer.from(value, "utf8");
  const entry = Buffer.alloc(8 + k.length + 4 + 8 + v.length);
  entry.writeBigUInt64LE(BigInt(k.length), 0);
  k.copy(entry, 8);
  entry.writeUInt32LE(8, 8 + k.length);
  entry.writeBigUInt64LE(BigInt(v.length), 12 + k.length);
  v.copy(entry, 20 + k.length);
  const head = Buffer.concat([buf.subarray(0, kvEnd), entry, buf.subarray(kvEnd, infoEnd)]);
  head.writeBigUInt64LE(BigInt(nKv + 1), 16);
  const pad = Buffer.alloc(Math.ceil(head.length / alignment) * alignment - head.length);
  writeFileSync(dst, Buffer.concat([head, pad, buf.subarray(dataStart)]));
}

let path: string;
let model: Model;
const apps: FastifyInstance[] = [];

async function serve(m: Model, chatTemplate?: string): Promise<string> {
  const app = createServer(m, { modelName: "tiny", chatTemplate, defaultMetrics: false });
  apps.push(app);
  await app.listen({ port: 0, host: "127.0.0.1" });
  const addr = app.server.address();
  if (addr === null || typeof addr === "string") throw new Error("no TCP address");
  return `http://127.0.0.1:${addr.port}`;
}

/** POSTs JSON (pass a string to serialize a large body before the measurement: the client shares this event loop). */
function post(url: string, body: unknown): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

/**
 * Polls GET /health every 50 ms from another process (an in-process client would stall with the
 * server and miss the stall) until a line arrives on stdin; then prints the largest latency.
 */
const POLLER = `
const base = process.argv[1];
let stop = false;
const lat = [];
process.stdin.on("data", () => { stop = true; });
(async () => {
  while (!stop) {
    const t = performance.now();
    try {
      const r = await fetch(base + "/health");
      await r.text();
      lat.push(r.status === 200 ? performance.now() - t : 1e9);
    } catch {
      lat.push(1e9);
    }
    if (lat.length === 1) process.stderr.write("ready\\n");
    await new Promise((r) => setTimeout(r, 50));
  }
  process.stdout.write(JSON.stringify({ max: Math.max(...lat), n: lat.length }));
  process.exit(0);
})();`;

/** Runs `attack` while another process polls GET /health; returns its result, its duration and the largest /health latency. */
async function underAttack<T>(
  base: string,
  attack: () => Promise<T>,
): Promise<{ value: T; ms: number; healthMs: number; probes: number }> {
  const child = spawn(process.execPath, ["-e", POLLER, base], { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    child.stderr.once("data", () => resolve());
    child.once("exit", (code) => reject(new Error(`the /health poller exited with ${code}`)));
  });
  const t0 = performance.now();
  let value: T;
  let ms: number;
  try {
    value = await attack();
    ms = performance.now() - t0;
  } finally {
    child.stdin.write("stop\n");
    await exited;
  }
  const { max, n } = JSON.parse(out) as { max: number; n: number };
  return { value, ms, healthMs: max, probes: n };
}

async function errorOf(
  r: Response,
): Promise<{ status: number; error: { message: string; type: string; code: string | null; param: string | null } }> {
  const text = await r.text();
  return {
    status: r.status,
    ...(JSON.parse(text) as { error: { message: string; type: string; code: string | null; param: string | null } }),
  };
}

beforeAll(async () => {
  path = await synthModel("server-eventloop", { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocabSize: 512 });
  model = await Model.load(path, { threads: 1, contextSize: 256, kvCacheTokens: 1024 });
});

afterAll(async () => {
  for (const a of apps) await a.close();
  await model?.dispose();
});

describe("hostile chat templates", () => {
  it("the model file's own nested-loop template: 500 template_timeout, /health stays fast", async () => {
    const hostilePath = path.replace(/\.gguf$/, "-hostile.gguf");
    withMetadataString(path, hostilePath, "tokenizer.chat_template", HOSTILE);
    const m = await Model.load(hostilePath, { threads: 1, contextSize: 256, kvCacheTokens: 1024 });
    try {
      const base = await serve(m); // no chatTemplate option: the file's template is used
      const t = await apps.at(-1)!.llmserve.chatTemplate();
      expect(t.source).toBe("gguf");
      expect(t.text).toBe(HOSTILE);
      const r = await underAttack(base, async () =>
        errorOf(
          await post(`${base}/v1/chat/completions`, { messages: [{ role: "user", content: "hi" }], max_tokens: 4 }),
        ),
      );
      console.log(
        `GGUF nested-loop template: answered in ${r.ms.toFixed(0)} ms; /health max ${r.healthMs.toFixed(0)} ms over ${r.probes} probes`,
      );
      expect(r.value.status).toBe(500);
      expect(r.value.error).toMatchObject({
        code: "template_timeout",
        message: expect.stringMatching(/The chat template \(gguf\) did not finish rendering within 2000 ms/),
      });
      expect(r.healthMs).toBeLessThan(HEALTH_MS);
      // The model still serves completions (no template involved).
      expect((await post(`${base}/v1/completions`, { prompt: "Hello", max_tokens: 2 })).status).toBe(200);
    } finally {
      await apps.pop()!.close();
      await m.dispose();
    }
  }, 120_000);

  it("a nested-loop template fails with 500 template_timeout within the time limit, and /health stays fast", async () => {
    const base = await serve(model, HOSTILE);
    const r = await underAttack(base, async () =>
      errorOf(
        await post(`${base}/v1/chat/completions`, { messages: [{ role: "user", content: "hi" }], max_tokens: 4 }),
      ),
    );
    console.log(
      `nested-loop template: answered in ${r.ms.toFixed(0)} ms; /health max ${r.healthMs.toFixed(0)} ms over ${r.probes} probes`,
    );
    expect(r.value.status).toBe(500);
    expect(r.value.error).toMatchObject({
      type: "server_error",
      code: "template_timeout",
      message: expect.stringMatching(/within 2000 ms/),
    });
    expect(r.ms).toBeGreaterThanOrEqual(1900);
    expect(r.ms).toBeLessThan(15_000);
    expect(r.probes).toBeGreaterThan(5);
    expect(r.healthMs).toBeLessThan(HEALTH_MS);
    // Two at once: both stopped, the server still answers.
    const both = await underAttack(base, () =>
      Promise.all(
        [0, 1].map(
          async () =>
            (await post(`${base}/v1/chat/completions`, { messages: [{ role: "user", content: "hi" }] })).status,
        ),
      ),
    );
    expect(both.value).toEqual([500, 500]);
    expect(both.healthMs).toBeLessThan(HEALTH_MS);
  }, 120_000);

  it("a template with a huge output is refused (400 context_length_exceeded), and /health stays fast", async () => {
    const base = await serve(model, HUGE);
    const r = await underAttack(base, async () =>
      errorOf(
        await post(`${base}/v1/chat/completions`, { messages: [{ role: "user", content: "hi" }], max_tokens: 4 }),
      ),
    );
    console.log(`huge-output template: answered in ${r.ms.toFixed(0)} ms; /health max ${r.healthMs.toFixed(0)} ms`);
    expect(r.value.status, r.value.error.message).toBe(400);
    expect(r.value.error).toMatchObject({
      code: "context_length_exceeded",
      message: expect.stringMatching(/rendered 20971520 characters, more than the limit/),
    });
    expect(r.healthMs).toBeLessThan(HEALTH_MS);
  }, 120_000);
});

describe("oversized requests are refused before rendering or tokenizing", () => {
  it("a 20,000-message chat: 400 naming the limit, quickly", async () => {
    const base = await serve(model, HOSTILE); // were it rendered, this template would loop
    const messages = Array.from({ length: 20_000 }, (_, i) => ({
      role: i % 2 ? "assistant" : "user",
      content: `message ${i}`,
    }));
    const body = JSON.stringify({ messages });
    const r = await underAttack(base, async () => errorOf(await post(`${base}/v1/chat/completions`, body)));
    console.log(`20,000 messages: answered in ${r.ms.toFixed(0)} ms; /health max ${r.healthMs.toFixed(0)} ms`);
    expect(r.value.status).toBe(400);
    // The server's schema refuses it (ChatTemplate's own maxMessages check is the library's guard,
    // tested in test/unit/chat/limits.test.ts); either way nothing is rendered or tokenized.
    expect(r.value.error).toMatchObject({
      code: "invalid_value",
      param: "messages",
      message: expect.stringMatching(/more than 4096/),
    });
    expect(r.ms).toBeLessThan(1900); // the template (2 s limit) never ran
    expect(r.healthMs).toBeLessThan(HEALTH_MS);
  }, 60_000);

  it("a multi-MB chat message or prompt: 400 context_length_exceeded before tokenizing", async () => {
    const base = await serve(model, "chatml");
    const text = "The quick brown fox jumps over the lazy dog. ".repeat(70_000); // 3.15 MB
    const chatBody = JSON.stringify({ messages: [{ role: "user", content: text }] });
    const completionBody = JSON.stringify({ prompt: text });
    const chat = await underAttack(base, async () => errorOf(await post(`${base}/v1/chat/completions`, chatBody)));
    expect(chat.value.status).toBe(400);
    expect(chat.value.error).toMatchObject({
      code: "context_length_exceeded",
      message: expect.stringMatching(/characters; at most \d+ are accepted/),
    });
    const completion = await underAttack(base, async () =>
      errorOf(await post(`${base}/v1/completions`, completionBody)),
    );
    console.log(
      `3.15 MB chat: ${chat.ms.toFixed(0)} ms (/health max ${chat.healthMs.toFixed(0)} ms); completion: ${completion.ms.toFixed(0)} ms (/health max ${completion.healthMs.toFixed(0)} ms)`,
    );
    expect(completion.value.status).toBe(400);
    expect(completion.value.error).toMatchObject({
      code: "context_length_exceeded",
      param: "prompt",
      message: expect.stringMatching(/characters cannot fit/),
    });
    // Refused without tokenizing (that takes ~15 s inline or on the worker); what remains is reading
    // and JSON-parsing the body on the event loop (bounded by bodyLimit), hence the wider bound.
    expect(chat.ms).toBeLessThan(5000);
    expect(completion.ms).toBeLessThan(5000);
    expect(chat.healthMs).toBeLessThan(2 * HEALTH_MS);
    expect(completion.healthMs).toBeLessThan(2 * HEALTH_MS);
  }, 60_000);
});

describe("long prompts are tokenized on a worker thread", () => {
  it("a prompt that passes the character bound but not the token count: /health stays fast while it is tokenized", async () => {
    // A large context (the KV stays small): 1 MB of text is admissible by characters and must be tokenized.
    const big = await Model.load(path, { threads: 1, contextSize: 262144, kvCacheTokens: 16384 });
    try {
      const base = await serve(big, "chatml");
      const text = "The quick brown fox jumps over the lazy dog. ".repeat(22_000); // 990 KB
      expect(text.length).toBeLessThan(big.maxPromptChars);
      const completionBody = JSON.stringify({ prompt: text, max_tokens: 1 });
      const chatBody = JSON.stringify({ messages: [{ role: "user", content: text }], max_tokens: 1 });
      const r = await underAttack(base, async () => errorOf(await post(`${base}/v1/completions`, completionBody)));
      console.log(
        `990 KB prompt tokenized: answered in ${r.ms.toFixed(0)} ms; /health max ${r.healthMs.toFixed(0)} ms over ${r.probes} probes`,
      );
      expect(r.value.status).toBe(400);
      expect(r.value.error).toMatchObject({
        code: "context_length_exceeded",
        message: expect.stringMatching(/resulted in \d+ tokens/),
      });
      expect(r.healthMs).toBeLessThan(Math.max(HEALTH_MS, r.ms / 3));
      const chat = await underAttack(base, async () => errorOf(await post(`${base}/v1/chat/completions`, chatBody)));
      console.log(
        `990 KB chat tokenized: answered in ${chat.ms.toFixed(0)} ms; /health max ${chat.healthMs.toFixed(0)} ms over ${chat.probes} probes`,
      );
      expect(chat.value.status).toBe(400);
      expect(chat.healthMs).toBeLessThan(Math.max(HEALTH_MS, chat.ms / 3));

      // Model.generate: a 16 KiB+ string is tokenized on the worker (same tokens, same output);
      // one over the character bound is refused at once.
      const mid = "The quick brown fox jumps over the lazy dog. ".repeat(370); // 16.6 KB
      const viaWorker = await big.complete(mid, { maxTokens: 4, temperature: 0 });
      const inline = await big.complete({ tokens: big.tokenize(mid) }, { maxTokens: 4, temperature: 0 });
      expect(viaWorker.tokens).toEqual(inline.tokens);
      expect(viaWorker.tokens.length).toBeGreaterThan(0);
      expect(() => model.generate("x".repeat(model.maxPromptChars + 1))).toThrow(
        expect.objectContaining({
          code: "ERR_CONTEXT_OVERFLOW",
          message: expect.stringMatching(/characters, more than the context of 256 tokens/),
        }),
      );
    } finally {
      await big.dispose();
    }
  }, 180_000);
});
