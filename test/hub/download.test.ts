/**
 * lib/hub against a local mock of the Hub (test/hub/mockHub.ts), never the network: download and
 * load of a real GGUF by `hf:` spec, the quantization picker, resume after a dropped connection,
 * checksum refusal, gated repositories and HF_TOKEN, offline mode, retries and timeouts,
 * concurrent downloads (in one process and across processes), split files, plain URLs.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { LlmserveError, Model, resolveModel, type ResolveOptions } from "../../lib/index.js";
import { repoRoot, synthModel, tmpRoot } from "../helpers.js";
import { MockHub } from "./mockHub.js";

const hub = new MockHub();
let gguf: Buffer;
let ggufPath: string;
let cacheDir: string;
let n = 0;

/** A fresh cache folder per test, so each starts empty. */
function fresh(extra: ResolveOptions = {}): ResolveOptions {
  cacheDir = mkdtempSync(join(tmpRoot, `hub-cache-${process.pid}-${n++}-`));
  return { cacheDir, endpoint: hub.hubUrl, token: "", retryDelayMs: 5, timeoutMs: 2000, ...extra };
}

async function failure(p: Promise<unknown>): Promise<LlmserveError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(LlmserveError);
    return err as LlmserveError;
  }
  throw new Error("expected a failure");
}

/** Every file under the cache folder (to check nothing half-written is left). */
function cacheFiles(dir: string): string[] {
  return existsSync(dir)
    ? (readdirSync(dir, { recursive: true, withFileTypes: true }) as import("node:fs").Dirent[])
        .filter((e) => e.isFile())
        .map((e) => e.name)
    : [];
}

/** A GGUF header with only split metadata (enough for the loader's split check). */
function splitHeader(no: number, count: number): Buffer {
  const kv = (key: string, v: number) => {
    const k = Buffer.from(key);
    const b = Buffer.alloc(8 + k.length + 4 + 2);
    b.writeBigUInt64LE(BigInt(k.length), 0);
    k.copy(b, 8);
    b.writeUInt32LE(2, 8 + k.length); // GGUF_TYPE_UINT16
    b.writeUInt16LE(v, 12 + k.length);
    return b;
  };
  const head = Buffer.alloc(24);
  head.write("GGUF", 0);
  head.writeUInt32LE(3, 4);
  head.writeBigUInt64LE(0n, 8);
  head.writeBigUInt64LE(2n, 16);
  return Buffer.concat([head, kv("split.no", no), kv("split.count", count)]);
}

beforeAll(async () => {
  ggufPath = await synthModel("hub", { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocabSize: 400 });
  gguf = readFileSync(ggufPath);
  hub.repos.set("org/tiny-GGUF", {
    files: {
      "tiny.Q8_0.gguf": { data: gguf },
      "tiny.Q4_K_M.gguf": { data: gguf },
      "tiny.Q4_K_S.gguf": { data: gguf.subarray(0, 1000) },
      "mmproj-tiny-f16.gguf": { data: Buffer.from("projector") },
      "README.md": { data: Buffer.from("# tiny") },
    },
  });
  hub.repos.set("org/bad", { files: { "bad.gguf": { data: gguf, announceSha256: "0".repeat(64) } } });
  hub.repos.set("org/gated", { files: { "g.gguf": { data: gguf } }, gated: true });
  hub.repos.set("org/split", {
    files: {
      "big-00001-of-00002.gguf": { data: splitHeader(0, 2) },
      "big-00002-of-00002.gguf": { data: Buffer.from("second part") },
    },
  });
  await hub.start();
});
afterAll(() => hub.close());
afterEach(() => {
  hub.requests.length = 0;
  hub.chunkDelayMs = 0;
});

describe("resolveModel and Model.load with hf: specs", () => {
  it("downloads a file by path (302 to the CDN), then loads it by the same spec and generates as the local file does", async () => {
    const o = fresh();
    const path = await resolveModel("hf:org/tiny-GGUF/tiny.Q8_0.gguf", o);
    expect(path).toBe(join(cacheDir, "hf", "org", "tiny-GGUF", "main", "tiny.Q8_0.gguf"));
    expect(readFileSync(path).equals(gguf)).toBe(true);
    expect(hub.requests.map((r) => `${r.server} ${r.method} ${r.path}`)).toEqual([
      "hub HEAD /org/tiny-GGUF/resolve/main/tiny.Q8_0.gguf",
      "cdn GET /cdn/org/tiny-GGUF/tiny.Q8_0.gguf",
    ]);
    hub.requests.length = 0;
    const events: string[] = [];
    const model = await Model.load("hf:org/tiny-GGUF/tiny.Q8_0.gguf", {
      threads: 1,
      download: { cacheDir, endpoint: hub.hubUrl },
      onProgress: (_f, e) => events.push(e.phase),
    });
    const local = await Model.load(ggufPath, { threads: 1 });
    try {
      expect(hub.requests).toEqual([]); // in the cache: no request at all
      expect(model.path).toBe(path);
      expect(events).toContain("load");
      const opts = { maxTokens: 8, temperature: 0, stopAtEos: false };
      const got = await model.complete({ tokens: [1, 300, 301] }, opts);
      expect(got.tokens).toHaveLength(8);
      expect(got.tokens).toEqual((await local.complete({ tokens: [1, 300, 301] }, opts)).tokens);
    } finally {
      await model.dispose();
      await local.dispose();
    }
  });

  it("reports download progress: bytes done and total, rate, a finished event", async () => {
    const events: import("../../lib/index.js").ProgressEvent[] = [];
    await resolveModel("hf:org/tiny-GGUF/tiny.Q8_0.gguf", fresh({ onProgress: (e) => events.push(e) }));
    const last = events[events.length - 1];
    expect(last).toMatchObject({ phase: "download", unit: "bytes", done: gguf.length, total: gguf.length });
    expect(last.finished).toBe(true);
    expect(events.every((e) => e.total === gguf.length && e.done <= e.total)).toBe(true);
  });

  it("picks a file by quantization tag through the API, case-insensitively; ambiguous and unknown tags list candidates", async () => {
    const o = fresh();
    const path = await resolveModel("hf:org/tiny-GGUF:q4_k_m", o);
    expect(path.endsWith(join("main", "tiny.Q4_K_M.gguf"))).toBe(true);
    expect(hub.requests[0]).toMatchObject({ server: "hub", method: "GET", path: "/api/models/org/tiny-GGUF" });
    // No tag: Q4_K_M, as llama.cpp (mmproj and README are never candidates). Cached: no request.
    hub.requests.length = 0;
    expect(await resolveModel("hf:org/tiny-GGUF", o)).toBe(path);
    expect(hub.requests).toEqual([]);
    const amb = await failure(resolveModel("hf:org/tiny-GGUF:Q4_K", fresh()));
    expect(amb.code).toBe("ERR_MODEL_AMBIGUOUS");
    expect(amb.message).toContain("tiny.Q4_K_M.gguf");
    expect(amb.message).toContain("tiny.Q4_K_S.gguf");
    const none = await failure(resolveModel("hf:org/tiny-GGUF:Q5_K_M", fresh()));
    expect(none.code).toBe("ERR_MODEL_NOT_FOUND");
    expect(none.message).toContain("tiny.Q8_0.gguf");
    expect(none.message).not.toContain("mmproj");
    expect((await failure(resolveModel("hf:org/nope:Q4_K_M", fresh()))).code).toBe("ERR_MODEL_NOT_FOUND");
    expect((await failure(resolveModel("hf:org/tiny-GGUF/missing.gguf", fresh()))).code).toBe("ERR_MODEL_NOT_FOUND");
  });

  it("resumes after a connection dropped mid-body: the retry asks for the rest with Range, the file is byte-identical", async () => {
    const half = Math.floor(gguf.length / 2);
    hub.dropAfter.set("org/tiny-GGUF/tiny.Q8_0.gguf", half);
    const path = await resolveModel("hf:org/tiny-GGUF/tiny.Q8_0.gguf", fresh());
    const gets = hub.requests.filter((r) => r.server === "cdn");
    expect(gets).toHaveLength(2);
    expect(gets[0].range).toBeUndefined();
    expect(gets[1].range).toBe(`bytes=${half}-`);
    expect(readFileSync(path).equals(gguf)).toBe(true);
    expect(cacheFiles(cacheDir)).toEqual(["tiny.Q8_0.gguf"]);
  });

  it("a cancelled download keeps its .part; the next run resumes it with Range (same version per .part.json)", async () => {
    hub.chunkDelayMs = 5;
    const o = fresh();
    const ac = new AbortController();
    let at = 0;
    const err = await failure(
      resolveModel("hf:org/tiny-GGUF/tiny.Q8_0.gguf", {
        ...o,
        signal: ac.signal,
        onProgress: (e) => {
          if (e.done > 0 && at === 0) {
            at = e.done;
            ac.abort();
          }
        },
      }),
    );
    expect(err.code).toBe("ERR_CANCELLED");
    const part = join(cacheDir, "hf", "org", "tiny-GGUF", "main", "tiny.Q8_0.gguf.part");
    const kept = readFileSync(part).length;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThan(gguf.length);
    hub.requests.length = 0;
    const path = await resolveModel("hf:org/tiny-GGUF/tiny.Q8_0.gguf", o);
    expect(hub.requests.filter((r) => r.server === "cdn").map((r) => r.range)).toEqual([`bytes=${kept}-`]);
    expect(readFileSync(path).equals(gguf)).toBe(true);
    expect(cacheFiles(cacheDir)).toEqual(["tiny.Q8_0.gguf"]);
  });

  it("retries a stalled body (idle timeout) and a 503, resuming", async () => {
    hub.stallOnce.add("org/tiny-GGUF/tiny.Q8_0.gguf");
    hub.fail503Once = true;
    const path = await resolveModel("hf:org/tiny-GGUF/tiny.Q8_0.gguf", fresh({ timeoutMs: 300 }));
    expect(readFileSync(path).equals(gguf)).toBe(true);
    expect(hub.count((r) => r.server === "hub" && r.method === "HEAD")).toBe(2); // 503, then 302
    expect(hub.count((r) => r.server === "cdn")).toBe(2); // stalled, then whole
  });

  it("gives up after the retries with ERR_DOWNLOAD when the server is gone", async () => {
    const err = await failure(
      resolveModel("hf:org/tiny-GGUF/tiny.Q8_0.gguf", fresh({ endpoint: "http://127.0.0.1:1", retries: 2 })),
    );
    expect(err.code).toBe("ERR_DOWNLOAD");
    expect(err.message).toMatch(/after 3 attempts/);
  });

  it("refuses a file whose sha256 differs from X-Linked-Etag and leaves nothing in the cache", async () => {
    const err = await failure(resolveModel("hf:org/bad/bad.gguf", fresh()));
    expect(err.code).toBe("ERR_CHECKSUM");
    expect(err.message).toContain("0".repeat(64));
    expect(cacheFiles(cacheDir)).toEqual([]);
  });

  it("a gated repository: 401 without a token says to set HF_TOKEN and accept the licence; with it the file comes, the token only to the Hub", async () => {
    const err = await failure(resolveModel("hf:org/gated/g.gguf", fresh()));
    expect(err.code).toBe("ERR_HUB_AUTH");
    expect(err.message).toContain("HF_TOKEN");
    expect(err.message).toContain("licence");
    expect(err.message).toContain(`${hub.hubUrl}/org/gated`);
    hub.requests.length = 0;
    const path = await resolveModel("hf:org/gated/g.gguf", fresh({ token: hub.token }));
    expect(readFileSync(path).equals(gguf)).toBe(true);
    expect(hub.requests.find((r) => r.server === "hub")?.authorization).toBe(`Bearer ${hub.token}`);
    expect(hub.requests.find((r) => r.server === "cdn")?.authorization).toBeUndefined();
    const refused = await failure(resolveModel("hf:org/gated/g.gguf", fresh({ token: "wrong" })));
    expect(refused.code).toBe("ERR_HUB_AUTH");
    expect(refused.message).toMatch(/token .* was refused/);
  });

  it("offline mode (option or LLMSERVE_OFFLINE / HF_HUB_OFFLINE) makes no request: the cache or ERR_OFFLINE", async () => {
    const o = fresh();
    const err = await failure(resolveModel("hf:org/tiny-GGUF/tiny.Q8_0.gguf", { ...o, offline: true }));
    expect(err.code).toBe("ERR_OFFLINE");
    expect(err.message).toContain("llmserve pull hf:org/tiny-GGUF/tiny.Q8_0.gguf");
    expect((await failure(resolveModel("hf:org/tiny-GGUF:Q8_0", { ...o, offline: true }))).code).toBe("ERR_OFFLINE");
    expect(hub.requests).toEqual([]);
    const path = await resolveModel("hf:org/tiny-GGUF/tiny.Q8_0.gguf", o);
    hub.requests.length = 0;
    for (const env of ["LLMSERVE_OFFLINE", "HF_HUB_OFFLINE"]) {
      process.env[env] = "1";
      try {
        expect(await resolveModel("hf:org/tiny-GGUF/tiny.Q8_0.gguf", o)).toBe(path);
        expect(await resolveModel("hf:org/tiny-GGUF:q8_0", o)).toBe(path); // picked among cached files
        expect((await failure(resolveModel("hf:org/tiny-GGUF/tiny.Q4_K_M.gguf", o))).code).toBe("ERR_OFFLINE");
      } finally {
        delete process.env[env];
      }
    }
    expect(hub.requests).toEqual([]);
  });

  it("concurrent downloads of one file in one process share one download", async () => {
    hub.chunkDelayMs = 5;
    const o = fresh();
    const [a, b] = await Promise.all([
      resolveModel("hf:org/tiny-GGUF/tiny.Q8_0.gguf", o),
      resolveModel("hf:org/tiny-GGUF/tiny.Q8_0.gguf", o),
    ]);
    expect(a).toBe(b);
    expect(readFileSync(a).equals(gguf)).toBe(true);
    expect(hub.count((r) => r.server === "cdn")).toBe(1);
  });

  const dist = join(repoRoot, "dist", "index.js");
  it.runIf(existsSync(dist))(
    "concurrent downloads in two processes: the lock lets one write, the other waits",
    async () => {
      hub.chunkDelayMs = 10;
      const o = fresh();
      const script = `import(${JSON.stringify(dist)}).then((m) => m.resolveModel("hf:org/tiny-GGUF/tiny.Q8_0.gguf", ${JSON.stringify(o)})).then((p) => console.log(p))`;
      const run = () =>
        new Promise<string>((resolve, reject) => {
          const c = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "pipe"] });
          let out = "";
          let err = "";
          c.stdout.on("data", (d) => (out += d));
          c.stderr.on("data", (d) => (err += d));
          c.on("close", (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(err))));
        });
      const [a, b] = await Promise.all([run(), run()]);
      expect(a).toBe(b);
      expect(readFileSync(a).equals(gguf)).toBe(true);
      expect(hub.count((r) => r.server === "cdn")).toBe(1);
      expect(cacheFiles(cacheDir)).toEqual(["tiny.Q8_0.gguf"]);
    },
  );

  it("a split model: every part is downloaded; the loader refuses it with ERR_SPLIT_GGUF", async () => {
    const o = fresh();
    const path = await resolveModel("hf:org/split/big-00001-of-00002.gguf", o);
    const second = join(cacheDir, "hf", "org", "split", "main", "big-00002-of-00002.gguf");
    expect(readFileSync(second, "utf8")).toBe("second part");
    const err = await failure(Model.load("hf:org/split/big-00001-of-00002.gguf", { download: o }));
    expect(err.code).toBe("ERR_SPLIT_GGUF");
    expect(err.message).toContain("llama-gguf-split --merge");
    expect(path.endsWith("big-00001-of-00002.gguf")).toBe(true);
  });

  it("plain URLs download into the cache (no token sent to another host)", async () => {
    const o = fresh({ token: "secret" });
    const url = `${hub.cdnUrl}/cdn/org/tiny-GGUF/tiny.Q8_0.gguf`;
    const path = await resolveModel(url, o);
    expect(readFileSync(path).equals(gguf)).toBe(true);
    expect(hub.requests.every((r) => r.authorization === undefined)).toBe(true);
    hub.requests.length = 0;
    expect(await resolveModel(url, o)).toBe(path);
    expect(hub.requests).toEqual([]);
  });
});
