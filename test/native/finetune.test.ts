/**
 * finetune(): LoRA training through the library API on the trained fixture (aidreams260K). The
 * gradients themselves are native/tests/test_train_grad.cpp's job; here: training lowers held-out
 * loss, the run is deterministic (same seed ⇒ same adapter bytes, whatever the thread count), the
 * adapter loads with Model.loadAdapter and changes what the model says, JSONL text and chat data
 * (loss on assistant turns only), cancellation, and every refusal with its typed error.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { ChatTemplate, Tokenizer, compress, synth } from "../../lib/index.js";
import { type FinetuneEvent, type FinetuneOptions, finetune, loadTrainData } from "../../lib/train/index.js";
import { errorText, expectAdapterMovesGreedy, fixture, haveFixtures, tmpRoot } from "../helpers.js";
import { SENTENCES, writeFinetuneText } from "./finetuneText.js";

const BASE = fixture("models", "aidreams260K.gguf");
const tmp = (name: string) => join(tmpRoot, `finetune-${process.pid}-${name}`);

async function run(opts: Partial<FinetuneOptions> & { output: string }): Promise<FinetuneEvent[]> {
  const events: FinetuneEvent[] = [];
  for await (const e of finetune({ model: BASE, data: tmp("train.txt"), ctx: 64, rank: 4, threads: 2, ...opts }))
    events.push(e);
  return events;
}

async function drain(opts: FinetuneOptions): Promise<void> {
  for await (const _ of finetune(opts));
}

describe.skipIf(!haveFixtures)("finetune on aidreams260K", () => {
  beforeAll(() => {
    writeFinetuneText(tmp);
  });

  it("lowers held-out loss; one event per step with the warm-up + cosine schedule; same seed ⇒ same bytes", async () => {
    const a = await run({ output: tmp("a.gguf"), evalData: tmp("eval.txt"), steps: 20, lr: 3e-3 });
    const steps = a.filter((e) => e.type === "step");
    expect(steps.map((e) => e.step)).toEqual([...Array(20).keys()].map((k) => k + 1));
    expect(steps[0].lr).toBeCloseTo(1.5e-3, 12); // warm-up: 2 steps (a tenth) to 3e-3
    expect(steps[1].lr).toBeCloseTo(3e-3, 12);
    expect(steps[19].lr).toBeLessThan(1e-4);
    expect(steps.every((e) => e.tokensPerSecond > 0 && e.loss > 0)).toBe(true);
    const done = a[a.length - 1];
    expect(done.type).toBe("done");
    if (done.type !== "done") return;
    expect(done.evalLossAfter).toBeLessThan(0.5 * done.evalLossBefore);
    // The same seed on another thread count: the same bytes; another seed: other bytes.
    await run({ output: tmp("a1.gguf"), evalData: tmp("eval.txt"), steps: 20, lr: 3e-3, threads: 1 });
    expect(readFileSync(tmp("a1.gguf")).equals(readFileSync(tmp("a.gguf")))).toBe(true);
    await run({ output: tmp("b.gguf"), steps: 20, lr: 3e-3, seed: 2 });
    expect(readFileSync(tmp("b.gguf")).equals(readFileSync(tmp("a.gguf")))).toBe(false);

    // The adapter serves: loadAdapter accepts it and the greedy continuation moves to the data.
    await expectAdapterMovesGreedy(BASE, tmp("a.gguf"), "The blue robot", /sings|quiet|moon/);
  }, 60_000);

  it("LARS trains too (per-matrix trust ratio)", async () => {
    const ev = await run({
      output: tmp("lars.gguf"),
      evalData: tmp("eval.txt"),
      steps: 20,
      optimizer: "lars",
      lr: 0.05,
    });
    const done = ev[ev.length - 1];
    expect(done.type === "done" && done.evalLossAfter < 0.8 * done.evalLossBefore).toBe(true);
  }, 60_000);

  it("JSONL: text records, and chat records with loss on assistant turns only", async () => {
    const tok = await Tokenizer.fromGguf(BASE);
    const chat = () => ChatTemplate.fromModel({ path: BASE, tokenizer: tok }, { template: "chatml", warn: () => {} });
    writeFileSync(
      tmp("d.jsonl"),
      `${JSON.stringify({ text: SENTENCES[0] })}\n\n${JSON.stringify({
        messages: [
          { role: "user", content: "Who sings?" },
          { role: "assistant", content: "The blue robot." },
          { role: "user", content: "To whom?" },
          { role: "assistant", content: "To the quiet moon." },
        ],
      })}\n`,
    );
    const d = await loadTrainData(tmp("d.jsonl"), 256, tok, chat);
    expect(d.sequences).toHaveLength(2);
    const [text, conv] = d.sequences;
    expect(text.labels.slice(0, -1)).toEqual(text.tokens.slice(1)); // every next token is a label
    // The labelled tokens of the conversation are exactly the assistant turns (and their end markers).
    const learned = conv.labels.filter((l) => l >= 0);
    const said = tok.decode(learned);
    expect(said).toContain("The blue robot.");
    expect(said).toContain("To the quiet moon.");
    expect(said).not.toContain("Who sings");
    expect(said).not.toContain("user");
  });

  it("cancels through an AbortSignal and by leaving the loop; no adapter is left", async () => {
    const ac = new AbortController();
    const it1 = finetune({
      model: BASE,
      data: tmp("train.txt"),
      output: tmp("c.gguf"),
      ctx: 64,
      steps: 20,
      signal: ac.signal,
    });
    const first = await it1.next();
    expect(first.done).toBe(false);
    ac.abort();
    expect(
      await errorText(
        (async () => {
          for await (const _ of it1);
        })(),
      ),
    ).toMatch(/^ERR_CANCELLED/);
    for await (const e of finetune({ model: BASE, data: tmp("train.txt"), output: tmp("c.gguf"), ctx: 64, steps: 20 }))
      if (e.type === "step") break;
    await new Promise((r) => setTimeout(r, 300));
    expect(existsSync(tmp("c.gguf"))).toBe(false);
  }, 60_000);

  it("recomputeMb: 0 recomputes every sequence and writes the default run's bytes; bad values refused", async () => {
    const steps = (ev: FinetuneEvent[]) => ev.flatMap((e) => (e.type === "step" ? [e] : []));
    const a = steps(await run({ output: tmp("rc-default.gguf"), steps: 3, lr: 3e-3 }));
    expect(a.map((e) => e.recomputed)).toEqual([0, 0, 0]); // ctx 64 on a dim-64 model: far below 1 GiB
    const b = steps(await run({ output: tmp("rc-0.gguf"), steps: 3, lr: 3e-3, recomputeMb: 0 }));
    expect(b.map((e) => e.recomputed)).toEqual([1, 1, 1]);
    expect(b.map((e) => e.loss)).toEqual(a.map((e) => e.loss));
    expect(readFileSync(tmp("rc-0.gguf")).equals(readFileSync(tmp("rc-default.gguf")))).toBe(true);
    const o = { model: BASE, output: tmp("x.gguf"), data: tmp("train.txt"), ctx: 64 };
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 25, "64"])
      expect(await errorText(drain({ ...o, recomputeMb: bad as number }))).toMatch(
        /^ERR_INVALID_ARGUMENT: .*recomputeMb/,
      );
    expect(existsSync(tmp("x.gguf"))).toBe(false);
  }, 60_000);

  it("a 2:4 sparse-format model trains like its dense twin (the kept values expanded, never read as dense rows)", async () => {
    await compress(BASE, tmp("s24.gguf"), { prune: "2:4", threads: 2 });
    await compress(BASE, tmp("s24-dense.gguf"), { prune: "2:4", format: "dense", threads: 2 });
    const losses = async (model: string) =>
      (await run({ model, output: tmp("s24-out.gguf"), steps: 4, lr: 3e-3 })).flatMap((e) =>
        e.type === "step" ? [e.loss] : [],
      );
    const sparse = await losses(tmp("s24.gguf"));
    const dense = await losses(tmp("s24-dense.gguf"));
    // The sparse format keeps f16 values (the dense twin the fixture's f32): losses agree to f16
    // rounding (measured within 3e-4); rows read as dense would start near 7.5 instead of 2.5.
    expect(sparse).toHaveLength(4);
    for (const [i, l] of sparse.entries()) expect(Math.abs(l - dense[i])).toBeLessThan(2e-3);
  }, 60_000);

  it("refuses bad data and options with typed errors", async () => {
    writeFileSync(tmp("bad.jsonl"), '{"text": "ok"}\n{not json}\n');
    const o = { model: BASE, output: tmp("x.gguf"), ctx: 64 };
    expect(await errorText(drain({ ...o, data: tmp("bad.jsonl") }))).toMatch(
      /^ERR_INVALID_ARGUMENT: .*bad\.jsonl:2: not valid JSON/,
    );
    writeFileSync(tmp("bad2.jsonl"), '{"prompt": "x"}\n');
    expect(await errorText(drain({ ...o, data: tmp("bad2.jsonl") }))).toMatch(/bad2\.jsonl:1: expected \{"text"/);
    writeFileSync(tmp("noasst.jsonl"), `${JSON.stringify({ messages: [{ role: "user", content: "hi" }] })}\n`);
    expect(await errorText(drain({ ...o, data: tmp("noasst.jsonl") }))).toMatch(/no assistant message/);
    expect(await errorText(drain({ ...o, data: tmp("missing.txt") }))).toMatch(/^ERR_FILE_NOT_FOUND/);
    expect(await errorText(drain({ ...o, data: tmp("train.txt"), rank: 0 }))).toMatch(/^ERR_INVALID_ARGUMENT: .*rank/);
    expect(await errorText(drain({ ...o, data: tmp("train.txt"), lr: 0 }))).toMatch(/^ERR_INVALID_ARGUMENT: .*lr/);
    expect(
      await errorText(drain({ ...o, data: tmp("train.txt"), targets: ["q", "bogus"] as FinetuneOptions["targets"] })),
    ).toMatch(/^ERR_INVALID_ARGUMENT: .*targets/);
    expect(await errorText(drain({ ...o, data: tmp("train.txt"), optimizer: "sgd" as "lars" }))).toMatch(/optimizer/);
    expect(await errorText(drain({ ...o, data: tmp("train.txt"), bogus: 1 } as FinetuneOptions))).toMatch(/bogus/);
    // An architecture that runs for inference but has no training backward: refused, not trained wrong.
    await synth(tmp("gemma2.gguf"), {
      arch: "gemma2",
      dim: 64,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      ffn: 128,
      vocabSize: 300,
    });
    expect(await errorText(drain({ ...o, model: tmp("gemma2.gguf"), data: tmp("train.txt") }))).toMatch(
      /^ERR_UNSUPPORTED_ARCH: .*gemma2/,
    );
    expect(existsSync(tmp("x.gguf"))).toBe(false);
  }, 60_000);
});
