/** `llmserve pull`, `models`, `models rm` and `-m hf:...` against the local mock Hub (HF_ENDPOINT). */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot, synthModel, tmpRoot } from "../helpers.js";
import { MockHub } from "./mockHub.js";

const cli = join(repoRoot, "dist", "cli.js");
const hub = new MockHub();
let gguf: Buffer;
let cacheDir: string;

/** Runs the CLI without blocking this process (the mock Hub answers from here). */
function run(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [cli, ...args], {
      env: { ...process.env, LLMSERVE_MODELS: cacheDir, HF_ENDPOINT: hub.hubUrl, HF_TOKEN: "", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    c.stdout.on("data", (d) => (stdout += d));
    c.stderr.on("data", (d) => (stderr += d));
    c.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

describe.runIf(existsSync(cli))("llmserve pull / models / -m hf:", () => {
  beforeAll(async () => {
    gguf = readFileSync(
      await synthModel("hub-cli", { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocabSize: 400 }),
    );
    hub.repos.set("org/tiny-GGUF", { files: { "tiny.Q8_0.gguf": { data: gguf }, "tiny.Q4_0.gguf": { data: gguf } } });
    await hub.start();
    cacheDir = mkdtempSync(join(tmpRoot, `hub-cli-${process.pid}-`));
  });
  afterAll(() => hub.close());

  it("pull downloads (plain progress lines when not a terminal), models lists with sizes, -m uses the cache offline, models rm deletes", async () => {
    const pull = await run(["pull", "hf:org/tiny-GGUF:Q8_0"]);
    expect(pull.code, pull.stderr).toBe(0);
    const path = pull.stdout.trim();
    expect(path).toBe(join(cacheDir, "hf", "org", "tiny-GGUF", "main", "tiny.Q8_0.gguf"));
    expect(readFileSync(path).equals(gguf)).toBe(true);
    expect(pull.stderr).toMatch(/^download tiny\.Q8_0\.gguf: done 100% /m);
    const quiet = await run(["pull", "-q", "hf:org/tiny-GGUF/tiny.Q4_0.gguf"]);
    expect(quiet.code, quiet.stderr).toBe(0);
    expect(quiet.stderr).toBe("");

    const list = await run(["models"]);
    expect(list.code, list.stderr).toBe(0);
    const kib = `${(gguf.length / 1024).toFixed(1)} KiB`;
    expect(list.stdout).toMatch(new RegExp(`^hf:org/tiny-GGUF/tiny\\.Q8_0\\.gguf +${kib}$`, "m"));
    expect(list.stdout).toMatch(/^hf:org\/tiny-GGUF\/tiny\.Q4_0\.gguf /m);
    const json = JSON.parse((await run(["models", "--json"])).stdout);
    expect(json).toEqual([
      expect.objectContaining({ name: "hf:org/tiny-GGUF/tiny.Q4_0.gguf", size: gguf.length }),
      expect.objectContaining({ name: "hf:org/tiny-GGUF/tiny.Q8_0.gguf", size: gguf.length, path }),
    ]);

    hub.requests.length = 0;
    const gen = await run(
      [
        "generate",
        "-m",
        "hf:org/tiny-GGUF:Q8_0",
        "--tokens",
        "[1,300,301]",
        "--max-tokens",
        "4",
        "--temperature",
        "0",
        "--json",
      ],
      { LLMSERVE_OFFLINE: "1" },
    );
    expect(gen.code, gen.stderr).toBe(0);
    expect(JSON.parse(gen.stdout).tokens).toHaveLength(4);
    const info = await run(["info", "-m", "hf:org/tiny-GGUF/tiny.Q8_0.gguf", "--json"], { HF_HUB_OFFLINE: "1" });
    expect(JSON.parse(info.stdout).file).toBe(path);
    expect(hub.requests).toEqual([]);

    const rm = await run(["models", "rm", "hf:org/tiny-GGUF/tiny.Q8_0.gguf"]);
    expect(rm.code, rm.stderr).toBe(0);
    expect(rm.stdout).toBe("removed hf:org/tiny-GGUF/tiny.Q8_0.gguf\n");
    expect(existsSync(path)).toBe(false);
    const again = await run(["models", "rm", "hf:org/tiny-GGUF/tiny.Q8_0.gguf"]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("ERR_MODEL_NOT_FOUND");
    expect(again.stderr).toContain("hf:org/tiny-GGUF/tiny.Q4_0.gguf"); // what is cached
    expect((await run(["models", "rm", "hf:org/tiny-GGUF"])).stdout).toBe("removed hf:org/tiny-GGUF/tiny.Q4_0.gguf\n");
    expect((await run(["models"])).stdout).toMatch(/^No models in /);
  });

  it("offline with nothing cached: a clear error and no request", async () => {
    hub.requests.length = 0;
    const r = await run(["pull", "hf:org/tiny-GGUF:Q8_0"], { LLMSERVE_OFFLINE: "1" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("ERR_OFFLINE");
    expect(hub.requests).toEqual([]);
  });
});
