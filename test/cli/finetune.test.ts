/**
 * `llmserve finetune` end to end through the built CLI: --json prints one object per step and a
 * last "done" object with the held-out loss, the adapter file appears; bad input exits non-zero
 * with the typed error code.
 */
import { spawnSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { fixture, haveFixtures, repoRoot, tmpRoot } from "../helpers.js";

const cli = join(repoRoot, "dist", "cli.js");
const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", timeout: 120_000 });

describe.runIf(existsSync(cli) && haveFixtures)("llmserve finetune", () => {
  const base = fixture("models", "aidreams260K.gguf");
  const data = join(tmpRoot, `cli-finetune-${process.pid}.txt`);
  const out = join(tmpRoot, `cli-finetune-${process.pid}.gguf`);

  it("--json: one line per step, then done with the held-out loss; writes the adapter", () => {
    writeFileSync(data, "The blue robot sings to the quiet moon. ".repeat(40));
    const r = run(
      ["finetune", "-m", base, "--data", data, "--eval-data", data, "-o", out, "--ctx", "32"].concat([
        "--steps",
        "4",
        "--rank",
        "2",
        "--lr",
        "0.003",
        "-t",
        "1",
        "--json",
      ]),
    );
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.type)).toEqual(["step", "step", "step", "step", "done"]);
    expect(lines[3]).toMatchObject({ step: 4, steps: 4 });
    expect(lines[4].evalLossAfter).toBeLessThan(lines[4].evalLossBefore);
    expect(existsSync(out)).toBe(true);
  }, 120_000);

  it("--teacher --distill --temperature: steps carry the CE and KL parts, done the held-out KL", () => {
    writeFileSync(data, "The blue robot sings to the quiet moon. ".repeat(40));
    const args = ["finetune", "-m", base, "--data", data, "--eval-data", data, "-o", out, "--ctx", "32"];
    const r = run(
      args
        .concat(["--steps", "2", "--rank", "2", "-t", "1", "--json", "--teacher", base, "--distill", "0.5"])
        .concat(["--temperature", "2"]),
    );
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.type)).toEqual(["step", "step", "done"]);
    // loss = (1 - a)·CE + a·T²·KL with a = 0.5, T = 2.
    expect(lines[0].loss).toBeCloseTo(0.5 * lines[0].ce + 0.5 * 4 * lines[0].kl, 6);
    expect(typeof lines[2].evalKlBefore).toBe("number");
    expect(typeof lines[2].evalKlAfter).toBe("number");
    const bad = run(["finetune", "-m", base, "--data", data, "-o", out, "--distill", "0.5"]);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/ERR_INVALID_ARGUMENT/);
    expect(bad.stderr).toMatch(/need a teacher/);
  }, 120_000);

  it("--adaptive-rank --target-rank: steps carry keptRank, done the per-matrix ranks; bad combinations refused", () => {
    writeFileSync(data, "The blue robot sings to the quiet moon. ".repeat(40));
    const args = ["finetune", "-m", base, "--data", data, "-o", out, "--ctx", "32", "-t", "1"];
    const r = run(args.concat(["--steps", "5", "--rank", "2", "--json", "--adaptive-rank", "--target-rank", "1"]));
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    const done = lines[lines.length - 1];
    expect(done.type).toBe("done");
    const ranks = Object.values(done.ranks as Record<string, number>);
    expect(ranks).toHaveLength(28);
    expect(ranks.reduce((a, b) => a + b, 0)).toBe(28);
    expect(lines[4].keptRank).toBe(28);
    const plain = run(args.concat(["--steps", "1", "--rank", "2", "--adaptive-rank", "--target-rank", "1"]));
    expect(plain.status, plain.stderr).toBe(0);
    expect(plain.stdout).toMatch(/ranks \(28 in all\): blk\.0\.attn_q \d/);
    const bad = run(args.concat(["--adaptive-rank"]));
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/ERR_INVALID_ARGUMENT/);
    expect(bad.stderr).toMatch(/needs targetRank \(--target-rank R\)/);
    const big = run(args.concat(["--rank", "2", "--adaptive-rank", "--target-rank", "3"]));
    expect(big.status).not.toBe(0);
    expect(big.stderr).toMatch(/ERR_INVALID_ARGUMENT/);
    expect(big.stderr).toMatch(/at most rank/);
  }, 120_000);

  it("--recompute-mb 0: every step reports its sequence recomputed; a negative value is refused", () => {
    writeFileSync(data, "The blue robot sings to the quiet moon. ".repeat(40));
    const args = ["finetune", "-m", base, "--data", data, "-o", out, "--ctx", "32", "--rank", "2", "-t", "1"];
    const r = run(args.concat(["--steps", "2", "--json", "--recompute-mb", "0"]));
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.type === "step").map((l) => l.recomputed)).toEqual([1, 1]);
    const bad = run(args.concat(["--recompute-mb", "-5"]));
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/ERR_INVALID_ARGUMENT/);
    expect(bad.stderr).toMatch(/recomputeMb/);
  }, 120_000);

  it("bad input: non-zero exit with the error code", () => {
    const r = run(["finetune", "-m", base, "--data", data, "-o", out, "--optimizer", "sgd"]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/ERR_INVALID_ARGUMENT/);
    expect(r.stderr).toMatch(/optimizer/);
  });
});
