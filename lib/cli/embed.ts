/** `llmserve embed`: print the embedding of each text (Model.embed) as one JSON array per line. */
import { Option, type Command } from "commander";
import { EMBED_DEFAULTS } from "../defaults.js";
import type { Pooling } from "../embed.js";
import { addContextSizeOption, int, loadModel, MODEL_HELP } from "./common.js";

async function runEmbed(
  texts: string[],
  o: { model: string; pooling: Pooling; normalize: boolean; threads?: number; contextSize?: number },
): Promise<void> {
  const model = await loadModel(o.model, { threads: o.threads, contextSize: o.contextSize });
  try {
    for (const v of await model.embed(texts, { pooling: o.pooling, normalize: o.normalize }))
      process.stdout.write(`${JSON.stringify(Array.from(v))}\n`);
  } finally {
    await model.dispose();
  }
}

/** Adds `embed` to the program. */
export function registerEmbed(program: Command): void {
  const cmd = program
    .command("embed")
    .description("print each text's embedding (final hidden states, pooled) as a JSON array, one per line")
    .argument("<text...>", "texts to embed (BOS added as the vocabulary asks)")
    .requiredOption("-m, --model <model>", MODEL_HELP)
    .addOption(
      new Option("--pooling <how>", "how token vectors become one: the last token's, their mean, or the first token's")
        .choices(["last", "mean", "cls"])
        .default(EMBED_DEFAULTS.pooling),
    )
    .option("--no-normalize", "keep the raw vector instead of scaling it to unit length")
    .option("-t, --threads <n>", "compute threads (default: physical cores)", int("--threads"))
    .action(runEmbed);
  addContextSizeOption(cmd);
}
