// Resolve a model spec to a local file, downloading from the Hugging Face Hub into the model cache
// with progress, then load it.
//
//   node examples/hf-download.mjs hf:OWNER/REPO:QUANT     e.g. hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF:Q4_K_M
//   node examples/hf-download.mjs hf:OWNER/REPO/FILE.gguf
//   node examples/hf-download.mjs https://host/path/model.gguf | ./local.gguf
//
// Environment: LLMSERVE_MODELS (cache folder), HF_TOKEN (gated repos), HF_ENDPOINT (another Hub),
// LLMSERVE_OFFLINE=1 (use the cache only; a missing file is an ERR_OFFLINE error).
import { Model, ProgressReporter, resolveModel } from "llmserve";

const [spec] = process.argv.slice(2);
if (!spec) {
  console.error(
    "usage: node examples/hf-download.mjs MODEL   (hf:OWNER/REPO:QUANT, hf:OWNER/REPO/FILE.gguf, https://... or a path)",
  );
  process.exit(2);
}

// The CLI's progress display: a bar with rate and ETA on a terminal, plain lines otherwise.
const progress = new ProgressReporter();
try {
  const path = await resolveModel(spec, { onProgress: progress.report });
  progress.stop();
  console.log(`local file: ${path}`);
  const model = await Model.load(path);
  const i = model.info;
  console.log(`loaded: ${i.arch}, ${i.nLayer} layers, ${i.nEmbd} wide, vocabulary of ${i.nVocab} tokens`);
  await model.dispose();
} catch (err) {
  progress.stop();
  // Every failure is an LlmserveError with a stable code and a message that says what to do.
  console.error(`${err.code ?? "error"}: ${err.message}`);
  process.exitCode = 1;
}
