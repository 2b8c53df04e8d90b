/**
 * `llmserve compress IN OUT --prune 0.5|2:4 [--method magnitude|wanda] [--calib text.txt]`: prunes
 * a model's layer matrices; `--lowrank rank=R|energy=E [--sparse F] [--calib text.txt]` factors them
 * (W ≈ U·V (+ S)) instead. With a progress bar (plain lines when stderr is not a terminal).
 */
import type { Command } from "commander";
import { type CompressOptions, type CompressResult, compress, type LowRankSpec, PRUNE_METHODS } from "../compress.js";
import { COMPRESS_DEFAULTS } from "../defaults.js";
import { LlmserveError } from "../errors.js";
import { formatBytes } from "../progress.js";
import { int, localModel, MODEL_HELP, progressReporter } from "./common.js";

interface CompressCliOpts {
  prune?: string;
  lowrank?: string;
  sparse?: string;
  method?: string;
  format?: string;
  values?: string;
  calib?: string;
  calibCtx?: number;
  tensors?: string;
  threads?: number;
  json?: boolean;
}

/** "2:4" or a ratio in (0, 1) ("0.5", "50%"). */
function parsePrune(v: string): number | "2:4" {
  if (v === "2:4") return "2:4";
  const ratio = v.endsWith("%") ? Number(v.slice(0, -1)) / 100 : Number(v);
  if (v.trim() === "" || !Number.isFinite(ratio) || ratio <= 0 || ratio >= 1)
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `--prune takes a ratio in (0, 1) such as 0.5 or 50%, or 2:4; got '${v}'`,
    );
  return ratio;
}

/** "rank=128" or "energy=0.95". */
function parseLowRank(v: string): LowRankSpec {
  const m = /^(rank|energy)=(.+)$/.exec(v.trim());
  const x = m ? Number(m[2]) : Number.NaN;
  if (m?.[1] === "rank" && Number.isInteger(x) && x >= 1) return { rank: x };
  if (m?.[1] === "energy" && x > 0 && x <= 1) return { energy: x };
  throw new LlmserveError(
    "ERR_INVALID_ARGUMENT",
    `--lowrank takes rank=R (an integer >= 1) or energy=E (in (0, 1], e.g. 0.95); got '${v}'`,
  );
}

function parseSparse(v: string): number {
  const x = v.endsWith("%") ? Number(v.slice(0, -1)) / 100 : Number(v);
  if (v.trim() === "" || !(x >= 0 && x < 1))
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `--sparse takes a fraction in [0, 1) such as 0.02 or 2%; got '${v}'`,
    );
  return x;
}

function lowRankSummary(r: CompressResult, output: string, seconds: number): string {
  const f = r.factored ?? [];
  const done = f.filter((t) => t.factored);
  const ranks = done.map((t) => t.rank);
  const lines = f.map(
    (t) =>
      `  ${t.name.padEnd(28)} ${t.factored ? `rank ${String(t.rank).padStart(4)}${t.nnz ? ` + ${t.nnz} sparse` : ""}, rel. error ${t.relError.toFixed(4)}, energy ${t.energy.toFixed(4)}` : "dense (no saving)"}  ${formatBytes(t.denseBytes)} -> ${formatBytes(t.bytes)}`,
  );
  return (
    `${lines.join("\n")}\n` +
    `wrote ${output}: factored ${done.length} of ${f.length} matrices (rank ${Math.min(...ranks)}..${Math.max(...ranks)}` +
    `${r.calibTokens > 0 ? `, activation-aware over ${r.calibTokens} calibration tokens` : ""}),` +
    ` ${formatBytes(r.inputBytes)} -> ${formatBytes(r.outputBytes)} in ${seconds.toFixed(1)} s\n`
  );
}

async function runCompress(input: string, output: string, o: CompressCliOpts): Promise<void> {
  if ((o.prune === undefined) === (o.lowrank === undefined))
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "give either --prune or --lowrank");
  if (o.sparse !== undefined && o.lowrank === undefined)
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "--sparse (a residual fraction) goes with --lowrank");
  const prune = o.prune === undefined ? undefined : parsePrune(o.prune);
  const lowrank = o.lowrank === undefined ? undefined : parseLowRank(o.lowrank);
  const sparse = o.sparse === undefined ? undefined : parseSparse(o.sparse);
  const path = await localModel(input);
  const rep = progressReporter();
  const ac = new AbortController();
  const onSigint = () => ac.abort();
  process.once("SIGINT", onSigint);
  const t0 = performance.now();
  try {
    const r = await compress(path, output, {
      prune,
      lowrank,
      sparse,
      method: o.method as CompressOptions["method"],
      format: o.format as CompressOptions["format"],
      values: o.values as CompressOptions["values"],
      calib: o.calib,
      calibCtx: o.calibCtx,
      tensors: o.tensors?.split(",").map((s) => s.trim()),
      threads: o.threads,
      signal: ac.signal,
      onProgress: (_f, e) => rep.report(e),
    });
    rep.stop();
    const seconds = (performance.now() - t0) / 1000;
    // On stderr in both modes: whether llama.cpp can load the file is never left unsaid.
    process.stderr.write(
      r.format === "lowrank"
        ? "note: the factored matrices are in llmserve's low-rank format (NAME.lr_v/.lr_ut, sparse residual NAME.sp_*): llmserve runs them, but llama.cpp CANNOT load this file\n"
        : r.format === "sparse"
          ? "note: the pruned matrices are in llmserve's 2:4 sparse format: llmserve runs them faster, but llama.cpp CANNOT load this file (use --format dense for a llama.cpp-compatible one)\n"
          : r.format === "csr"
            ? "note: the pruned matrices are in llmserve's CSR format (NAME.sp_ptr/.sp_col/.sp_val): llmserve runs them (as CSR up to 20% density, dense above), but llama.cpp CANNOT load this file (use --format dense for a llama.cpp-compatible one)\n"
            : "note: the zeros are stored densely in each tensor's own type: llama.cpp and llmserve load the file alike, and it runs no faster than the input\n",
    );
    if (o.json) {
      process.stdout.write(
        `${JSON.stringify({ input: path, output, seconds, prune, method: o.method ?? COMPRESS_DEFAULTS.method, ...r })}\n`,
      );
      return;
    }
    for (const n of r.notes) process.stderr.write(`note: ${n}\n`);
    if (r.format === "lowrank") {
      process.stdout.write(lowRankSummary(r, output, seconds));
      return;
    }
    const zeros = r.tensors.reduce((a, t) => a + t.zeros, 0);
    const elements = r.tensors.reduce((a, t) => a + t.elements, 0);
    process.stdout.write(
      `wrote ${output}: pruned ${r.tensors.length} tensors (${prune === "2:4" ? "2:4" : `ratio ${prune}`}, ${o.method ?? COMPRESS_DEFAULTS.method}` +
        `${r.calibTokens > 0 ? `, ${r.calibTokens} calibration tokens` : ""}), ${((100 * zeros) / Math.max(1, elements)).toFixed(1)}% zeros,` +
        ` ${formatBytes(r.inputBytes)} -> ${formatBytes(r.outputBytes)} in ${seconds.toFixed(1)} s\n`,
    );
  } finally {
    rep.stop();
    process.off("SIGINT", onSigint);
  }
}

/** Adds `llmserve compress` to the program. */
export function registerCompress(program: Command): void {
  program
    .command("compress")
    .description(
      "prune a GGUF model's layer matrices (magnitude or Wanda; a ratio of each row, or 2:4), or factor them (low-rank SVD, optionally + sparse residual)",
    )
    .argument("<input>", `${MODEL_HELP} (any type llmserve runs; quantized tensors are re-rounded)`)
    .argument("<output>", "output .gguf path (written atomically; never the input)")
    .option("--prune <what>", "a ratio of each row to zero (0.5, 50%) or 2:4 (2 of every 4 consecutive entries)")
    .option(
      "--lowrank <spec>",
      "factor each matrix as U·V by truncated SVD instead: rank=R, or energy=E (smallest rank keeping that fraction of the squared singular values); activation-aware with --calib; llmserve-only format",
    )
    .option(
      "--sparse <f>",
      "with --lowrank: keep this fraction (0.02, 2%) of each matrix's largest residual entries (W ≈ U·V + S)",
    )
    .option("--method <m>", `pruning criterion: ${PRUNE_METHODS.join(", ")} (default ${COMPRESS_DEFAULTS.method})`)
    .option(
      "--format <f>",
      "how pruned matrices are stored: sparse (2:4 only, the default for 2:4: faster, llmserve-only; llama.cpp cannot load it), csr (a ratio only: row pointers + columns + f16 values, faster at high sparsity such as --prune 0.9, llmserve-only) or dense (zeros in the input's type)",
    )
    .option(
      "--values <t>",
      "the 2:4 sparse format's kept values: f16, q8_0 (int8 + an f16 scale per 32: 62% of q8_0's bytes; rows of a multiple of 64) or auto (the default: q8_0 for quantized input matrices, f16 for f16/f32 ones)",
    )
    .option(
      "--calib <file>",
      "calibration text the model runs over (required for wanda; makes --lowrank activation-aware)",
    )
    .option(
      "--calib-ctx <n>",
      `calibration tokens per chunk (default ${COMPRESS_DEFAULTS.calibCtx})`,
      int("--calib-ctx"),
    )
    .option(
      "--tensors <globs>",
      "comma-separated globs over tensor names or roles, e.g. ffn_*,attn_output (default: all layer matrices)",
    )
    .option("-t, --threads <n>", "threads (default: physical cores)", int("--threads"))
    .option("--json", "print one JSON object with every pruned tensor instead of a summary")
    .action(runCompress);
}
