/** Model specs (`hf:owner/repo/file.gguf`, `hf:owner/repo:Q4_K_M`, `https://...`, a path) and file picking. */
import { HUB_DEFAULTS } from "../defaults.js";
import { LlmserveError } from "../errors.js";

/** A parsed model spec: a local path, a URL, or a Hugging Face Hub file or quantization. */
export type ModelSpec =
  | { kind: "path"; path: string }
  | { kind: "url"; url: URL }
  | {
      kind: "hf";
      /** "owner/name". */
      repo: string;
      /** Branch, tag or commit (default "main"). */
      revision: string;
      /** The file's path in the repository, when the spec names one. */
      file?: string;
      /** The quantization tag to pick a file by (`:Q4_K_M`), when the spec gives one. */
      quant?: string;
    };

/** The quantization llama.cpp picks when a repository has several GGUF files and none is asked for. */
export const DEFAULT_QUANT = HUB_DEFAULTS.quant;

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const SPLIT = /-(\d{5})-of-(\d{5})\.gguf$/i;

function bad(spec: string, why: string): never {
  throw new LlmserveError(
    "ERR_INVALID_ARGUMENT",
    `Cannot read the model spec ${JSON.stringify(spec)}: ${why}. Use hf:OWNER/REPO/FILE.gguf, hf:OWNER/REPO:QUANT (e.g. hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF:Q4_K_M), an https:// URL, or a file path.`,
  );
}

/** True for specs that name something to download (`hf:` or an http(s) URL), not a local path. */
export function isRemoteSpec(spec: string): boolean {
  return /^hf:/i.test(spec) || /^https?:\/\//i.test(spec);
}

/** A file path inside a repository, checked so it cannot leave the cache folder. */
function checkRepoPath(spec: string, p: string): string {
  const parts = p.split("/");
  if (parts.some((s) => s === "" || s === "." || s === ".." || s.includes("\\") || s.includes("\0")))
    bad(spec, `${JSON.stringify(p)} is not a file path inside the repository`);
  return p;
}

/** Parses a model spec; throws ERR_INVALID_ARGUMENT (with the accepted forms) when it cannot. */
export function parseModelSpec(spec: string): ModelSpec {
  if (/^https?:\/\//i.test(spec)) {
    let url: URL;
    try {
      url = new URL(spec);
    } catch {
      bad(spec, "it is not a valid URL");
    }
    return { kind: "url", url };
  }
  if (!/^hf:/i.test(spec)) return { kind: "path", path: spec };
  let rest = spec.slice(3);
  if (rest.startsWith("//")) rest = rest.slice(2); // hf://owner/repo as some tools write it
  const slash = rest.indexOf("/");
  if (slash <= 0) bad(spec, "it has no OWNER/REPO");
  const owner = rest.slice(0, slash);
  rest = rest.slice(slash + 1);
  const end = rest.search(/[/:@]/);
  const name = end < 0 ? rest : rest.slice(0, end);
  rest = end < 0 ? "" : rest.slice(end);
  if (!NAME.test(owner) || !NAME.test(name) || name.includes(".."))
    bad(spec, `${JSON.stringify(`${owner}/${name}`)} is not a repository name`);
  let revision: string = HUB_DEFAULTS.revision;
  if (rest.startsWith("@")) {
    const m = /^@([^/:]+)(.*)$/.exec(rest);
    if (!m || !NAME.test(m[1]) || m[1].includes("..")) bad(spec, "the revision after @ is not a branch, tag or commit");
    revision = m[1];
    rest = m[2];
  }
  const repo = `${owner}/${name}`;
  if (rest === "") return { kind: "hf", repo, revision };
  if (rest.startsWith(":")) {
    const quant = rest.slice(1);
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(quant)) bad(spec, "the quantization after : is not a tag like Q4_K_M");
    return { kind: "hf", repo, revision, quant };
  }
  const file = checkRepoPath(spec, rest.slice(1));
  if (!/\.gguf$/i.test(file)) bad(spec, `${JSON.stringify(file)} is not a .gguf file`);
  return { kind: "hf", repo, revision, file };
}

/** The parts of a split GGUF (`name-00001-of-00003.gguf` → all three names); `[file]` otherwise. */
export function splitParts(file: string): string[] {
  const m = SPLIT.exec(file);
  if (!m) return [file];
  const n = Number(m[2]);
  const stem = file.slice(0, m.index);
  return Array.from({ length: n }, (_, i) => `${stem}-${String(i + 1).padStart(5, "0")}-of-${m[2]}.gguf`);
}

/** Whether a file is a later part of a split GGUF (not the first, which names the model). */
function isLaterPart(file: string): boolean {
  const m = SPLIT.exec(file);
  return m !== null && Number(m[1]) !== 1;
}

/** The repository's model files: GGUF, not a vision projector, not a later part of a split file. */
export function modelFiles(files: readonly string[]): string[] {
  return files.filter((f) => /\.gguf$/i.test(f) && !/(^|\/)mmproj[^/]*$/i.test(f) && !isLaterPart(f)).sort();
}

/**
 * The file of `files` for a quantization tag: a file (or folder) whose name has the tag as a whole
 * word (`model.Q4_K_M.gguf`, `Q4_K_M/model-00001-of-00002.gguf`), else the one whose name contains
 * it (case-insensitively either way). No tag: the only GGUF file, else {@link DEFAULT_QUANT}.
 * Throws ERR_MODEL_NOT_FOUND or ERR_MODEL_AMBIGUOUS listing the candidates.
 */
export function pickModelFile(files: readonly string[], quant: string | undefined, repo: string): string {
  const all = modelFiles(files);
  const list = (fs: string[]) => fs.map((f) => `  ${f}`).join("\n");
  if (all.length === 0)
    throw new LlmserveError("ERR_MODEL_NOT_FOUND", `The repository ${repo} has no GGUF model file.`);
  if (quant === undefined && all.length === 1) return all[0];
  const tag = quant ?? DEFAULT_QUANT;
  const esc = tag.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const word = new RegExp(`(^|[-./])${esc}([-./]|$)`, "i");
  let hits = all.filter((f) => word.test(f));
  if (hits.length === 0) hits = all.filter((f) => f.toLowerCase().includes(tag.toLowerCase()));
  if (hits.length === 1) return hits[0];
  if (hits.length > 1)
    throw new LlmserveError(
      "ERR_MODEL_AMBIGUOUS",
      `Several files of ${repo} match ${JSON.stringify(tag)}:\n${list(hits)}\nName one: hf:${repo}/FILE.gguf.`,
    );
  if (quant === undefined)
    throw new LlmserveError(
      "ERR_MODEL_AMBIGUOUS",
      `${repo} has several GGUF files and none is ${DEFAULT_QUANT}; pick one with hf:${repo}:QUANT or hf:${repo}/FILE.gguf:\n${list(all)}`,
    );
  throw new LlmserveError(
    "ERR_MODEL_NOT_FOUND",
    `No GGUF file of ${repo} matches ${JSON.stringify(quant)}. Its files:\n${list(all)}`,
  );
}
