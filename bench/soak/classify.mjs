// How the soak benchmark judges one request: every request ends as exactly one outcome, and
// anything the server should not do (a hang, a 5xx for a client fault, an error without an OpenAI
// body, a wrong status, a malformed 200, a stream cut short) is a "failed" with the reason.
//
// Outcomes: completed | typed_error (a status with an OpenAI error body) | http_error (answered by
// Node's HTTP parser without an OpenAI body: bad-http only) | aborted (the client meant to go away)
// | failed.

/** Checks a 200 response of a generation request; returns undefined or what is wrong. */
export function checkCompletion(kind, body, n, maxTokens) {
  const want = kind === "chat" ? "chat.completion" : "text_completion";
  if (body?.object !== want) return `object is ${JSON.stringify(body?.object)}, expected ${want}`;
  if (!Array.isArray(body.choices) || body.choices.length !== n) return `${body.choices?.length} choices, expected ${n}`;
  for (const c of body.choices) {
    const text = kind === "chat" ? c.message?.content : c.text;
    if (typeof text !== "string") return "a choice has no text";
    if (c.finish_reason !== "stop" && c.finish_reason !== "length") return `finish_reason ${JSON.stringify(c.finish_reason)}`;
  }
  const u = body.usage;
  if (!u || !(u.prompt_tokens > 0) || !(u.completion_tokens >= 0)) return `bad usage ${JSON.stringify(u)}`;
  if (maxTokens !== undefined && u.completion_tokens > maxTokens * n) return `${u.completion_tokens} completion tokens > max_tokens ${maxTokens} x n ${n}`;
  return undefined;
}

/** Checks an SSE stream that ran to its end; returns undefined or what is wrong. */
export function checkStream(kind, events, n) {
  if (events.at(-1) !== "[DONE]") return "the stream did not end with [DONE]";
  const want = kind === "chat" ? "chat.completion.chunk" : "text_completion";
  const finished = new Set();
  for (const e of events.slice(0, -1)) {
    if (e.unparsable !== undefined) return `unparsable event ${e.unparsable}`;
    if (e.error) continue;
    if (e.object !== want) return `event object ${JSON.stringify(e.object)}`;
    for (const c of e.choices ?? []) if (c.finish_reason) finished.add(c.index);
  }
  if (finished.size !== n) return `${finished.size} of ${n} choices got a finish_reason`;
  return undefined;
}

export const isOpenAIError = (j) => j && typeof j === "object" && j.error && typeof j.error.message === "string" && typeof j.error.type === "string" && "code" in j.error;

/**
 * Classifies an HTTP-level result: completed / typed_error / aborted / failed.
 * `expect`: allowed statuses (200 means a completed generation is fine); `kind`: chat|completion|get.
 */
export function classify(res, { kind, stream, n = 1, maxTokens, expect = [200], clientFault = false, aborting = false }) {
  const rec = { status: res.status, ms: Math.round(res.ms), ttftMs: res.ttftMs === undefined ? undefined : Math.round(res.ttftMs) };
  if (res.timedOut) return { ...rec, outcome: "failed", failure: `hung: no end within the client timeout (status ${res.status || "none"}, ${res.events.length} events)` };
  if (res.aborted) return { ...rec, outcome: "aborted" };
  if (res.error && res.status === 0) return { ...rec, outcome: "failed", failure: `connection error before a response: ${res.error}` };
  if (res.status >= 500 && clientFault) return { ...rec, outcome: "failed", failure: `5xx for a client fault: ${res.body.slice(0, 300)}` };
  if (res.status !== 200) {
    let j;
    try {
      j = JSON.parse(res.body);
    } catch {
      /* not JSON */
    }
    if (!isOpenAIError(j)) return { ...rec, outcome: "failed", failure: `status ${res.status} without an OpenAI error body: ${res.body.slice(0, 200)}` };
    rec.code = j.error.code;
    rec.type = j.error.type;
    if (res.status === 500) return { ...rec, outcome: "failed", failure: `500: ${j.error.message.slice(0, 300)}` };
    if (!expect.includes(res.status) && !(res.status === 503 && !clientFault)) {
      return { ...rec, outcome: "failed", failure: `status ${res.status} (${j.error.code}), expected ${expect.join("/")}: ${j.error.message.slice(0, 200)}` };
    }
    return { ...rec, outcome: "typed_error" };
  }
  if (!expect.includes(200)) return { ...rec, outcome: "failed", failure: `status 200, expected ${expect.join("/")}: ${res.body.slice(0, 200)}` };
  if (kind === "get") return { ...rec, outcome: res.error ? "failed" : "completed", failure: res.error };
  if (res.error && !aborting) return { ...rec, outcome: "failed", failure: `response cut: ${res.error}` };
  if (stream) {
    const err = res.events.find((e) => e && typeof e === "object" && e.error);
    if (err) {
      // An error event mid-stream: typed when it is an OpenAI error object.
      if (!isOpenAIError(err)) return { ...rec, outcome: "failed", failure: `untyped error event ${JSON.stringify(err).slice(0, 200)}` };
      return { ...rec, status: "200+sse", code: err.error.code, outcome: clientFault ? "failed" : "typed_error", failure: clientFault ? `error event for a client fault: ${err.error.message}` : undefined };
    }
    const bad = checkStream(kind, res.events, n);
    if (bad) return { ...rec, outcome: "failed", failure: bad };
    rec.chars = res.events.reduce((a, e) => a + (e?.choices ?? []).reduce((b, c) => b + (c.text ?? c.delta?.content ?? "").length, 0), 0);
    return { ...rec, outcome: "completed" };
  }
  let j;
  try {
    j = JSON.parse(res.body);
  } catch {
    return { ...rec, outcome: "failed", failure: `200 with a body that is not JSON: ${res.body.slice(0, 200)}` };
  }
  const bad = checkCompletion(kind, j, n, maxTokens);
  if (bad) return { ...rec, outcome: "failed", failure: bad };
  rec.tokens = j.usage.completion_tokens;
  rec.chars = j.choices.reduce((a, c) => a + (kind === "chat" ? c.message.content : c.text).length, 0);
  return { ...rec, outcome: "completed" };
}

/** Classifies a raw-socket result. `expect`: statuses that are fine when a response came. */
export function classifyRaw(res, { expect = [200], clientFault = false, bare = false, completedIfDone = true }) {
  const rec = { status: res.status || undefined, ms: Math.round(res.ms) };
  if (res.timedOut) return { ...rec, outcome: "failed", failure: `hung: no end within the client timeout (status ${res.status || "none"}, ${res.bytes} bytes)` };
  if (res.status >= 500 && clientFault) return { ...rec, outcome: "failed", failure: `5xx for a client fault: ${res.raw.slice(0, 300)}` };
  if (res.status >= 500) return { ...rec, outcome: "failed", failure: `${res.status}: ${res.raw.slice(0, 300)}` };
  if (res.status && !expect.includes(res.status)) return { ...rec, outcome: "failed", failure: `status ${res.status}, expected ${expect.join("/")}: ${res.raw.slice(0, 300)}` };
  if (res.status >= 400) {
    const bodyText = res.raw.slice(res.raw.indexOf("\r\n\r\n") + 4);
    let j;
    try {
      j = JSON.parse(/^[0-9a-f]+\r\n/.test(bodyText) ? bodyText.replace(/^[0-9a-f]+\r\n/, "").replace(/\r\n0\r\n\r\n$/, "") : bodyText);
    } catch {
      /* not JSON */
    }
    if (isOpenAIError(j)) return { ...rec, outcome: "typed_error", code: j.error.code, type: j.error.type };
    if (bare) return { ...rec, outcome: "http_error" }; // answered by Node's HTTP parser / fastify's clientError handler
    return { ...rec, outcome: "failed", failure: `status ${res.status} without an OpenAI error body: ${bodyText.slice(0, 200)}` };
  }
  if (res.clientClosed) return { ...rec, outcome: res.done && completedIfDone ? "completed" : "aborted" };
  if (res.done) return { ...rec, outcome: "completed" };
  if (res.status === 200 && res.closedByServer && !res.done) return { ...rec, outcome: "failed", failure: "the server closed a 200 stream before [DONE]" };
  if (!res.status && res.closedByServer) return { ...rec, outcome: "failed", failure: `the server closed the connection without a response${res.error ? ` (${res.error})` : ""}` };
  return { ...rec, outcome: "completed" };
}
