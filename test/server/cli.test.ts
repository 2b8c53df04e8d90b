/** `llmserve serve`: prints its URL, serves requests, and on SIGTERM drains in-flight streams and exits 0. */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot, synthModel } from "../helpers.js";

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
});
