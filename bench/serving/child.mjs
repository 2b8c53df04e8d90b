// One engine configuration of the serving benchmark, run in its own child process by run.mjs
// (fork + IPC). Receives one job and answers { ok: true, result } or { ok: false, error }.
//
//   { task: "decode", engine: "llmserve" | "llamacpp", ... }
//       For each concurrency N: N streams, each a distinct short prompt, `tg` greedy tokens, no EOS
//       stop, all submitted at once. Raw per-stream token arrival times come back; run.mjs turns
//       them into aggregate decode tok/s.
//   { task: "serve", engine: "llmserve" | "llamacpp", batching: "continuous" | "static" | "fixed", fixedBucket, ... }
//       The serving workload (Poisson arrivals, shared system prompt) replayed against the engine;
//       per-request arrival / token times come back, plus KV samples taken every `sampleMs`.
//
// Every time is performance.now() in this process (ms), taken when the token reaches JavaScript:
// what a Node.js user of each binding sees.

import { performance } from "node:perf_hooks";
import { importLlamaCpp, llamaCppCpuVariant, serveOneMessage, tokenIds, withCpu } from "../common.mjs";

const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Counters of llmserve's stats() whose difference over a phase is meaningful. */
const COUNTERS = [
  "steps",
  "batchTokens",
  "batchSequences",
  "promptTokens",
  "prefillTokens",
  "reusedTokens",
  "generatedTokens",
  "requests",
  "finished",
  "preemptions",
  "prefixLookups",
  "prefixHits",
  "paddedTokens",
  "padSkippedTokens",
];
function statsDelta(a, b) {
  const d = {};
  for (const k of COUNTERS) d[k] = (b[k] ?? 0) - (a[k] ?? 0);
  d.tokensPerStep = d.steps ? d.batchTokens / d.steps : 0;
  d.sequencesPerStep = d.steps ? d.batchSequences / d.steps : 0;
  d.prefixHitRate = d.prefixLookups ? d.prefixHits / d.prefixLookups : 0;
  d.maxBatchSequencesSeen = b.maxBatchSequencesSeen;
  d.maxBatchTokensSeen = b.maxBatchTokensSeen;
  return d;
}

// ---------------------------------------------------------------- llmserve

async function llmserveLoad(job, extra) {
  const { Model } = await import("../../dist/index.js");
  const t0 = now();
  const model = await Model.load(job.modelPath, { threads: job.threads, ...extra });
  const loadMs = now() - t0;
  // Warm-up: pages in every weight, starts the threads (distinct tokens: no prefix-cache effect).
  await model.complete(
    { tokens: tokenIds(32, job.vocab, job.seed + 999_999) },
    { maxTokens: 2, temperature: 0, stopAtEos: false },
  );
  return { model, loadMs };
}

/** One llmserve stream: returns its token arrival times (one entry per token). */
async function llmserveStream(model, tokens, maxTokens) {
  const times = [];
  let timings;
  let finishReason;
  for await (const c of model.generate({ tokens }, { maxTokens, temperature: 0, stopAtEos: false })) {
    if (c.tokens.length > 0) {
      const t = now();
      for (let k = 0; k < c.tokens.length; k++) times.push(t);
    }
    if (c.done) {
      timings = c.timings;
      finishReason = c.finishReason;
    }
  }
  if (times.length !== maxTokens)
    throw new Error(`llmserve generated ${times.length} tokens (finish ${finishReason}), expected ${maxTokens}`);
  return { times, timings };
}

async function llmserveDecode(job) {
  const maxN = Math.max(...job.concurrency);
  const perSeq = Math.ceil((job.decodePrompt + job.tg + 1) / 16) * 16;
  const opts = {
    contextSize: Math.max(256, perSeq),
    kvCacheTokens: maxN * perSeq + 512,
    maxBatchTokens: job.maxBatchTokens,
    maxSequences: Math.max(64, maxN),
    prefixCache: true,
    batching: "continuous",
  };
  const { model, loadMs } = await llmserveLoad(job, opts);
  try {
    const levels = [];
    for (const level of job.levels) {
      const s0 = model.stats();
      const submitted = now();
      const [streams, cpu] = await withCpu(job.threads, () =>
        Promise.all(level.prompts.map((p) => llmserveStream(model, p, job.tg))),
      );
      const d = statsDelta(s0, model.stats());
      if (d.reusedTokens !== 0)
        throw new Error(`llmserve reused ${d.reusedTokens} cached prompt tokens in the decode test`);
      levels.push({ n: level.n, submitted, streams: streams.map((s) => s.times), cpu, stats: d });
    }
    return {
      loadMs,
      details: {
        ...pick(model.info, [
          "kernels",
          "threads",
          "contextSize",
          "kvCacheTokens",
          "kvBlockSize",
          "maxBatchTokens",
          "maxSequences",
        ]),
      },
      levels,
    };
  } finally {
    await model.dispose();
  }
}

async function llmserveServe(job) {
  const w = job.workload;
  const opts = {
    contextSize: w.contextPerSeq,
    kvCacheTokens: job.kvTokens,
    maxBatchTokens: job.maxBatchTokens,
    maxSequences: job.maxSequences,
    prefixCache: true,
    batching: job.batching,
    targetStepMs: job.targetStepMs ?? 0,
    ...(job.batching === "fixed" && job.fixedBucket ? { fixedBucket: job.fixedBucket } : {}),
  };
  const { model, loadMs } = await llmserveLoad(job, opts);
  try {
    const s0 = model.stats();
    const samples = [];
    const sample = () => {
      const s = model.stats();
      samples.push({
        t: now(),
        kvWaste: s.kvWaste,
        blocksUsed: s.blocksUsed,
        blocksCached: s.blocksCached,
        blocksTotal: s.blocksTotal,
        kvTokensHeld: s.kvTokensHeld,
        blockSize: s.blockSize,
        running: s.running,
        waiting: s.waiting,
      });
    };
    const timer = setInterval(sample, job.sampleMs);
    const t0 = now() + 20;
    const [requests, cpu] = await withCpu(job.threads, () =>
      Promise.all(
        w.requests.map(async (r) => {
          const arrival = t0 + r.arrivalMs;
          await sleep(Math.max(0, arrival - now()));
          const submitted = now();
          const { times, timings } = await llmserveStream(model, [...w.system, ...r.user], r.outLen);
          return { i: r.i, arrival, submitted, times, reusedTokens: timings?.reusedTokens, queueMs: timings?.queueMs };
        }),
      ),
    );
    clearInterval(timer);
    sample();
    const d = statsDelta(s0, model.stats());
    return {
      loadMs,
      t0,
      requests,
      cpu,
      stats: d,
      statsEnd: model.stats(),
      samples,
      details: {
        ...pick(model.info, [
          "kernels",
          "threads",
          "contextSize",
          "kvCacheTokens",
          "kvBlockSize",
          "maxBatchTokens",
          "prefillChunk",
          "maxSequences",
          "repackedBytes",
        ]),
        batching: job.batching,
        fixedBucket: job.batching === "fixed" ? (job.fixedBucket ?? 0) : undefined,
        prefixCache: true,
      },
    };
  } finally {
    await model.dispose();
  }
}

// ---------------------------------------------------------------- node-llama-cpp

async function llamaLoad(job) {
  const { getLlama } = await importLlamaCpp();
  const llama = await getLlama({ gpu: false, build: "never", maxThreads: job.threads, logLevel: "error" });
  const t0 = now();
  const model = await llama.loadModel({ modelPath: job.modelPath, gpuLayers: 0 });
  return { llama, model, loadMs: now() - t0 };
}

async function llamaContext(job, model, perSeq, sequences) {
  return model.createContext({
    contextSize: perSeq,
    batchSize: job.maxBatchTokens,
    sequences,
    threads: { ideal: job.threads, min: job.threads },
  });
}

function llamaDetails(llama, context) {
  return {
    llamaCpp: `${llama.llamaCppRelease.repo}@${llama.llamaCppRelease.release}`,
    buildType: llama.buildType,
    threads: context.idealThreads,
    contextSizePerSequence: context.contextSize,
    sequences: context.totalSequences,
    batchSize: context.batchSize,
    flashAttention: context.flashAttention,
    batching: "default (dispatchSchedule nextCycle, itemPrioritizationStrategy maximumParallelism)",
    systemInfo: llama.systemInfo,
    cpuVariant: llamaCppCpuVariant(),
  };
}

const GREEDY = { temperature: 0, yieldEogToken: true };

/** One node-llama-cpp stream on `seq` (tokens appended to its state): token arrival times. */
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

async function llamaWarm(job, model) {
  const ctx = await llamaContext(job, model, 256, 1);
  const seq = ctx.getSequence();
  await llamaStream(seq, tokenIds(32, job.vocab, job.seed + 999_999), 2);
  await ctx.dispose();
}

async function llamaDecode(job) {
  const { llama, model, loadMs } = await llamaLoad(job);
  try {
    await llamaWarm(job, model);
    const perSeq = job.decodePrompt + job.tg + 16;
    const levels = [];
    let details;
    for (const level of job.levels) {
      const context = await llamaContext(job, model, perSeq, level.n);
      details = llamaDetails(llama, context);
      try {
        const seqs = level.prompts.map(() => context.getSequence());
        const submitted = now();
        const [streams, cpu] = await withCpu(job.threads, () =>
          Promise.all(level.prompts.map((p, j) => llamaStream(seqs[j], p, job.tg))),
        );
        levels.push({ n: level.n, submitted, streams, cpu, contextSizePerSequence: context.contextSize });
      } finally {
        await context.dispose();
      }
    }
    return { loadMs, details, levels };
  } finally {
    await model.dispose();
    await llama.dispose();
  }
}

async function llamaServe(job) {
  const w = job.workload;
  const { llama, model, loadMs } = await llamaLoad(job);
  try {
    await llamaWarm(job, model);
    // "As many sequences as fit": every node-llama-cpp sequence reserves contextPerSeq KV cells,
    // so the same KV budget as llmserve's kvCacheTokens holds floor(budget / contextPerSeq) of them.
    const slots = Math.max(1, Math.min(w.requests.length, Math.floor(job.kvTokens / w.contextPerSeq)));
    const context = await llamaContext(job, model, w.contextPerSeq, slots);
    const details = {
      ...llamaDetails(llama, context),
      slotPromptReuse: "per-sequence common prefix kept (llama-server style)",
    };
    try {
      const seqs = Array.from({ length: slots }, () => context.getSequence());
      const busy = new Array(slots).fill(false);
      const samples = [];
      const sample = () => {
        let held = 0;
        for (const s of seqs) held += s.nextTokenIndex;
        const allocated = slots * context.contextSize;
        samples.push({
          t: now(),
          kvWaste: 1 - held / allocated,
          held,
          allocated,
          busy: busy.filter(Boolean).length,
          waiting: queue.length,
        });
      };
      // FCFS queue of arrived requests; slot workers take from its head.
      const queue = [];
      const waiters = [];
      let arrivedAll = false;
      const take = () =>
        queue.length
          ? Promise.resolve(queue.shift())
          : arrivedAll
            ? Promise.resolve(null)
            : new Promise((r) => waiters.push(r));
      const t0 = now() + 20;
      const results = [];
      const worker = async (k) => {
        const seq = seqs[k];
        for (;;) {
          const r = await take();
          if (!r) return;
          busy[k] = true;
          const started = now();
          const full = [...w.system, ...r.user];
          // Keep the longest common prefix already in this sequence (the system prompt after its first request).
          let keep = Math.min(seq.compareContextTokens(full).firstDifferentIndex, full.length - 1);
          if (keep < seq.nextTokenIndex) await seq.eraseContextTokenRanges([{ start: keep, end: seq.nextTokenIndex }]);
          keep = seq.nextTokenIndex;
          const times = await llamaStream(seq, full.slice(keep), r.outLen);
          results.push({
            i: r.i,
            arrival: r.arrival,
            submitted: r.submitted,
            started,
            times,
            reusedTokens: keep,
            slot: k,
          });
          busy[k] = false;
        }
      };
      const timer = setInterval(sample, job.sampleMs);
      const [, cpu] = await withCpu(job.threads, async () => {
        const workers = seqs.map((_, k) => worker(k));
        for (const r of w.requests) {
          const arrival = t0 + r.arrivalMs;
          await sleep(Math.max(0, arrival - now()));
          const item = { ...r, arrival, submitted: now() };
          if (waiters.length) waiters.shift()(item);
          else queue.push(item);
        }
        arrivedAll = true;
        for (const wake of waiters.splice(0)) wake(null);
        await Promise.all(workers);
      });
      clearInterval(timer);
      sample();
      results.sort((a, b) => a.i - b.i);
      return { loadMs, t0, requests: results, cpu, samples, slots, details };
    } finally {
      await context.dispose();
    }
  } finally {
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
  const fn = {
    "decode:llmserve": llmserveDecode,
    "decode:llamacpp": llamaDecode,
    "serve:llmserve": llmserveServe,
    "serve:llamacpp": llamaServe,
  }[`${job.task}:${job.engine}`];
  if (!fn) throw new Error(`unknown job ${job.task}:${job.engine}`);
  return fn(job);
});
