/**
 * Shared test helpers: fixture paths (skip when ../shared is absent) and a synth cache.
 * LLMSERVE_FIXTURES overrides the fixtures folder (stryker.config.mjs sets it, since its sandbox
 * copies of the tests live elsewhere and ../shared is not beside them).
 */
import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { tmpdir } from "node:os";
import { expect } from "vitest";
import { LlmserveError } from "../lib/errors.js";
import { Model } from "../lib/model.js";
import type { Chunk } from "../lib/generate.js";
import { synth, type SynthOptions } from "../lib/synth.js";

export const repoRoot = resolve(__dirname, "..");
export const fixturesDir = process.env.LLMSERVE_FIXTURES || resolve(repoRoot, "..", "shared", "fixtures");
export const haveFixtures = existsSync(fixturesDir);
export const fixture = (...p: string[]) => join(fixturesDir, ...p);

export const tmpRoot = join(tmpdir(), "llmserve-test");
mkdirSync(tmpRoot, { recursive: true });

/** Synthesizes (once per process) a model for these options and returns its path. */
const made = new Map<string, Promise<string>>();
export function synthModel(name: string, opts: SynthOptions): Promise<string> {
  const key = name + JSON.stringify(opts);
  let p = made.get(key);
  if (!p) {
    const out = join(tmpRoot, `${name}-${process.pid}.gguf`);
    p = synth(out, opts).then(() => out);
    made.set(key, p);
  }
  return p;
}

/** Runs `f` while a 10 ms interval measures the event loop's largest stall (and the total time). */
export async function maxStall<T>(f: () => Promise<T>): Promise<{ value: T; stallMs: number; ms: number }> {
  const t0 = performance.now();
  let last = t0;
  let stallMs = 0;
  const timer = setInterval(() => {
    const t = performance.now();
    stallMs = Math.max(stallMs, t - last);
    last = t;
  }, 10);
  try {
    const value = await f();
    stallMs = Math.max(stallMs, performance.now() - last);
    return { value, stallMs, ms: performance.now() - t0 };
  } finally {
    clearInterval(timer);
  }
}

/** Polls `cond` every 5 ms; true once it holds, false after `ms`. */
export async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
  return true;
}

/** The tokens of every chunk of a generation, in order. */
export async function collectTokens(gen: AsyncIterable<Chunk>): Promise<number[]> {
  const tokens: number[] = [];
  for await (const c of gen) tokens.push(...c.tokens);
  return tokens;
}

/** (n_in, n_out) of the targets q, k, v, o, gate, up, down of one layer, for a model's dim, KV width and FFN width. */
export function adapterTargetShapes(dim: number, kvDim: number, ffn: number): [number, number][] {
  return [
    [dim, dim],
    [dim, kvDim],
    [dim, kvDim],
    [dim, dim],
    [dim, ffn],
    [dim, ffn],
    [ffn, dim],
  ];
}

/**
 * Greedy requests of a few tokens over the given adapters (undefined: the base), each alone and
 * then all at once: the batched tokens must equal the ones each gave alone (batch invariance).
 */
export async function expectBatchedAsAlone(model: Model, names: (string | undefined)[]): Promise<void> {
  const fixed = { temperature: 0, stopAtEos: false, maxTokens: 6 } as const;
  const prompt = (i: number) => ({ tokens: [1, 300 + i, 310 + ((i * 7) % 50)] });
  const alone: number[][] = [];
  for (let i = 0; i < names.length; i++)
    alone.push(await collectTokens(model.generate(prompt(i), { ...fixed, adapter: names[i] })));
  const together = await Promise.all(
    names.map((a, i) => collectTokens(model.generate(prompt(i), { ...fixed, adapter: a }))),
  );
  expect(together).toEqual(alone);
}

/** "CODE: message" of the LlmserveError that p rejects with (the test fails when p resolves or rejects with another error). */
export async function errorText(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(LlmserveError);
  return `${(err as LlmserveError).code}: ${(err as LlmserveError).message}`;
}

/**
 * A trained adapter serves: `adapter` loads on `base` (one thread) and moves the greedy
 * continuation of `prompt` (12 tokens) away from the base model's, to text matching `expected`.
 */
export async function expectAdapterMovesGreedy(
  base: string,
  adapter: string,
  prompt: string,
  expected: RegExp,
): Promise<void> {
  const model = await Model.load(base, { threads: 1 });
  try {
    await model.loadAdapter("trained", adapter);
    const tokens = model.tokenize(prompt);
    const opts = { maxTokens: 12, temperature: 0, stopAtEos: false };
    const plain = (await model.complete({ tokens }, opts)).text;
    const tuned = (await model.complete({ tokens }, { ...opts, adapter: "trained" })).text;
    expect(tuned).not.toEqual(plain);
    expect(tuned).toMatch(expected);
  } finally {
    await model.dispose();
  }
}
