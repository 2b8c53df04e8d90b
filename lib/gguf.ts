/** Reading GGUF metadata from JavaScript (the parse runs on a worker thread). */
import { loadAddon } from "./binding.js";
import { fromNative, wrapNative } from "./errors.js";
import { GGUF_DEFAULTS } from "./defaults.js";
import { GGUF_LIMITS } from "./limits.js";
import type { GgufContents } from "./native.js";
import { checkKeys, checkLimit, checkObject, checkPath } from "./validate.js";

export type { GgufArraySummary, GgufContents, GgufMetaValue, GgufScalar, GgufTensorSummary } from "./native.js";

/** Options of {@link readGguf}. */
export interface ReadGgufOptions {
  /**
   * Metadata arrays longer than this come back as `{type: "array", elementType, length}` (use it to
   * skip large vocabularies when only shapes are needed). Default: no limit.
   */
  maxArrayLength?: number;
  /**
   * Only metadata keys starting with this prefix (or one of these prefixes) are converted to
   * JavaScript, e.g. `"tokenizer."`; the others are left out of `metadata`. Default: every key.
   */
  keyPrefix?: string | string[];
  /** Longest metadata string accepted, in bytes (default 64 MiB); longer ones fail with ERR_GGUF_LIMIT. */
  maxStringBytes?: number;
  /**
   * Memory budget for the parsed metadata, natively and again for its JavaScript copy, in bytes
   * (default 512 MiB); a file needing more fails with ERR_GGUF_LIMIT naming the key.
   */
  maxMetadataBytes?: number;
}

/**
 * Reads a GGUF file's header, metadata and tensor table (not the tensor data). A file whose strings,
 * arrays, counts or nesting exceed llmserve's caps is rejected with `ERR_GGUF_LIMIT` (the message
 * names the key and the limit); a path containing "\0" with `ERR_INVALID_ARGUMENT`.
 * @param path the GGUF file
 * @param options see {@link ReadGgufOptions}
 */
export function readGguf(path: string, options: ReadGgufOptions = {}): Promise<GgufContents> {
  try {
    checkPath("path", path);
    const o = checkObject("readGguf options", options);
    checkKeys("readGguf options", o, ["maxArrayLength", "keyPrefix", "maxStringBytes", "maxMetadataBytes"]);
    const D = GGUF_DEFAULTS;
    const int = (name: keyof typeof GGUF_LIMITS & keyof typeof D): number =>
      o[name] === undefined ? D[name] : checkLimit(name, o[name], GGUF_LIMITS[name]);
    const maxArrayLength = int("maxArrayLength");
    const p = o.keyPrefix;
    const keyPrefixes = p === undefined ? [] : typeof p === "string" ? [p] : p;
    if (!Array.isArray(keyPrefixes) || keyPrefixes.some((k) => typeof k !== "string")) {
      return Promise.reject(
        fromNative({ code: "ERR_INVALID_ARGUMENT", message: "Expected a string or an array of strings for keyPrefix" }),
      );
    }
    // Every field of the native options is set here (the addon has no defaults of its own).
    const native = {
      keyPrefixes: keyPrefixes as string[],
      maxStringBytes: int("maxStringBytes"),
      maxMetadataBytes: int("maxMetadataBytes"),
    };
    return wrapNative(loadAddon().readGguf(path, maxArrayLength, native));
  } catch (err) {
    return Promise.reject(fromNative(err));
  }
}

/** What {@link checkModel} resolves with. */
export interface CheckedModel {
  /** The file's `general.architecture` (one llmserve runs). */
  arch: string;
}

/**
 * Whether llmserve can run a model file, checked as `Model.load` checks it (architecture,
 * hyperparameters, every tensor's presence, shape and type) but without reading the weights or
 * allocating anything: resolves with the architecture, or rejects with the error loading would give
 * (`ERR_UNSUPPORTED_ARCH`, `ERR_MISSING_TENSOR`, `ERR_BAD_SHAPE`, `ERR_UNSUPPORTED_TYPE`, ...).
 * @param path the GGUF file
 */
export function checkModel(path: string): Promise<CheckedModel> {
  try {
    checkPath("path", path);
    return wrapNative(loadAddon().checkModel(path));
  } catch (err) {
    return Promise.reject(fromNative(err));
  }
}
