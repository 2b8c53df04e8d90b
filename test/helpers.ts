/** Shared test helpers: fixture paths (skip when ../shared is absent) and a synth cache. */
import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { tmpdir } from "node:os";
import { synth, type SynthOptions } from "../lib/synth.js";

export const repoRoot = resolve(__dirname, "..");
export const fixturesDir = resolve(repoRoot, "..", "shared", "fixtures");
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
