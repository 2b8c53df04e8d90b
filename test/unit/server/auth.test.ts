/**
 * Authorizer (lib/server/auth.ts) on stand-in requests: bearer parsing, the access rule of the
 * matched route (deny by default), the metrics key, servers without keys, and key validation.
 * test/server/auth.test.ts covers the same rules end to end over HTTP.
 */
import type { FastifyRequest } from "fastify";
import { describe, expect, it } from "vitest";
import { LlmserveError } from "../../../lib/errors.js";
import { Authorizer } from "../../../lib/server/auth.js";
import { ApiError } from "../../../lib/server/errors.js";

/** A request that matched `url` (null: no route) with `access` in its config, and these headers. */
function req(
  authorization: string | undefined,
  url: string | null = "/v1/completions",
  access?: string,
  config = true,
): FastifyRequest {
  return {
    headers: authorization === undefined ? {} : { authorization },
    routeOptions: { url: url ?? undefined, config: config ? (access === undefined ? {} : { access }) : undefined },
  } as unknown as FastifyRequest;
}

function refusal(f: () => void): ApiError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ApiError);
    return e as ApiError;
  }
  throw new Error("expected a 401");
}

describe("Authorizer", () => {
  // Built inside each test (not while collecting), so mutation testing attributes it per test.
  const apiOnly = () => new Authorizer({ apiKey: "sk-1" });

  it("accepts exactly 'Bearer <key>' (case-insensitive scheme, any run of spaces)", () => {
    const a = apiOnly();
    for (const h of ["Bearer sk-1", "bearer sk-1", "BEARER sk-1", "Bearer   sk-1", "Bearer\tsk-1", "  Bearer sk-1  "]) {
      expect(() => a.authorize(req(h)), h).not.toThrow();
      expect(a.hasApiKey(req(h)), h).toBe(true);
    }
    for (const h of [
      "sk-1",
      "Bearer sk-2",
      "Bearer sk-1x",
      "Bearer  sk-1 x",
      "xBearer sk-1",
      "Token Bearer sk-1",
      "Bearer",
      "Basic sk-1",
    ]) {
      expect(() => a.authorize(req(h)), h).toThrow(ApiError);
      expect(a.hasApiKey(req(h)), h).toBe(false);
    }
  });

  it("says whether the key is missing or wrong, as OpenAI does", () => {
    const a = apiOnly();
    const missing = refusal(() => a.authorize(req(undefined)));
    expect(missing.status).toBe(401);
    expect(missing.message).toBe(
      "You didn't provide an API key. Pass it in the Authorization header as 'Bearer YOUR_KEY'.",
    );
    expect(missing.type).toBe("invalid_request_error");
    expect(missing.code).toBe("invalid_api_key");
    const wrong = refusal(() => a.authorize(req("Bearer nope")));
    expect(wrong.status).toBe(401);
    expect(wrong.message).toBe("Incorrect API key provided.");
    expect(wrong.type).toBe("invalid_request_error");
    expect(wrong.code).toBe("invalid_api_key");
    expect(a.hasApiKey(req(undefined))).toBe(false);
  });

  it("decides on the matched route's access rule; unmatched and unmarked routes need the key", () => {
    const a = apiOnly();
    expect(Authorizer.accessOf(req(undefined, "/health", "public"))).toBe("public");
    expect(Authorizer.accessOf(req(undefined, "/metrics", "metrics"))).toBe("metrics");
    expect(Authorizer.accessOf(req(undefined, "/v1/models"))).toBe("api");
    expect(Authorizer.accessOf(req(undefined, "/v1/models", undefined, false))).toBe("api");
    // An unmatched URL (the 404 handler) is "api" whatever config it carries.
    expect(Authorizer.accessOf(req(undefined, null, "public"))).toBe("api");
    expect(() => a.authorize(req(undefined, "/health", "public"))).not.toThrow();
    expect(() => a.authorize(req(undefined, null, "public"))).toThrow(ApiError);
    expect(() => a.authorize(req(undefined, "/v1/models", undefined, false))).toThrow(ApiError);
  });

  it("the metrics key opens /metrics only; the API key opens it too", () => {
    const a = apiOnly();
    const m = new Authorizer({ apiKey: "sk-1", metricsKey: "mk" });
    expect(() => m.authorize(req("Bearer mk", "/metrics", "metrics"))).not.toThrow();
    expect(() => m.authorize(req("Bearer sk-1", "/metrics", "metrics"))).not.toThrow();
    expect(refusal(() => m.authorize(req("Bearer mk"))).message).toBe("Incorrect API key provided.");
    expect(refusal(() => m.authorize(req("Bearer other", "/metrics", "metrics"))).status).toBe(401);
    // Without a metrics key, /metrics takes the API key.
    expect(() => a.authorize(req("Bearer sk-1", "/metrics", "metrics"))).not.toThrow();
    expect(() => a.authorize(req(undefined, "/metrics", "metrics"))).toThrow(ApiError);
  });

  it("a metrics key without an API key guards /metrics only", () => {
    const m = new Authorizer({ metricsKey: "mk" });
    expect(m.enabled).toBe(false);
    expect(() => m.authorize(req("Bearer mk", "/metrics", "metrics"))).not.toThrow();
    expect(refusal(() => m.authorize(req("Bearer wrong", "/metrics", "metrics"))).message).toBe(
      "Incorrect API key provided.",
    );
    expect(() => m.authorize(req(undefined, "/v1/completions"))).not.toThrow();
    expect(m.hasApiKey(req(undefined))).toBe(true);
  });

  it("without keys everything is open", () => {
    const a = apiOnly();
    const open = new Authorizer({});
    expect(open.enabled).toBe(false);
    expect(a.enabled).toBe(true);
    expect(() => open.authorize(req(undefined))).not.toThrow();
    expect(() => open.authorize(req(undefined, null))).not.toThrow();
    expect(() => open.authorize(req("Bearer anything", "/metrics", "metrics"))).not.toThrow();
    expect(open.hasApiKey(req(undefined))).toBe(true);
  });

  it("keys must be non-empty strings", () => {
    for (const [keys, name] of [
      [{ apiKey: "" }, "apiKey"],
      [{ metricsKey: "" }, "metricsKey"],
      [{ apiKey: 5 }, "apiKey"],
      [{ metricsKey: null }, "metricsKey"],
    ] as const) {
      let err: unknown;
      try {
        new Authorizer(keys as never);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(keys)).toBeInstanceOf(LlmserveError);
      expect((err as LlmserveError).code).toBe("ERR_INVALID_ARGUMENT");
      expect((err as Error).message).toBe(`Expected a non-empty string for ${name}`);
    }
    expect(() => new Authorizer({ apiKey: "k", metricsKey: undefined })).not.toThrow();
  });
});
