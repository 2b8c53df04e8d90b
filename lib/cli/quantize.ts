/**
 * `llmserve quantize IN OUT --type q4_k_m`: converts a model to a smaller weight mix as llama.cpp's
 * llama-quantize does, with a progress bar (plain lines when stderr is not a terminal; none with -q).
 */
import type { Command } from "commander";
import { formatBytes } from "../progress.js";
import { QUANTIZE_TYPE_ALIASES, QUANTIZE_TYPES, quantize, type QuantizeOptions } from "../quantize.js";
import { int, localModel, MODEL_HELP, progressReporter } from "./common.js";

interface QuantizeCliOpts {
  type: string;
  threads?: number;
  imatrix?: string;
  pure?: boolean;
  outputTensorType?: string;
  tokenEmbeddingType?: string;
  tensorType?: string[];
  json?: boolean;
}

async function runQuantize(input: string, output: string, o: QuantizeCliOpts): Promise<void> {
  const path = await localModel(input);
  const rep = progressReporter();
  const ac = new AbortController();
  const onSigint = () => ac.abort();
  process.once("SIGINT", onSigint);
  const t0 = performance.now();
  try {
    const r = await quantize(path, output, {
      type: o.type as QuantizeOptions["type"],
      threads: o.threads,
      imatrix: o.imatrix,
      pure: o.pure,
      outputTensorType: o.outputTensorType,
      tokenEmbeddingType: o.tokenEmbeddingType,
      tensorTypes: o.tensorType,
      signal: ac.signal,
      onProgress: (_f, e) => rep.report(e),
    });
    rep.stop();
    const seconds = (performance.now() - t0) / 1000;
    if (o.json) {
      process.stdout.write(`${JSON.stringify({ input: path, output, seconds, ...r })}\n`);
      return;
    }
    for (const n of r.notes) process.stderr.write(`note: ${n}\n`);
    const counts = new Map<string, number>();
    for (const t of r.tensors) counts.set(t.to, (counts.get(t.to) ?? 0) + 1);
    const mix = [...counts].map(([k, v]) => `${k} ${v}`).join(", ");
    process.stdout.write(
      `wrote ${output}: ${r.type} (file type ${r.fileType}), ${formatBytes(r.inputBytes)} -> ${formatBytes(r.outputBytes)}` +
        ` in ${seconds.toFixed(1)} s; tensors: ${mix}\n`,
    );
  } finally {
    rep.stop();
    process.off("SIGINT", onSigint);
  }
}

/** Adds `llmserve quantize` to the program. */
export function registerQuantize(program: Command): void {
  const aliases = Object.entries(QUANTIZE_TYPE_ALIASES)
    .map(([a, t]) => `${a} = ${t}`)
    .join(", ");
  program
    .command("quantize")
    .description("convert a GGUF model to a smaller weight mix, as llama.cpp's llama-quantize (same recipe and bytes)")
    .argument("<input>", `${MODEL_HELP} (F32/F16/BF16; an already quantized one loses quality)`)
    .argument("<output>", "output .gguf path (written atomically; never the input)")
    .requiredOption("--type <type>", `weight mix: ${QUANTIZE_TYPES.join(", ")} (aliases ${aliases})`)
    .option("-t, --threads <n>", "conversion threads (default: physical cores)", int("--threads"))
    .option(
      "--imatrix <file>",
      "importance matrix from llama.cpp's llama-imatrix (GGUF or legacy .dat): weights the quantization as llama-quantize --imatrix",
    )
    .option("--pure", "every matrix the mix's type: no per-tensor rules (llama-quantize --pure)")
    .option("--output-tensor-type <type>", "type of output.weight, e.g. q8_0 (llama-quantize's option)")
    .option("--token-embedding-type <type>", "type of token_embd.weight (llama-quantize's option)")
    .option(
      "--tensor-type <pattern=type>",
      "override matching tensors, e.g. attn_v=q8_0 (regex; repeatable; first match wins)",
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .option("--json", "print one JSON object with every tensor's type instead of a summary")
    .action(runQuantize);
}
