/**
 * `llmserve quantize` (dist/cli.js): writes the file with a summary, --json prints every tensor's
 * type, progress goes to stderr as plain lines (not a terminal) and disappears with --quiet; bad
 * input exits 1 with a typed error and no stack trace.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { repoRoot, synthModel, tmpRoot } from "../helpers.js";

const cli = join(repoRoot, "dist", "cli.js");

function run(args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe.runIf(existsSync(cli))("llmserve quantize", () => {
  let model: string;
  const out = (n: string) => join(tmpRoot, `quantize-cli-${n}-${process.pid}.gguf`);
  beforeAll(async () => {
    model = await synthModel("quantize-cli-f32", {
      dim: 256,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      ffn: 512,
      vocabSize: 400,
      type: "f32",
    });
  });

  it("writes the mix and prints a summary; progress lines on stderr", () => {
    const r = run(["quantize", model, out("q4km"), "--type", "q4_k_m", "-t", "1"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^wrote .*: q4_k_m \(file type 15\), .* -> .* in .* s; tensors: /);
    expect(r.stdout).toMatch(/q6_k \d+/);
    expect(r.stderr).toMatch(/^quantize quantize-cli-q4km-\d+\.gguf: done 100%/m);
    expect(existsSync(out("q4km"))).toBe(true);
  });

  it("--json: one object with every tensor; --quiet: no progress", () => {
    const r = run(["--quiet", "quantize", model, out("q8"), "--type", "Q8_0", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout);
    expect(o.type).toBe("q8_0");
    expect(o.fileType).toBe(7);
    expect(o.tensors.find((t: { name: string }) => t.name === "blk.1.ffn_down.weight").to).toBe("q8_0");
    expect(r.stderr).toBe("");
  });

  it("--pure, --output-tensor-type, --token-embedding-type, --tensor-type (repeatable) reach quantize", () => {
    const r = run([
      ...["--quiet", "quantize", model, out("overrides"), "--type", "q4_k_m", "--json", "--output-tensor-type", "q8_0"],
      ...["--token-embedding-type", "f16", "--tensor-type", "attn_v=q5_k", "--tensor-type", "ffn_down=q4_0"],
    ]);
    expect(r.code, r.stderr).toBe(0);
    const to = (n: string) => JSON.parse(r.stdout).tensors.find((t: { name: string }) => t.name === n).to;
    expect(["output.weight", "token_embd.weight", "blk.0.attn_v.weight", "blk.0.ffn_down.weight"].map(to)).toEqual([
      "q8_0",
      "f16",
      "q5_k",
      "q4_0",
    ]);
    const p = run(["--quiet", "quantize", model, out("pure"), "--type", "q4_k_m", "--json", "--pure"]);
    expect(p.code, p.stderr).toBe(0);
    expect(JSON.parse(p.stdout).tensors.find((t: { name: string }) => t.name === "output.weight").to).toBe("q4_k");
  });

  it("unknown type and its own input: exit 1 with the code, the message and no stack", () => {
    for (const [args, code, msg] of [
      [["quantize", model, out("x"), "--type", "q9_0"], "ERR_INVALID_ARGUMENT", /Expected one of "q8_0", .*"q4_k_m"/],
      [["quantize", model, model, "--type", "q8_0"], "ERR_INVALID_ARGUMENT", /refusing to overwrite the input/],
      [
        ["quantize", model, out("x"), "--type", "q4_k_m", "--imatrix", join(tmpRoot, "no-such-imatrix.dat")],
        "ERR_FILE_NOT_FOUND",
        /importance matrix file not found/,
      ],
      [
        ["quantize", model, out("x"), "--type", "q4_k_m", "--tensor-type", "attn_v=q9_k"],
        "ERR_INVALID_ARGUMENT",
        /unknown tensor type 'q9_k'/,
      ],
    ] as const) {
      const r = run([...args]);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toContain(`(${code};`);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(r.stdout).toBe("");
    }
  });
});
