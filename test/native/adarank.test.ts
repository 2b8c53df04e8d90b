/**
 * finetune({adaptiveRank, targetRank}) on the trained fixture (aidreams260K): held-out loss falls,
 * the kept rank follows the schedule (whole during the warm-up, never rising, exactly
 * targetRank × matrices at the end), ranks differ per matrix and the file's tensors have them, the
 * same seed gives the same bytes on another thread count, loadAdapter serves the adapter, and every
 * bad combination of the options is refused with a typed error. The math itself (gradients,
 * pruning, export scale) is native/tests/test_train_adarank.cpp's job.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { readGguf } from "../../lib/index.js";
import { type FinetuneEvent, type FinetuneOptions, finetune } from "../../lib/train/index.js";
import { errorText, expectAdapterMovesGreedy, fixture, haveFixtures, tmpRoot } from "../helpers.js";
import { writeFinetuneText } from "./finetuneText.js";

const BASE = fixture("models", "aidreams260K.gguf");
const tmp = (name: string) => join(tmpRoot, `adarank-${process.pid}-${name}`);

async function run(opts: Partial<FinetuneOptions> & { output: string }): Promise<FinetuneEvent[]> {
  const events: FinetuneEvent[] = [];
  const o = { model: BASE, data: tmp("train.txt"), ctx: 64, rank: 4, threads: 2, ...opts };
  for await (const e of finetune(o)) events.push(e);
  return events;
}

describe.skipIf(!haveFixtures)("finetune with adaptive rank on aidreams260K", () => {
  beforeAll(() => {
    writeFinetuneText(tmp);
  });

  it("loss falls, ranks reach the target exactly, differ per matrix, same seed ⇒ same bytes, serves", async () => {
    const opts = { steps: 20, lr: 1e-2, adaptiveRank: true, targetRank: 2 } as const;
    const a = await run({ output: tmp("a.gguf"), evalData: tmp("eval.txt"), ...opts });
    const steps = a.filter((e) => e.type === "step");
    const done = a[a.length - 1];
    expect(done.type).toBe("done");
    if (done.type !== "done" || !done.ranks) throw new Error("no ranks in the done event");
    const names = Object.keys(done.ranks);
    const mats = names.length;
    expect(mats).toBe(4 * 7); // 4 layers × 7 projections
    // Warm-up (2 steps, a tenth): nothing pruned; then never rising; the target at the end.
    expect(steps[0].keptRank).toBe(4 * mats);
    expect(steps[1].keptRank).toBe(4 * mats);
    for (let i = 1; i < steps.length; i++) expect(steps[i].keptRank).toBeLessThanOrEqual(steps[i - 1].keptRank ?? 0);
    expect(steps[steps.length - 1].keptRank).toBe(2 * mats);
    const ranks = Object.values(done.ranks);
    expect(ranks.reduce((x, y) => x + y, 0)).toBe(2 * mats);
    expect(new Set(ranks).size).toBeGreaterThan(1);
    expect(steps.every((e) => e.orthPenalty !== undefined && e.orthPenalty >= 0)).toBe(true);
    expect(done.evalLossAfter).toBeLessThan(0.6 * done.evalLossBefore);
    // The file: lora_a ne [n_in, r_i], lora_b ne [r_i, n_out], nothing for a matrix pruned to 0.
    const g = await readGguf(tmp("a.gguf"));
    for (const name of names) {
      const ta = g.tensors.find((t) => t.name === `${name}.lora_a`);
      const tb = g.tensors.find((t) => t.name === `${name}.lora_b`);
      if (done.ranks[name] === 0) {
        expect(ta ?? tb).toBeUndefined();
        continue;
      }
      expect(ta?.shape[1]).toBe(done.ranks[name]);
      expect(tb?.shape[0]).toBe(done.ranks[name]);
    }
    // Same seed on one thread: the same bytes.
    await run({ output: tmp("a1.gguf"), threads: 1, ...opts });
    expect(readFileSync(tmp("a1.gguf")).equals(readFileSync(tmp("a.gguf")))).toBe(true);

    await expectAdapterMovesGreedy(BASE, tmp("a.gguf"), "The blue robot", /sings|quiet|moon/);
  }, 60_000);

  it("refuses bad combinations with typed errors", async () => {
    const drain = async (o: Partial<FinetuneOptions>) => {
      for await (const _ of finetune({ model: BASE, data: tmp("train.txt"), output: tmp("x.gguf"), ...o }));
    };
    expect(await errorText(drain({ adaptiveRank: true }))).toMatch(
      /^ERR_INVALID_ARGUMENT: adaptiveRank needs targetRank/,
    );
    expect(await errorText(drain({ targetRank: 2 }))).toMatch(/^ERR_INVALID_ARGUMENT: targetRank is only used with/);
    expect(await errorText(drain({ adaptiveRank: false, targetRank: 2 }))).toMatch(/only used with adaptiveRank/);
    expect(await errorText(drain({ adaptiveRank: true, targetRank: 5, rank: 4 }))).toMatch(
      /^ERR_INVALID_ARGUMENT: targetRank \(5\) must be at most rank \(4\)/,
    );
    expect(await errorText(drain({ adaptiveRank: true, targetRank: 0 }))).toMatch(
      /^ERR_INVALID_ARGUMENT: .*targetRank/,
    );
    expect(await errorText(drain({ adaptiveRank: true, targetRank: 1.5 }))).toMatch(
      /^ERR_INVALID_ARGUMENT: .*targetRank/,
    );
    expect(await errorText(drain({ adaptiveRank: "yes" as unknown as boolean, targetRank: 2 }))).toMatch(
      /^ERR_INVALID_ARGUMENT: .*adaptiveRank/,
    );
  });
});
