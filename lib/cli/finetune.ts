/**
 * `llmserve finetune -m base.gguf --data train.txt -o adapter.gguf`: trains a LoRA adapter on the
 * CPU (lib/train), with a progress bar showing loss, tokens/s and ETA (plain lines when stderr is
 * not a terminal; none with -q), or one JSON line per step with --json.
 */
import { basename } from "node:path";
import type { Command } from "commander";
import { TRAIN_DEFAULTS as D } from "../defaults.js";
import { ProgressTracker } from "../progress.js";
import { type FinetuneOptions, finetune, TRAIN_OPTIMIZERS, TRAIN_TARGETS } from "../train/index.js";
import { float, int, localModel, MODEL_HELP, progressReporter } from "./common.js";

interface FinetuneCliOpts {
  model: string;
  data: string;
  output: string;
  evalData?: string;
  rank?: number;
  alpha?: number;
  targets?: string;
  optimizer?: string;
  lr?: number;
  minLr?: number;
  warmup?: number;
  epochs?: number;
  steps?: number;
  batch?: number;
  ctx?: number;
  clip?: number;
  seed?: number;
  weightDecay?: number;
  teacher?: string;
  distill?: number;
  temperature?: number;
  adaptiveRank?: boolean;
  targetRank?: number;
  recomputeMb?: number;
  threads?: number;
  json?: boolean;
}

async function runFinetune(o: FinetuneCliOpts): Promise<void> {
  const model = await localModel(o.model);
  const rep = progressReporter();
  const ac = new AbortController();
  const onSigint = () => ac.abort();
  process.once("SIGINT", onSigint);
  let tracker: ProgressTracker | undefined;
  let detail = "";
  try {
    const run = finetune({
      model,
      data: o.data,
      output: o.output,
      evalData: o.evalData,
      rank: o.rank,
      alpha: o.alpha,
      targets: o.targets?.split(",").map((t) => t.trim()) as FinetuneOptions["targets"],
      optimizer: o.optimizer as FinetuneOptions["optimizer"],
      lr: o.lr,
      minLr: o.minLr,
      warmup: o.warmup,
      epochs: o.epochs,
      steps: o.steps,
      batch: o.batch,
      ctx: o.ctx,
      clip: o.clip,
      seed: o.seed,
      weightDecay: o.weightDecay,
      teacher: o.teacher === undefined ? undefined : await localModel(o.teacher),
      distill: o.distill,
      temperature: o.temperature,
      adaptiveRank: o.adaptiveRank,
      targetRank: o.targetRank,
      recomputeMb: o.recomputeMb,
      threads: o.threads,
      signal: ac.signal,
    });
    for await (const e of run) {
      if (o.json) {
        process.stdout.write(`${JSON.stringify(e)}\n`);
        continue;
      }
      if (e.type === "step") {
        const parts = e.kl === undefined ? "" : ` (ce ${e.ce?.toFixed(4)} kl ${e.kl.toFixed(4)})`;
        const kept = e.keptRank === undefined ? "" : ` rank ${e.keptRank}`;
        detail = `loss ${e.loss.toFixed(4)}${parts}${kept} ${Math.round(e.tokensPerSecond)} tok/s`;
        tracker ??= new ProgressTracker("finetune", basename(o.output), 1, "fraction", (ev) =>
          rep.report({ ...ev, detail }),
        );
        tracker.update(e.step / e.steps);
        continue;
      }
      tracker?.finish();
      rep.stop();
      const held = Number.isNaN(e.evalLossBefore)
        ? ""
        : `; held-out loss ${e.evalLossBefore.toFixed(4)} -> ${e.evalLossAfter.toFixed(4)}`;
      const kl = Number.isNaN(e.evalKlBefore)
        ? ""
        : `; held-out KL to the teacher ${e.evalKlBefore.toFixed(4)} -> ${e.evalKlAfter.toFixed(4)}`;
      process.stdout.write(`wrote ${e.output}: ${e.steps} steps in ${e.seconds.toFixed(1)} s${held}${kl}\n`);
      if (e.ranks) process.stdout.write(`${rankSummary(e.ranks)}\n`);
    }
  } finally {
    rep.stop();
    process.off("SIGINT", onSigint);
  }
}

/** "ranks: blk.0.attn_q 3, blk.0.attn_k 5, ..." with the total: adaptive rank's per-matrix result. */
function rankSummary(ranks: Record<string, number>): string {
  const parts = Object.entries(ranks).map(([name, r]) => `${name.replace(/\.weight$/, "")} ${r}`);
  const total = Object.values(ranks).reduce((a, b) => a + b, 0);
  return `ranks (${total} in all): ${parts.join(", ")}`;
}

/** Adds `llmserve finetune` to the program. */
export function registerFinetune(program: Command): void {
  program
    .command("finetune")
    .description("train a LoRA adapter on the CPU (frozen base of any weight type); writes a GGUF LoRA llama.cpp loads")
    .requiredOption("-m, --model <model>", MODEL_HELP)
    .requiredOption("--data <file>", 'training data: plain text, or .jsonl of {"text"} / {"messages"} records')
    .requiredOption("-o, --output <file>", "adapter .gguf path (written atomically)")
    .option("--eval-data <file>", "held-out data: mean loss before and after training is printed")
    .option("--rank <n>", `LoRA rank (default ${D.rank})`, int("--rank"))
    .option("--alpha <x>", `LoRA alpha, scale = alpha / rank (default ${D.alpha})`, float("--alpha"))
    .option("--targets <list>", `comma-separated projections: ${TRAIN_TARGETS.join(",")} (default all)`)
    .option("--optimizer <name>", `${TRAIN_OPTIMIZERS.join(" or ")} (default ${D.optimizer})`)
    .option("--lr <x>", `peak learning rate (default ${D.lr})`, float("--lr"))
    .option("--min-lr <x>", `final learning rate of the cosine decay (default ${D.minLr})`, float("--min-lr"))
    .option("--warmup <n>", "warm-up steps (default a tenth of the steps)", int("--warmup"))
    .option("--epochs <n>", `passes over the data (default ${D.epochs})`, int("--epochs"))
    .option("--steps <n>", "optimizer steps (instead of --epochs)", int("--steps"))
    .option("--batch <n>", `sequences per step (default ${D.batch})`, int("--batch"))
    .option("--ctx <n>", `tokens per training sequence (default ${D.ctx})`, int("--ctx"))
    .option("--clip <x>", `max gradient norm, 0 = none (default ${D.clip})`, float("--clip"))
    .option("--seed <n>", `LoRA init and data order (default ${D.seed})`, int("--seed"))
    .option(
      "--weight-decay <x>",
      `AdamW decoupled weight decay / LARS beta (default ${D.weightDecay})`,
      float("--weight-decay"),
    )
    .option("--teacher <model>", "distill from this teacher (same vocabulary, e.g. the original of a compressed model)")
    .option(
      "--distill <a>",
      `KL share: loss = (1-a)*CE + a*T^2*KL(teacher_T || student_T) (default ${D.distill}; needs --teacher)`,
      float("--distill"),
    )
    .option("--temperature <T>", `distillation temperature (default ${D.temperature})`, float("--temperature"))
    .option(
      "--adaptive-rank",
      "AdaLoRA-style: train P*diag(s)*Q per matrix and prune the least important components to --target-rank",
    )
    .option(
      "--target-rank <n>",
      "average rank per matrix at the end of --adaptive-rank (at most --rank)",
      int("--target-rank"),
    )
    .option(
      "--recompute-mb <n>",
      `activation memory (MiB) above which a sequence recomputes each layer's forward in the backward (default ${D.recomputeMb}; 0: always; same adapter)`,
      int("--recompute-mb"),
    )
    .option("-t, --threads <n>", "threads (default: physical cores)", int("--threads"))
    .option("--json", "print one JSON object per step (and a last 'done' one) instead of a progress bar")
    .action(runFinetune);
}
