// One engine of the multi-LoRA benchmark, run in its own child process by run.mjs (fork + IPC).
// Receives one job and answers { ok: true, result } or { ok: false, error }.
//
//   { engine: "llmserve", ... }
//       One model with every adapter loaded; for each trial, each configuration (no adapter, or
//       the streams spread over k adapters of rank r, as run.mjs assigned them) runs `streams`
//       concurrent greedy streams of `tokens` tokens, all submitted at once (the engine batches them).
//   { engine: "llamacpp", mode: "sequential" | "concurrent", ... }
//       The llama.cpp way: one context per adapter (node-llama-cpp `createContext({ lora })`), each
//       with `streams / k` sequences that its batcher puts in one llama_decode. "sequential": the
//       adapters' groups run one after the other (one decode at a time, each with every thread);
//       "concurrent": every group at once (each context decodes on its own libuv worker with
//       `threads` threads, so the contexts share the cores). Plus a reference without adapters:
//       one context, `streams` sequences.
//
// Every time is performance.now() in this process (ms), taken when the token reaches JavaScript:
// what a Node.js user of each binding sees. run.mjs turns the raw times into decode tok/s.

import { performance } from "node:perf_hooks";
import { serveOneMessage, withCpu } from "../common.mjs";

const now = () => performance.now();

// ---------------------------------------------------------------- llmserve

/** One llmserve stream: its token arrival times and the engine's timings of it. */
async function llmserveStream(model, tokens, maxTokens, adapter) {
  const times = [];
  let finishReason;
  let timings;
  const opts = { maxTokens, temperature: 0, stopAtEos: false, ...(adapter ? { adapter } : {}) };
  for await (const c of model.generate({ tokens }, opts)) {
    if (c.tokens.length > 0) {
      const t = now();
      for (let k = 0; k < c.tokens.length; k++) times.push(t);
    }
    if (c.done) {
      finishReason = c.finishReason;
      timings = c.timings;
    }
  }
  if (times.length !== maxTokens)
    throw new Error(`llmserve generated ${times.length} tokens (finish ${finishReason}), expected ${maxTokens}`);
  return { times, generateMs: timings?.generateMs, generatedTokens: timings?.generatedTokens };
}

async function llmserveRun(job) {
  const { Model } = await import("../../dist/index.js");
  const perSeq = Math.ceil((job.promptTokens + job.tokens + 1) / 16) * 16;
  const t0 = now();
  const model = await Model.load(job.modelPath, {
    threads: job.threads,
    contextSize: Math.max(256, perSeq),
    kvCacheTokens: job.streams * perSeq + 512,
    maxBatchTokens: Math.max(512, job.streams * job.promptTokens),
    maxSequences: Math.max(64, job.streams),
    // Every configuration decodes the same prompts: no cached prefix may shorten a prefill, and
    // the decode window must start with every stream past its first token anyway.
    prefixCache: false,
    batching: "continuous",
    adapterType: job.adapterType ?? "file",
  });
  const loadMs = now() - t0;
  try {
    const t1 = now();
    for (const a of job.adapters) await model.loadAdapter(a.name, a.path, { scale: 1 });
    const adapterLoadMs = now() - t1;
    const adapterBytes = model.stats().adapterBytes;
    const prompts = job.prompts;
    const runConfig = async (cfg, tokens) => {
      const s0 = model.stats();
      const submitted = now();
      const [res, cpu] = await withCpu(job.threads, () =>
        Promise.all(
          prompts.map((p, j) => llmserveStream(model, p, tokens, cfg.k ? cfg.names[cfg.adapterOf[j]] : undefined)),
        ),
      );
      const s1 = model.stats();
      const steps = s1.steps - s0.steps;
      return {
        submitted,
        streams: res.map((r) => r.times),
        // The engine's own clock (first token to last, per stream): immune to a busy event loop.
        engine: res.map((r) => ({ generateMs: r.generateMs, generatedTokens: r.generatedTokens })),
        cpu,
        steps,
        sequencesPerStep: steps ? (s1.batchSequences - s0.batchSequences) / steps : 0,
        tokensPerStep: steps ? (s1.batchTokens - s0.batchTokens) / steps : 0,
      };
    };
    // Warm-up: every configuration once, a few tokens (pages in the weights and each adapter's
    // pairs, starts the threads).
    for (const cfg of job.configs) await runConfig(cfg, Math.min(4, job.tokens));
    const trials = [];
    for (let t = 0; t < job.trials; t++) {
      // Rotate the order each trial so that no configuration always runs first or last.
      const order = job.configs.map((_, i) => job.configs[(i + t) % job.configs.length]);
      const runs = [];
      for (const cfg of order) runs.push({ key: cfg.key, ...(await runConfig(cfg, job.tokens)) });
      trials.push(runs);
    }
    return {
      loadMs,
      adapterLoadMs,
      adapterBytes,
      info: pick(model.info, ["kernels", "threads", "contextSize", "kvCacheTokens", "maxBatchTokens", "maxSequences"]),
      trials,
    };
  } finally {
    await model.dispose();
  }
}

// ---------------------------------------------------------------- node-llama-cpp

const GREEDY = { temperature: 0, yieldEogToken: true };

/** One node-llama-cpp stream on `seq`: its token arrival times. */
async function llamaStream(seq, tokens, maxTokens) {
  const times = [];
  const g = seq.evaluate(tokens, GREEDY);
  try {
    for (let i = 0; i < maxTokens; i++) {
      const r = await g.next();
      if (r.done) throw new Error(`node-llama-cpp stopped after ${i} tokens`);
      times.push(now());
    }
  } finally {
    await g.return();
  }
  return times;
}

async function llamaRun(job) {
  const { getLlama } = await import("node-llama-cpp");
  const llama = await getLlama({ gpu: false, build: "never", maxThreads: job.threads, logLevel: "error" });
  const t0 = now();
  const model = await llama.loadModel({ modelPath: job.modelPath, gpuLayers: 0 });
  const loadMs = now() - t0;
  const perSeq = job.promptTokens + job.tokens + 16;
  const contexts = [];
  const newContext = async (sequences, lora) => {
    const c = await model.createContext({
      contextSize: perSeq,
      batchSize: Math.max(512, job.streams * job.promptTokens),
      sequences,
      threads: { ideal: job.threads, min: job.threads },
      ...(lora ? { lora: { adapters: [{ filePath: lora, scale: 1 }] } } : {}),
    });
    contexts.push(c);
    // Its sequences, taken once: a disposed sequence is not handed back to getSequence() at once.
    seqsByContext.set(
      c,
      Array.from({ length: sequences }, () => c.getSequence()),
    );
    return c;
  };
  const seqsByContext = new Map();
  const seqsOf = (c) => seqsByContext.get(c);
  try {
    // Base reference: one context, every stream a sequence of it.
    const baseCtx = await newContext(job.streams);
    const details = {
      llamaCpp: `${llama.llamaCppRelease.repo}@${llama.llamaCppRelease.release}`,
      buildType: llama.buildType,
      threads: baseCtx.idealThreads,
      contextSizePerSequence: baseCtx.contextSize,
      batchSize: baseCtx.batchSize,
      flashAttention: baseCtx.flashAttention,
      systemInfo: llama.systemInfo,
    };
    // Contexts per configuration, made before any timing (adapter load is not part of decode).
    const t1 = now();
    const configs = [];
    for (const cfg of job.configs) {
      const ctxs = [];
      for (let g = 0; g < cfg.k; g++)
        ctxs.push(await newContext(cfg.adapterOf.filter((a) => a === g).length, cfg.paths[g]));
      configs.push({ ...cfg, ctxs });
    }
    const adapterLoadMs = now() - t1;
    // One stream set: groups[g] = [context, prompts]; sequential runs the groups one by one.
    const runGroups = async (groups, tokens, mode) => {
      const submitted = now();
      const [res, cpu] = await withCpu(job.threads, async () => {
        const one = async ([ctx, prompts]) => {
          const seqs = seqsOf(ctx);
          await Promise.all(seqs.map((q) => q.clearHistory())); // the previous run's tokens
          const s = now();
          const streams = await Promise.all(prompts.map((p, j) => llamaStream(seqs[j], p, tokens)));
          return { submitted: s, streams };
        };
        if (mode === "concurrent") return Promise.all(groups.map(one));
        const out = [];
        for (const g of groups) out.push(await one(g));
        return out;
      });
      return { submitted, groups: res, cpu };
    };
    // Each adapter's context serves the streams that use that adapter (the same streams as llmserve's).
    const groupsOf = (cfg) => cfg.ctxs.map((ctx, g) => [ctx, job.prompts.filter((_, j) => cfg.adapterOf[j] === g)]);
    const base = [[baseCtx, job.prompts]];
    // Warm-up (as llmserve's): every context once, a few tokens.
    await runGroups(base, Math.min(4, job.tokens), "sequential");
    for (const cfg of configs) await runGroups(groupsOf(cfg), Math.min(4, job.tokens), "sequential");
    const trials = [];
    for (let t = 0; t < job.trials; t++) {
      const runs = [{ key: "base", mode: "batched", ...(await runGroups(base, job.tokens, "sequential")) }];
      for (const cfg of configs)
        for (const mode of job.modes)
          runs.push({ key: cfg.key, mode, ...(await runGroups(groupsOf(cfg), job.tokens, mode)) });
      trials.push(runs);
    }
    return { loadMs, adapterLoadMs, details, trials };
  } finally {
    for (const c of contexts) await c.dispose().catch(() => {});
    await model.dispose();
    await llama.dispose();
  }
}

function pick(o, keys) {
  const r = {};
  for (const k of keys) r[k] = o?.[k];
  return r;
}

serveOneMessage((job) => {
  if (job.engine === "llmserve") return llmserveRun(job);
  if (job.engine === "llamacpp") return llamaRun(job);
  throw new Error(`unknown engine ${job.engine}`);
});
