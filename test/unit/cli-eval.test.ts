/**
 * `llmserve eval` (dist/cli.js): --json prints one object with the perplexity and, with
 * --reference, the KL statistics; progress goes to stderr; bad input exits 1 with a typed error
 * and no stack trace.
 */
import { spawnSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { repoRoot, synthModel, tmpRoot } from "../helpers.js";

const cli = join(repoRoot, "dist", "cli.js");

function run(args: string[]) {
  const r = spawnSync(process.execPath, [cli, "eval", ...args], { encoding: "utf8", timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A failed run: exit 1, the code and message on stderr, no stack trace, nothing on stdout. */
function expectTypedFailure(r: ReturnType<typeof run>, code: string, message: RegExp) {
  expect(r.code, r.stderr).toBe(1);
  expect(r.stderr).toContain(`(${code};`);
  expect(r.stderr).toMatch(message);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  expect(r.stdout).toBe("");
}

describe.runIf(existsSync(cli))("llmserve eval", () => {
  let model: string;
  let q8: string;
  const text = join(tmpRoot, `eval-cli-${process.pid}.txt`);
  const short = join(tmpRoot, `eval-cli-short-${process.pid}.txt`);
  beforeAll(async () => {
    const shape = { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocabSize: 400, context: 128, seed: 4 };
    model = await synthModel("eval-cli-f32", { ...shape, type: "f32" });
    q8 = await synthModel("eval-cli-q8", { ...shape, type: "q8_0" });
    writeFileSync(text, "the quick brown fox jumps over the lazy dog\nand then it rests in the shade\n".repeat(30));
    writeFileSync(short, "too short\n");
  });

  it("--json: one object with the perplexity; progress lines on stderr", () => {
    const r = run(["-m", model, "--text", text, "--ctx", "32", "--json", "-t", "1"]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines.length).toBe(1);
    const out = JSON.parse(lines[0]);
    expect(out.model).toBe(model);
    expect(out.text).toBe(text);
    expect(out.ctx).toBe(32);
    expect(out.chunks).toBe(Math.floor(out.textTokens / 32));
    expect(out.scoredTokens).toBe(out.chunks * 15);
    expect(out.ppl).toBeGreaterThan(1);
    expect(out.pplError).toBeGreaterThan(0);
    expect(out.nll).toBeCloseTo(Math.log(out.ppl), 10);
    expect(out.reference).toBeUndefined();
    expect(r.stderr).toMatch(new RegExp(`\\[${out.chunks}/${out.chunks}\\] PPL `));
  });

  it("--reference: KL, top-1 agreement, Δppl and the ratio; --chunks caps; an odd --ctx scores its second half", () => {
    const r = run(["-m", q8, "--text", text, "--ctx", "33", "--chunks", "3", "--reference", model, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.referenceModel).toBe(model);
    expect(out.chunks).toBe(3);
    expect(out.scoredTokens).toBe(3 * 16);
    const c = out.reference;
    expect(c.kl.mean).toBeGreaterThan(0);
    for (const k of ["meanError", "median", "p99", "p99_9", "max", "min"]) expect(typeof c.kl[k]).toBe("number");
    expect(c.top1).toBeGreaterThan(0);
    expect(c.top1).toBeLessThanOrEqual(1);
    expect(c.deltaPpl).toBeCloseTo(out.ppl - c.ppl, 8);
    expect(c.pplRatio).toBeCloseTo(out.ppl / c.ppl, 8);
    expect(typeof c.deltaP.rms).toBe("number");
  });

  it("prints a readable summary without --json", () => {
    const r = run(["-m", q8, "--text", text, "--ctx", "32", "--reference", model]);
    expect(r.code, r.stderr).toBe(0);
    for (const label of ["PPL ", "PPL(ref)", "Δppl", "PPL ratio", "KL divergence", "top-1 agree", "RMS Δp"])
      expect(r.stdout).toContain(label);
  });

  it("bad input: typed errors, exit code 1, no stack trace", () => {
    expectTypedFailure(
      run(["-m", model, "--text", join(tmpRoot, "no-such-corpus.txt")]),
      "ERR_FILE_NOT_FOUND",
      /text file .* does not exist/,
    );
    expectTypedFailure(
      run(["-m", model, "--text", short, "--ctx", "32"]),
      "ERR_INVALID_ARGUMENT",
      /The text has \d+ tokens, but a perplexity with ctx 32 needs at least 64/,
    );
    expectTypedFailure(
      run(["-m", model, "--text", text, "--ctx", "256"]),
      "ERR_CONTEXT_OVERFLOW",
      /--ctx 256 is larger than the context .* was trained with \(128 tokens\)/,
    );
    expectTypedFailure(
      run(["-m", model, "--text", text, "--ctx", "2"]),
      "ERR_INVALID_ARGUMENT",
      /Expected an integer in \[3, 16777216\] for --ctx but received 2/,
    );
    expectTypedFailure(
      run(["-m", model, "--text", text, "--ctx", "abc"]),
      "ERR_INVALID_ARGUMENT",
      /Expected an integer for --ctx/,
    );
    expectTypedFailure(
      run(["-m", join(tmpRoot, "no-such-model.gguf"), "--text", text]),
      "ERR_FILE_NOT_FOUND",
      /no-such-model/,
    );
    const vocab = run(["-m", model, "--text", text, "--ctx", "32", "--reference", join(tmpRoot, "missing-ref.gguf")]);
    expectTypedFailure(vocab, "ERR_FILE_NOT_FOUND", /missing-ref/);
  });
});
