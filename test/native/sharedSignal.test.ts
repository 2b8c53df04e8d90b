/**
 * One AbortSignal shared by many requests (generateBatch, a server request's n choices) holds one
 * "abort" listener, not one per request: no MaxListenersExceededWarning, and aborting still
 * cancels every request, iterated or not.
 */
import { getEventListeners } from "node:events";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { Model, type Chunk } from "../../lib/index.js";
import { synthModel } from "../helpers.js";

let model: Model;
const warnings: Error[] = [];
const onWarning = (w: Error) => warnings.push(w);

beforeAll(async () => {
  const path = await synthModel("shared-signal", { dim: 64, layers: 1, heads: 4, kvHeads: 2, ffn: 96, vocabSize: 320 });
  model = await Model.load(path, {
    threads: 2,
    contextSize: 512,
    kvCacheTokens: 65536,
    maxSequences: 64,
    maxQueue: 256,
  });
});
afterAll(async () => {
  await model?.dispose();
});
beforeEach(() => {
  warnings.length = 0;
  process.on("warning", onWarning);
});
afterEach(() => {
  process.off("warning", onWarning);
});

/** Lets queued process warnings (emitted on a later tick) arrive. */
const settle = () => new Promise((r) => setTimeout(r, 20));
const prompts = (n: number) => Array.from({ length: n }, (_, i) => ({ tokens: [1, 3 + (i % 300), 7] }));

async function collect(gen: AsyncGenerator<Chunk, void, undefined>, onFirst?: () => void): Promise<Chunk[]> {
  const out: Chunk[] = [];
  for await (const c of gen) {
    out.push(c);
    if (out.length === 1) onFirst?.();
  }
  return out;
}

describe("a signal shared by 50 prompts", () => {
  it("holds one listener, warns about nothing, and aborting cancels them all", async () => {
    const ac = new AbortController();
    const streams = model.generateBatch(prompts(50), {
      maxTokens: 100000,
      temperature: 0,
      stopAtEos: false,
      signal: ac.signal,
    });
    let started = 0;
    let allStarted!: () => void;
    const running = new Promise<void>((r) => (allStarted = r));
    const results = Promise.all(streams.map((s) => collect(s, () => ++started === 50 && allStarted())));
    await running; // every request has produced a token and is still generating
    expect(getEventListeners(ac.signal, "abort")).toHaveLength(1);
    ac.abort();
    const chunks = await results;
    for (const c of chunks) {
      expect(c.at(-1)?.finishReason).toBe("abort");
      expect(c.flatMap((x) => x.tokens).length).toBeLessThan(500); // stopped long before the context filled
    }
    expect(getEventListeners(ac.signal, "abort")).toHaveLength(0);
    await settle();
    expect(warnings.map((w) => w.name)).toEqual([]);
  });

  it("aborting cancels requests whose iterators were never started", async () => {
    const before = model.stats().aborted;
    const ac = new AbortController();
    const streams = model.generateBatch(prompts(20), {
      maxTokens: 100000,
      temperature: 0,
      stopAtEos: false,
      signal: ac.signal,
    });
    ac.abort();
    const t0 = Date.now();
    while (model.stats().aborted - before < 20 && Date.now() - t0 < 10000) await new Promise((r) => setTimeout(r, 10));
    expect(model.stats().aborted - before).toBe(20);
    const s = model.stats();
    expect(s.running + s.waiting).toBe(0);
    for (const st of streams) expect((await collect(st)).at(-1)?.finishReason).toBe("abort");
    await settle();
    expect(warnings).toEqual([]);
  });

  it("requests that end normally leave no listener on a long-lived signal", async () => {
    const ac = new AbortController();
    for (let round = 0; round < 3; round++) {
      const streams = model.generateBatch(prompts(30), {
        maxTokens: 4,
        temperature: 0,
        stopAtEos: false,
        signal: ac.signal,
      });
      const chunks = await Promise.all(streams.map((s) => collect(s)));
      for (const c of chunks) expect(c.at(-1)?.finishReason).toBe("length");
      expect(getEventListeners(ac.signal, "abort")).toHaveLength(0);
    }
    // Never-iterated requests let go of the signal once the engine finishes them.
    const idle = model.generateBatch(prompts(15), {
      maxTokens: 2,
      temperature: 0,
      stopAtEos: false,
      signal: ac.signal,
    });
    expect(getEventListeners(ac.signal, "abort")).toHaveLength(1);
    const t0 = Date.now();
    while (getEventListeners(ac.signal, "abort").length > 0 && Date.now() - t0 < 10000)
      await new Promise((r) => setTimeout(r, 10));
    expect(getEventListeners(ac.signal, "abort")).toHaveLength(0);
    for (const st of idle) expect((await collect(st)).at(-1)?.finishReason).toBe("length");
    await settle();
    expect(warnings).toEqual([]);
  });

  it("breaking out of one stream cancels only that one", async () => {
    const ac = new AbortController();
    const [a, b] = model.generateBatch(prompts(2), {
      maxTokens: 100000,
      temperature: 0,
      stopAtEos: false,
      signal: ac.signal,
    });
    for await (const _ of a) break;
    expect(getEventListeners(ac.signal, "abort")).toHaveLength(1); // b still holds it
    const rest = await collect(b, () => ac.abort());
    expect(rest.at(-1)?.finishReason).toBe("abort");
    expect(getEventListeners(ac.signal, "abort")).toHaveLength(0);
  });
});
