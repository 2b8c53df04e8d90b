/**
 * `llmserve eval`: perplexity of a model over a text file and, with --reference, the KL divergence,
 * top-1 agreement and perplexity ratio against a reference model: the numbers of llama.cpp's
 * `llama-perplexity` and `llama-perplexity --kl-divergence`, in one run.
 */
import type { Command } from "commander";
import cliProgress from "cli-progress";
import { stat } from "node:fs/promises";
import { EVAL_DEFAULTS as E } from "../defaults.js";
import { LlmserveError } from "../errors.js";
import { evaluatePerplexity, type EvalProgress, type PerplexityResult } from "../eval.js";
import { EVAL_LIMITS } from "../limits.js";
import type { Model } from "../model.js";
import { checkLimit } from "../validate.js";
import { int, loadModel, MODEL_HELP } from "./common.js";

interface EvalCliOpts {
  model: string;
  text: string;
  ctx: number;
  batch: number;
  chunks?: number;
  reference?: string;
  threads?: number;
  json?: boolean;
}

async function load(path: string, ctx: number, threads: number | undefined): Promise<Model> {
  // The serving context only needs one chunk; evaluations use the model's own eval cache of it.
  const model = await loadModel(path, { threads, contextSize: ctx });
  const train = model.info.nCtxTrain;
  if (train > 0 && ctx > train) {
    await model.dispose();
    throw new LlmserveError(
      "ERR_CONTEXT_OVERFLOW",
      `--ctx ${ctx} is larger than the context ${path} was trained with (${train} tokens): a perplexity there measures extrapolation, not the model. Use --ctx ${train} or less.`,
    );
  }
  return model;
}

/** Progress on stderr: a bar on a terminal, else one line per chunk (as llama-perplexity prints). */
function progressReporter(): { report: (p: EvalProgress) => void; stop: () => void } {
  if (process.stderr.isTTY) {
    let bar: cliProgress.SingleBar | undefined;
    return {
      report: (p) => {
        if (p.phase === "tokenize") return;
        if (!bar) {
          bar = new cliProgress.SingleBar(
            {
              format: "eval [{bar}] {value}/{total} chunks | PPL {ppl} | {tps} tok/s | ETA {etaText}",
              stream: process.stderr,
              hideCursor: true,
              clearOnComplete: true,
            },
            cliProgress.Presets.shades_classic,
          );
          bar.start(p.chunks, 0, { ppl: "-", tps: "-", etaText: "-" });
        }
        bar.update(p.chunksDone, {
          ppl: p.ppl?.toFixed(4) ?? "-",
          tps: p.tokensPerSecond.toFixed(0),
          etaText: `${Math.round(p.etaSeconds)}s`,
        });
      },
      stop: () => bar?.stop(),
    };
  }
  return {
    report: (p) => {
      if (p.phase === "tokenize") return;
      const kl = p.kl === undefined ? "" : `  KL ${p.kl.toFixed(6)}  top-1 ${(100 * (p.top1 ?? 0)).toFixed(2)}%`;
      process.stderr.write(
        `[${p.chunksDone}/${p.chunks}] PPL ${p.ppl?.toFixed(4)} +/- ${p.pplError?.toFixed(4)}${kl}  ` +
          `${p.tokensPerSecond.toFixed(1)} tok/s  ETA ${Math.round(p.etaSeconds)}s\n`,
      );
    },
    stop: () => {},
  };
}

const f = (v: number, d: number) => v.toFixed(d);

function printText(o: EvalCliOpts, r: PerplexityResult): void {
  const lines: [string, string][] = [
    ["model", o.model],
    [
      "text",
      `${o.text}: ${r.textTokens} tokens, ${r.chunks} chunks of ${r.ctx} (${r.scoredTokens} tokens scored, the second half of each)`,
    ],
    ["PPL", `${f(r.ppl, 4)} +/- ${f(r.pplError, 5)}`],
  ];
  const c = r.reference;
  if (c && o.reference) {
    lines.push(
      ["reference", o.reference],
      ["PPL(ref)", `${f(c.ppl, 4)} +/- ${f(c.pplError, 5)}`],
      ["Δppl", `${f(c.deltaPpl, 6)} ± ${f(c.deltaPplError, 6)}`],
      [
        "PPL ratio",
        `${f(c.pplRatio, 6)} ± ${f(c.pplRatioError, 6)}  (ln ${f(c.logPplRatio, 6)} ± ${f(c.logPplRatioError, 6)})`,
      ],
      [
        "KL divergence",
        `mean ${f(c.kl.mean, 6)} ± ${f(c.kl.meanError, 6)}  median ${f(c.kl.median, 6)}  p99 ${f(c.kl.p99, 6)}  p99.9 ${f(c.kl.p99_9, 6)}  max ${f(c.kl.max, 6)}`,
      ],
      ["top-1 agree", `${f(100 * c.top1, 3)} ± ${f(100 * c.top1Error, 3)} %  (same top token)`],
      ["RMS Δp", `${f(100 * c.deltaP.rms, 3)} ± ${f(100 * c.deltaP.rmsError, 3)} %`],
    );
  }
  lines.push(["time", `${f(r.seconds, 1)} s (${f(r.tokensPerSecond, 1)} tokens/s)`]);
  for (const [k, v] of lines) process.stdout.write(`${k.padEnd(14)} ${v}\n`);
}

async function runEval(o: EvalCliOpts): Promise<void> {
  // Everything checkable is checked before any model is loaded.
  checkLimit("--ctx", o.ctx, EVAL_LIMITS.ctx);
  checkLimit("--batch", o.batch, EVAL_LIMITS.batch);
  if (o.chunks !== undefined) checkLimit("--chunks", o.chunks, EVAL_LIMITS.chunks);
  try {
    if (!(await stat(o.text)).isFile()) throw new LlmserveError("ERR_IO", `The text file ${o.text} is not a file.`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException)?.code === "ENOENT")
      throw new LlmserveError("ERR_FILE_NOT_FOUND", `The text file ${o.text} does not exist; pass --text FILE.`);
    throw err;
  }
  const model = await load(o.model, o.ctx, o.threads);
  let reference: Model | undefined;
  const ac = new AbortController();
  const onSigint = () => ac.abort();
  const progress = progressReporter();
  try {
    if (o.reference) reference = await load(o.reference, o.ctx, o.threads);
    process.once("SIGINT", onSigint);
    const r = await evaluatePerplexity(
      model,
      { file: o.text },
      { ctx: o.ctx, batch: o.batch, chunks: o.chunks, reference, signal: ac.signal, onProgress: progress.report },
    );
    progress.stop();
    if (o.json) {
      const out = { model: o.model, text: o.text, ...(o.reference ? { referenceModel: o.reference } : {}), ...r };
      process.stdout.write(`${JSON.stringify(out)}\n`);
    } else printText(o, r);
  } finally {
    progress.stop();
    process.off("SIGINT", onSigint);
    await reference?.dispose();
    await model.dispose();
  }
}

/** Adds `llmserve eval` to the program. */
export function registerEval(program: Command): void {
  program
    .command("eval")
    .description(
      "perplexity over a text file (as llama-perplexity), and with --reference the KL divergence, top-1 agreement and PPL ratio against it",
    )
    .requiredOption("-m, --model <model>", MODEL_HELP)
    .requiredOption("-f, --text <path>", "UTF-8 text file (any size: read and tokenized in parts)")
    .option("-c, --ctx <n>", "tokens per chunk; the second half of each chunk is scored", int("--ctx"), E.ctx)
    .option("-b, --batch <n>", "most tokens per forward pass (memory/speed only)", int("--batch"), E.batch)
    .option("--chunks <n>", "evaluate at most this many chunks (default: all)", int("--chunks"))
    .option(
      "--reference <model>",
      "reference GGUF model with the same vocabulary (e.g. the f16 original); a file, hf: or https:",
    )
    .option("-t, --threads <n>", "compute threads per model (default: physical cores)", int("--threads"))
    .option("--json", "print one JSON object (progress stays on stderr)")
    .action(runEval);
}
