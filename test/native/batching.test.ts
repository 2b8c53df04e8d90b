/**
 * Continuous batching: a request's output does not depend on what else is in the batch (with
 * chunked prefill, prefix-cache hits and preemption), blocks are never leaked, sessions and the
 * response cache avoid recomputation.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model, type Chunk, type TokenLogprob } from "../../lib/index.js";
import { fixture, haveFixtures, synthModel } from "../helpers.js";
import { checkInvariance, collect, greedy, prompts } from "./invariance.js";

describe("batch invariance", () => {
  let synthPath: string;
  beforeAll(async () => {
    synthPath = await synthModel("batch-q8", {
      dim: 128,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      ffn: 256,
      vocabSize: 512,
      type: "q8_0",
    });
  });

  it.each([1, 2, 5, 16])("%i concurrent greedy requests on a synthetic q8_0 model equal each alone", async (n) => {
    const m = await Model.load(synthPath, { threads: 2, contextSize: 256, kvCacheTokens: 4096, maxBatchTokens: 48 });
    try {
      // 32 tokens each: long enough that requests overlap however fast the engine runs.
      await checkInvariance(m, prompts(n, m.info.nVocab, 7 + n), 32);
      const s = m.stats();
      // With many arrivals the engine must have batched some (two can legitimately run one after the other).
      if (n >= 5) expect(s.maxBatchSequencesSeen).toBeGreaterThan(1);
      expect(s.blocksUsed).toBe(0);
    } finally {
      await m.dispose();
    }
  });

  it("16 concurrent greedy requests on a synthetic qwen3 (per-head Q/K norms, head size 64 != dim / heads) equal each alone", async () => {
    const path = await synthModel("batch-qwen3", {
      arch: "qwen3",
      dim: 128,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      headDim: 64,
      ffn: 256,
      vocabSize: 512,
      type: "q4_0",
    });
    const m = await Model.load(path, { threads: 2, contextSize: 256, kvCacheTokens: 4096, maxBatchTokens: 48 });
    try {
      expect(m.info.headDim).toBe(64);
      await checkInvariance(m, prompts(16, m.info.nVocab, 5), 24);
      expect(m.stats().maxBatchSequencesSeen).toBeGreaterThan(1);
      expect(m.stats().blocksUsed).toBe(0);
    } finally {
      await m.dispose();
    }
  });

  it("gemma2 with an 8-token sliding window: 16 concurrent requests equal each alone, and a cached 50-token prefix (past the window) gives the cold result", async () => {
    const path = await synthModel("batch-gemma2", {
      arch: "gemma2",
      dim: 128,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      ffn: 256,
      vocabSize: 512,
      type: "q4_0",
      slidingWindow: 8,
      attnSoftcap: 2,
      finalSoftcap: 5,
    });
    const m = await Model.load(path, { threads: 2, contextSize: 256, kvCacheTokens: 4096, maxBatchTokens: 48 });
    const cold = await Model.load(path, { threads: 2, contextSize: 256, prefixCache: false });
    try {
      await checkInvariance(m, prompts(16, m.info.nVocab, 5), 24);
      expect(m.stats().maxBatchSequencesSeen).toBeGreaterThan(1);
      // Global layers keep every position, so a reused prefix longer than the window is still exact.
      const system = [1, ...Array.from({ length: 49 }, (_, i) => 3 + ((i * 37) % (m.info.nVocab - 3)))];
      const ps = prompts(4, m.info.nVocab, 9).map((p) => [...system, ...p.slice(1, 12)]);
      await checkInvariance(m, ps, 12);
      expect(m.stats().prefixHits).toBeGreaterThan(0);
      for (const p of ps.slice(0, 2)) {
        const warm = (await collect(m.generate({ tokens: p }, { ...greedy, maxTokens: 12 }))).tokens;
        const ref = (await collect(cold.generate({ tokens: p }, { ...greedy, maxTokens: 12 }))).tokens;
        expect(warm).toEqual(ref);
      }
      expect(m.stats().blocksUsed).toBe(0);
    } finally {
      await m.dispose();
      await cold.dispose();
    }
  });

  it.each([
    ["llama", 8, 2],
    ["qwen3moe", 4, 1],
  ] as const)(
    "mixture of experts (%s, %i experts, top-%i): 16 concurrent requests equal each alone",
    async (arch, experts, expertsUsed) => {
      // Each step groups every sequence's tokens by expert: a token's output must not depend on
      // which other tokens share its experts' matmuls.
      const path = await synthModel(`batch-moe-${arch}-${experts}-${expertsUsed}`, {
        arch,
        dim: 128,
        layers: 2,
        heads: 4,
        kvHeads: 2,
        ffn: 128,
        vocabSize: 512,
        type: "q4_0",
        experts,
        expertsUsed,
      });
      const m = await Model.load(path, { threads: 2, contextSize: 256, kvCacheTokens: 4096, maxBatchTokens: 48 });
      try {
        await checkInvariance(m, prompts(16, m.info.nVocab, 11), 24);
        expect(m.stats().maxBatchSequencesSeen).toBeGreaterThan(1);
        expect(m.stats().blocksUsed).toBe(0);
      } finally {
        await m.dispose();
      }
    },
  );

  it.runIf(haveFixtures).each(["aidreams260K", "stories260K-ids"])(
    "16 concurrent requests on the f32 fixture %s equal each alone",
    async (name) => {
      const m = await Model.load(fixture("models", `${name}.gguf`), {
        threads: 2,
        contextSize: 128,
        kvCacheTokens: 2048,
        maxBatchTokens: 64,
      });
      try {
        await checkInvariance(
          m,
          prompts(16, m.info.nVocab, 3).map((p) => p.slice(0, 40)),
          16,
        );
      } finally {
        await m.dispose();
      }
    },
  );

  it("with a q8_0 KV cache (Hadamard-rotated, 64-wide heads): 17/32 of f16's bytes, outputs near f16's", async () => {
    const path = await synthModel("batch-kvq8", {
      dim: 256,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      ffn: 256,
      vocabSize: 512,
      type: "q8_0",
    });
    const base = { threads: 2, contextSize: 256, kvCacheTokens: 4096, maxBatchTokens: 48 };
    const f16 = await Model.load(path, base);
    const m = await Model.load(path, { ...base, kvType: "q8_0" });
    try {
      // The pool as allocated: q8_0 stores 32 elements in 34 bytes (f16 scale + 32 int8), f16 in 64.
      expect(f16.info.kvType).toBe("f16");
      expect(m.info.kvType).toBe("q8_0");
      const { nLayer, nHeadKv, headDim, kvCacheTokens } = f16.info;
      expect(f16.info.kvBytes).toBe(2 * nLayer * kvCacheTokens * nHeadKv * headDim * 2);
      expect(m.info.kvBytes * 32).toBe(f16.info.kvBytes * 17);
      // Teacher-forced next-token distributions through the engine (f16's greedy continuation as
      // the forced text): quantized KV changes them, within the loose bound the parity tests allow
      // for quantized types (max |Δp| < 0.1, test/parity/synth.test.ts), and rarely flips the top token.
      const ps = prompts(3, m.info.nVocab, 5).map((p) => p.slice(0, 24));
      const conts = await Promise.all(
        ps.map((p) => collect(f16.generate({ tokens: p }, { ...greedy, maxTokens: 12 }))),
      );
      const forced = ps.flatMap((p, i) => Array.from({ length: 12 }, (_, k) => [...p, ...conts[i].tokens.slice(0, k)]));
      const dist = (model: Model) =>
        Promise.all(
          forced.map(async (tokens) => {
            const lps: TokenLogprob[] = [];
            for await (const c of model.generate({ tokens }, { ...greedy, maxTokens: 1, logprobs: 20 }))
              lps.push(...(c.logprobs ?? []));
            expect(lps.length).toBe(1);
            return lps[0];
          }),
        );
      const [a, b] = [await dist(f16), await dist(m)];
      let maxErr = 0,
        agree = 0;
      for (let i = 0; i < forced.length; i++) {
        if (a[i].token === b[i].token) agree++;
        for (const t of a[i].top.slice(0, 5)) {
          const q = b[i].top.find((x) => x.token === t.token);
          maxErr = Math.max(maxErr, Math.abs(Math.exp(t.logprob) - (q ? Math.exp(q.logprob) : 0)));
        }
      }
      expect(maxErr, "q8_0 KV must change the distributions (it is not f16)").toBeGreaterThan(1e-6);
      expect(maxErr).toBeLessThan(0.1);
      expect(agree).toBeGreaterThanOrEqual(Math.ceil(0.9 * forced.length));
      // Batch invariance with the q8_0 cache.
      await checkInvariance(m, prompts(8, m.info.nVocab, 99), 10);
      expect(m.stats().blocksUsed).toBe(0);
    } finally {
      await f16.dispose();
      await m.dispose();
    }
  });

  it("with prefix-cache hits (shared system prompt)", async () => {
    const m = await Model.load(synthPath, { threads: 2, contextSize: 256, kvCacheTokens: 4096, maxBatchTokens: 64 });
    try {
      const system = [1, ...Array.from({ length: 49 }, (_, i) => 3 + ((i * 37) % (m.info.nVocab - 3)))];
      const ps = prompts(8, m.info.nVocab, 5).map((p) => [...system, ...p.slice(1, 20)]);
      await checkInvariance(m, ps, 10);
      const s = m.stats();
      expect(s.prefixHits).toBeGreaterThan(0);
      expect(s.reusedTokens).toBeGreaterThanOrEqual(48 * 8);
    } finally {
      await m.dispose();
    }
  });

  it("across preemptions (a KV cache too small for every request at once)", async () => {
    // 10 requests of up to ~80 tokens with a 256-token cache: the scheduler must preempt.
    const m = await Model.load(synthPath, {
      threads: 2,
      contextSize: 128,
      kvCacheTokens: 256,
      kvBlockSize: 8,
      maxBatchTokens: 64,
      prefixCache: false,
    });
    try {
      const ps = prompts(10, m.info.nVocab, 11).map((p) => p.slice(0, 40));
      // All at once: with staggered arrivals a fast engine may finish some before others come.
      await checkInvariance(m, ps, 40, false);
      const s = m.stats();
      expect(s.preemptions).toBeGreaterThan(0);
      expect(s.blocksUsed).toBe(0);
    } finally {
      await m.dispose();
    }
  });

  /**
   * A generates 1000 tokens on m; once it has two, B (a prompt plus `extra` tokens) arrives and
   * runs beside it. Both must equal their runs alone on `solo`. Returns B's prompt length.
   */
  async function longPromptBesideGenerating(solo: Model, m: Model, seed: number, extra: number) {
    const [a, b] = prompts(2, m.info.nVocab, seed);
    const long = [...b, ...Array.from({ length: extra }, (_, i) => 3 + ((i * 37) % 500))];
    const soloA = (await collect(solo.generate({ tokens: a }, { ...greedy, maxTokens: 1000 }))).tokens;
    const soloB = (await collect(solo.generate({ tokens: long }, { ...greedy, maxTokens: 4 }))).tokens;
    let startB!: () => void;
    const bStarted = new Promise<void>((r) => (startB = r));
    const ra = collect(m.generate({ tokens: a }, { ...greedy, maxTokens: 1000 }), (_c, n) => n >= 2 && startB());
    await bStarted;
    const rb = await collect(m.generate({ tokens: long }, { ...greedy, maxTokens: 4 }));
    expect((await ra).tokens).toEqual(soloA);
    expect(rb.tokens).toEqual(soloB);
    return long.length;
  }

  it("while a request generates, prompts arrive in chunks of at most prefillChunk tokens (same tokens)", async () => {
    // A generates long enough (1000 tokens) that B's whole prompt arrives while A still runs.
    const opts = { threads: 2, contextSize: 2048, kvCacheTokens: 4096, maxBatchTokens: 512, prefillChunk: 16 };
    const solo = await Model.load(synthPath, opts);
    const m = await Model.load(synthPath, opts);
    try {
      const long = await longPromptBesideGenerating(solo, m, 41, 150);
      expect(solo.stats().maxBatchTokensSeen).toBe(long); // alone, a prompt fills one step
      // Beside a generating request, a step takes its decode token + at most 16 prompt tokens.
      expect(m.stats().maxBatchTokensSeen).toBeLessThanOrEqual(17);
      expect(m.info.prefillChunk).toBe(16);
    } finally {
      await solo.dispose();
      await m.dispose();
    }
  });

  it("targetStepMs: beside a generating request, the measured step cost sets the prompt chunks (same tokens)", async () => {
    // The scheduler-level behaviour (steps within the target on a modelled cost) is in
    // native/tests/test_step_cost.cpp; here: the option reaches the engine, the policy takes over
    // once the fit has seen a prompt chunk, and the tokens stay each request's own.
    const opts = { threads: 2, contextSize: 2048, kvCacheTokens: 4096, maxBatchTokens: 512, prefillChunk: 16 };
    const solo = await Model.load(synthPath, opts);
    const m = await Model.load(synthPath, { ...opts, targetStepMs: 5 });
    try {
      expect(m.info.targetStepMs).toBe(5);
      await longPromptBesideGenerating(solo, m, 43, 400);
      const s = m.stats();
      expect(s.dynamicSteps).toBeGreaterThan(0);
      expect(s.stepMsPerToken).toBeGreaterThan(0);
      expect(solo.stats().dynamicSteps).toBe(0);
    } finally {
      await solo.dispose();
      await m.dispose();
    }
  });

  it("targetStepMs outside [0, 60000] is a typed error", async () => {
    for (const bad of [-1, 60001, Number.NaN, "5"]) {
      await expect(Model.load(synthPath, { targetStepMs: bad as number })).rejects.toMatchObject({
        code: "ERR_INVALID_ARGUMENT",
      });
    }
  });

  it("static batching: no request joins a running batch, batches are formed, same tokens", async () => {
    // A runs long; B, C, D arrive once A has its first token. Continuous batching admits them beside
    // A; static batching only once A's batch has finished, and then as one batch of three.
    const opts = { threads: 2, contextSize: 512, kvCacheTokens: 4096, maxSequences: 4 };
    const m = await Model.load(synthPath, { ...opts, batching: "static" });
    const c = await Model.load(synthPath, opts);
    try {
      const ps = prompts(4, m.info.nVocab, 21);
      const maxTokens = [300, 8, 8, 8];
      const solo: number[][] = [];
      for (const [i, p] of ps.entries())
        solo.push((await collect(m.generate({ tokens: p }, { ...greedy, maxTokens: maxTokens[i] }))).tokens);
      expect(m.stats().maxBatchSequencesSeen).toBe(1);
      const scenario = async (model: Model) => {
        let firstToken!: () => void;
        const started = new Promise<void>((r) => (firstToken = r));
        const ra = collect(model.generate({ tokens: ps[0] }, { ...greedy, maxTokens: maxTokens[0] }), () =>
          firstToken(),
        );
        await started;
        const rest = await Promise.all(
          ps.slice(1).map((p, i) => collect(model.generate({ tokens: p }, { ...greedy, maxTokens: maxTokens[i + 1] }))),
        );
        return [(await ra).tokens, ...rest.map((r) => r.tokens)];
      };
      expect(await scenario(m)).toEqual(solo);
      const s = m.stats();
      expect(s.joinedRunning).toBe(0);
      expect(s.maxBatchSequencesSeen).toBeGreaterThanOrEqual(2); // a batch, not one request at a time
      // The same arrivals under continuous batching do join A's running batch (the counter works).
      expect(await scenario(c)).toEqual(solo);
      expect(c.stats().joinedRunning).toBeGreaterThanOrEqual(1);
    } finally {
      await m.dispose();
      await c.dispose();
    }
  });
});

describe("block accounting", () => {
  it("1000 random requests with aborts, early breaks and priorities leave every block free or cached", async () => {
    const path = await synthModel("accounting", {
      dim: 64,
      layers: 1,
      heads: 2,
      kvHeads: 1,
      ffn: 64,
      vocabSize: 300,
      type: "f32",
    });
    const m = await Model.load(path, {
      threads: 2,
      contextSize: 128,
      kvCacheTokens: 512,
      kvBlockSize: 4,
      maxBatchTokens: 64,
      maxSequences: 16,
      maxQueue: 2000,
    });
    try {
      let s = 12345;
      const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) >>> 8) / (1 << 24);
      const nV = m.info.nVocab;
      const shared = Array.from({ length: 12 }, () => 3 + Math.floor(rnd() * (nV - 3)));
      const jobs: Promise<string>[] = [];
      for (let i = 0; i < 1000; i++) {
        const len = 1 + Math.floor(rnd() * 60);
        const body = Array.from({ length: len }, () => 3 + Math.floor(rnd() * (nV - 3)));
        const tokens = rnd() < 0.5 ? [1, ...shared, ...body] : [1, ...body];
        const kind = rnd();
        const ac = new AbortController();
        const opts = {
          ...greedy,
          maxTokens: 1 + Math.floor(rnd() * 20),
          priority: Math.floor(rnd() * 3),
          signal: ac.signal,
        };
        const it = m.generate({ tokens }, opts);
        jobs.push(
          (async () => {
            let n = 0;
            let last: Chunk | undefined;
            for await (const c of it) {
              n += c.tokens.length;
              last = c;
              if (kind < 0.15 && n >= 2) ac.abort();
              if (kind > 0.85 && n >= 3) break; // the client disconnects
            }
            return last?.finishReason ?? "break";
          })(),
        );
        if (i % 50 === 0) await new Promise((r) => setTimeout(r, 1));
      }
      const reasons = await Promise.all(jobs);
      expect(reasons.length).toBe(1000);
      expect(reasons.filter((r) => r === "abort").length).toBeGreaterThan(0);
      // Give the engine a moment to process the last cancellations.
      for (let k = 0; k < 100 && (m.stats().running > 0 || m.stats().waiting > 0); k++)
        await new Promise((r) => setTimeout(r, 10));
      const st = m.stats();
      expect(st.running).toBe(0);
      expect(st.waiting).toBe(0);
      expect(st.blocksUsed).toBe(0);
      expect(st.blocksFree + st.blocksCached).toBe(st.blocksTotal);
      expect(st.requests).toBe(1000);
      expect(st.finished + st.aborted).toBe(1000);
      expect(st.errors).toBe(0);
      expect(st.maxBatchSequencesSeen).toBeGreaterThan(1);
    } finally {
      await m.dispose();
    }
  }, 300_000);

  it("a full queue is a typed error, and nothing is lost", async () => {
    const path = await synthModel("accounting", {
      dim: 64,
      layers: 1,
      heads: 2,
      kvHeads: 1,
      ffn: 64,
      vocabSize: 300,
      type: "f32",
    });
    const m = await Model.load(path, { threads: 1, contextSize: 1024, maxQueue: 2, maxSequences: 1 });
    try {
      // One runs, two may wait: within a few synchronous submissions one must be refused.
      const accepted: AsyncGenerator<Chunk, void, undefined>[] = [];
      let err: unknown;
      for (let i = 0; i < 6 && !err; i++) {
        try {
          accepted.push(m.generate({ tokens: [1, 5 + i] }, { ...greedy, maxTokens: 400 }));
        } catch (e) {
          err = e;
        }
      }
      expect((err as { code?: string })?.code).toBe("ERR_QUEUE_FULL");
      expect((err as Error).message).toMatch(/maxQueue/);
      expect(accepted.length).toBeGreaterThanOrEqual(2);
      for (const a of accepted) expect((await collect(a)).tokens.length).toBe(400);
    } finally {
      await m.dispose();
    }
  });
});

describe("sessions, pinned prefixes, response cache", () => {
  let m: Model;
  let path: string;
  beforeAll(async () => {
    path = await synthModel("sessions", {
      dim: 128,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      ffn: 256,
      vocabSize: 512,
      type: "f32",
    });
    m = await Model.load(path, { threads: 2, contextSize: 1024, kvCacheTokens: 4096 });
  });
  afterAll(async () => {
    await m?.dispose();
  });

  it("a 5-turn conversation equals replaying the full history, prefilling only new tokens (once all, at the prompt-arithmetic threshold)", async () => {
    const turns = ["Hello there.", " How are you?", " Tell me more.", " Why?", " Thanks."];
    const chat = m.createSession({ system: "Be brief. " });
    const replies: number[][] = [];
    const threshold = m.info.promptTiledMinTokens;
    let prevPrompt = 0;
    let crossed = 0;
    for (const [i, t] of turns.entries()) {
      const before = m.stats();
      const histLen = chat.tokens.length;
      const r = await collect(chat.send(t, { ...greedy, maxTokens: 6 }));
      replies.push(r.tokens);
      const after = m.stats();
      const newTokens = m.tokenizer.encode(i === 0 ? `Be brief. ${t}` : t, { addSpecial: i === 0 }).length;
      // Only the new tokens (plus the previous reply's last token, sampled but not yet computed);
      // the turn whose prompt first reaches the prompt-arithmetic threshold recomputes it all once.
      const prompt = histLen + newTokens;
      const crosses = prevPrompt < threshold && prompt >= threshold;
      if (crosses) crossed++;
      const want = i === 0 ? newTokens : crosses ? prompt : newTokens + 1;
      expect(after.prefillTokens - before.prefillTokens, `turn ${i}`).toBe(want);
      expect(chat.tokens.length).toBe(histLen + newTokens + r.tokens.length);
      prevPrompt = prompt;
    }
    expect(crossed).toBe(1); // the conversation does cross it (both arithmetics are exercised)
    // Replay without any cache: a fresh model, prefix cache off, one request for the whole history.
    const cold = await Model.load(path, { threads: 2, contextSize: 1024, prefixCache: false });
    try {
      let hist: number[] = [];
      for (const [i, t] of turns.entries()) {
        hist = [...hist, ...cold.tokenizer.encode(i === 0 ? `Be brief. ${t}` : t, { addSpecial: i === 0 })];
        const r = await collect(cold.generate({ tokens: hist }, { ...greedy, maxTokens: 6 }));
        expect(r.tokens, `turn ${i}`).toEqual(replies[i]);
        hist = [...hist, ...r.tokens];
      }
    } finally {
      await cold.dispose();
    }
    chat.dispose();
  });

  it("a session evicted under pressure recomputes transparently", async () => {
    const small = await Model.load(path, { threads: 2, contextSize: 256, kvCacheTokens: 128, kvBlockSize: 8 });
    try {
      const chat = small.createSession();
      const a = await collect(chat.send("One two three four five six.", { ...greedy, maxTokens: 8 }));
      // Another request needs the whole cache: the idle session is evicted.
      await collect(
        small.generate({ tokens: [1, ...Array.from({ length: 100 }, (_, i) => 10 + i)] }, { ...greedy, maxTokens: 20 }),
      );
      expect(small.stats().sessionEvictions).toBeGreaterThan(0);
      const b = await collect(chat.send(" Seven.", { ...greedy, maxTokens: 8 }));
      const cold = await collect(
        small.generate(
          { tokens: [...chat.tokens.slice(0, chat.tokens.length - b.tokens.length)] },
          { ...greedy, maxTokens: 8 },
        ),
      );
      expect(b.tokens).toEqual(cold.tokens);
      expect(a.tokens.length).toBe(8);
    } finally {
      await small.dispose();
    }
  });

  it("a request starting with a pinned prefix prefills only its remainder", async () => {
    const doc =
      "Pricing: the basic plan costs ten dollars a month, the pro plan costs thirty, and the team plan is priced per seat.";
    const { tokens } = await m.cachePrefix("kb:pricing", doc);
    expect(m.stats().pinnedPrefixes).toBe(1);
    const question = m.tokenizer.encode(" What does pro cost?", { addSpecial: false });
    const before = m.stats();
    const r = await collect(m.generate({ tokens: [...tokens, ...question] }, { ...greedy, maxTokens: 4 }));
    const after = m.stats();
    expect(after.prefillTokens - before.prefillTokens).toBe(question.length);
    expect(r.last?.timings?.reusedTokens).toBe(tokens.length);
    // Same result as without the pin.
    const cold = await Model.load(path, { threads: 2, contextSize: 1024, prefixCache: false });
    try {
      expect(
        (await collect(cold.generate({ tokens: [...tokens, ...question] }, { ...greedy, maxTokens: 4 }))).tokens,
      ).toEqual(r.tokens);
    } finally {
      await cold.dispose();
    }
    expect(m.releasePrefix("kb:pricing")).toBe(true);
    expect(m.releasePrefix("kb:pricing")).toBe(false);
  });

  it("response cache: a hit returns identical output with zero forward passes", async () => {
    const opts = { ...greedy, maxTokens: 10, cache: true };
    const a = await collect(m.generate("The cache test prompt", opts));
    const stepsBefore = m.stats().steps;
    const b = await collect(m.generate("The cache test prompt", opts));
    const st = m.stats();
    expect(st.steps).toBe(stepsBefore);
    expect(b.tokens).toEqual(a.tokens);
    expect(st.responseCacheHits).toBe(1);
    // A different sampling parameter is a different key; a sampled request without seed is refused.
    await collect(m.generate("The cache test prompt", { ...opts, maxTokens: 9 }));
    expect(m.stats().steps).toBeGreaterThan(stepsBefore);
    expect(() => m.generate("x", { cache: true, temperature: 0.7 })).toThrow(/deterministic/);
  });

  it("when pinned prefixes hold the whole cache, a request that cannot fit fails with ERR_KV_EXHAUSTED", async () => {
    const tiny = await Model.load(path, { threads: 1, contextSize: 256, kvCacheTokens: 128, kvBlockSize: 8 });
    try {
      const words = Array.from({ length: 40 }, (_, i) => `w${i}`).join(" ");
      const { tokens } = await tiny.cachePrefix("big", words);
      expect(tokens.length).toBeGreaterThan(100); // holds most of the 128-token cache
      let err: unknown;
      try {
        await collect(
          tiny.generate({ tokens: [1, ...Array.from({ length: 40 }, (_, i) => 400 + i)] }, { ...greedy, maxTokens: 4 }),
        );
      } catch (e) {
        err = e;
      }
      expect((err as { code?: string })?.code).toBe("ERR_KV_EXHAUSTED");
      expect((err as Error).message).toMatch(/kvCacheTokens/);
      tiny.releasePrefix("big");
      const ok = await collect(
        tiny.generate({ tokens: [1, ...Array.from({ length: 40 }, (_, i) => 400 + i)] }, { ...greedy, maxTokens: 4 }),
      );
      expect(ok.tokens.length).toBe(4);
    } finally {
      await tiny.dispose();
    }
  });

  it("generateBatch returns one iterator per prompt, batched together", async () => {
    const before = m.stats();
    // 64 tokens each: long enough that the three overlap however fast the engine starts the first.
    const streams = m.generateBatch(["a b c", "d e f g", "h"], { ...greedy, maxTokens: 64 });
    expect(streams.length).toBe(3);
    const outs = await Promise.all(streams.map((s) => collect(s)));
    for (const o of outs) expect(o.tokens.length).toBe(64);
    const after = m.stats();
    // Batched: the sequences shared steps (a one-at-a-time engine has exactly one per step).
    expect(after.batchSequences - before.batchSequences).toBeGreaterThan(after.steps - before.steps);
    expect(after.maxBatchSequencesSeen).toBeGreaterThanOrEqual(2);
    const solo = await collect(m.generate("d e f g", { ...greedy, maxTokens: 64 }));
    expect(outs[1].tokens).toEqual(solo.tokens);
  });

  it("kvWaste counts a block shared by several holders once", async () => {
    const kvm = await Model.load(path, { threads: 1, contextSize: 256, kvCacheTokens: 512 });
    try {
      const text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron";
      const { tokens } = await kvm.cachePrefix("a", text);
      const n = tokens.length,
        bs = 16,
        full = Math.floor(n / bs);
      expect(n % bs).not.toBe(0);
      let st = kvm.stats();
      expect(st.blocksUsed).toBe(full + 1);
      expect(st.kvTokensHeld).toBe(n);
      expect(st.kvWaste).toBeCloseTo(1 - n / ((full + 1) * bs), 10);
      // The same text pinned again shares the full blocks (prefix cache) and owns its own tail.
      await kvm.cachePrefix("b", text);
      st = kvm.stats();
      expect(st.blocksUsed).toBe(full + 2);
      expect(st.kvTokensHeld).toBe(full * bs + 2 * (n % bs));
      expect(st.kvWaste).toBeCloseTo(1 - (full * bs + 2 * (n % bs)) / ((full + 2) * bs), 10);
    } finally {
      await kvm.dispose();
    }
  });

  it("stats report batching and KV state", async () => {
    const before = m.stats();
    // While a long request runs, its KV is held.
    let mid: ReturnType<Model["stats"]> | undefined;
    for await (const c of m.generate(
      { tokens: [1, ...Array.from({ length: 40 }, (_, i) => 5 + i)] },
      { ...greedy, maxTokens: 400 },
    )) {
      if (c.tokens.length > 0) {
        mid = m.stats();
        break;
      }
    }
    // Wait for the engine to process the cancellation before counting.
    for (let k = 0; k < 200 && m.stats().running > 0; k++) await new Promise((r) => setTimeout(r, 5));
    expect(mid!.blocksUsed).toBeGreaterThanOrEqual(3); // 41+ tokens in blocks of 16
    expect(mid!.kvTokensHeld).toBeGreaterThanOrEqual(41);
    expect(mid!.blocksTotal).toBe(mid!.blocksUsed + mid!.blocksCached + mid!.blocksFree);
    // Three requests at once share steps.
    const mark = m.stats();
    await Promise.all(
      ["one two", "three four five", "six"].map((p) => collect(m.generate(p, { ...greedy, maxTokens: 32 }))),
    );
    const s = m.stats();
    const steps = s.steps - mark.steps,
      seqs = s.batchSequences - mark.batchSequences;
    expect(steps).toBeGreaterThan(0);
    expect(seqs).toBeGreaterThan(steps);
    expect(seqs).toBeLessThanOrEqual(3 * steps);
    expect(s.generatedTokens - mark.generatedTokens).toBe(96);
    expect(s.maxBatchSequencesSeen).toBeGreaterThanOrEqual(2);
    expect(s.steps).toBeGreaterThan(before.steps);
    expect(s.tokensPerStep).toBeCloseTo(s.batchTokens / s.steps, 10);
    expect(s.sequencesPerStep).toBeCloseTo(s.batchSequences / s.steps, 10);
    expect(s.running).toBe(0);
    expect(s.blocksTotal).toBe(s.blocksUsed + s.blocksCached + s.blocksFree);
    expect(s.kvWaste).toBeGreaterThanOrEqual(0);
    expect(s.kvWaste).toBeLessThan(1);
  });

  it("responseCacheBytes: 0 disables the response cache", async () => {
    const off = await Model.load(path, { threads: 1, contextSize: 256, responseCacheBytes: 0 });
    try {
      const opts = { ...greedy, maxTokens: 4, cache: true };
      const a = await collect(off.generate("The cache test prompt", opts));
      const steps = off.stats().steps;
      const b = await collect(off.generate("The cache test prompt", opts));
      expect(b.tokens).toEqual(a.tokens);
      expect(off.stats().steps).toBeGreaterThan(steps); // computed again
      expect(off.stats().responseCacheHits).toBe(0);
      expect(off.stats().responseCacheEntries).toBe(0);
    } finally {
      await off.dispose();
    }
  });
});
