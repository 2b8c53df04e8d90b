/** lib/hub/spec.ts and cache paths: spec parsing, the quantization picker, split names, cache folders. */
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { defaultCacheDir, hubCachePath } from "../../../lib/hub/cache.js";
import { parseModelSpec, pickModelFile, splitParts } from "../../../lib/hub/spec.js";
import { LlmserveError } from "../../../lib/errors.js";

function code(f: () => unknown): string | undefined {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(LlmserveError);
    return (err as LlmserveError).code;
  }
  return undefined;
}

describe("parseModelSpec", () => {
  it("reads files, quantizations, revisions, URLs and paths", () => {
    expect(parseModelSpec("hf:org/repo/sub/m.Q4_0.gguf")).toEqual({
      kind: "hf",
      repo: "org/repo",
      revision: "main",
      file: "sub/m.Q4_0.gguf",
    });
    expect(parseModelSpec("hf:org/repo:Q4_K_M")).toEqual({
      kind: "hf",
      repo: "org/repo",
      revision: "main",
      quant: "Q4_K_M",
    });
    expect(parseModelSpec("hf:org/repo@v1.0:q8_0")).toMatchObject({ revision: "v1.0", quant: "q8_0" });
    expect(parseModelSpec("hf:org/repo")).toEqual({ kind: "hf", repo: "org/repo", revision: "main" });
    expect(parseModelSpec("https://example.com/a/m.gguf")).toMatchObject({ kind: "url" });
    expect(parseModelSpec("./m.gguf")).toEqual({ kind: "path", path: "./m.gguf" });
  });

  it("refuses specs that could leave the cache folder or are not GGUF files", () => {
    for (const bad of [
      "hf:org/repo/../../etc/passwd.gguf",
      "hf:org/repo/a//b.gguf",
      "hf:org/../x.gguf",
      "hf:org/repo@../x/m.gguf",
      "hf:org/repo/m.bin",
      "hf:org",
      "hf:org/repo:",
      "hf:org/repo:Q4 K",
      "hf:org/repo/a\\..\\b.gguf",
    ]) {
      expect(
        code(() => parseModelSpec(bad)),
        bad,
      ).toBe("ERR_INVALID_ARGUMENT");
    }
  });
});

describe("pickModelFile", () => {
  const files = [
    "README.md",
    "m.Q4_K_M.gguf",
    "m.Q4_K_S.gguf",
    "m.Q8_0.gguf",
    "mmproj-m-f16.gguf",
    "Q6_K/m-Q6_K-00001-of-00002.gguf",
    "Q6_K/m-Q6_K-00002-of-00002.gguf",
  ];
  it("picks by whole tag, case-insensitively, a split model by its first part, Q4_K_M when none is asked", () => {
    expect(pickModelFile(files, "q8_0", "o/r")).toBe("m.Q8_0.gguf");
    expect(pickModelFile(files, "Q4_K_M", "o/r")).toBe("m.Q4_K_M.gguf");
    expect(pickModelFile(files, "q6_k", "o/r")).toBe("Q6_K/m-Q6_K-00001-of-00002.gguf");
    expect(pickModelFile(files, undefined, "o/r")).toBe("m.Q4_K_M.gguf");
    expect(pickModelFile(["only.gguf", "mmproj.gguf"], undefined, "o/r")).toBe("only.gguf");
  });
  it("ambiguous and unknown tags are typed errors", () => {
    expect(code(() => pickModelFile(files, "Q4_K", "o/r"))).toBe("ERR_MODEL_AMBIGUOUS");
    expect(code(() => pickModelFile(files, "Q2_K", "o/r"))).toBe("ERR_MODEL_NOT_FOUND");
    expect(code(() => pickModelFile(["a.Q8_0.gguf", "b.Q8_0.gguf"], undefined, "o/r"))).toBe("ERR_MODEL_AMBIGUOUS");
    expect(code(() => pickModelFile(["README.md"], undefined, "o/r"))).toBe("ERR_MODEL_NOT_FOUND");
  });
});

describe("splitParts and cache folders", () => {
  it("lists every part of a split model", () => {
    expect(splitParts("d/m-00002-of-00003.gguf")).toEqual([
      "d/m-00001-of-00003.gguf",
      "d/m-00002-of-00003.gguf",
      "d/m-00003-of-00003.gguf",
    ]);
    expect(splitParts("m.gguf")).toEqual(["m.gguf"]);
  });
  it("the cache folder: LLMSERVE_MODELS, else the platform's user cache folder", () => {
    expect(defaultCacheDir({ LLMSERVE_MODELS: "/m" }, "linux", "/h")).toBe("/m");
    expect(defaultCacheDir({}, "linux", "/h")).toBe(join("/h", ".cache", "llmserve", "models"));
    expect(defaultCacheDir({ XDG_CACHE_HOME: "/x" }, "linux", "/h")).toBe(join("/x", "llmserve", "models"));
    expect(defaultCacheDir({}, "darwin", "/h")).toBe(join("/h", "Library", "Caches", "llmserve", "models"));
    expect(defaultCacheDir({ LOCALAPPDATA: "C:/L" }, "win32", "/h")).toBe(join("C:/L", "llmserve", "models"));
    expect(hubCachePath("/c", "o/r", "main", "a/b.gguf")).toBe(join("/c", "hf", "o", "r", "main", "a", "b.gguf"));
  });
});
