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

import { performance } from "node:perf_hooks";
import { importLlamaCpp, llamaCppCpuVariant, serveOneMessage, tokenIds, withCpu } from "../common.mjs";

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
    const [, { cpu: ppCpu, otherCores: ppOthers }] = await withCpu(cfg.threads, async () => {
      for await (const c of model.generate({ tokens: p.pp }, { maxTokens: 1, temperature: 0, stopAtEos: false }))
        last = c;
    });
    const ppMs = performance.now() - a;
    const ppT = last?.timings;
    if (!ppT) throw new Error("llmserve returned no timings for the pp test");
    if (ppT.reusedTokens !== 0)
      throw new Error(`llmserve reused ${ppT.reusedTokens} cached prompt tokens in the pp test`);

    // tgN: N decode steps between the first generated token and the last.
    let first = 0;
    let end = 0;
    let got = 0;
    let tgT;
    const [, { cpu: tgCpu, otherCores: tgOthers }] = await withCpu(cfg.threads, async () => {
      for await (const c of model.generate(
        { tokens: p.tg },
        { maxTokens: cfg.tg + 1, temperature: 0, stopAtEos: false },
      )) {
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
    if (tgT.reusedTokens !== 0)
      throw new Error(`llmserve reused ${tgT.reusedTokens} cached prompt tokens in the tg test`);
    const tgMs = end - first;
    return {
      loadMs,
      pp: {
        tokens: cfg.pp,
        ms: ppMs,
        tps: (cfg.pp * 1000) / ppMs,
        cpu: ppCpu,
        otherCores: ppOthers,
        engineMs: ppT.promptMs,
        engineTps: (cfg.pp * 1000) / ppT.promptMs,
      },
      // engine generateMs spans N decode steps + N+1 samplings (it starts after prefill).
      tg: {
        tokens: cfg.tg,
        ms: tgMs,
        tps: (cfg.tg * 1000) / tgMs,
        cpu: tgCpu,
        otherCores: tgOthers,
        engineMs: tgT.generateMs,
        engineTps: (cfg.tg * 1000) / tgT.generateMs,
      },
      details: {
        kernels: info.kernels,
        threads: info.threads,
        contextSize: info.contextSize,
        weightTypes: info.weightTypes,
      },
    };
  } finally {
    await model.dispose();
  }
}

async function runLlamaCpp(cfg) {
  const { getLlama } = await importLlamaCpp();
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
    const [, { cpu: ppCpu, otherCores: ppOthers }] = await withCpu(cfg.threads, () =>
      seq.evaluateWithoutGeneratingNewTokens(p.pp),
    );
    const ppMs = performance.now() - a;
    if (seq.nextTokenIndex !== cfg.pp)
      throw new Error(`node-llama-cpp holds ${seq.nextTokenIndex} tokens after pp, expected ${cfg.pp}`);
    await seq.clearHistory();

    // tgN: N decode steps between the first generated token and the last.
    const g = seq.evaluate(p.tg, greedy);
    const r0 = await g.next();
    if (r0.done) throw new Error("node-llama-cpp produced no token");
    const first = performance.now();
    const [, { cpu: tgCpu, otherCores: tgOthers }] = await withCpu(cfg.threads, async () => {
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
        cpuVariant: llamaCppCpuVariant(),
      },
    };
  } finally {
    await context.dispose();
    await model.dispose();
    await llama.dispose();
  }
}

serveOneMessage((cfg) => (cfg.engine === "llmserve" ? runLlmserve(cfg) : runLlamaCpp(cfg)));
