// The addon loader's choice of binary (lib/binding.ts), on a fake file system: override, prebuild
// before local builds unless a local build is newer, and the ERR_NATIVE_LOAD message listing every
// path with its reason.
import { describe, expect, it } from "vitest";
import { join } from "node:path";
import { addonCandidates, loadFirst, loadedAddonPath, type AddonCandidate } from "../../lib/binding.js";
import { LlmserveError } from "../../lib/errors.js";

const root = "/pkg";
const pre = join(root, "prebuilds", "linux-x64", "llmserve.node");
const release = join(root, "build", "Release", "llmserve.node");
const debug = join(root, "build", "Debug", "llmserve.node");
const flat = join(root, "build", "llmserve.node");

/** A fake file system: path → mtime. */
function fs(files: Record<string, number>) {
  return { mtime: (p: string) => files[p] };
}

const paths = (c: AddonCandidate[]) => c.map((x) => x.path);
const base = { root, platform: "linux", arch: "x64", env: {} as NodeJS.ProcessEnv };

describe("addonCandidates", () => {
  it("tries the prebuild, then local builds, when no override", () => {
    const c = addonCandidates({ ...base, ...fs({ [pre]: 2, [release]: 1 }) });
    expect(paths(c)).toEqual([pre, release, debug, flat]);
  });

  it("puts LLMSERVE_ADDON first, resolved to an absolute path", () => {
    const c = addonCandidates({ ...base, env: { LLMSERVE_ADDON: "/x/custom.node" }, ...fs({ [pre]: 1 }) });
    expect(c[0]).toEqual({ path: "/x/custom.node", source: "env" });
    expect(paths(c).slice(1)).toEqual([pre, release, debug, flat]);
  });

  it("tries a local build newer than the prebuild before it", () => {
    const c = addonCandidates({ ...base, ...fs({ [pre]: 5, [release]: 9 }) });
    expect(paths(c)).toEqual([release, debug, flat, pre]);
    const older = addonCandidates({ ...base, ...fs({ [pre]: 9, [release]: 5 }) });
    expect(paths(older)).toEqual([pre, release, debug, flat]);
  });

  it("uses the platform and arch in the prebuild folder name", () => {
    const c = addonCandidates({ ...base, platform: "darwin", arch: "arm64", ...fs({}) });
    expect(c[0].path).toBe(join(root, "prebuilds", "darwin-arm64", "llmserve.node"));
  });
});

describe("loadFirst", () => {
  it("returns the first candidate that loads and skips the ones that fail", () => {
    const c: AddonCandidate[] = [
      { path: "/a.node", source: "env" },
      { path: "/b.node", source: "prebuild" },
      { path: "/c.node", source: "local" },
    ];
    const r = loadFirst(
      c,
      (p) => {
        if (p === "/a.node") throw new Error("invalid ELF header\nmore detail");
        return { from: p };
      },
      () => true,
    );
    expect(r).toEqual({ addon: { from: "/b.node" }, path: "/b.node" });
  });

  it("throws ERR_NATIVE_LOAD listing every path with its reason and how to build", () => {
    const c: AddonCandidate[] = [
      { path: "/o.node", source: "env" },
      { path: "/pkg/prebuilds/linux-x64/llmserve.node", source: "prebuild" },
      { path: "/pkg/build/Release/llmserve.node", source: "local" },
    ];
    let err: unknown;
    try {
      loadFirst(
        c,
        () => {
          throw new Error("GLIBC_2.38 not found\nstack");
        },
        (p) => p === "/pkg/prebuilds/linux-x64/llmserve.node",
        { platform: "linux", arch: "x64", root: "/pkg" },
      );
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LlmserveError);
    const e = err as LlmserveError;
    expect(e.code).toBe("ERR_NATIVE_LOAD");
    expect(e.message).toContain("linux-x64");
    expect(e.message).toContain("/o.node (not found, from LLMSERVE_ADDON)");
    expect(e.message).toContain("/pkg/prebuilds/linux-x64/llmserve.node (GLIBC_2.38 not found)");
    expect(e.message).toContain("/pkg/build/Release/llmserve.node (not found)");
    expect(e.message).not.toContain("stack");
    expect(e.message).toContain("npx cmake-js compile");
    expect(e.message).toContain("in /pkg");
    expect(e.message).toMatch(/cmake and a C\+\+20 compiler/);
  });
});

describe("the real loader", () => {
  it("loads a binary from this checkout and says which", () => {
    const p = loadedAddonPath();
    expect(p).toMatch(/llmserve\.node$/);
  });
});
