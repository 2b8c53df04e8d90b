/**
 * Loads the native addon: a prebuilt binary for this platform first, then a local build.
 * When nothing loads, the error lists every path tried and how to build locally.
 */
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { LlmserveError } from "./errors.js";
import type { NativeAddon } from "./native.js";

const require = createRequire(import.meta.url);
export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), "..");

function candidates(): string[] {
  const plat = `${process.platform}-${process.arch}`;
  const list: string[] = [];
  if (process.env.LLMSERVE_ADDON) list.push(process.env.LLMSERVE_ADDON);
  list.push(
    join(packageRoot, "prebuilds", plat, "llmserve.node"),
    join(packageRoot, "build", "Release", "llmserve.node"),
    join(packageRoot, "build", "llmserve.node"),
  );
  return list;
}

let cached: NativeAddon | undefined;

export function loadAddon(): NativeAddon {
  if (cached) return cached;
  const tried: string[] = [];
  for (const p of candidates()) {
    if (!existsSync(p)) {
      tried.push(`${p} (not found)`);
      continue;
    }
    try {
      cached = require(p) as NativeAddon;
      return cached;
    } catch (err) {
      tried.push(`${p} (${(err as Error).message.split("\n")[0]})`);
    }
  }
  throw new LlmserveError(
    "ERR_NATIVE_LOAD",
    `llmserve could not load its native addon for ${process.platform}-${process.arch}. Tried:\n  ` +
      tried.join("\n  ") +
      `\nBuild it locally with \`npx cmake-js compile --out build\` in ${packageRoot} (needs cmake and a C++20 compiler).`,
  );
}
