/** Reading GGUF metadata from JavaScript (the parse runs on a worker thread). */
import { loadAddon } from "./binding.js";
import { wrapNative } from "./errors.js";
import { GGUF_LIMITS } from "./limits.js";
import { checkLimit } from "./validate.js";
import type { GgufContents } from "./native.js";

export type { GgufArraySummary, GgufContents, GgufMetaValue, GgufScalar, GgufTensorSummary } from "./native.js";

/**
 * Reads a GGUF file's header, metadata and tensor table (not the tensor data).
 * @param path the GGUF file
 * @param options `maxArrayLength`: metadata arrays longer than this come back as
 *   `{type: "array", elementType, length}` (use it to skip large vocabularies when only shapes are needed).
 */
export async function readGguf(path: string, options: { maxArrayLength?: number } = {}): Promise<GgufContents> {
  const max = options.maxArrayLength === undefined ? Number.MAX_SAFE_INTEGER : checkLimit("maxArrayLength", options.maxArrayLength, GGUF_LIMITS.maxArrayLength);
  return wrapNative(loadAddon().readGguf(path, max));
}
