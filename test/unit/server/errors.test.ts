/**
 * lib/server/errors.ts without a server: ApiError's default types and body, toApiError's mapping of
 * llmserve / fastify / validation errors, and the raw responses of clientErrorResponse.
 */
import { describe, expect, it } from "vitest";
import { ApiError, clientErrorResponse, toApiError } from "../../../lib/server/errors.js";
import { LlmserveError } from "../../../lib/errors.js";

const fields = (e: ApiError) => ({ status: e.status, type: e.type, code: e.code, param: e.param, message: e.message });

describe("ApiError", () => {
  it.each([
    [400, "invalid_request_error"],
    [401, "authentication_error"],
    [403, "permission_error"],
    [404, "not_found_error"],
    [413, "invalid_request_error"],
    [429, "rate_limit_error"],
    [499, "invalid_request_error"],
    [500, "server_error"],
    [502, "server_error"],
    [503, "server_overloaded"],
  ])("status %i defaults to type %s", (status, type) => {
    expect(new ApiError(status, "m").type).toBe(type);
  });

  it("keeps an explicit type, code, param and cause; body() is the OpenAI error object", () => {
    const cause = new Error("inner");
    const e = new ApiError(418, "teapot", { type: "custom_type", code: "c1", param: "p1", cause });
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe("ApiError");
    expect(e.cause).toBe(cause);
    expect(e.body()).toEqual({ error: { message: "teapot", type: "custom_type", code: "c1", param: "p1" } });
    expect(new ApiError(400, "x").body()).toEqual({
      error: { message: "x", type: "invalid_request_error", code: null, param: null },
    });
  });
});

describe("toApiError", () => {
  it("returns an ApiError as it is", () => {
    const e = new ApiError(404, "gone");
    expect(toApiError(e)).toBe(e);
  });

  it.each([
    ["ERR_INVALID_ARGUMENT", 400, "invalid_request_error", "invalid_value", null],
    ["ERR_TOKENIZER", 400, "invalid_request_error", "invalid_value", null],
    ["ERR_CONTEXT_OVERFLOW", 400, "invalid_request_error", "context_length_exceeded", "messages"],
    ["ERR_TEMPLATE_OUTPUT_TOO_LARGE", 400, "invalid_request_error", "context_length_exceeded", "messages"],
    ["ERR_TEMPLATE_TIMEOUT", 500, "server_error", "template_timeout", null],
    ["ERR_QUEUE_FULL", 429, "rate_limit_error", "queue_full", null],
    ["ERR_KV_EXHAUSTED", 503, "server_overloaded", "engine_overloaded", null],
    ["ERR_OUT_OF_MEMORY", 503, "server_overloaded", "engine_overloaded", null],
    ["ERR_ADAPTER_NOT_FOUND", 404, "not_found_error", "model_not_found", "model"],
    ["ERR_ADAPTER_CHANGED", 500, "server_error", "adapter_unavailable", null],
    ["ERR_FILE_NOT_FOUND", 500, "server_error", "adapter_unavailable", null],
  ] as const)("llmserve %s -> %i %s %s (message kept, cause set)", (code, status, type, apiCode, param) => {
    const err = new LlmserveError(code, `the message of ${code}`);
    const e = toApiError(err);
    expect(fields(e)).toEqual({ status, type, code: apiCode, param, message: `the message of ${code}` });
    expect(e.cause).toBe(err);
  });

  it.each(["ERR_DISPOSED", "ERR_CANCELLED"] as const)("%s -> 503 shutting_down with its own message", (code) => {
    const err = new LlmserveError(code, "internal words");
    const e = toApiError(err);
    expect(fields(e)).toEqual({
      status: 503,
      type: "server_overloaded",
      code: "shutting_down",
      param: null,
      message: "The server is shutting down.",
    });
    expect(e.cause).toBe(err);
  });

  it.each([
    [
      "FST_ERR_CTP_EMPTY_JSON_BODY",
      400,
      "invalid_json",
      "Body cannot be empty (send a JSON object as the request body)",
    ],
    [
      "FST_ERR_CTP_INVALID_JSON_BODY",
      400,
      "invalid_json",
      "Body cannot be empty (send a JSON object as the request body)",
    ],
    ["FST_ERR_CTP_BODY_TOO_LARGE", 413, "request_too_large", "Body cannot be empty"],
    [
      "FST_ERR_CTP_INVALID_MEDIA_TYPE",
      415,
      "unsupported_media_type",
      "Body cannot be empty (send Content-Type: application/json)",
    ],
  ])("fastify %s -> %i %s", (code, status, apiCode, message) => {
    const err = Object.assign(new Error("Body cannot be empty"), { code, statusCode: 400 });
    const e = toApiError(err);
    expect(fields(e)).toEqual({ status, type: "invalid_request_error", code: apiCode, param: null, message });
    expect(e.cause).toBe(err);
  });

  it("a SyntaxError with status 400 is invalid_json; another 400 keeps its message", () => {
    const syntax = Object.assign(new SyntaxError("Unexpected token }"), { statusCode: 400 });
    expect(fields(toApiError(syntax))).toEqual({
      status: 400,
      type: "invalid_request_error",
      code: "invalid_json",
      param: null,
      message: "The body is not valid JSON: Unexpected token }",
    });
    const plain = Object.assign(new Error("bad thing"), { statusCode: 400 });
    expect(fields(toApiError(plain))).toEqual({
      status: 400,
      type: "invalid_request_error",
      code: null,
      param: null,
      message: "bad thing",
    });
    // A SyntaxError without a status is not a client error.
    expect(toApiError(new SyntaxError("oops")).status).toBe(500);
  });

  it("4xx statuses pass through; 5xx, 3xx and no status are 500 Internal error", () => {
    expect(fields(toApiError(Object.assign(new Error("nope"), { statusCode: 404 })))).toEqual({
      status: 404,
      type: "not_found_error",
      code: null,
      param: null,
      message: "nope",
    });
    expect(fields(toApiError(Object.assign(new Error("slow"), { statusCode: 499 })))).toEqual({
      status: 499,
      type: "invalid_request_error",
      code: null,
      param: null,
      message: "slow",
    });
    for (const statusCode of [500, 503, 399, 302, "404"]) {
      expect(fields(toApiError(Object.assign(new Error("boom"), { statusCode })))).toEqual({
        status: 500,
        type: "server_error",
        code: null,
        param: null,
        message: "Internal error: boom",
      });
    }
    expect(toApiError(new Error("boom")).message).toBe("Internal error: boom");
    const client = Object.assign(new Error("nope"), { statusCode: 404 });
    expect(toApiError(client).cause).toBe(client);
    const internal = new Error("boom");
    expect(toApiError(internal).cause).toBe(internal);
  });

  it("an unknown or non-string code falls through to the status", () => {
    expect(toApiError(Object.assign(new Error("x"), { code: "ERR_SOMETHING_ELSE", statusCode: 409 })).status).toBe(409);
    expect(toApiError(Object.assign(new Error("x"), { code: 42 })).status).toBe(500);
  });

  it("non-Error values: the message is String(value)", () => {
    expect(toApiError("plain string").message).toBe("Internal error: plain string");
    expect(toApiError(undefined).message).toBe("Internal error: undefined");
    expect(toApiError(null).message).toBe("Internal error: null");
    expect(toApiError({ message: 7 }).message).toBe("Internal error: [object Object]");
  });

  describe("validation errors", () => {
    const validation = (v: object[], context?: string) =>
      Object.assign(new Error("body/x must be y"), { statusCode: 400, validation: v, validationContext: context });

    it("param from instancePath: names, array indices in brackets, nested names after a dot", () => {
      const e = toApiError(
        validation([
          { instancePath: "/messages/0/role", keyword: "enum", message: "must be equal to one of the allowed values" },
        ]),
      );
      expect(fields(e)).toEqual({
        status: 400,
        type: "invalid_request_error",
        code: "invalid_value",
        param: "messages[0].role",
        message: "Invalid value for messages[0].role: must be equal to one of the allowed values",
      });
      expect(
        toApiError(validation([{ instancePath: "/temperature", keyword: "maximum", message: "must be <= 2" }])).param,
      ).toBe("temperature");
      expect(
        toApiError(validation([{ instancePath: "/prompt/1/12", keyword: "minimum", message: "must be >= 0" }])).param,
      ).toBe("prompt[1][12]");
      // Only all-digit segments are indices.
      expect(
        toApiError(validation([{ instancePath: "/logit_bias/7a/b7", keyword: "type", message: "must be number" }]))
          .param,
      ).toBe("logit_bias.7a.b7");
    });

    it("a missing property is appended to the path", () => {
      expect(
        toApiError(
          validation([
            {
              instancePath: "",
              keyword: "required",
              params: { missingProperty: "messages" },
              message: "must have required property 'messages'",
            },
          ]),
        ).param,
      ).toBe("messages");
      expect(
        toApiError(
          validation([
            { instancePath: "/messages/2", keyword: "required", params: { missingProperty: "role" }, message: "m" },
          ]),
        ).param,
      ).toBe("messages[2].role");
      // A non-string missingProperty is ignored.
      expect(
        toApiError(
          validation([{ instancePath: "/a", keyword: "required", params: { missingProperty: 3 }, message: "m" }]),
        ).param,
      ).toBe("a");
    });

    it("without a path: the request body (context body) or the request; without a message: the error's", () => {
      const body = toApiError(validation([{ instancePath: "", keyword: "type", message: "must be object" }], "body"));
      expect(body.param).toBeNull();
      expect(body.message).toBe("Invalid value for the request body: must be object");
      const other = toApiError(validation([{ keyword: "type", message: "must be object" }], "querystring"));
      expect(other.message).toBe("Invalid value for the request: must be object");
      const noMessage = toApiError(validation([{ instancePath: "/n", keyword: "type" }]));
      expect(noMessage.message).toBe("Invalid value for n: body/x must be y");
    });

    it("of several errors, the first that is not about the type (anyOf shapes) is reported, else the first", () => {
      const e = toApiError(
        validation([
          { instancePath: "/prompt", keyword: "type", message: "must be string" },
          { instancePath: "/prompt", keyword: "anyOf", message: "must match a schema in anyOf" },
          { instancePath: "/prompt/1", keyword: "oneOf", message: "must match exactly one schema in oneOf" },
          { instancePath: "/prompt", keyword: "maxItems", message: "must NOT have more than 256 items" },
          { instancePath: "/prompt/3", keyword: "minimum", message: "must be >= 0" },
        ]),
      );
      expect([e.param, e.message]).toEqual(["prompt", "Invalid value for prompt: must NOT have more than 256 items"]);
      const typesOnly = toApiError(
        validation([
          { instancePath: "/stop", keyword: "type", message: "must be string" },
          { instancePath: "/stop/0", keyword: "anyOf", message: "must match a schema in anyOf" },
        ]),
      );
      expect([typesOnly.param, typesOnly.message]).toEqual(["stop", "Invalid value for stop: must be string"]);
      const noKeyword = toApiError(
        validation([
          { instancePath: "/a", keyword: "type", message: "t" },
          { instancePath: "/b", message: "k" },
        ]),
      );
      expect(noKeyword.param).toBe("b");
    });

    it("an empty validation list is not a validation error", () => {
      expect(toApiError(Object.assign(new Error("e"), { statusCode: 400, validation: [] })).code).toBeNull();
    });
  });
});

describe("clientErrorResponse", () => {
  const parse = (raw: string) => {
    const [head, body] = raw.split("\r\n\r\n");
    return { lines: head.split("\r\n"), body: JSON.parse(body) as unknown, bodyText: body };
  };

  it.each([
    [
      "HPE_HEADER_OVERFLOW",
      "HTTP/1.1 431 Request Header Fields Too Large",
      "The request headers are too large.",
      "request_too_large",
    ],
    [
      "ERR_HTTP_REQUEST_TIMEOUT",
      "HTTP/1.1 408 Request Timeout",
      "The request took too long to arrive.",
      "request_timeout",
    ],
    ["HPE_INVALID_METHOD", "HTTP/1.1 400 Bad Request", "The request is not valid HTTP/1.1.", "invalid_http"],
    [undefined, "HTTP/1.1 400 Bad Request", "The request is not valid HTTP/1.1.", "invalid_http"],
  ])("%s -> %s", (code, statusLine, message, apiCode) => {
    const r = parse(clientErrorResponse({ code }));
    expect(r.lines).toEqual([
      statusLine,
      "Content-Type: application/json; charset=utf-8",
      `Content-Length: ${Buffer.byteLength(r.bodyText)}`,
      "Connection: close",
    ]);
    expect(r.body).toEqual({ error: { message, type: "invalid_request_error", code: apiCode, param: null } });
  });
});
