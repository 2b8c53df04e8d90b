/**
 * `llmserve serve`: prints its URL, serves requests, and on SIGTERM drains in-flight streams and
 * exits 0; with `--adapter NAME=PATH` (repeated) and `--max-adapters`, serves each adapter as a model
 * with the library's text; --host/--port from LLMSERVE_HOST/LLMSERVE_PORT.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Model, synthLora } from "../../lib/index.js";
import { repoRoot, synthModel, tmpRoot } from "../helpers.js";

const cli = join(repoRoot, "dist", "cli.js");

describe.runIf(existsSync(join(repoRoot, "dist", "server", "index.js")))("llmserve serve (dist/cli.js)", () => {
  it("listens on the printed URL, requires the API key, and shuts down gracefully on SIGTERM", async () => {
    const model = await synthModel("server-cli", {
      dim: 64,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      ffn: 128,
      vocabSize: 512,
      context: 4096,
    });
    const child = spawn(
      process.execPath,
      [
        cli,
        "serve",
        "-m",
        model,
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--threads",
        "2",
        "--ctx",
        "4096",
        "--api-key",
        "k1",
        "--model-name",
        "cli-model",
        "--max-queue",
        "8",
        "--max-sequences",
        "4",
        "--kv-cache-tokens",
        "8192",
        "--max-batch-tokens",
        "256",
        "--prefill-chunk",
        "32",
        "--target-step-ms",
        "7.5",
        "--batching",
        "fixed",
        "--fixed-bucket",
        "16",
        "--kv-type",
        "f32",
        "--no-repack",
        "--shutdown-timeout",
        "0.3",
      ],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    try {
      const t0 = Date.now();
      while (!/http:\/\/127\.0\.0\.1:\d+/.test(stdout)) {
        if (Date.now() - t0 > 30_000 || child.exitCode !== null)
          throw new Error(`no URL printed\n${stdout}\n${stderr}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      const url = /(http:\/\/127\.0\.0\.1:\d+)/.exec(stdout)![1];
      expect(stdout).toContain("cli-model");
      const auth = { "content-type": "application/json", authorization: "Bearer k1" };
      expect((await fetch(`${url}/v1/models`)).status).toBe(401);
      const models = (await (await fetch(`${url}/v1/models`, { headers: auth })).json()) as { data: { id: string }[] };
      expect(models.data[0].id).toBe("cli-model");

      // A long stream in flight when SIGTERM arrives is cancelled after the timeout and still ends cleanly.
      const r = await fetch(`${url}/v1/completions`, {
        method: "POST",
        headers: auth,
        body: JSON.stringify({ model: "cli-model", prompt: "Hi", max_tokens: 4000, ignore_eos: true, stream: true }),
      });
      expect(r.status).toBe(200);
      const reader = r.body!.getReader();
      await reader.read();
      child.kill("SIGTERM");
      let body = "";
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        body += decoder.decode(value, { stream: true });
      }
      expect(body.trimEnd().endsWith("data: [DONE]")).toBe(true);
      expect(await exited).toBe(0);
      expect(stderr).toMatch(/SIGTERM received/);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  });

  it("serve --adapter a=PATH --adapter b=PATH --max-adapters 1: both listed, each the library's text", async () => {
    const shape = { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocabSize: 512, context: 4096 };
    const model = await synthModel("server-cli", shape);
    const paths: Record<string, string> = {};
    for (const [name, seed] of [
      ["a", 5],
      ["b", 6],
    ] as const) {
      paths[name] = join(tmpRoot, `server-cli-lora-${name}-${process.pid}.gguf`);
      await synthLora(model, paths[name], { rank: 4, seed });
    }
    const lib = await Model.load(model, { threads: 1, contextSize: 256 });
    const text: Record<string, string> = {};
    try {
      for (const name of ["a", "b"]) {
        await lib.loadAdapter(name, paths[name], { scale: 1 });
        const opts = { maxTokens: 12, temperature: 0, stopAtEos: false, adapter: name };
        text[name] = (await lib.complete("Once upon a time", opts)).text;
      }
      text.base = (await lib.complete("Once upon a time", { maxTokens: 12, temperature: 0, stopAtEos: false })).text;
    } finally {
      await lib.dispose();
    }
    expect(new Set(Object.values(text)).size).toBe(3);
    const child = spawn(process.execPath, [
      cli,
      "serve",
      "-m",
      model,
      "--port",
      "0",
      "--threads",
      "1",
      "--ctx",
      "256",
      "--model-name",
      "base",
      "--adapter",
      `a=${paths.a}`,
      "--adapter",
      `b=${paths.b}`,
      "--max-adapters",
      "1",
    ]);
    try {
      const url = await printedUrl(child);
      const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string; parent?: string }[] };
      expect(models.data.map((m) => [m.id, m.parent])).toEqual([
        ["base", undefined],
        ["a", "base"],
        ["b", "base"],
      ]);
      // a, b, a: with --max-adapters 1 each request reloads its adapter; the text is the library's.
      for (const name of ["a", "b", "a", "base"]) {
        const r = await fetch(`${url}/v1/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({
            model: name,
            prompt: "Once upon a time",
            max_tokens: 12,
            temperature: 0,
            ignore_eos: true,
          }),
        });
        expect(r.status).toBe(200);
        expect(((await r.json()) as { choices: { text: string }[] }).choices[0].text).toBe(text[name]);
      }
      const metrics = await (await fetch(`${url}/metrics`)).text();
      expect(metrics).toMatch(/^llmserve_adapters_resident 1$/m);
      expect(metrics).toMatch(/^llmserve_adapter_evictions_total 4$/m); // a (loading b), then one per request
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("serve --kv-memory 1MiB --cors ORIGIN: prints how many full contexts fit; CORS headers for that origin", async () => {
    // 2 layers x 2 KV heads of 16, f16: 256 bytes per token, so 1 MiB = 4096 tokens = 16 contexts of 256.
    const shape = { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocabSize: 512, context: 4096 };
    const model = await synthModel("server-cli", shape);
    const origin = "https://app.example.com";
    const child = spawn(process.execPath, [
      cli,
      "serve",
      "-m",
      model,
      "--port",
      "0",
      "--threads",
      "1",
      "--ctx",
      "256",
      "--kv-memory",
      "1MiB",
      "--cors",
      origin,
    ]);
    let stdout = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    try {
      const url = await printedUrl(child);
      expect(stdout).toContain(
        "KV cache 4096 tokens (1.0 MiB): 16 sequence(s) of the full 256-token context fit at once",
      );
      const r = await fetch(`${url}/v1/models`, { headers: { origin } });
      expect(r.headers.get("access-control-allow-origin")).toBe(origin);
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("exits 1 with a clear message when the port is taken", async () => {
    const model = await synthModel("server-cli", {
      dim: 64,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      ffn: 128,
      vocabSize: 512,
      context: 4096,
    });
    const { createServer } = await import("node:net");
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r));
    const port = (blocker.address() as { port: number }).port;
    try {
      const child = spawn(
        process.execPath,
        [cli, "serve", "-m", model, "--port", String(port), "--threads", "1", "--ctx", "256"],
        { stdio: ["ignore", "pipe", "pipe"] },
      );
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      const code = await new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
      expect(code).toBe(1);
      expect(stderr).toMatch(/EADDRINUSE|in use/);
    } finally {
      blocker.close();
    }
  });

  it("takes --host and --port from LLMSERVE_HOST and LLMSERVE_PORT (the Docker image's settings)", async () => {
    const model = await synthModel("server-cli", {
      dim: 64,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      ffn: 128,
      vocabSize: 512,
      context: 4096,
    });
    const args = [cli, "serve", "-m", model, "--threads", "1", "--ctx", "256"];
    // 127.0.0.2: any loopback address but the default 127.0.0.1, so the variable is seen to apply.
    const child = spawn(process.execPath, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, LLMSERVE_HOST: "127.0.0.2", LLMSERVE_PORT: "0" },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
    try {
      const t0 = Date.now();
      while (!/http:\/\/127\.0\.0\.2:\d+/.test(stdout)) {
        if (Date.now() - t0 > 30_000 || child.exitCode !== null)
          throw new Error(`no URL printed\n${stdout}\n${stderr}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      const url = /(http:\/\/127\.0\.0\.2:\d+)/.exec(stdout)![1];
      expect(Number(new URL(url).port)).toBeGreaterThan(0);
      const health = await fetch(`${url}/health`);
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ status: "ok" });
    } finally {
      child.kill("SIGTERM");
    }
    expect(await exited).toBe(0);

    const bad = spawn(process.execPath, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, LLMSERVE_PORT: "eighty" },
    });
    let badErr = "";
    bad.stderr.on("data", (d: Buffer) => (badErr += d.toString()));
    const code = await new Promise<number | null>((resolve) => bad.on("exit", (c) => resolve(c)));
    expect(code).toBe(1);
    expect(badErr).toContain('Expected an integer for --port but received "eighty"');
  });
});

/** Waits for `serve` to print its URL (30 s at most) and returns it. */
async function printedUrl(child: ChildProcessWithoutNullStreams): Promise<string> {
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const t0 = Date.now();
  while (!/http:\/\/127\.0\.0\.1:\d+/.test(stdout)) {
    if (Date.now() - t0 > 30_000 || child.exitCode !== null) throw new Error(`no URL printed\n${stdout}\n${stderr}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return (/(http:\/\/127\.0\.0\.1:\d+)/.exec(stdout) as RegExpExecArray)[1];
}
