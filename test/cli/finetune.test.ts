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

  it("bad input: non-zero exit with the error code", () => {
    const r = run(["finetune", "-m", base, "--data", data, "-o", out, "--optimizer", "sgd"]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/ERR_INVALID_ARGUMENT/);
    expect(r.stderr).toMatch(/optimizer/);
  });
});
