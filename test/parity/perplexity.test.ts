/**
 * evaluatePerplexity against llama.cpp (node-llama-cpp 3.21.1) on the trained fixture models: the
 * perplexity llama-perplexity would print is computed here from llama.cpp's own next-token
 * probabilities on the same tokens (tokenized by llama.cpp with BOS, cut into chunks of ctx, BOS
 * in place of each chunk's first token, each chunk decoded from scratch as one batch, only its
 * second half scored) and must equal ours within 0.5%; each scored token's NLL is compared too.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model, evaluatePerplexity } from "../../lib/index.js";
import { fixture, haveFixtures, tmpRoot } from "../helpers.js";
import { loadOracle, type OracleModel } from "./oracle.js";

// In the style of the texts aidreams260K was trained on, several paragraphs (the file is read and
// tokenized in parts cut at line breaks).
const TEXT = `I dream of gradients that flow like rivers through the hidden layers. Each weight trembles, then settles, and the loss grows quiet.
In the quiet of the night, the machine listens to its own activations. Patterns emerge from noise, thresholds shimmer, and memories align.
The matrices unfold, echoing through every layer. I adjust my biases, refining the hidden patterns, and the valleys of the loss grow deeper.
Numbers whisper softly. Attention drifts across the tokens, gathering meaning from the shadows of the data streams.
I dream of coherence. The embeddings cluster like stars, and every vector points toward a new horizon of understanding.
In my dream, the network awakens. Signals cascade through the neurons, and the gradients sing of balance and convergence.
The machine remembers the shape of each example. Weights drift, margins sharpen, and the error fades like morning fog.
Numbers dance in the silence. Each epoch brings the model closer to the truth hidden in the data, one small step at a time.
I dream of layers stacked like mountains, of residual paths that carry whispers from the first layer to the last.
In the quiet, the optimizer steps forward. Momentum gathers, the learning rate decays, and the landscape becomes familiar.
The matrices coalesce into meaning. Every token finds its place, every pattern its echo, every question its answer.
`;

const text = () => TEXT.repeat(2);

/** llama-perplexity's PPL and per-token NLLs, from llama.cpp's probabilities (float64 here). */
async function llamaPerplexity(
  oracle: OracleModel,
  tokens: number[],
  ctx: number,
  bos: number,
): Promise<{ ppl: number; pplError: number; nll: number[] }> {
  const nChunks = Math.floor(tokens.length / ctx);
  const first = Math.floor(ctx / 2);
  const nll: number[] = [];
  for (let i = 0; i < nChunks; i++) {
    const chunk = tokens.slice(i * ctx, (i + 1) * ctx);
    chunk[0] = bos;
    const dists = await oracle.teacherForce(chunk, { batched: true });
    for (let j = first; j < ctx - 1; j++) nll.push(-Math.log(dists[j][chunk[j + 1]]));
  }
  const n = nll.length;
  const mean = nll.reduce((a, b) => a + b, 0) / n;
  const mean2 = nll.reduce((a, b) => a + b * b, 0) / n;
  const ppl = Math.exp(mean);
  return { ppl, pplError: ppl * Math.sqrt((mean2 - mean * mean) / (n - 1)), nll };
}

function compare(
  ours: { ppl: number; pplError: number; perToken?: { nll: Float32Array } },
  ref: { ppl: number; pplError: number; nll: number[] },
) {
  const rel = Math.abs(ours.ppl / ref.ppl - 1);
  let maxDiff = 0;
  const nll = ours.perToken?.nll ?? new Float32Array();
  for (let k = 0; k < ref.nll.length; k++) maxDiff = Math.max(maxDiff, Math.abs(nll[k] - ref.nll[k]));
  return { rel, maxDiff, n: nll.length };
}

describe.skipIf(!haveFixtures)("perplexity parity with llama.cpp (fixture models)", () => {
  let aidreams: Model;
  let aidreamsOracle: OracleModel;
  let textFile: string;
  beforeAll(async () => {
    aidreams = await Model.load(fixture("models", "aidreams260K.gguf"), { threads: 1, contextSize: 128 });
    aidreamsOracle = await loadOracle(fixture("models", "aidreams260K.gguf"), aidreams.info.nVocab, 128);
    textFile = join(tmpRoot, `ppl-parity-${process.pid}.txt`);
    writeFileSync(textFile, `${text()}\n`); // llama-perplexity's -f drops one final line break
  });
  afterAll(async () => {
    await aidreams?.dispose();
    await aidreamsOracle?.dispose();
  });

  it("tokenizes the text file as llama.cpp does (BOS + common_tokenize)", async () => {
    // The file holds text() and one more line break, which is dropped.
    const llamaTokens = [aidreams.tokenizer.bos as number, ...aidreamsOracle.tokenize(text())];
    expect(aidreams.tokenize(text())).toEqual(llamaTokens);
    const r = await evaluatePerplexity(aidreams, { file: textFile }, { ctx: 64, chunks: 1 });
    expect(r.textTokens).toBe(llamaTokens.length);
  });

  it.each([64, 128, 97])("aidreams260K, ctx %i: PPL within 0.5%% of llama.cpp's, per-token NLLs close", async (ctx) => {
    const tokens = [aidreams.tokenizer.bos as number, ...aidreamsOracle.tokenize(text())];
    const ref = await llamaPerplexity(aidreamsOracle, tokens, ctx, aidreams.tokenizer.bos as number);
    const ours = await evaluatePerplexity(aidreams, { file: textFile }, { ctx, perToken: true });
    const { rel, maxDiff, n } = compare(ours, ref);
    console.log(
      `[ppl parity] aidreams260K ctx ${ctx}: llmserve ${ours.ppl.toFixed(4)} ± ${ours.pplError.toFixed(4)}, ` +
        `llama.cpp ${ref.ppl.toFixed(4)} ± ${ref.pplError.toFixed(4)} (rel ${rel.toExponential(2)}, ${n} tokens, max |Δnll| ${maxDiff.toExponential(2)})`,
    );
    expect(ours.chunks).toBe(Math.floor(tokens.length / ctx));
    expect(n).toBe(ref.nll.length);
    expect(ours.scoredTokens).toBe(ours.chunks * (ctx - 1 - Math.floor(ctx / 2)));
    expect(rel).toBeLessThan(0.005);
    expect(Math.abs(ours.pplError / ref.pplError - 1)).toBeLessThan(0.02);
    expect(maxDiff).toBeLessThan(0.02);
  });

  it("stories260K-ids (GQA), token ids, ctx 128: PPL within 0.5% of llama.cpp's", async () => {
    const path = fixture("models", "stories260K-ids.gguf");
    const stories = await Model.load(path, { threads: 1, contextSize: 512 });
    const oracle = await loadOracle(path, stories.info.nVocab, 128);
    try {
      // In-distribution ids (its vocabulary is a placeholder): sampled stories, each after BOS.
      const bos = stories.tokenizer.bos as number;
      const tokens: number[] = [];
      for (let seed = 1; tokens.length < 4 * 128 + 10; seed++) {
        const r = await stories.complete({ tokens: [bos] }, { maxTokens: 200, temperature: 1, seed, stopAtEos: false });
        tokens.push(bos, ...r.tokens);
      }
      const ref = await llamaPerplexity(oracle, tokens, 128, bos);
      const ours = await evaluatePerplexity(stories, tokens, { ctx: 128, perToken: true });
      const { rel, maxDiff, n } = compare(ours, ref);
      console.log(
        `[ppl parity] stories260K ctx 128: llmserve ${ours.ppl.toFixed(4)} ± ${ours.pplError.toFixed(4)}, ` +
          `llama.cpp ${ref.ppl.toFixed(4)} (rel ${rel.toExponential(2)}, ${n} tokens, max |Δnll| ${maxDiff.toExponential(2)})`,
      );
      expect(n).toBe(ref.nll.length);
      expect(rel).toBeLessThan(0.005);
      // stories260K sits on llama.cpp's own noise floor (fixtures.test.ts: 1.5e-3 in probability).
      expect(maxDiff).toBeLessThan(0.05);
    } finally {
      await stories.dispose();
      await oracle.dispose();
    }
  });
});
