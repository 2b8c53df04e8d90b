/**
 * One source of truth per rule across the TypeScript / C++ boundary. Each test here fails when one
 * side changes a shared value alone:
 *  - error codes: native/core/status.h (exported by the addon as errorCodes()) = lib/errors.ts
 *    NATIVE_ERROR_CODES, in order; every code is produced somewhere.
 * (Ranges: lib/limits.ts = native/napi/limits.h is checked in limits.test.ts.)
 */
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { loadAddon } from "../../lib/binding.js";
import { ERROR_CODES, JS_ERROR_CODES, NATIVE_ERROR_CODES } from "../../lib/errors.js";
import type { NativeAddon } from "../../lib/native.js";
import { repoRoot as root } from "../helpers.js";

const read = (p: string) => readFileSync(join(root, p), "utf8");
function files(dir: string, ext: RegExp): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, dir))) {
    const p = join(dir, name);
    if (statSync(join(root, p)).isDirectory()) out.push(...files(p, ext));
    else if (ext.test(name)) out.push(p);
  }
  return out;
}

let addon: NativeAddon;
beforeAll(() => {
  addon = loadAddon();
});

describe("one list of error codes", () => {
  /** status.h's LLMS_STATUS_CODES, parsed: [enumerator, JS code]. */
  const statusH = [...read("native/core/status.h").matchAll(/X\((\w+), "(\w+)"\)/g)].map((m) => [m[1], m[2]] as const);

  it("the addon's list (status.h) equals NATIVE_ERROR_CODES, in order", () => {
    expect(addon.errorCodes()).toEqual([...NATIVE_ERROR_CODES]);
    expect(statusH.map(([, c]) => c).filter((c) => c !== "OK")).toEqual([...NATIVE_ERROR_CODES]);
  });

  it("ERROR_CODES (the ErrorCode union) is the native codes plus the TypeScript-only ones, each once", () => {
    expect([...ERROR_CODES]).toEqual([...NATIVE_ERROR_CODES, ...JS_ERROR_CODES]);
    expect(new Set(ERROR_CODES).size).toBe(ERROR_CODES.length);
  });

  it("every native code is produced somewhere in native/core or native/napi (no dead codes)", () => {
    const src = [...files("native/core", /\.(h|cpp)$/), ...files("native/napi", /\.(h|cc)$/)]
      .filter((p) => !p.endsWith("status.h"))
      .map(read)
      .join("\n");
    for (const [e, code] of statusH) {
      if (code === "OK") continue;
      expect(src.includes(`Code::${e}`), `${code} (Code::${e}) is never produced`).toBe(true);
    }
  });

  it("every TypeScript-only code is produced somewhere in lib/ (no dead codes)", () => {
    const src = files("lib", /\.ts$/).filter((p) => !p.endsWith("errors.ts")).map(read).join("\n");
    for (const code of JS_ERROR_CODES) expect(src.includes(`"${code}"`), `${code} is never produced`).toBe(true);
  });

});

