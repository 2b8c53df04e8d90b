// The soak benchmark's clients: one HTTP request with node:http (JSON or Server-Sent Events), and a
// raw TCP client for what node:http will not send or will not do (half-sent requests, resets,
// readers that stop reading, malformed HTTP). Both always resolve with a record, never reject, and
// every request has a client-side timeout: a hang is reported, never waited on forever.

import http from "node:http";
import net from "node:net";
import { performance } from "node:perf_hooks";

// Where the clients connect and with which keys: set once the server has printed its URL.
const target = { host: "127.0.0.1", port: 0, apiKey: "", metricsKey: "" };

/** Points the clients at the server (host, port) and sets the keys they send. */
export function setTarget({ host, port, apiKey, metricsKey }) {
  Object.assign(target, { host, port, apiKey, metricsKey });
}

/** The API key's Authorization header. */
export const AUTH = () => ({ authorization: `Bearer ${target.apiKey}` });
/** The scrape-only metrics key's Authorization header (accepted on /metrics only). */
export const METRICS_AUTH = () => ({ authorization: `Bearer ${target.metricsKey}` });
/** The API key itself (for cases that mangle it). */
export const apiKey = () => target.apiKey;

// Keep-alive like a real client library: connections are reused, so the server's keep-alive
// handling (and its idle timeout) is part of what is soaked.
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
/** Closes the kept-alive connections (at the end of the load). */
export const closeAgent = () => agent.destroy();

/**
 * One HTTP request with node:http. Resolves { status, headers, body, events, ttftMs, error, timedOut,
 * aborted }; never rejects. `stream`: parse the body as Server-Sent Events as it arrives (events:
 * parsed `data:` payloads, "[DONE]" kept as the string). `abortAfter`: { events | ms } -> destroy the
 * request then (a client abort). `timeoutMs`: past it the request is destroyed and marked timedOut.
 */
export function request({
  method = "POST",
  path,
  headers = {},
  body,
  stream = false,
  abortAfter,
  timeoutMs,
  useAgent = true,
}) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const out = {
      status: 0,
      headers: {},
      body: "",
      events: [],
      ttftMs: undefined,
      error: undefined,
      timedOut: false,
      aborted: false,
      ms: 0,
    };
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(abortTimer);
      out.ms = performance.now() - t0;
      resolve(out);
    };
    const payload =
      body === undefined ? undefined : typeof body === "string" || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    const h = { ...headers };
    if (payload !== undefined) {
      h["content-type"] ??= "application/json";
      h["content-length"] = Buffer.byteLength(payload);
    }
    const req = http.request({
      host: target.host,
      port: target.port,
      method,
      path,
      headers: h,
      agent: useAgent ? agent : false,
    });
    const abort = () => {
      if (settled) return;
      out.aborted = true;
      req.destroy();
      finish();
    };
    const timer = setTimeout(() => {
      out.timedOut = true;
      req.destroy();
      finish();
    }, timeoutMs);
    let abortTimer;
    if (abortAfter?.ms !== undefined) abortTimer = setTimeout(abort, abortAfter.ms);
    req.on("error", (err) => {
      out.error ??= err.code ?? err.message;
      finish();
    });
    req.on("response", (res) => {
      out.status = res.statusCode;
      out.headers = res.headers;
      res.setEncoding("utf8");
      let sseBuf = "";
      res.on("data", (d) => {
        if (!stream || out.status !== 200) {
          out.body += d;
          return;
        }
        sseBuf += d;
        let i;
        while ((i = sseBuf.indexOf("\n\n")) >= 0) {
          const ev = sseBuf.slice(0, i);
          sseBuf = sseBuf.slice(i + 2);
          for (const line of ev.split("\n")) {
            if (!line.startsWith("data: ")) continue;
            const data = line.slice(6);
            if (data === "[DONE]") out.events.push("[DONE]");
            else {
              try {
                const j = JSON.parse(data);
                if (out.ttftMs === undefined && hasText(j)) out.ttftMs = performance.now() - t0;
                out.events.push(j);
              } catch {
                out.events.push({ unparsable: data.slice(0, 200) });
              }
            }
          }
          if (abortAfter?.events !== undefined && out.events.length >= abortAfter.events) {
            abort();
            return;
          }
        }
      });
      res.on("end", finish);
      res.on("error", (err) => {
        out.error ??= err.code ?? err.message;
        finish();
      });
      res.on("close", () => {
        if (!res.complete) out.error ??= "response closed before its end";
        finish();
      });
    });
    if (payload !== undefined) req.end(payload);
    else req.end();
  });
}

export const hasText = (j) =>
  Array.isArray(j?.choices) && j.choices.some((c) => (c.text ?? c.delta?.content ?? "").length > 0);

/**
 * A raw TCP client: writes `chunks` (strings/Buffers, `gapMs` apart), then reads per `mode`:
 *   "read"            read everything (until the server closes or `untilDone` sees [DONE]);
 *   "slow"            pause the socket; every `gapMs` read one chunk; give up after budgetMs;
 *   "stall"           read the first `events` SSE events, then stop reading for stallMs; then destroy
 *                     the connection, or with `resume`, read the rest to its end (did the server
 *                     cut the stream off meanwhile? its write timeout);
 *   "rst-after"       read `events` SSE events (0: right after writing), then reset the connection (RST);
 *   "destroy-after-ms" destroy after `ms` whatever happened.
 * Resolves { raw, status, events, done, closedByServer, clientClosed, stalled, resumed, timedOut, error, ms }.
 */
export function raw({
  chunks,
  gapMs = 0,
  mode = "read",
  events: nEvents = 0,
  ms = 0,
  budgetMs = 0,
  stallMs = 0,
  resume = false,
  timeoutMs,
}) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const out = {
      raw: "",
      status: 0,
      events: 0,
      done: false,
      closedByServer: false,
      clientClosed: false,
      timedOut: false,
      error: undefined,
      ms: 0,
      bytes: 0,
    };
    let settled = false;
    const timers = [];
    const later = (f, t) => timers.push(setTimeout(f, t));
    const sock = net.connect({ host: target.host, port: target.port });
    const finish = () => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      out.ms = performance.now() - t0;
      sock.destroy();
      resolve(out);
    };
    const clientClose = (how) => {
      if (settled) return;
      out.clientClosed = true;
      if (how === "rst" && typeof sock.resetAndDestroy === "function") sock.resetAndDestroy();
      else sock.destroy();
      finish();
    };
    later(() => {
      out.timedOut = true;
      finish();
    }, timeoutMs);
    sock.on("error", (err) => {
      out.error ??= err.code ?? err.message;
      finish();
    });
    sock.on("close", () => {
      out.closedByServer = !out.clientClosed;
      finish();
    });
    sock.setEncoding("latin1");
    let head = true;
    let tail = "";
    let bodyStart = -1;
    let contentLength = -1;
    let chunked = false;
    sock.on("data", (d) => {
      out.bytes += d.length;
      if (out.raw.length < 1 << 16) out.raw += d.slice(0, (1 << 16) - out.raw.length);
      if (head) {
        const m = /^HTTP\/1\.1 (\d{3})/.exec(out.raw);
        if (m) {
          out.status = Number(m[1]);
          head = false;
        }
      }
      out.events += (d.match(/\ndata: /g) ?? []).length + (d.startsWith("data: ") ? 1 : 0);
      tail = (tail + d).slice(-16);
      if (bodyStart < 0 && out.raw.includes("\r\n\r\n")) {
        const headEnd = out.raw.indexOf("\r\n\r\n");
        bodyStart = headEnd + 4;
        const cl = /\r\ncontent-length:\s*(\d+)/i.exec(out.raw.slice(0, headEnd));
        contentLength = cl ? Number(cl[1]) : -1;
        chunked = /\r\ntransfer-encoding:\s*chunked/i.test(out.raw.slice(0, headEnd));
      }
      const complete =
        bodyStart >= 0 &&
        ((contentLength >= 0 && out.bytes - bodyStart >= contentLength) || (chunked && tail.endsWith("\r\n0\r\n\r\n")));
      if (complete || d.includes("data: [DONE]")) {
        out.done = true;
        if (mode === "read" || mode === "slow" || out.resumed) clientClose("end"); // keep-alive: we are done
      }
      if (mode === "rst-after" && out.events >= nEvents && nEvents > 0) clientClose("rst");
      if (mode === "stall" && out.events >= nEvents && !out.stalled) {
        out.stalled = true;
        sock.pause();
        later(() => {
          if (!resume) return clientClose("destroy");
          // Read on: what the socket buffers held, then either the rest of the stream or the end
          // of a connection the server closed while nobody read.
          out.resumed = true;
          sock.resume();
        }, stallMs);
      }
    });
    if (mode === "slow") {
      sock.pause();
      const tick = () => {
        if (settled) return;
        sock.resume();
        setImmediate(() => {
          sock.pause();
          later(tick, gapMs);
        });
      };
      later(tick, gapMs);
      later(() => clientClose("destroy"), budgetMs);
    }
    sock.on("connect", async () => {
      for (let i = 0; i < chunks.length && !settled; i++) {
        if (i > 0 && gapMs > 0 && mode !== "slow") await new Promise((r) => later(r, gapMs));
        if (!settled) sock.write(chunks[i]);
      }
      if (mode === "rst-after" && nEvents === 0) later(() => clientClose("rst"), ms);
      if (mode === "destroy-after-ms") later(() => clientClose("destroy"), ms);
    });
  });
}

/** An HTTP/1.1 request as text (for the raw clients). */
export function rawRequest(method, path, body, headers = {}) {
  const payload = body === undefined ? "" : typeof body === "string" ? body : JSON.stringify(body);
  const h = { host: `${target.host}:${target.port}`, connection: "close", ...AUTH(), ...headers };
  if (payload) {
    h["content-type"] ??= "application/json";
    h["content-length"] = Buffer.byteLength(payload);
  }
  return `${method} ${path} HTTP/1.1\r\n${Object.entries(h)
    .map(([k, v]) => `${k}: ${v}`)
    .join("\r\n")}\r\n\r\n${payload}`;
}
