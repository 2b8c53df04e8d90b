/**
 * What the CLI's commands share: number parsers, option aliases (llama.cpp's spellings for the
 * API's names), the sampling and load options, the progress display, and model resolution.
 */
import { type Command, Option } from "commander";
import { GENERATE_DEFAULTS as G, LOAD_DEFAULTS as L } from "../defaults.js";
import { LlmserveError } from "../errors.js";
import type { Chunk, GenerateOptions } from "../generate.js";
import { isRemoteSpec, resolveModel } from "../hub/index.js";
import { Model } from "../model.js";
import { ProgressReporter } from "../progress.js";

/** The help text of every `-m, --model` option. */
export const MODEL_HELP = "GGUF model: a file, hf:OWNER/REPO/FILE.gguf, hf:OWNER/REPO:QUANT or an https:// URL";

export function int(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n))
      throw new LlmserveError(
        "ERR_INVALID_ARGUMENT",
        `Expected an integer for ${name} but received ${JSON.stringify(v)}`,
      );
    return n;
  };
}

export function float(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n))
      throw new LlmserveError(
        "ERR_INVALID_ARGUMENT",
        `Expected a number for ${name} but received ${JSON.stringify(v)}`,
      );
    return n;
  };
}

/**
 * Adds `flags` as a hidden alias that sets the option named `target` (its camelCase attribute):
 * llama.cpp's spellings keep working while help and "did you mean" show the API's names.
 */
export function addAlias(cmd: Command, flags: string, target: string, parse?: (v: string) => unknown): Command {
  const alias = new Option(flags).hideHelp();
  cmd.addOption(alias);
  // The alias's own attribute is set too; the listener copies the parsed value to the target.
  cmd.on(`option:${alias.name()}`, (v: string) => cmd.setOptionValueWithSource(target, parse ? parse(v) : v, "cli"));
  return cmd;
}

/** The sampling options as parsed by {@link addSamplingOptions}. */
export interface SamplingCliOptions {
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repeatPenalty: number;
  seed?: number;
  stop?: string[];
}

/** The generate options under their API names, with llama.cpp's names as aliases (-n, --n-predict, --temp). */
export function addSamplingOptions(cmd: Command): Command {
  cmd
    .option("--max-tokens <n>", "most tokens to generate (alias -n, --n-predict)", int("--max-tokens"), G.maxTokens)
    .option("--temperature <t>", "temperature, 0 = greedy (alias --temp)", float("--temperature"), G.temperature)
    .option("--top-k <k>", "top-k (0 = off)", int("--top-k"), G.topK)
    .option("--top-p <p>", "top-p (1 = off)", float("--top-p"), G.topP)
    .option("--min-p <p>", "min-p (0 = off)", float("--min-p"), G.minP)
    .option("--repeat-penalty <p>", "repeat penalty (1 = off)", float("--repeat-penalty"), G.repeatPenalty)
    .option("--seed <n>", "sampling seed (default: a random one, printed with --json)", int("--seed"))
    .option("--stop <text...>", "stop strings");
  addAlias(cmd, "-n, --n-predict <n>", "maxTokens", int("--n-predict"));
  addAlias(cmd, "--temp <t>", "temperature", float("--temp"));
  return cmd;
}

/** {@link GenerateOptions} from {@link addSamplingOptions}' parsed values. */
export function samplingOptions(o: SamplingCliOptions): GenerateOptions {
  return {
    maxTokens: o.maxTokens,
    temperature: o.temperature,
    topK: o.topK,
    topP: o.topP,
    minP: o.minP,
    repeatPenalty: o.repeatPenalty,
    seed: o.seed,
    stop: o.stop,
  };
}

/** `--context-size` under the API's name, with llama.cpp's `-c, --ctx-size` and the old `--ctx` as aliases. */
export function addContextSizeOption(cmd: Command, help = "context size in tokens"): Command {
  cmd.option(
    "--context-size <n>",
    `${help} (default: the model's training context, at most ${L.contextSize}; alias -c, --ctx, --ctx-size)`,
    int("--context-size"),
  );
  addAlias(cmd, "-c, --ctx <n>", "contextSize", int("--ctx"));
  addAlias(cmd, "--ctx-size <n>", "contextSize", int("--ctx-size"));
  return cmd;
}

let quiet = false;

/** Registers the global `-q, --quiet` option (no progress output) on the program. */
export function addQuietOption(program: Command): void {
  program.option("-q, --quiet", "print no progress (downloads, loading, synth)");
  program.hook("preAction", (p) => {
    quiet = p.opts().quiet === true;
  });
}

/** The progress display for this run (silent with --quiet; plain lines when stderr is not a terminal). */
export function progressReporter(): ProgressReporter {
  return new ProgressReporter({ quiet });
}

/** Loads a model (a path or a spec to download) with the progress display. */
export async function loadModel(
  spec: string,
  opts: { threads?: number; contextSize?: number } & Parameters<typeof Model.load>[1] = {},
): Promise<Model> {
  const rep = progressReporter();
  try {
    return await Model.load(spec, { ...opts, onProgress: (_f, e) => rep.report(e) });
  } finally {
    rep.stop();
  }
}

/** The local file of a model spec, downloaded first (with progress) when it names a remote one. */
export async function localModel(spec: string): Promise<string> {
  if (!isRemoteSpec(spec)) return spec;
  const rep = progressReporter();
  try {
    return await resolveModel(spec, { onProgress: rep.report });
  } finally {
    rep.stop();
  }
}

/** "[eos] prompt 12 tok (30 reused) 850.1 tok/s, generated 8 tok 41.2 tok/s" for a generation's last chunk. */
export function describeTimings(last: Chunk): string {
  const t = last.timings;
  if (!t) return `[${last.finishReason}]`;
  return (
    `[${last.finishReason}] prompt ${t.promptTokens} tok (${t.reusedTokens} reused) ${t.promptTokensPerSecond.toFixed(1)} tok/s, ` +
    `generated ${t.generatedTokens} tok ${t.generateTokensPerSecond.toFixed(1)} tok/s`
  );
}
