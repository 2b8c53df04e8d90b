// The addon loader's choice of binary (lib/binding.ts), on a fake file system: override, CUDA
// variant only with a device, prebuild before local builds unless a local build is newer, and the
// ERR_NATIVE_LOAD message listing every path with its reason.
import { describe, expect, it } from "vitest";
import { join } from "node:path";
import { addonCandidates, cudaDevicePresent, loadFirst, loadedAddonPath, type AddonCandidate } from "../../lib/binding.js";
import { LlmserveError } from "../../lib/errors.js";

const root = "/pkg";
const pre = join(root, "prebuilds", "linux-x64", "llmserve.node");
const preCuda = join(root, "prebuilds", "linux-x64", "llmserve.cuda.node");
const release = join(root, "build", "Release", "llmserve.node");
const debug = join(root, "build", "Debug", "llmserve.node");
const flat = join(root, "build", "llmserve.node");

/** A fake file system: path → mtime. */
function fs(files: Record<string, number>) {
  return {
    exists: (p: string) => p in files,
    mtime: (p: string) => files[p],
  };
}

const paths = (c: AddonCandidate[]) => c.map((x) => x.path);
const base = { root, platform: "linux", arch: "x64", env: {} as NodeJS.ProcessEnv };

describe("addonCandidates", () => {
  it("tries the prebuild, then local builds, when no override and no CUDA binary", () => {
    let probed = 0;
    const c = addonCandidates({ ...base, ...fs({ [pre]: 2, [release]: 1 }), cudaPresent: () => (probed++, true) });
    expect(paths(c)).toEqual([pre, release, debug, flat]);
    expect(probed).toBe(0); // no CUDA binary: the device is not even probed
  });

  it("puts LLMSERVE_ADDON first, resolved to an absolute path", () => {
    const c = addonCandidates({ ...base, env: { LLMSERVE_ADDON: "/x/custom.node" }, ...fs({ [pre]: 1 }) });
    expect(c[0]).toEqual({ path: "/x/custom.node", source: "env" });
    expect(paths(c).slice(1)).toEqual([pre, release, debug, flat]);
  });

  it("tries the CUDA binary first (after the override) only when a CUDA device is present", () => {
    const files = fs({ [pre]: 2, [preCuda]: 2 });
    const withGpu = addonCandidates({ ...base, env: { LLMSERVE_ADDON: "/o.node" }, ...files, cudaPresent: () => true });
    expect(paths(withGpu)).toEqual(["/o.node", preCuda, pre, release, debug, flat]);
    expect(withGpu[1].skip).toBeUndefined();

    const noGpu = addonCandidates({ ...base, ...files, cudaPresent: () => false });
    expect(noGpu[0].path).toBe(preCuda);
    expect(noGpu[0].skip).toMatch(/no CUDA device/);
    expect(paths(noGpu).slice(1)).toEqual([pre, release, debug, flat]);
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

describe("cudaDevicePresent", () => {
  const never = () => {
    throw new Error("must not run");
  };
  it("is true when /dev/nvidia0 exists, without running nvidia-smi", () => {
    expect(cudaDevicePresent({ env: {}, exists: (p) => p === "/dev/nvidia0", run: never })).toBe(true);
  });
  it("falls back to nvidia-smi -L when the device node is missing", () => {
    const calls: string[] = [];
    const run = (cmd: string, args: string[]) => (calls.push([cmd, ...args].join(" ")), true);
    expect(cudaDevicePresent({ env: {}, exists: () => false, run })).toBe(true);
    expect(calls).toEqual(["nvidia-smi -L"]);
    expect(cudaDevicePresent({ env: {}, exists: () => false, run: () => false })).toBe(false);
  });
  it("honours LLMSERVE_CUDA=0 and =1 without probing", () => {
    expect(cudaDevicePresent({ env: { LLMSERVE_CUDA: "0" }, exists: () => true, run: never })).toBe(false);
    expect(cudaDevicePresent({ env: { LLMSERVE_CUDA: "1" }, exists: () => false, run: never })).toBe(true);
  });
  it("probes this machine without throwing", () => {
    // The real probe on this machine: whatever it says, it must not throw.
    expect(typeof cudaDevicePresent({ env: {} })).toBe("boolean");
  });
});

describe("loadFirst", () => {
  it("returns the first candidate that loads and skips the ones that fail", () => {
    const c: AddonCandidate[] = [
      { path: "/a.node", source: "env" },
      { path: "/b.node", source: "prebuild" },
      { path: "/c.node", source: "local" },
    ];
    const r = loadFirst(c, (p) => {
      if (p === "/a.node") throw new Error("invalid ELF header\nmore detail");
      return { from: p };
    }, () => true);
    expect(r).toEqual({ addon: { from: "/b.node" }, path: "/b.node" });
  });

  it("throws ERR_NATIVE_LOAD listing every path with its reason and how to build", () => {
    const c: AddonCandidate[] = [
      { path: "/o.node", source: "env" },
      { path: "/pkg/prebuilds/linux-x64/llmserve.cuda.node", source: "prebuild-cuda", skip: "skipped: no CUDA device" },
      { path: "/pkg/prebuilds/linux-x64/llmserve.node", source: "prebuild" },
      { path: "/pkg/build/Release/llmserve.node", source: "local" },
    ];
    let err: unknown;
    try {
      loadFirst(c, () => {
        throw new Error("GLIBC_2.38 not found\nstack");
      }, (p) => p === "/pkg/prebuilds/linux-x64/llmserve.node", { platform: "linux", arch: "x64", root: "/pkg" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LlmserveError);
    const e = err as LlmserveError;
    expect(e.code).toBe("ERR_NATIVE_LOAD");
    expect(e.message).toContain("linux-x64");
    expect(e.message).toContain("/o.node (not found, from LLMSERVE_ADDON)");
    expect(e.message).toContain("llmserve.cuda.node (skipped: no CUDA device)");
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
    expect(p).toMatch(/llmserve(\.cuda)?\.node$/);
  });
});
