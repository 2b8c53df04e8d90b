/**
 * `llmserve compress` (dist/cli.js): 2:4 writes the sparse format and says on stderr that llama.cpp
 * cannot load the file (--format dense: that it loads), --json prints every pruned tensor, bad
 * arguments exit 1 with a typed error, no stack trace and no file. --lowrank prints each matrix's
 * rank and size, and says llama.cpp cannot load the file.
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

describe.runIf(existsSync(cli))("llmserve compress", () => {
  let model: string;
  const out = (n: string) => join(tmpRoot, `compress-cli-${n}-${process.pid}.gguf`);
  beforeAll(async () => {
    model = await synthModel("compress-cli-f16", {
      dim: 64,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      ffn: 128,
      vocabSize: 320,
      type: "f16",
    });
  });

  it("2:4: the sparse format, and a clear note that llama.cpp cannot load it", () => {
    const r = run(["--quiet", "compress", model, out("s24"), "--prune", "2:4", "-t", "1"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^wrote .*: pruned 14 tensors \(2:4, magnitude\), 50\.0% zeros/);
    expect(r.stderr).toMatch(/llama\.cpp CANNOT load this file/);
    const d = run(["--quiet", "compress", model, out("d24"), "--prune", "2:4", "--format", "dense", "--json"]);
    expect(d.code, d.stderr).toBe(0);
    const o = JSON.parse(d.stdout);
    expect(o.format).toBe("dense");
    expect(o.tensors).toHaveLength(14);
    expect(d.stderr).toMatch(/llama\.cpp and llmserve load the file alike/);
    // --values q8_0: every pruned matrix holds int8 kept values with scales.
    const q = run(["--quiet", "compress", model, out("q24"), "--prune", "2:4", "--values", "q8_0", "--json"]);
    expect(q.code, q.stderr).toBe(0);
    const qo = JSON.parse(q.stdout);
    expect(qo.tensors.map((t: { type: string }) => t.type)).toEqual(Array(14).fill("q8_0"));
  });

  it("bad arguments: exit 1 with the code, the message, no stack and no file", () => {
    for (const [args, msg] of [
      [["--prune", "1.5"], /--prune takes a ratio in \(0, 1\)/],
      [["--prune", "0.5", "--method", "wanda"], /calibration text/],
      [["--prune", "0.5", "--tensors", "ffn_*,nope"], /'nope' matches no layer matrix/],
      [[], /either --prune or --lowrank/],
      [["--prune", "0.5", "--lowrank", "rank=4"], /either --prune or --lowrank/],
      [["--lowrank", "rank=x"], /--lowrank takes rank=R/],
      [["--lowrank", "energy=1.2"], /--lowrank takes rank=R/],
      [["--lowrank", "rank=4", "--sparse", "1.5"], /--sparse takes a fraction/],
      [["--prune", "0.5", "--sparse", "0.1"], /--sparse .* goes with --lowrank/],
      [["--prune", "0.5", "--values", "q8_0"], /values \(f16 or q8_0\)/],
      [["--lowrank", "rank=65"], /rank 65 is above min/],
    ] as const) {
      const r = run(["compress", model, out("bad"), ...args]);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toContain("(ERR_INVALID_ARGUMENT;");
      expect(r.stderr).toMatch(msg);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(existsSync(out("bad"))).toBe(false);
    }
  });

  it("--lowrank: per-matrix ranks and sizes, and a clear note that llama.cpp cannot load it", () => {
    const r = run(["--quiet", "compress", model, out("lr"), "--lowrank", "rank=8", "--sparse", "2%", "-t", "1"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/blk\.1\.ffn_down\.weight\s+rank\s+8 \+ \d+ sparse, rel\. error 0\.\d+/);
    expect(r.stdout).toMatch(/wrote .*: factored 14 of 14 matrices \(rank 8\.\.8\)/);
    expect(r.stderr).toMatch(/llama\.cpp CANNOT load this file/);
  });
});
