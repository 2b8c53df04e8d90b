/**
 * finetune(): LoRA fine-tuning on the CPU. The data is read and tokenized here (lib/train/data.ts);
 * the training loop runs on a native worker thread (native/core/train), never on the event loop,
 * and writes the adapter as a GGUF LoRA file that Model.loadAdapter and llama.cpp load.
 */
import { ChatTemplate } from "../chat/index.js";
import { TRAIN_DEFAULTS as D } from "../defaults.js";
import { fromNative, LlmserveError } from "../errors.js";
import { loadAddon } from "../binding.js";
import { LOAD_LIMITS, TRAIN_LIMITS as TL } from "../limits.js";
import { defaultThreads } from "../loadOptions.js";
import type { NativeFinetuneJob, NativeFinetuneOptions, NativeTrainStep } from "../native.js";
import { Tokenizer } from "../tokenizer/index.js";
import { checkBool, checkInt, checkKeys, checkLimit, checkObject, checkPath, checkString } from "../validate.js";
import { loadTrainData, packSequences, shuffledEpochs } from "./data.js";

export { loadTrainData, packSequences, shuffledEpochs, type TrainDataset, type TrainSequence } from "./data.js";

/** The projections of each block a LoRA adapter can train. */
export const TRAIN_TARGETS = ["q", "k", "v", "o", "gate", "up", "down"] as const;
/** The optimizers of {@link finetune}. */
export const TRAIN_OPTIMIZERS = ["adamw", "lars"] as const;

/** Options of {@link finetune} (defaults: lib/defaults.ts TRAIN_DEFAULTS). */
export interface FinetuneOptions {
  /** Base model (GGUF, any weight type llmserve runs: its weights stay frozen). */
  model: string;
  /** Training data: plain text, or JSONL of `{"text"}` / `{"messages"}` records (see lib/train/data.ts). */
  data: string;
  /** Where the adapter GGUF goes (written atomically). */
  output: string;
  /** Held-out data (same formats): its mean loss before and after training is reported. */
  evalData?: string;
  /** LoRA rank (default 8). */
  rank?: number;
  /** LoRA alpha; the adapter's scale is alpha / rank (default 16). */
  alpha?: number;
  /** Projections to adapt (default all seven). */
  targets?: readonly (typeof TRAIN_TARGETS)[number][];
  /** "adamw" (default) or "lars" (per-matrix trust ratio, momentum). */
  optimizer?: (typeof TRAIN_OPTIMIZERS)[number];
  /** Peak learning rate (default 1e-3), reached after the warm-up, then cosine decay to minLr. */
  lr?: number;
  /** Final learning rate (default 0). */
  minLr?: number;
  /** Warm-up steps (default a tenth of the steps). */
  warmup?: number;
  /** Passes over the data (default 1); ignored when `steps` is given. */
  epochs?: number;
  /** Optimizer steps (default: epochs × sequences / batch). */
  steps?: number;
  /** Sequences per step (default 1). */
  batch?: number;
  /** Tokens per training sequence (default 256). */
  ctx?: number;
  /** Largest global gradient norm; 0 turns clipping off (default 1). */
  clip?: number;
  /** Seed of the LoRA init and the data order (default 1): the same seed gives the same adapter bytes. */
  seed?: number;
  /** Decoupled weight decay (AdamW) or LARS's β (default 0). */
  weightDecay?: number;
  /** LARS momentum (default 0.9). */
  momentum?: number;
  /** LARS η (default 1). */
  larsEta?: number;
  /**
   * Knowledge distillation: a teacher GGUF with the model's vocabulary (e.g. the f32 original of a
   * quantized or pruned model). Each step then minimises
   * (1 − distill)·CE + distill·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) per labelled token,
   * the teacher run by the inference forward on the same sequences. With evalData the done event
   * also reports the held-out KL(teacher ‖ student) before and after.
   */
  teacher?: string;
  /** The KL term's share α in [0, 1] (default 0.5; only with a teacher; 0 = plain CE, the teacher only measures). */
  distill?: number;
  /** Distillation temperature T > 0 (default 2). */
  temperature?: number;
  /**
   * Adaptive rank (AdaLoRA-style): each matrix trains as P·diag(λ)·Q with an orthogonality penalty,
   * and the least important components are pruned on a cubic schedule until the adapter keeps
   * `targetRank` components per matrix on average (ranks then differ per matrix). Needs targetRank.
   * The adapter is a plain GGUF LoRA with per-matrix ranks; the done event lists them.
   */
  adaptiveRank?: boolean;
  /** Average rank per matrix at the end of adaptive-rank training, in [1, rank] (only with adaptiveRank). */
  targetRank?: number;
  /**
   * Activation memory (MiB) above which a sequence trains with per-layer recomputation: only each
   * layer's input is kept and a layer's forward runs again before its backward (one more forward
   * pass of time, the same gradients and adapter bytes). Default 1024; 0 recomputes always.
   */
  recomputeMb?: number;
  /** Threads of the training loop (default: physical cores). The adapter does not depend on it. */
  threads?: number;
  /** Aborting stops training: the iterator throws ERR_CANCELLED and no adapter is written. */
  signal?: AbortSignal;
}

/** One optimizer step. */
export interface FinetuneStep {
  /** "step". */
  type: "step";
  /** 1-based step. */
  step: number;
  /** Steps in the run. */
  steps: number;
  /** Mean cross-entropy (nats per token) over the step's labelled tokens. */
  loss: number;
  /** Learning rate of the step. */
  lr: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Tokens the step ran. */
  tokens: number;
  /** With a teacher and distill > 0: the mean cross-entropy part of `loss`; absent otherwise. */
  ce?: number;
  /** With a teacher and distill > 0: the mean KL(teacher_T ‖ student_T) part of `loss`; absent otherwise. */
  kl?: number;
  /** With adaptiveRank: the components (singular values) all matrices keep after the step; absent otherwise. */
  keptRank?: number;
  /** With adaptiveRank: the orthogonality penalty γ·mean(‖PᵀP − I‖² + ‖QQᵀ − I‖²) before the step; absent otherwise. */
  orthPenalty?: number;
  /** Sequences of the step whose kept activations passed `recomputeMb` (trained with per-layer recomputation). */
  recomputed: number;
  /** Tokens per second of the step's wall time. */
  tokensPerSecond: number;
  /** Seconds left at the mean step time so far. */
  etaSeconds: number;
}

/** The last event of a run. */
export interface FinetuneDone {
  /** "done". */
  type: "done";
  /** The adapter written. */
  output: string;
  /** Mean held-out loss (nats per labelled token) of the base model; NaN without evalData. */
  evalLossBefore: number;
  /** The same with the trained adapter; NaN without evalData. */
  evalLossAfter: number;
  /** Mean held-out KL(teacher ‖ student) at temperature 1 (nats per labelled token) without the adapter; NaN without teacher and evalData. */
  evalKlBefore: number;
  /** The same with the trained adapter. */
  evalKlAfter: number;
  /** With adaptiveRank: each adapted tensor's base name (e.g. "blk.0.attn_q.weight") to its final rank (0: left out of the file). */
  ranks?: Record<string, number>;
  /** Steps run. */
  steps: number;
  /** Wall time of the training (data preparation excluded). */
  seconds: number;
}

/** What {@link finetune} yields. */
export type FinetuneEvent = FinetuneStep | FinetuneDone;

const KEYS = [
  "model",
  "data",
  "output",
  "evalData",
  "rank",
  "alpha",
  "targets",
  "optimizer",
  "lr",
  "minLr",
  "warmup",
  "epochs",
  "steps",
  "batch",
  "ctx",
  "clip",
  "seed",
  "weightDecay",
  "momentum",
  "larsEta",
  "teacher",
  "distill",
  "temperature",
  "adaptiveRank",
  "targetRank",
  "recomputeMb",
  "threads",
  "signal",
];

/**
 * Trains a LoRA adapter of `options.model` and writes it to `options.output`. Returns an async
 * iterator of {@link FinetuneEvent}s (one per step, then "done") whose return value is the adapter
 * path. Breaking out of the loop cancels training.
 * @example
 * for await (const e of finetune({ model: "base.gguf", data: "train.txt", output: "lora.gguf", steps: 100 }))
 *   if (e.type === "step") console.log(e.step, e.loss);
 */
export async function* finetune(options: FinetuneOptions): AsyncGenerator<FinetuneEvent, string, undefined> {
  const o = checkObject("finetune options", options) as Partial<FinetuneOptions> & Record<string, unknown>;
  checkKeys("finetune options", o, KEYS);
  const model = checkPath("model", o.model);
  const data = checkPath("data", o.data);
  const output = checkPath("output", o.output);
  const evalPath = o.evalData === undefined ? undefined : checkPath("evalData", o.evalData);
  const num = (k: keyof typeof TL, d: number) => (o[k] === undefined ? d : checkLimit(k, o[k], TL[k]));
  const targets = o.targets ?? D.targets;
  if (!Array.isArray(targets) || targets.length === 0)
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `Expected a non-empty array of ${TRAIN_TARGETS.join(", ")} for targets`,
    );
  for (const t of targets) checkString("targets[]", t, TRAIN_TARGETS);
  const optimizer = checkString("optimizer", o.optimizer ?? D.optimizer, TRAIN_OPTIMIZERS) as "adamw" | "lars";
  const ctx = o.ctx === undefined ? D.ctx : checkInt("ctx", o.ctx, 2, 1 << 20);
  const epochs = o.epochs === undefined ? D.epochs : checkInt("epochs", o.epochs, 1, 1 << 20);
  const batch = num("batch", D.batch);
  const seed = num("seed", D.seed);
  const threads = o.threads === undefined ? defaultThreads() : checkLimit("threads", o.threads, LOAD_LIMITS.threads);
  const signal = o.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal))
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected an AbortSignal for signal");
  if (signal?.aborted) throw new LlmserveError("ERR_CANCELLED", "finetune was aborted before it started.");

  const teacher = o.teacher === undefined ? null : checkPath("teacher", o.teacher);
  if (teacher === null && (o.distill !== undefined || o.temperature !== undefined))
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      "distill and temperature need a teacher model: pass teacher (--teacher) with the model the student was made from.",
    );
  const rank = num("rank", D.rank);
  const adaptiveRank = o.adaptiveRank === undefined ? false : checkBool("adaptiveRank", o.adaptiveRank);
  const targetRank = o.targetRank === undefined ? undefined : checkLimit("targetRank", o.targetRank, TL.targetRank);
  if (adaptiveRank && targetRank === undefined)
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      "adaptiveRank needs targetRank (--target-rank R): the average rank per matrix the adapter keeps at the end.",
    );
  if (!adaptiveRank && targetRank !== undefined)
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      "targetRank is only used with adaptiveRank (--adaptive-rank); drop it, or turn adaptive rank on.",
    );
  if (targetRank !== undefined && targetRank > rank)
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `targetRank (${targetRank}) must be at most rank (${rank}): adaptive rank starts at rank and prunes down to targetRank.`,
    );
  const tok = await Tokenizer.fromGguf(model);
  if (teacher !== null) checkSameVocabulary(tok, await Tokenizer.fromGguf(teacher));
  const chat = () => ChatTemplate.fromModel({ path: model, tokenizer: tok });
  const train = await loadTrainData(data, ctx, tok, chat);
  const held = evalPath === undefined ? undefined : await loadTrainData(evalPath, ctx, tok, chat);
  const n = train.sequences.length;
  const steps = o.steps === undefined ? Math.ceil((epochs * n) / batch) : checkLimit("steps", o.steps, TL.steps);
  const passes = Math.max(1, Math.ceil((steps * batch) / n));
  const opts: NativeFinetuneOptions = {
    rank,
    alpha: num("alpha", D.alpha),
    lr: num("lr", D.lr),
    minLr: num("minLr", D.minLr),
    warmup: num("warmup", Math.floor(steps * D.warmupShare)),
    batch,
    steps,
    clip: num("clip", D.clip),
    seed,
    weightDecay: num("weightDecay", D.weightDecay),
    momentum: num("momentum", D.momentum),
    larsEta: num("larsEta", D.larsEta),
    optimizer,
    threads,
    targets: [...targets],
    teacher,
    distill: teacher === null ? 0 : num("distill", D.distill),
    temperature: num("temperature", D.temperature),
    adaptiveRank,
    targetRank: targetRank ?? 0,
    recomputeMb: num("recomputeMb", D.recomputeMb),
  };
  const packed = packSequences(shuffledEpochs(train.sequences, passes, seed));
  const evalPacked = held ? packSequences(held.sequences) : null;

  const queue: FinetuneStep[] = [];
  let wake: (() => void) | undefined;
  type Result = Awaited<NativeFinetuneJob["promise"]>;
  type Outcome = { ok: true; value: Result } | { ok: false; err: unknown };
  let outcome = { ok: false, err: new LlmserveError("ERR_INTERNAL", "finetune ended without a result") } as Outcome;
  let settled = false;
  let stepSeconds = 0;
  const t0 = performance.now();
  const onStep = (e: NativeTrainStep) => {
    stepSeconds += e.seconds;
    queue.push({
      type: "step",
      step: e.step,
      steps: e.steps,
      loss: e.loss,
      lr: e.lr,
      gradNorm: e.gradNorm,
      ...(opts.distill > 0 ? { ce: e.ce, kl: e.kl } : {}),
      ...(adaptiveRank ? { keptRank: e.keptRank, orthPenalty: e.orth } : {}),
      tokens: e.tokens,
      recomputed: e.recomputed,
      tokensPerSecond: e.seconds > 0 ? e.tokens / e.seconds : 0,
      etaSeconds: ((e.steps - e.step) * stepSeconds) / e.step,
    });
    wake?.();
  };
  const job = loadAddon().finetune(model, packed, evalPacked, output, opts, onStep);
  job.promise.then(
    (value) => {
      outcome = { ok: true, value };
      settled = true;
      wake?.();
    },
    (err) => {
      outcome = { ok: false, err };
      settled = true;
      wake?.();
    },
  );
  const onAbort = () => job.cancel();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      const next = queue.shift();
      if (next) {
        yield next;
        continue;
      }
      if (settled) break;
      await new Promise<void>((r) => {
        wake = r;
      });
      wake = undefined;
    }
    const r = outcome;
    if (!r.ok) throw fromNative(r.err);
    yield {
      type: "done",
      output,
      evalLossBefore: r.value.evalLossBefore,
      evalLossAfter: r.value.evalLossAfter,
      evalKlBefore: r.value.evalKlBefore,
      evalKlAfter: r.value.evalKlAfter,
      ...(r.value.ranks ? { ranks: r.value.ranks } : {}),
      steps,
      seconds: (performance.now() - t0) / 1000,
    };
    return output;
  } finally {
    signal?.removeEventListener("abort", onAbort);
    if (!settled) job.cancel(); // the consumer stopped early
  }
}

/** Distillation compares distributions over the same tokens: the teacher's vocabulary must be the model's. */
function checkSameVocabulary(student: Tokenizer, teacher: Tokenizer): void {
  let diff = student.nVocab === teacher.nVocab ? -1 : Math.min(student.nVocab, teacher.nVocab);
  for (let id = 0; diff < 0 && id < student.nVocab; id++)
    if (student.tokenText(id) !== teacher.tokenText(id)) diff = id;
  if (diff >= 0)
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `The teacher's vocabulary differs from the model's (${teacher.nVocab} vs ${student.nVocab} tokens, first difference at id ${diff}); distillation needs the same vocabulary: use the model the student was made from as the teacher.`,
    );
}
