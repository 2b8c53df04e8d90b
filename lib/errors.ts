/**
 * The codes the native addon can produce, in the order of native/core/status.h's LLMS_STATUS_CODES
 * (the one C++ list; native/napi/errors.h exports it as `errorCodes()`). A test
 * (test/native/truth.test.ts) asserts the addon's list equals this one exactly, so neither side can
 * add, drop or rename a code alone.
 */
export const NATIVE_ERROR_CODES = [
  "ERR_FILE_NOT_FOUND",
  "ERR_IO",
  "ERR_NOT_GGUF",
  "ERR_GGUF_TRUNCATED",
  "ERR_GGUF_CORRUPT",
  "ERR_GGUF_LIMIT",
  "ERR_GGUF_VERSION",
  "ERR_UNSUPPORTED_TYPE",
  "ERR_UNSUPPORTED_ARCH",
  "ERR_MISSING_TENSOR",
  "ERR_BAD_SHAPE",
  "ERR_INVALID_ARGUMENT",
  "ERR_CONTEXT_OVERFLOW",
  "ERR_OUT_OF_MEMORY",
  "ERR_CANCELLED",
  "ERR_QUEUE_FULL",
  "ERR_KV_EXHAUSTED",
  "ERR_DISPOSED",
  "ERR_ADAPTER_NOT_FOUND",
  "ERR_BAD_IMATRIX",
  "ERR_GRAMMAR",
  "ERR_INTERNAL",
] as const;

/**
 * The codes only the TypeScript layer produces: the addon could not be loaded, tokenizer and chat
 * template failures, a LoRA adapter file that changed on disk before its transparent reload, model
 * download (lib/hub) failures. (Codes both layers produce, such as `ERR_DISPOSED` or `ERR_INVALID_ARGUMENT`,
 * are in {@link NATIVE_ERROR_CODES}.)
 */
export const JS_ERROR_CODES = [
  "ERR_NATIVE_LOAD",
  "ERR_TOKENIZER",
  "ERR_TEMPLATE_TIMEOUT",
  "ERR_TEMPLATE_OUTPUT_TOO_LARGE",
  "ERR_ADAPTER_CHANGED",
  "ERR_MODEL_NOT_FOUND",
  "ERR_MODEL_AMBIGUOUS",
  "ERR_HUB_AUTH",
  "ERR_OFFLINE",
  "ERR_DOWNLOAD",
  "ERR_CHECKSUM",
  "ERR_SPLIT_GGUF",
] as const;

/**
 * Every error llmserve throws is an {@link LlmserveError} with a stable `.code` from this list
 * (for example `ERR_GGUF_TRUNCATED`) and a message that says what to do: the native codes, then the
 * TypeScript-only ones.
 */
export const ERROR_CODES = [...NATIVE_ERROR_CODES, ...JS_ERROR_CODES] as const;

/**
 * The stable reasons an {@link LlmserveError} carries: {@link NATIVE_ERROR_CODES} (equal to
 * native/core/status.h, checked by a test) and {@link JS_ERROR_CODES}. `ERR_DISPOSED`: a call on a
 * disposed model or session, whichever layer notices. `ERR_GGUF_LIMIT`: a value in a model
 * file (string, array, count, nesting, metadata memory) is over llmserve's cap; the message names the
 * key and the limit.
 */
export type ErrorCode = (typeof ERROR_CODES)[number];

/**
 * The error type of every failure llmserve reports: native (GGUF parsing, model loading, engine) and
 * JavaScript-side (option validation) alike. Branch on {@link LlmserveError.code}, not the message.
 *
 * ```ts
 * try {
 *   await Model.load("missing.gguf");
 * } catch (err) {
 *   if (err instanceof LlmserveError && err.code === "ERR_FILE_NOT_FOUND") console.error(err.message);
 * }
 * ```
 */
export class LlmserveError extends Error {
  /** Stable, machine-readable reason (see {@link ErrorCode}). */
  readonly code: ErrorCode;
  /**
   * @param code stable reason
   * @param message what happened and what to do about it
   * @param options `cause`: the underlying error, when there is one
   */
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "LlmserveError";
    this.code = code;
  }
}

/** Re-types an error thrown by the native addon (which carries `.code`) as an LlmserveError. */
export function fromNative(err: unknown): LlmserveError {
  if (err instanceof LlmserveError) return err;
  const e = err as { code?: string; message?: string };
  const code: ErrorCode =
    typeof e?.code === "string" && (ERROR_CODES as readonly string[]).includes(e.code)
      ? (e.code as ErrorCode)
      : "ERR_INTERNAL";
  const message =
    typeof e?.message === "string" && e.message.length > 0 ? e.message : `native error ${String(e?.code ?? err)}`;
  return new LlmserveError(code, message, { cause: err });
}

/** Awaits a native promise and re-types its rejection. */
export async function wrapNative<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    throw fromNative(err);
  }
}
