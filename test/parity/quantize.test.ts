/**
 * quantize() on the trained fixture models (F32, llama, dim 64: the k-quant mixes take llama.cpp's
 * fallbacks, Q4_K -> Q5_0, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0), checked against llama.cpp and for quality:
 * - the output loads in llama.cpp (node-llama-cpp 3.21.1) and its greedy continuation of each
 *   reference prompt there equals llmserve's on the same file;
 * - quality is monotone in bits: KL divergence against the F32 original (evaluatePerplexity with a
 *   reference) is q8_0 < q4_k_m < q2_k, and top-1 agreement the other way round.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model, evaluatePerplexity, quantize, type QuantizeType } from "../../lib/index.js";
import { fixture, haveFixtures, tmpRoot } from "../helpers.js";
import { firstDiff, loadOracle } from "./oracle.js";

const MIXES: QuantizeType[] = ["q8_0", "q4_k_m", "q2_k"];
const STEPS = 32;
const CTX = 128;
/** Largest gap in llama.cpp's probabilities between its greedy token and ours where they may differ. */
const NEAR_TIE = 0.02;

// In the style of the texts aidreams260K was trained on (as test/parity/perplexity.test.ts).
const TEXT = `I dream of gradients that flow like rivers through the hidden layers. Each weight trembles, then settles, and the loss grows quiet.
In the quiet of the night, the machine listens to its own activations. Patterns emerge from noise, thresholds shimmer, and memories align.
The matrices unfold, echoing through every layer. I adjust my biases, refining the hidden patterns, and the valleys of the loss grow deeper.
Numbers whisper softly. Attention drifts across the tokens, gathering meaning from the shadows of the data streams.
I dream of coherence. The embeddings cluster like stars, and every vector points toward a new horizon of understanding.
In my dream, the network awakens. Signals cascade through the neurons, and the gradients sing of balance and convergence.
The machine remembers the shape of each example. Weights drift, margins sharpen, and the error fades like morning fog.
Numbers dance in the silence. Each epoch brings the model closer to the truth hidden in the data, one small step at a time.
`;

describe.skipIf(!haveFixtures)("quantize on the trained fixture (aidreams260K)", () => {
  const src = fixture("models", "aidreams260K.gguf");
  const files = new Map<QuantizeType, string>();
  beforeAll(async () => {
    for (const type of MIXES) {
      const path = join(tmpRoot, `quantize-parity-${type}-${process.pid}.gguf`);
      await quantize(src, path, { type, threads: 2 });
      files.set(type, path);
    }
  });

  it("the quantized files load in llama.cpp and give llmserve's greedy tokens", async () => {
    const ref = JSON.parse(readFileSync(fixture("models", "aidreams260K.reference.json"), "utf8")) as {
      cases: { promptTokens: number[] }[];
    };
    for (const type of MIXES) {
      const path = files.get(type) as string;
      const model = await Model.load(path, { threads: 1, contextSize: CTX });
      const oracle = await loadOracle(path, model.info.nVocab, CTX, { threads: 1 });
      try {
        for (const c of ref.cases) {
          const ours = await model.complete(
            { tokens: c.promptTokens },
            { maxTokens: STEPS, temperature: 0, stopAtEos: false },
          );
          const theirs = await oracle.greedy(c.promptTokens, STEPS);
          const k = firstDiff(ours.tokens, theirs.tokens);
          if (k < 0) {
            console.log(`[quantize] ${type} prompt ${c.promptTokens.length} tokens: greedy =`);
            continue;
          }
          // A divergence is allowed only where llama.cpp itself is at a near-tie between our token and
          // its own (quantized matmuls agree with llama.cpp within its own spread, not to the bit:
          // docs/design.md "Numerics"), and only after enough agreeing steps to show the file is right.
          const d = theirs.dists[k];
          const gap = d[theirs.tokens[k]] - d[ours.tokens[k]];
          console.log(
            `[quantize] ${type} prompt ${c.promptTokens.length} tokens: greedy differs at ${k}, llama.cpp's p(its token) - p(ours) = ${gap.toExponential(2)}`,
          );
          expect(gap, `${type}: greedy tokens differ at ${k} where llama.cpp is not at a near-tie`).toBeLessThan(
            NEAR_TIE,
          );
          expect(k, `${type}: greedy tokens differ early`).toBeGreaterThanOrEqual(8);
        }
      } finally {
        await oracle.dispose();
        await model.dispose();
      }
    }
  });

  it("quality is monotone in bits: KL vs the F32 original q8_0 < q4_k_m < q2_k", async () => {
    const textFile = join(tmpRoot, `quantize-parity-${process.pid}.txt`);
    writeFileSync(textFile, TEXT.repeat(3));
    const reference = await Model.load(src, { threads: 1, contextSize: CTX });
    const kl: number[] = [];
    const top1: number[] = [];
    try {
      for (const type of MIXES) {
        const model = await Model.load(files.get(type) as string, { threads: 1, contextSize: CTX });
        try {
          const r = await evaluatePerplexity(model, { file: textFile }, { ctx: CTX, reference });
          const c = r.reference;
          if (!c) throw new Error("no reference statistics");
          console.log(
            `[quantize] ${type}: KL ${c.kl.mean.toExponential(3)} ± ${c.kl.meanError.toExponential(1)}, top-1 ${(100 * c.top1).toFixed(2)}%, PPL ${r.ppl.toFixed(4)} (ref ${c.ppl.toFixed(4)})`,
          );
          kl.push(c.kl.mean);
          top1.push(c.top1);
        } finally {
          await model.dispose();
        }
      }
    } finally {
      await reference.dispose();
    }
    expect(kl[0]).toBeGreaterThan(0);
    expect(kl[0]).toBeLessThan(kl[1]);
    expect(kl[1]).toBeLessThan(kl[2]);
    expect(top1[0]).toBeGreaterThanOrEqual(top1[1]);
    expect(top1[1]).toBeGreaterThanOrEqual(top1[2]);
  });

  afterAll(() => {
    files.clear();
  });
});
