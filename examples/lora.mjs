// LoRA adapters: many over one base model, mixed in one batch.
//
//   node examples/lora.mjs MODEL [ADAPTER...]
//
// ADAPTER: a llama.cpp GGUF LoRA file or a Hugging Face PEFT folder for MODEL. Without any, two
// random adapters are written for MODEL first (synthLora; what `llmserve synth-lora` does), so this
// runs offline with a synth model (see examples/streaming.mjs).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { Model, synthLora } from "llmserve";

const [spec, ...adapterPaths] = process.argv.slice(2);
if (!spec) {
  console.error("usage: node examples/lora.mjs MODEL [ADAPTER...]");
  process.exit(2);
}

const model = await Model.load(spec);
const scratch = adapterPaths.length === 0 ? mkdtempSync(join(tmpdir(), "llmserve-lora-")) : undefined;
try {
  if (scratch) {
    for (const seed of [1, 2]) {
      const path = join(scratch, `random-${seed}.gguf`);
      await synthLora(model.path, path, { rank: 8, seed, stdB: 2 });
      adapterPaths.push(path);
    }
  }
  const names = [];
  for (const path of adapterPaths) {
    const name = basename(path).replace(/\.gguf$/, "");
    await model.loadAdapter(name, path, { scale: 1.0 });
    names.push(name);
  }

  // The same greedy prompt with no adapter and with each one, all at once: one batch, and each
  // request's tokens are what it would get alone.
  const prompt = "The weather today is";
  const run = async (adapter) => {
    let text = "";
    for await (const c of model.generate(prompt, { maxTokens: 16, temperature: 0, adapter })) text += c.text;
    return text;
  };
  const outputs = await Promise.all([undefined, ...names].map(run));
  for (const [i, text] of outputs.entries())
    console.log(`${i === 0 ? "(base)" : names[i - 1]}: ${JSON.stringify(text)}`);
  for (const a of model.adapters()) console.log(`adapter ${a.name}: resident=${a.resident}, loads=${a.loads}`);
  for (const name of names) await model.unloadAdapter(name);
} finally {
  await model.dispose();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
}
