/** `llmserve pull` and `llmserve models [rm]`: the model cache from the command line. */
import type { Command } from "commander";
import { defaultCacheDir, listModels, removeModel, resolveModel } from "../hub/index.js";
import { formatBytes } from "../progress.js";
import { MODEL_HELP, progressReporter } from "./common.js";

async function runPull(spec: string): Promise<void> {
  const rep = progressReporter();
  let path: string;
  try {
    path = await resolveModel(spec, { onProgress: rep.report });
  } finally {
    rep.stop();
  }
  process.stdout.write(`${path}\n`);
}

async function runList(o: { json?: boolean }): Promise<void> {
  const models = await listModels();
  if (o.json) {
    process.stdout.write(`${JSON.stringify(models)}\n`);
    return;
  }
  const dir = defaultCacheDir();
  if (models.length === 0) {
    process.stdout.write(`No models in ${dir} yet; download one with llmserve pull hf:OWNER/REPO:QUANT.\n`);
    return;
  }
  const width = Math.max(...models.map((m) => m.name.length));
  for (const m of models) {
    const parts = m.parts > 1 ? ` (${m.parts} parts)` : "";
    process.stdout.write(`${m.name.padEnd(width)}  ${formatBytes(m.size).padStart(10)}${parts}\n`);
  }
  const total = models.reduce((a, m) => a + m.size, 0);
  process.stdout.write(`${models.length} model(s), ${formatBytes(total)} in ${dir}\n`);
}

async function runRemove(names: string[]): Promise<void> {
  for (const name of names) {
    for (const removed of await removeModel(name)) process.stdout.write(`removed ${removed}\n`);
  }
}

/** Adds `pull` and `models` (with `models rm`) to the program. */
export function registerHubCommands(program: Command): void {
  program
    .command("pull")
    .description("download a model into the model cache (LLMSERVE_MODELS) and print its path")
    .argument("<model>", MODEL_HELP)
    .action(runPull);
  const models = program
    .command("models")
    .description("list the models in the model cache with their sizes (models rm NAME deletes one)")
    .option("--json", "print JSON")
    .action(runList);
  models
    .command("rm")
    .description("delete cached models: a NAME as `llmserve models` lists it, or hf:OWNER/REPO for all its files")
    .argument("<name...>", "model names")
    .action(runRemove);
}
