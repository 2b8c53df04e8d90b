// Stream a generation token by token with `for await`.
//
//   node examples/streaming.mjs MODEL [PROMPT]
//
// MODEL: a .gguf path, hf:OWNER/REPO:QUANT or an https:// URL. Offline, make a small random-weight
// model first (its text is gibberish, the machinery is real):
//   npx llmserve synth --dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 128 --vocab-size 400 -o tiny.gguf
import { Model } from "llmserve";

const [spec, prompt = "Once upon a time"] = process.argv.slice(2);
if (!spec) {
  console.error("usage: node examples/streaming.mjs MODEL [PROMPT]");
  process.exit(2);
}

const model = await Model.load(spec);
try {
  process.stdout.write(prompt);
  for await (const chunk of model.generate(prompt, { maxTokens: 48, temperature: 0.8, seed: 1 })) {
    process.stdout.write(chunk.text);
    if (chunk.done) {
      const t = chunk.timings;
      console.log(
        `\n[finish: ${chunk.finishReason}; ${t?.generatedTokens ?? 0} tokens, ` +
          `${Math.round(t?.generateTokensPerSecond ?? 0)} tok/s]`,
      );
    }
  }
} finally {
  await model.dispose();
}
