// What bench:lora and bench:lora-quality share: the projections their adapters target, the small
// base of --quick, and the adapter files synthesized once into the cache directory.
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import { cacheDir } from "../common.mjs";

export const TARGETS = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

// --quick's base: a small llama (~56M parameters, vocab 32000) that synthesizes in seconds.
export const QUICK_MODEL = {
  shape: {
    arch: "llama",
    dim: 512,
    layers: 8,
    heads: 8,
    kvHeads: 4,
    ffn: 1408,
    vocabSize: 32000,
    context: 2048,
    seed: 7,
  },
  name: "small-llama-56m-shape",
};

/**
 * Adapters of `rank` and `type` for the base at modelPath, seeds 1..n (synthLora over TARGETS,
 * spread of B `stdB`, synthLora's default when undefined), each synthesized once into
 * <cache>/lora/ (a temp name, then renamed) and reused; the base's name and size identify it.
 * Returns their paths in seed order.
 */
export async function ensureAdapters(synthLora, modelPath, { rank, n, type, stdB }) {
  const dir = join(cacheDir(), "lora");
  mkdirSync(dir, { recursive: true });
  const stem = `${basename(modelPath, ".gguf")}-${statSync(modelPath).size}`;
  const paths = [];
  for (let seed = 1; seed <= n; seed++) {
    const path = join(dir, `${stem}-r${rank}-${type}${stdB === undefined ? "" : `-stdb${stdB}`}-seed${seed}.gguf`);
    if (!existsSync(path)) {
      const tmp = `${path}.partial-${process.pid}`;
      process.stdout.write(`Synthesizing adapter rank ${rank} #${seed} (once) -> ${path}\n`);
      try {
        await synthLora(modelPath, tmp, {
          rank,
          seed,
          type,
          targets: TARGETS,
          ...(stdB === undefined ? {} : { stdB }),
        });
      } catch (err) {
        rmSync(tmp, { force: true });
        throw err;
      }
      renameSync(tmp, path);
    }
    paths.push(path);
  }
  return paths;
}
