/**
 * LoRA parity with llama.cpp on quantized bases (q8_0, q4_0): the same small synth shape as
 * lora.test.ts, one rank-8 f32 adapter over every projection, one thread, f16 KV on both sides.
 * Quantized models are judged as test/parity/synth.test.ts judges them (exact tokens are not
 * expected: activations are rounded to q8_0 before every matmul, so last-bit differences can flip
 * an argmax where two tokens nearly tie):
 * 1. along llama.cpp's greedy path (prompt + its 24 greedy tokens), llmserve's next-token
 *    distribution (the 20 most likely tokens, from `logprobs`) is within max(QUANT_MAX_ERR,
 *    1.5 × llama.cpp's own spread) of llama.cpp's, and its top-1 agrees at least minTop1Agree times
 *    (llama.cpp's spread: flash attention off vs on, with the same adapter, on the same positions);
 * 2. greedy generation equals llama.cpp's up to its first difference, and there llama.cpp itself
 *    rates llmserve's token within that tolerance of its own choice (a near-tie, not a wrong model);
 * 3. the adapter changed the tokens (an adapter ignored on both sides cannot pass).
 */
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Model, type SynthType, synthLora } from "../../lib/index.js";
import { synthModel, tmpRoot } from "../helpers.js";
import {
  argmax,
  compareDists,
  FLOOR_ERR_FACTOR,
  firstDiff,
  fmtTop,
  loadOracle,
  minTop1Agree,
  QUANT_MAX_ERR,
} from "./oracle.js";

const SHAPE = { dim: 256, layers: 2, heads: 4, kvHeads: 2, ffn: 512, vocabSize: 512, context: 512, seed: 11 };
const CONTEXT = 256;
const GREEDY_TOKENS = 24;
const TYPES: SynthType[] = ["q8_0", "q4_0"];

const rows: string[] = [];
afterAll(() => {
  if (rows.length) console.log(`[parity] LoRA on quantized bases vs llama.cpp\n${rows.join("\n")}`);
});

describe("LoRA parity with llama.cpp on quantized bases", () => {
  it.each(TYPES)(
    "%s base + rank-8 adapter",
    async (type) => {
      const base = await synthModel(`lora-parity-${type}`, { ...SHAPE, type });
      const adapter = join(tmpRoot, `lora-parity-${type}-a-${process.pid}.gguf`);
      await synthLora(base, adapter, { rank: 8, seed: 1 });
      const lora = [{ filePath: adapter, scale: 1 }];
      const model = await Model.load(base, { threads: 1, contextSize: CONTEXT, kvType: "f16" });
      const oracle = await loadOracle(base, model.info.nVocab, CONTEXT);
      try {
        await model.loadAdapter("a", adapter);
        const nVocab = model.info.nVocab;
        const prompt = model.tokenize("Once upon a time");
        const greedy = { maxTokens: GREEDY_TOKENS, temperature: 0, stopAtEos: false } as const;
        const mine = (await model.complete({ tokens: prompt }, { ...greedy, adapter: "a" })).tokens;
        const plain = (await model.complete({ tokens: prompt }, greedy)).tokens;
        const ref = await oracle.greedy(prompt, GREEDY_TOKENS, { lora });

        // 1. Distributions along llama.cpp's path; llama.cpp's own spread on the same positions.
        const seq = [...prompt, ...ref.tokens.slice(0, -1)];
        const at = (d: Float64Array[]) => d.slice(prompt.length - 1);
        const theirs = at(await oracle.teacherForce(seq, { lora }));
        const floor = compareDists(at(await oracle.teacherForce(seq, { lora, flashAttention: false })), theirs);
        const tol = Math.max(QUANT_MAX_ERR, FLOOR_ERR_FACTOR * floor.maxErr);
        let maxErr = 0;
        let errAt = 0;
        const disagree: number[] = [];
        for (let i = 0; i < theirs.length; i++) {
          const prefix = seq.slice(0, prompt.length + i);
          let top: { token: number; logprob: number }[] = [];
          for await (const c of model.generate(
            { tokens: prefix },
            { ...greedy, maxTokens: 1, logprobs: 20, adapter: "a" },
          ))
            if (c.logprobs?.length)
              top = [{ token: c.logprobs[0].token, logprob: c.logprobs[0].logprob }, ...c.logprobs[0].top];
          expect(top.length).toBeGreaterThan(1);
          for (const t of top) {
            const e = Math.abs(Math.exp(t.logprob) - theirs[i][t.token]);
            if (e > maxErr) [maxErr, errAt] = [e, i];
          }
          if (top[0].token !== argmax(theirs[i])) disagree.push(i);
        }
        const agree = theirs.length - disagree.length;
        const minAgree = minTop1Agree(floor);
        // 2. Greedy: equal up to the first difference, which must be a near-tie for llama.cpp.
        const k = firstDiff(mine, ref.tokens);
        const gap = k < 0 ? 0 : ref.dists[k][ref.tokens[k]] - ref.dists[k][mine[k]];
        rows.push(
          `${type}: max |Δp| ${maxErr.toExponential(2)}@${errAt} (tol ${tol.toExponential(2)}, floor ${floor.maxErr.toExponential(2)}) top1 ${agree}/${theirs.length} (min ${minAgree}, floor ${floor.agree}) greedy ${k < 0 ? "equal" : `differs@${k} (llama.cpp's gap ${gap.toExponential(2)})`}`,
        );
        expect(maxErr, `max |Δp| at step ${errAt}: llama.cpp ${fmtTop(theirs[errAt])}`).toBeLessThanOrEqual(tol);
        expect(agree, `top-1 disagreements at steps ${disagree.join(", ")}`).toBeGreaterThanOrEqual(minAgree);
        expect(
          gap,
          `greedy differs at step ${k}: llmserve ${mine[k]} llama.cpp ${ref.tokens[k]}; llama.cpp's distribution there ${k < 0 ? "" : fmtTop(ref.dists[k])}`,
        ).toBeLessThanOrEqual(tol);
        // 3. The adapter matters (on both sides it is applied, or the step-1 bound fails).
        expect(mine).not.toEqual(plain);
        expect(nVocab).toBe(SHAPE.vocabSize);
      } finally {
        await oracle.dispose();
        await model.dispose();
      }
    },
    240_000,
  );
});
