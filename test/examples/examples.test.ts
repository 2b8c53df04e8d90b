/**
 * Every script in examples/ runs against a small synth model, offline, and prints what it says it
 * prints. They import "llmserve" by name (the package resolves itself through its exports), so
 * they run the built dist/, as a user's script would.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot, synthModel } from "../helpers.js";

const examples = join(repoRoot, "examples");
const dist = join(repoRoot, "dist", "index.js");

/** Runs an example with node; resolves with its exit code and output. */
function runExample(
  name: string,
  args: string[],
  extraEnv: NodeJS.ProcessEnv = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extraEnv };
  for (const k of Object.keys(env)) if (k.startsWith("LLMSERVE_") && !(k in extraEnv)) delete env[k];
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(examples, name), ...args], { cwd: repoRoot, env });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 90_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe.runIf(existsSync(dist))("examples/", () => {
  let model: string;
  let cache: string;
  beforeAll(async () => {
    model = await synthModel("examples", { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocabSize: 400 });
    cache = mkdtempSync(join(tmpdir(), "llmserve-examples-cache-"));
  });
  afterAll(() => rmSync(cache, { recursive: true, force: true }));

  it("has a test below for every example", () => {
    expect(
      readdirSync(examples)
        .filter((f) => f.endsWith(".mjs"))
        .sort(),
    ).toEqual([
      "embeddings.mjs",
      "hf-download.mjs",
      "lora.mjs",
      "many-users.mjs",
      "openai-client.mjs",
      "streaming.mjs",
    ]);
  });

  it("embeddings.mjs ranks every sentence by cosine similarity and reuses the cache", async () => {
    const r = await runExample("embeddings.mjs", [model, "a purring cat"]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines[0]).toBe("query: a purring cat");
    const scores = lines.slice(1, 6).map((l) => Number(/^(-?[\d.]+) {2}\S/.exec(l)![1]));
    expect(scores.length).toBe(5);
    for (const s of scores) expect(Math.abs(s)).toBeLessThanOrEqual(1 + 1e-4); // cosines of unit vectors
    expect(scores).toEqual([...scores].sort((a, b) => b - a));
    expect(new Set(lines.slice(1, 6).map((l) => /^-?[\d.]+ {2}(.*)$/.exec(l)![1])).size).toBe(5); // each sentence once
    expect(lines[6]).toBe("[64 dimensions; embedding cache: 1 hits, 6 computed]");
    const usage = await runExample("embeddings.mjs", []);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("usage: node examples/embeddings.mjs MODEL");
  });

  it("streaming.mjs streams a generation after the prompt and reports how it ended", async () => {
    const r = await runExample("streaming.mjs", [model, "Once upon a time"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.startsWith("Once upon a time")).toBe(true);
    const m = /\n\[finish: (length|eos); (\d+) tokens, \d+ tok\/s\]\n$/.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    const tokens = Number(m![2]);
    expect(tokens).toBeGreaterThan(0);
    expect(tokens).toBeLessThanOrEqual(48);
    expect(r.stdout.length).toBeGreaterThan("Once upon a time".length + m![0].length); // text came out
    const usage = await runExample("streaming.mjs", []);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("usage: node examples/streaming.mjs MODEL");
  });

  it("many-users.mjs serves several users at once through batched engine steps", async () => {
    const r = await runExample("many-users.mjs", [model, "4"]);
    expect(r.code, r.stderr).toBe(0);
    const users = r.stdout.split("\n").filter((l) => /^user \d+: \d+ tokens: /.test(l));
    expect(users.map((l) => Number(/^user (\d+)/.exec(l)![1]))).toEqual([0, 1, 2, 3]);
    const m =
      /4 users, (\d+) tokens in .* (\d+) engine steps, ([\d.]+) sequences per step, (\d+) prompt tokens reused/.exec(
        r.stdout,
      );
    expect(m, r.stdout).not.toBeNull();
    const [tokens, steps, perStep] = [Number(m![1]), Number(m![2]), Number(m![3])];
    expect(tokens).toBeGreaterThan(4);
    expect(steps).toBeLessThan(tokens); // batched: fewer steps than tokens
    expect(perStep).toBeGreaterThan(1);
  });

  it("openai-client.mjs talks to `llmserve serve` with the openai client, then stops it cleanly", async () => {
    const r = await runExample("openai-client.mjs", [model]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^server http:\/\/127\.0\.0\.1:\d+\/v1, model \S+/m);
    expect(r.stdout).toMatch(/^chat: ".*" \(\d+ tokens\)$/m);
    expect(r.stdout).toMatch(/^stream: /m);
    expect(r.stdout).toContain("server stopped (exit 0)");
  });

  it("lora.mjs runs the base and two random adapters in one batch; the adapters change the text", async () => {
    const r = await runExample("lora.mjs", [model]);
    expect(r.code, r.stderr).toBe(0);
    const out = Object.fromEntries(
      r.stdout
        .split("\n")
        .map((l) => /^(\(base\)|random-\d): (".*")$/.exec(l))
        .filter((m) => m !== null)
        .map((m) => [m![1], JSON.parse(m![2]) as string]),
    );
    expect(Object.keys(out).sort()).toEqual(["(base)", "random-1", "random-2"]);
    expect(out["(base)"].length).toBeGreaterThan(0);
    expect(out["random-1"] !== out["(base)"] || out["random-2"] !== out["(base)"], r.stdout).toBe(true);
    expect(r.stdout).toContain("adapter random-1: resident=true, loads=1");
    expect(r.stdout).toContain("adapter random-2: resident=true, loads=1");
  });

  it("hf-download.mjs resolves a local file and loads it; offline, an hf: spec is a clear ERR_OFFLINE", async () => {
    const usage = await runExample("hf-download.mjs", []);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("usage: node examples/hf-download.mjs MODEL");

    const local = await runExample("hf-download.mjs", [model]);
    expect(local.code, local.stderr).toBe(0);
    expect(local.stdout).toContain(`local file: ${model}`);
    expect(local.stdout).toContain("loaded: llama, 2 layers, 64 wide, vocabulary of 400 tokens");

    // Never the network: offline mode, an empty cache, and a Hub address where nothing listens.
    const env = { LLMSERVE_OFFLINE: "1", LLMSERVE_MODELS: cache, HF_ENDPOINT: "http://127.0.0.1:9" };
    const off = await runExample("hf-download.mjs", ["hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF:Q4_K_M"], env);
    expect(off.code).toBe(1);
    expect(off.stderr).toMatch(/^ERR_OFFLINE: /m);
  });
});
