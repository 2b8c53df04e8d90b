/** OpenAI-style error objects and the mapping from llmserve / fastify errors to HTTP statuses. */

/** The body of every error response: `{"error": {message, type, code, param}}`. */
export interface OpenAIErrorBody {
  /** The error, as OpenAI reports it. */
  error: {
    /** What went wrong and what to do about it. */
    message: string;
    /** The class of error: "invalid_request_error", "authentication_error", "rate_limit_error", ... */
    type: string;
    /** A stable machine-readable reason ("context_length_exceeded", "model_not_found", ...) or null. */
    code: string | null;
    /** The request parameter at fault ("temperature", "messages[0].role") or null. */
    param: string | null;
  };
}

/** An error with the HTTP status and OpenAI type/code it is answered with. */
export class ApiError extends Error {
  /** HTTP status code. */
  readonly status: number;
  /** OpenAI error type (see {@link OpenAIErrorBody}). */
  readonly type: string;
  /** Stable reason, or null. */
  readonly code: string | null;
  /** The parameter at fault, or null. */
  readonly param: string | null;
  constructor(
    status: number,
    message: string,
    opts: { type?: string; code?: string | null; param?: string | null; cause?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    this.name = "ApiError";
    this.status = status;
    this.type = opts.type ?? defaultType(status);
    this.code = opts.code ?? null;
    this.param = opts.param ?? null;
  }

  /** The JSON response body. */
  body(): OpenAIErrorBody {
    return { error: { message: this.message, type: this.type, code: this.code, param: this.param } };
  }
}

function defaultType(status: number): string {
  if (status === 401) return "authentication_error";
  if (status === 403) return "permission_error";
  if (status === 404) return "not_found_error";
  if (status === 429) return "rate_limit_error";
  if (status >= 500) return status === 503 ? "server_overloaded" : "server_error";
  return "invalid_request_error";
}

interface FastifyLikeError {
  code?: unknown;
  statusCode?: unknown;
  message?: unknown;
  validation?: { instancePath?: string; keyword?: string; params?: Record<string, unknown>; message?: string }[];
  validationContext?: string;
}

/** The parameter a JSON-schema validation error is about ("temperature", "messages[0].role"). */
function validationParam(v: NonNullable<FastifyLikeError["validation"]>[number]): string | null {
  const parts = (v.instancePath ?? "").split("/").filter((p) => p.length > 0);
  if (typeof v.params?.missingProperty === "string") parts.push(v.params.missingProperty);
  if (parts.length === 0) return null;
  return parts.map((p, i) => (/^\d+$/.test(p) ? `[${p}]` : i === 0 ? p : `.${p}`)).join("");
}

/**
 * The validation error to report. For a value allowed several shapes (`anyOf`: a string or an
 * array...), Ajv lists one error per shape; the one that is not about the type ("must NOT have
 * more than 256 items", "must be >= 0" at prompt[1]) says what is actually wrong. Otherwise the first.
 */
function mostSpecific(
  errors: NonNullable<FastifyLikeError["validation"]>,
): NonNullable<FastifyLikeError["validation"]>[number] {
  // Stryker disable next-line StringLiteral: any string that is not one of the three keywords behaves the same
  return errors.find((v) => !["type", "anyOf", "oneOf"].includes(v.keyword ?? "")) ?? errors[0];
}

/** Any thrown value -> the ApiError it is answered with (user errors are never 500). */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  const e = (err ?? {}) as FastifyLikeError;
  const message = typeof e.message === "string" ? e.message : String(err);
  if (Array.isArray(e.validation) && e.validation.length > 0) {
    const v = mostSpecific(e.validation);
    const param = validationParam(v);
    const what = param ?? (e.validationContext === "body" ? "the request body" : "the request");
    return new ApiError(400, `Invalid value for ${what}: ${v.message ?? message}`, {
      param,
      code: "invalid_value",
      cause: err,
    });
  }
  // Stryker disable next-line ConditionalExpression,StringLiteral: a non-string code, or any other string, matches no case below
  const code = typeof e.code === "string" ? e.code : "";
  switch (code) {
    case "ERR_INVALID_ARGUMENT":
    case "ERR_TOKENIZER":
      return new ApiError(400, message, { code: "invalid_value", cause: err });
    case "ERR_GRAMMAR":
      // A grammar compiled from response_format that the engine refused (too large, left-recursive).
      return new ApiError(400, message, { code: "invalid_grammar", param: "response_format", cause: err });
    // Stryker disable next-line ConditionalExpression: without its own return it falls through to the identical case below
    case "ERR_CONTEXT_OVERFLOW":
      return new ApiError(400, message, { code: "context_length_exceeded", param: "messages", cause: err });
    case "ERR_TEMPLATE_OUTPUT_TOO_LARGE":
      // The rendered prompt cannot fit the context: for the client, an overlong conversation (the
      // message says what to do when a short one triggers it, i.e. the template is at fault).
      return new ApiError(400, message, { code: "context_length_exceeded", param: "messages", cause: err });
    case "ERR_TEMPLATE_TIMEOUT":
      // Admitted conversations are bounded (message count, characters), so a sound template renders
      // any of them in milliseconds: running out of time is the server's template misbehaving (a
      // configuration problem for the operator, logged as a 5xx), not a request to retry as is.
      return new ApiError(500, message, { type: "server_error", code: "template_timeout", cause: err });
    case "ERR_ADAPTER_NOT_FOUND":
      // A LoRA adapter unloaded between the request's check and its submit: as an unknown model.
      return new ApiError(404, message, { code: "model_not_found", param: "model", cause: err });
    case "ERR_ADAPTER_CHANGED":
    case "ERR_FILE_NOT_FOUND":
      // In a generation request only a LoRA adapter's transparent reload (after an eviction under
      // maxAdapters) reads a file: its file was changed or removed on the server, an operator problem.
      return new ApiError(500, message, { type: "server_error", code: "adapter_unavailable", cause: err });
    case "ERR_QUEUE_FULL":
      return new ApiError(429, message, { code: "queue_full", cause: err });
    case "ERR_KV_EXHAUSTED":
    case "ERR_OUT_OF_MEMORY":
      return new ApiError(503, message, { code: "engine_overloaded", cause: err });
    case "ERR_DISPOSED":
    case "ERR_CANCELLED":
      return new ApiError(503, "The server is shutting down.", { code: "shutting_down", cause: err });
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
    case "FST_ERR_CTP_INVALID_JSON_BODY":
      return new ApiError(400, `${message} (send a JSON object as the request body)`, {
        code: "invalid_json",
        cause: err,
      });
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new ApiError(413, message, { code: "request_too_large", cause: err });
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new ApiError(415, `${message} (send Content-Type: application/json)`, {
        code: "unsupported_media_type",
        cause: err,
      });
  }
  const status = typeof e.statusCode === "number" ? e.statusCode : 500;
  if (status === 400 && err instanceof SyntaxError) {
    return new ApiError(400, `The body is not valid JSON: ${message}`, { code: "invalid_json", cause: err });
  }
  if (status >= 400 && status < 500) return new ApiError(status, message, { cause: err });
  return new ApiError(500, `Internal error: ${message}`, { type: "server_error", cause: err });
}

/**
 * The raw HTTP response for an error Node's HTTP parser raised before any route ran (malformed
 * request line, headers too large, a request that took too long to arrive), as an OpenAI error
 * object like every other answer; the connection is closed after it.
 */
export function clientErrorResponse(err: { code?: unknown }): string {
  const [status, reason, message, code] =
    err.code === "HPE_HEADER_OVERFLOW"
      ? [431, "Request Header Fields Too Large", "The request headers are too large.", "request_too_large"]
      : err.code === "ERR_HTTP_REQUEST_TIMEOUT"
        ? [408, "Request Timeout", "The request took too long to arrive.", "request_timeout"]
        : [400, "Bad Request", "The request is not valid HTTP/1.1.", "invalid_http"];
  const body = JSON.stringify(new ApiError(status, message, { code }).body());
  return [
    `HTTP/1.1 ${status} ${reason}`,
    "Content-Type: application/json; charset=utf-8",
    `Content-Length: ${Buffer.byteLength(body)}`,
    "Connection: close",
    "",
    body,
  ].join("\r\n");
}
