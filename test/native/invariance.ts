/** Batch-invariance helpers shared by the engine tests: greedy runs alone versus together. */
import { expect } from "vitest";
import type { Chunk, Model } from "../../lib/index.js";

export const greedy = { temperature: 0, stopAtEos: false } as const;

export async function collect(it: AsyncGenerator<Chunk, void, undefined>, onChunk?: (c: Chunk, n: number) => void) {
  const tokens: number[] = [];
  let last: Chunk | undefined;
  for await (const c of it) {
    tokens.push(...c.tokens);
    last = c;
    onChunk?.(c, tokens.length);
  }
  return { tokens, last };
}

export function prompts(n: number, nVocab: number, seed: number): number[][] {
  let s = seed >>> 0;
  const rnd = () => ((s = (s * 1664525 + 1013904223) >>> 0) >>> 8) / (1 << 24);
  return Array.from({ length: n }, (_, i) => [
    1,
    ...Array.from({ length: 3 + ((i * 13) % 60) }, () => 3 + Math.floor(rnd() * (nVocab - 3))),
  ]);
}

/** Each prompt alone (one at a time), then all together (staggered arrivals unless told not to): same tokens. */
export async function checkInvariance(model: Model, ps: number[][], maxTokens: number, stagger = true) {
  const solo: number[][] = [];
  for (const p of ps) solo.push((await collect(model.generate({ tokens: p }, { ...greedy, maxTokens }))).tokens);
  const started: Promise<{ tokens: number[] }>[] = [];
  for (let i = 0; i < ps.length; i++) {
    started.push(collect(model.generate({ tokens: ps[i] }, { ...greedy, maxTokens })));
    // Stagger arrivals: every third request waits until the engine has produced something.
    if (stagger && i % 3 === 2) await new Promise((r) => setTimeout(r, 2));
  }
  const together = await Promise.all(started);
  for (let i = 0; i < ps.length; i++)
    expect(together[i].tokens, `request ${i} (prompt length ${ps[i].length})`).toEqual(solo[i]);
}
