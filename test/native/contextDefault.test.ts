/**
 * contextSize's default (issue 16, part 5): min(4096, the model's training context), and one
 * process warning per model file when a larger context is asked for.
 */
import { afterEach, describe, expect, it } from "vitest";
import { contextSizeFor, trainingContext } from "../../lib/loadOptions.js";
import { Model } from "../../lib/model.js";
import { synthModel } from "../helpers.js";

const shape = { dim: 32, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocabSize: 320 };

/** Runs `f` and returns the LlmserveWarning codes the process emitted meanwhile. */
async function warningsOf(f: () => Promise<void>): Promise<string[]> {
  const seen: string[] = [];
  const on = (w: Error & { code?: string }) => {
    if (w.name === "LlmserveWarning") seen.push(w.code ?? "");
  };
  process.on("warning", on);
  try {
    await f();
    await new Promise((r) => setImmediate(r)); // emitWarning delivers on the next tick
  } finally {
    process.off("warning", on);
  }
  return seen;
}

let models: Model[] = [];
afterEach(async () => {
  await Promise.all(models.map((m) => m.dispose()));
  models = [];
});
const load = async (path: string, contextSize?: number) => {
  const m = await Model.load(path, { threads: 1, contextSize, kvCacheTokens: 512 });
  models.push(m);
  return m;
};

describe("contextSize default", () => {
  it("is the training context when it is at most 4096, else 4096", async () => {
    const small = await synthModel("ctx-default-1024", { ...shape, context: 1024 });
    const large = await synthModel("ctx-default-8192", { ...shape, context: 8192 });
    expect(await trainingContext(small)).toBe(1024);
    expect((await load(small)).info.contextSize).toBe(1024);
    expect((await load(large)).info.contextSize).toBe(4096);
    expect((await load(large, 8192)).info.contextSize).toBe(8192);
    expect((await load(small, 0)).info.contextSize).toBe(1024); // 0: exactly the training context
  });

  it("a context above the training context warns once per model file (LLMSERVE_CONTEXT_OVER_TRAINING)", async () => {
    const path = await synthModel("ctx-default-warn", { ...shape, context: 512 });
    expect(await warningsOf(() => load(path, 2048).then(() => undefined))).toEqual(["LLMSERVE_CONTEXT_OVER_TRAINING"]);
    expect(await warningsOf(() => load(path, 4096).then(() => undefined))).toEqual([]);
    expect(await warningsOf(() => load(path, 512).then(() => undefined))).toEqual([]);
    expect(await warningsOf(() => load(path).then(() => undefined))).toEqual([]);
  });

  it("contextSizeFor: unknown training context (0) gives 4096; a given size is kept", async () => {
    expect(contextSizeFor(undefined, 0, "x.gguf")).toBe(4096);
    expect(contextSizeFor(undefined, 4096, "x.gguf")).toBe(4096);
    expect(contextSizeFor(undefined, 4095, "x.gguf")).toBe(4095);
    expect(contextSizeFor(100, 4096, "x.gguf")).toBe(100);
    expect(await trainingContext("/nonexistent/model.gguf")).toBe(0);
  });
});
