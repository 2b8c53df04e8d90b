// The serving bench's decode summary over rounds: medians per engine and the per-round ratios the
// AVX2 goals of the benchmark README are judged by.
import { describe, expect, it } from "vitest";
// @ts-expect-error: a plain ES module of the bench scripts, without types
import { decodeSummary } from "../../../bench/serving/metrics.mjs";

const level = (n: number, tps: number, otherCores = 0) => ({ n, tps, otherCores, stats: { tokensPerStep: n } });

describe("decodeSummary", () => {
  it("pairs each round's engines and takes medians over rounds", () => {
    const rounds = [
      { llmserve: [level(1, 10), level(16, 30)], llamacpp: [level(1, 5), level(16, 10)] },
      { llmserve: [level(1, 20), level(16, 20, 0.4)], llamacpp: [level(1, 8), level(16, 8)] },
      { llmserve: [level(1, 12), level(16, 26)], llamacpp: [level(1, 6), level(16, 9)] },
    ];
    const s = decodeSummary(rounds, [1, 16]);
    expect(s.llmserve.map((l: { tps: number }) => l.tps)).toEqual([12, 26]);
    expect(s.llamacpp.map((l: { tps: number }) => l.tps)).toEqual([6, 9]);
    // Ratios pair the runs of a round: 30/10, 20/8, 26/9; not a ratio of the two medians (26/9).
    expect(s.llmserve[1].roundRatios).toEqual([3, 2.5, 26 / 9]);
    expect(s.llmserve[0].roundRatios).toEqual([2, 2.5, 2]);
    expect(s.llmserve[1].roundTps).toEqual([30, 20, 26]);
    expect(s.llmserve[1].otherCores).toBe(0.4);
    expect(s.llamacpp[1].roundRatios).toEqual([]);
  });

  it("leaves out rounds where one engine failed, and engines that never ran", () => {
    const rounds = [{ llmserve: [level(16, 30)] }, { llmserve: [level(16, 24)], llamacpp: [level(16, 8)] }];
    const s = decodeSummary(rounds, [16]);
    expect(s.llmserve[0].tps).toBe(27);
    expect(s.llmserve[0].roundRatios).toEqual([3]);
    expect(decodeSummary([{ llmserve: [level(16, 30)] }], [16]).llamacpp).toBeUndefined();
  });

  it("leaves a round without a rate (NaN tok/s) out of the median and the ratios", () => {
    const rounds = [
      { llmserve: [level(16, Number.NaN)], llamacpp: [level(16, 8)] },
      { llmserve: [level(16, 24)], llamacpp: [level(16, 8)] },
      { llmserve: [level(16, 30)], llamacpp: [level(16, 10)] },
    ];
    const s = decodeSummary(rounds, [16]);
    expect(s.llmserve[0].tps).toBe(27);
    expect(s.llmserve[0].roundRatios).toEqual([3, 3]);
  });
});
