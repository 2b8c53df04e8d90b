// The addon loader's choice of binary (lib/binding.ts), on a fake file system: override, prebuild
// before local builds unless a local build is newer, and the ERR_NATIVE_LOAD message listing every
// path with its reason, the platform and C library, the prebuilds the package has, and the
// source-build command for an installed package or a checkout.
import { describe, expect, it } from "vitest";
import { join } from "node:path";
import {
  addonCandidates,
  buildHint,
  detectLibc,
  loadFirst,
  loadedAddonPath,
  type AddonCandidate,
  type LoadContext,
} from "../../lib/binding.js";
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

/** The error loadFirst throws when every existing candidate fails to load with `why`. */
function loadError(
  c: AddonCandidate[],
  exists: (p: string) => boolean,
  ctx: LoadContext,
  why = "bad binary",
): LlmserveError {
  try {
    loadFirst(
      c,
      () => {
        throw new Error(why);
      },
      exists,
      ctx,
    );
  } catch (e) {
    return e as LlmserveError;
  }
  throw new Error("loadFirst did not throw");
}
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

  it("throws ERR_NATIVE_LOAD naming the platform, the shipped prebuilds, every path with its reason, and how to build", () => {
    const c: AddonCandidate[] = [
      { path: "/o.node", source: "env" },
      { path: "/pkg/prebuilds/linux-x64/llmserve.node", source: "prebuild" },
      { path: "/pkg/build/Release/llmserve.node", source: "local" },
    ];
    const e = loadError(
      c,
      (p) => p === "/pkg/prebuilds/linux-x64/llmserve.node",
      {
        platform: "linux",
        arch: "x64",
        root: "/pkg",
        checkout: false,
        libc: "glibc",
        shipped: ["darwin-arm64", "linux-x64"],
      },
      "GLIBC_2.38 not found\nstack",
    );
    expect(e).toBeInstanceOf(LlmserveError);
    expect(e.code).toBe("ERR_NATIVE_LOAD");
    expect(e.message).toContain("native addon for linux-x64 (glibc).");
    expect(e.message).toContain("This package has prebuilt binaries for darwin-arm64, linux-x64.");
    expect(e.message).not.toContain("none for");
    expect(e.message).toContain("/o.node (not found, from LLMSERVE_ADDON)");
    expect(e.message).toContain("/pkg/prebuilds/linux-x64/llmserve.node (GLIBC_2.38 not found)");
    expect(e.message).toContain("/pkg/build/Release/llmserve.node (not found)");
    expect(e.message).not.toContain("stack");
    // An installed package: the CLI's source build, and where it puts the binary.
    expect(e.message).toContain("npx llmserve build-from-source");
    expect(e.message).toContain(join("/pkg", "build", "Release", "llmserve.node"));
    expect(e.message).not.toContain("npm run build");
    expect(e.message).toMatch(/cmake and a C\+\+20 compiler/);
    expect(e.message).toContain("LLMSERVE_ADDON");
  });

  it("says when no prebuild fits the platform, and that musl cannot load the glibc prebuild", () => {
    const none = loadError([], () => false, {
      platform: "freebsd",
      arch: "x64",
      root: "/pkg",
      checkout: false,
      shipped: ["linux-x64"],
    });
    expect(none.message).toContain(
      "native addon for freebsd-x64. This package has prebuilt binaries for linux-x64, none for freebsd-x64.",
    );
    const empty = loadError([], () => false, {
      platform: "linux",
      arch: "arm64",
      root: "/pkg",
      checkout: false,
      libc: "glibc",
      shipped: [],
    });
    expect(empty.message).toContain("linux-arm64 (glibc). This package has no prebuilt binaries. Tried:");
    const musl = loadError([], () => false, {
      platform: "linux",
      arch: "x64",
      root: "/pkg",
      checkout: false,
      libc: "musl",
      shipped: ["linux-x64"],
    });
    expect(musl.message).toContain("linux-x64 (musl)");
    expect(musl.message).toContain("The linux-x64 prebuild needs glibc; on musl (e.g. Alpine) build from source");
    const glibc = loadError([], () => false, {
      platform: "linux",
      arch: "x64",
      root: "/pkg",
      checkout: false,
      libc: "glibc",
      shipped: ["linux-x64"],
    });
    expect(glibc.message).not.toContain("needs glibc");
  });

  it("in a source checkout, tells to run npm run build there", () => {
    const e = loadError([], () => false, {
      platform: "linux",
      arch: "x64",
      root: "/src",
      checkout: true,
      libc: "glibc",
      shipped: [],
    });
    expect(e.message).toContain("run `npm run build` in /src");
    expect(e.message).not.toContain("build-from-source");
    expect(buildHint("/src", false)).toContain("npx llmserve build-from-source");
  });
});

describe("detectLibc", () => {
  it("is glibc or musl on Linux and undefined elsewhere", () => {
    const libc = detectLibc();
    if (process.platform === "linux") expect(["glibc", "musl"]).toContain(libc);
    else expect(libc).toBeUndefined();
  });
});

describe("the real loader", () => {
  it("loads a binary from this checkout and says which", () => {
    const p = loadedAddonPath();
    expect(p).toMatch(/llmserve\.node$/);
  });
});
