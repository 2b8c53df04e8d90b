// One benchmark trial for one engine, run in its own child process by run.mjs (fork + IPC).
//
// Receives { engine, modelPath, threads, pp, tg, tgPrompt, contextSize, vocab, seed } on IPC, then:
//   load -> warm-up (a short different prompt, 2 generated tokens: touches every weight page and
//   spins up the thread pool) -> ppN (fresh sequence) -> tgN (fresh sequence) -> dispose,
// and sends back { ok: true, result } or { ok: false, error }.
//
// Timing is wall-clock in this process around the engine calls, the same way for both engines:
//   ppN: from submitting the N-token prompt until the engine reports it processed (llmserve: the
//        done chunk of generate(maxTokens: 1); node-llama-cpp: evaluateWithoutGeneratingNewTokens).
//   tgN: after a short prompt, from the first generated token to the (N+1)-th: exactly N one-token
//        decode steps (+ greedy sampling), as llama-bench's tg test.
// llmserve's own engine timings (promptMs, generateMs) are recorded too, as a cross-check.

import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { performance } from "node:perf_hooks";

/** Deterministic pseudo-random token ids in [3, vocab): 0..2 are unk/bos/eos in llama vocabularies. */
export function tokenIds(n, vocab, seed) {
  let a = seed >>> 0;
  const next = () => {
    // mulberry32
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Array(n);
  for (let i = 0; i < n; i++) out[i] = 3 + Math.floor(next() * (vocab - 3));
  return out;
}

/** Busy and total jiffies over all CPUs from /proc/stat (undefined off Linux). */
function procStat() {
  try {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1, 9).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    return { busy: total - f[3] - f[4], total };
  } catch {
    return undefined;
  }
}

/**
 * Runs fn and returns [result, cpu, others]:
 *   cpu    = this process's CPU time during fn / (wall time x threads): ~1 when the engine kept its
 *            threads busy (or spinning); below 1 when its threads idled or were preempted;
 *   others = cores' worth of CPU time that other processes used meanwhile (from /proc/stat):
 *            ~0 on a quiet machine; when it is large, the timing is contended.
 */
async function withCpu(threads, fn) {
  const s0 = procStat();
  const c0 = process.cpuUsage();
  const w0 = performance.now();
  const r = await fn();
  const c = process.cpuUsage(c0);
  const wall = performance.now() - w0;
  const s1 = procStat();
  const ownCores = (c.user + c.system) / 1000 / wall;
  let others;
  if (s0 && s1 && s1.total > s0.total) {
    const ncpu = availableParallelism();
    others = +Math.max(0, ((s1.busy - s0.busy) / (s1.total - s0.total)) * ncpu - ownCores).toFixed(2);
  }
  return [r, +(ownCores / threads).toFixed(3), others];
}

/** Distinct first tokens, so no prompt is a prefix of another (no KV reuse between tests). */
function prompts(cfg) {
  const warm = tokenIds(32, cfg.vocab, cfg.seed + 1);
  const pp = tokenIds(cfg.pp, cfg.vocab, cfg.seed + 2);
  const tg = tokenIds(cfg.tgPrompt, cfg.vocab, cfg.seed + 3);
  if (new Set([warm[0], pp[0], tg[0]]).size !== 3) throw new Error("prompt seeds collide; change --seed");
  return { warm, pp, tg };
}

async function runLlmserve(cfg) {
  const { Model } = await import("../../dist/index.js");
  const p = prompts(cfg);
  const t0 = performance.now();
  const model = await Model.load(cfg.modelPath, { threads: cfg.threads, contextSize: cfg.contextSize });
  const loadMs = performance.now() - t0;
  try {
    const info = model.info;
    // Warm-up.
    await model.complete({ tokens: p.warm }, { maxTokens: 2, temperature: 0, stopAtEos: false });

    // ppN: prefill only (maxTokens 1 = no decode step).
    let last;
    const a = performance.now();
    const [, ppCpu, ppOthers] = await withCpu(cfg.threads, async () => {
      for await (const c of model.generate({ tokens: p.pp }, { maxTokens: 1, temperature: 0, stopAtEos: false })) last = c;
    });
    const ppMs = performance.now() - a;
    const ppT = last?.timings;
    if (!ppT) throw new Error("llmserve returned no timings for the pp test");
    if (ppT.reusedTokens !== 0) throw new Error(`llmserve reused ${ppT.reusedTokens} cached prompt tokens in the pp test`);

    // tgN: N decode steps between the first generated token and the last.
    let first = 0;
    let end = 0;
    let got = 0;
    let tgT;
    const [, tgCpu, tgOthers] = await withCpu(cfg.threads, async () => {
      for await (const c of model.generate({ tokens: p.tg }, { maxTokens: cfg.tg + 1, temperature: 0, stopAtEos: false })) {
        if (c.tokens.length > 0) {
          got += c.tokens.length;
          if (got === 1) first = performance.now();
          if (got === cfg.tg + 1) end = performance.now();
        }
        if (c.done) {
          tgT = c.timings;
          if (c.finishReason !== "length") throw new Error(`llmserve tg test finished with ${c.finishReason}`);
        }
      }
    });
    if (got !== cfg.tg + 1) throw new Error(`llmserve generated ${got} tokens, expected ${cfg.tg + 1}`);
    if (tgT.reusedTokens !== 0) throw new Error(`llmserve reused ${tgT.reusedTokens} cached prompt tokens in the tg test`);
    const tgMs = end - first;
    return {
      loadMs,
      pp: { tokens: cfg.pp, ms: ppMs, tps: (cfg.pp * 1000) / ppMs, cpu: ppCpu, otherCores: ppOthers, engineMs: ppT.promptMs, engineTps: (cfg.pp * 1000) / ppT.promptMs },
      // engine generateMs spans N decode steps + N+1 samplings (it starts after prefill).
      tg: { tokens: cfg.tg, ms: tgMs, tps: (cfg.tg * 1000) / tgMs, cpu: tgCpu, otherCores: tgOthers, engineMs: tgT.generateMs, engineTps: (cfg.tg * 1000) / tgT.generateMs },
      details: { kernels: info.kernels, threads: info.threads, contextSize: info.contextSize, weightTypes: info.weightTypes },
    };
  } finally {
    await model.dispose();
  }
}

async function runLlamaCpp(cfg) {
  const { getLlama } = await import("node-llama-cpp");
  const p = prompts(cfg);
  const llama = await getLlama({ gpu: false, build: "never", maxThreads: cfg.threads, logLevel: "error" });
  const t0 = performance.now();
  const model = await llama.loadModel({ modelPath: cfg.modelPath, gpuLayers: 0 });
  const batchSize = Math.max(512, cfg.pp);
  const context = await model.createContext({
    contextSize: cfg.contextSize,
    batchSize,
    sequences: 1,
    threads: { ideal: cfg.threads, min: cfg.threads },
  });
  const loadMs = performance.now() - t0;
  try {
    const seq = context.getSequence();
    const greedy = { temperature: 0, yieldEogToken: true };

    // Warm-up.
    {
      const g = seq.evaluate(p.warm, greedy);
      await g.next();
      await g.next();
      await g.return();
      await seq.clearHistory();
    }

    // ppN: the whole prompt in one batch.
    const a = performance.now();
    const [, ppCpu, ppOthers] = await withCpu(cfg.threads, () => seq.evaluateWithoutGeneratingNewTokens(p.pp));
    const ppMs = performance.now() - a;
    if (seq.nextTokenIndex !== cfg.pp) throw new Error(`node-llama-cpp holds ${seq.nextTokenIndex} tokens after pp, expected ${cfg.pp}`);
    await seq.clearHistory();

    // tgN: N decode steps between the first generated token and the last.
    const g = seq.evaluate(p.tg, greedy);
    const r0 = await g.next();
    if (r0.done) throw new Error("node-llama-cpp produced no token");
    const first = performance.now();
    const [, tgCpu, tgOthers] = await withCpu(cfg.threads, async () => {
      for (let i = 0; i < cfg.tg; i++) {
        const r = await g.next();
        if (r.done) throw new Error(`node-llama-cpp stopped after ${i + 1} tokens`);
      }
    });
    const tgMs = performance.now() - first;
    await g.return();
    return {
      loadMs,
      pp: { tokens: cfg.pp, ms: ppMs, tps: (cfg.pp * 1000) / ppMs, cpu: ppCpu, otherCores: ppOthers },
      tg: { tokens: cfg.tg, ms: tgMs, tps: (cfg.tg * 1000) / tgMs, cpu: tgCpu, otherCores: tgOthers },
      details: {
        llamaCpp: `${llama.llamaCppRelease.repo}@${llama.llamaCppRelease.release}`,
        buildType: llama.buildType,
        threads: context.idealThreads,
        contextSize: context.contextSize,
        batchSize: context.batchSize,
        flashAttention: context.flashAttention,
        systemInfo: llama.systemInfo,
      },
    };
  } finally {
    await context.dispose();
    await model.dispose();
    await llama.dispose();
  }
}

process.once("message", async (cfg) => {
  try {
    const result = cfg.engine === "llmserve" ? await runLlmserve(cfg) : await runLlamaCpp(cfg);
    process.send({ ok: true, result }, () => process.exit(0));
  } catch (err) {
    process.send({ ok: false, error: `${err?.code ? err.code + ": " : ""}${err?.stack ?? err}` }, () => process.exit(1));
  }
});
