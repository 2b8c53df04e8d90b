/**
 * Who may call which route. The decision is made on the route fastify actually matched (its
 * `config.access`), never on the raw request URL: percent-encoding, dot segments, doubled slashes,
 * case variants and absolute-form targets all resolve to a matched route (or to none) before this
 * runs, so no spelling of a path can reach a handler under another route's rules.
 *
 * Deny by default: a route without `config.access`, and every unmatched URL (the 404 handler), needs
 * the API key. Public routes are listed explicitly:
 * - `/health`: public (load-balancer probes); without a valid key it reports only `status`.
 * - `/metrics`: the metrics key when one is set (a scrape-only credential), else the API key;
 *   the API key is always accepted too.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { FastifyRequest } from "fastify";
import { LlmserveError } from "../errors.js";
import { ApiError } from "./errors.js";

/** Who may call a route: anyone, a metrics scraper (metrics key or API key), or API clients only. */
export type RouteAccess = "public" | "metrics" | "api";

declare module "fastify" {
  interface FastifyContextConfig {
    /** Who may call this route (see lib/server/auth.ts); unset means "api". */
    access?: RouteAccess;
  }
}

/** The keys a server checks. */
export interface AuthKeys {
  /** Required (as `Authorization: Bearer <key>`) on every route that is not public. */
  apiKey?: string;
  /** Accepted on /metrics instead of the API key (scrape-only: it opens nothing else). */
  metricsKey?: string;
}

const sha256 = (s: string): Buffer => createHash("sha256").update(s).digest();

function checkKey(name: string, key: string | undefined): void {
  if (key !== undefined && (typeof key !== "string" || key.length === 0)) {
    throw new LlmserveError("ERR_INVALID_ARGUMENT", `Expected a non-empty string for ${name}`);
  }
}

/** The bearer token of a request, or undefined when it has none. */
function bearer(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  const m = typeof header === "string" ? /^Bearer\s+(.+)$/i.exec(header.trim()) : null;
  return m ? m[1] : undefined;
}

/** Checks requests against the configured keys (constant-time comparisons of SHA-256 digests). */
export class Authorizer {
  private readonly api: Buffer | undefined;
  private readonly metrics: Buffer | undefined;

  constructor(keys: AuthKeys) {
    checkKey("apiKey", keys.apiKey);
    checkKey("metricsKey", keys.metricsKey);
    this.api = keys.apiKey !== undefined ? sha256(keys.apiKey) : undefined;
    this.metrics = keys.metricsKey !== undefined ? sha256(keys.metricsKey) : undefined;
  }

  /** True when an API key is configured. */
  get enabled(): boolean {
    return this.api !== undefined;
  }

  /** The access rule of the route this request matched ("api" for unmatched ones). */
  static accessOf(request: FastifyRequest): RouteAccess {
    if (request.routeOptions.url === undefined) return "api";
    return request.routeOptions.config?.access ?? "api";
  }

  /** True when the request carries the API key (or when none is configured). */
  hasApiKey(request: FastifyRequest): boolean {
    if (!this.api) return true;
    const token = bearer(request);
    return token !== undefined && timingSafeEqual(sha256(token), this.api);
  }

  /** Throws a 401 ApiError unless the request may call the route it matched. */
  authorize(request: FastifyRequest): void {
    const access = Authorizer.accessOf(request);
    if (access === "public") return;
    const accepted = access === "metrics" && this.metrics ? [this.metrics, this.api] : [this.api];
    if (accepted[0] === undefined) return; // no key configured for this route
    const token = bearer(request);
    if (token === undefined) {
      throw new ApiError(
        401,
        "You didn't provide an API key. Pass it in the Authorization header as 'Bearer YOUR_KEY'.",
        { type: "invalid_request_error", code: "invalid_api_key" },
      );
    }
    const digest = sha256(token);
    if (!accepted.some((k) => k !== undefined && timingSafeEqual(digest, k))) {
      throw new ApiError(401, "Incorrect API key provided.", {
        type: "invalid_request_error",
        code: "invalid_api_key",
      });
    }
  }
}
