// How the soak benchmark judges one request: every request ends as exactly one outcome, and
// anything the server should not do (a hang, a 5xx for a client fault, an error without an OpenAI
// body, a wrong status or code, a malformed 200, a stream cut short) is a "failed" with the reason.
//
// Outcomes: completed | typed_error (a status with an OpenAI error body) | aborted (the client meant
// to go away) | cut_off (a stream the server closed because its client stopped reading for longer
// than the server's write timeout: expected) | failed.

// "cancelled" is the server's finish_reason for a request it cancelled at shutdown (its drain
// timeout): during the load nothing shuts down, so a client that sees it was cancelled for no reason.
const badFinish = (r) =>
  r === "cancelled"
    ? 'finish_reason "cancelled" while the server was not shutting down'
    : `finish_reason ${JSON.stringify(r)}`;

/** Checks a 200 response of a generation request; returns undefined or what is wrong. */
export function checkCompletion(kind, body, n, maxTokens) {
  const want = kind === "chat" ? "chat.completion" : "text_completion";
  if (body?.object !== want) return `object is ${JSON.stringify(body?.object)}, expected ${want}`;
  if (!Array.isArray(body.choices) || body.choices.length !== n)
    return `${body.choices?.length} choices, expected ${n}`;
  for (const c of body.choices) {
    const text = kind === "chat" ? c.message?.content : c.text;
    if (typeof text !== "string") return "a choice has no text";
    if (c.finish_reason !== "stop" && c.finish_reason !== "length") return badFinish(c.finish_reason);
  }
  const u = body.usage;
  if (!u || !(u.prompt_tokens > 0) || !(u.completion_tokens >= 0)) return `bad usage ${JSON.stringify(u)}`;
  if (maxTokens !== undefined && u.completion_tokens > maxTokens * n)
    return `${u.completion_tokens} completion tokens > max_tokens ${maxTokens} x n ${n}`;
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
    for (const c of e.choices ?? []) {
      if (c.finish_reason && c.finish_reason !== "stop" && c.finish_reason !== "length")
        return badFinish(c.finish_reason);
      if (c.finish_reason) finished.add(c.index);
    }
  }
  if (finished.size !== n) return `${finished.size} of ${n} choices got a finish_reason`;
  return undefined;
}

export const isOpenAIError = (j) =>
  j &&
  typeof j === "object" &&
  j.error &&
  typeof j.error.message === "string" &&
  typeof j.error.type === "string" &&
  "code" in j.error;

/**
 * What is wrong with a typed error's code and param, or undefined. `code`: the OpenAI error code it
 * must carry (a string, or a list of those allowed); `param`: the field it must name (schema maxima,
 * admission). Checked only when the status is one that case expects besides 200.
 */
function wrongCode(j, code, param) {
  const codes = code === undefined ? undefined : [code].flat();
  if (codes && !codes.includes(j.error.code))
    return `code ${JSON.stringify(j.error.code)}, expected ${codes.join("/")}: ${j.error.message.slice(0, 160)}`;
  if (param !== undefined && j.error.param !== param)
    return `param ${JSON.stringify(j.error.param)}, expected ${JSON.stringify(param)}: ${j.error.message.slice(0, 160)}`;
  return undefined;
}

/**
 * Classifies an HTTP-level result: completed / typed_error / aborted / failed.
 * `expect`: allowed statuses (200 means a completed generation is fine); `kind`: chat|completion|get;
 * `code`, `param`: see wrongCode (for the client-fault cases, whose answer is known exactly).
 */
export function classify(
  res,
  { kind, stream, n = 1, maxTokens, expect = [200], clientFault = false, aborting = false, code, param },
) {
  const rec = {
    status: res.status,
    ms: Math.round(res.ms),
    ttftMs: res.ttftMs === undefined ? undefined : Math.round(res.ttftMs),
  };
  if (res.timedOut)
    return {
      ...rec,
      outcome: "failed",
      failure: `hung: no end within the client timeout (status ${res.status || "none"}, ${res.events.length} events)`,
    };
  if (res.aborted) return { ...rec, outcome: "aborted" };
  if (res.error && res.status === 0)
    return { ...rec, outcome: "failed", failure: `connection error before a response: ${res.error}` };
  if (res.status >= 500 && clientFault)
    return { ...rec, outcome: "failed", failure: `5xx for a client fault: ${res.body.slice(0, 300)}` };
  if (res.status !== 200) {
    let j;
    try {
      j = JSON.parse(res.body);
    } catch {
      /* not JSON */
    }
    if (!isOpenAIError(j))
      return {
        ...rec,
        outcome: "failed",
        failure: `status ${res.status} without an OpenAI error body: ${res.body.slice(0, 200)}`,
      };
    rec.code = j.error.code;
    rec.type = j.error.type;
    if (res.status === 500) return { ...rec, outcome: "failed", failure: `500: ${j.error.message.slice(0, 300)}` };
    if (!expect.includes(res.status) && !(res.status === 503 && !clientFault)) {
      return {
        ...rec,
        outcome: "failed",
        failure: `status ${res.status} (${j.error.code}), expected ${expect.join("/")}: ${j.error.message.slice(0, 200)}`,
      };
    }
    const wrong = expect.includes(res.status) ? wrongCode(j, code, param) : undefined;
    if (wrong) return { ...rec, outcome: "failed", failure: `status ${res.status} with ${wrong}` };
    return { ...rec, outcome: "typed_error" };
  }
  if (!expect.includes(200))
    return {
      ...rec,
      outcome: "failed",
      failure: `status 200, expected ${expect.join("/")}: ${res.body.slice(0, 200)}`,
    };
  if (kind === "get") return { ...rec, outcome: res.error ? "failed" : "completed", failure: res.error };
  if (res.error && !aborting) return { ...rec, outcome: "failed", failure: `response cut: ${res.error}` };
  if (stream) {
    const err = res.events.find((e) => e && typeof e === "object" && e.error);
    if (err) {
      // An error event mid-stream: typed when it is an OpenAI error object.
      if (!isOpenAIError(err))
        return { ...rec, outcome: "failed", failure: `untyped error event ${JSON.stringify(err).slice(0, 200)}` };
      return {
        ...rec,
        status: "200+sse",
        code: err.error.code,
        outcome: clientFault ? "failed" : "typed_error",
        failure: clientFault ? `error event for a client fault: ${err.error.message}` : undefined,
      };
    }
    const bad = checkStream(kind, res.events, n);
    if (bad) return { ...rec, outcome: "failed", failure: bad };
    rec.chars = res.events.reduce(
      (a, e) => a + (e?.choices ?? []).reduce((b, c) => b + (c.text ?? c.delta?.content ?? "").length, 0),
      0,
    );
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

/**
 * Classifies a raw-socket result. `expect`: statuses that are fine when a response came; `code`: see
 * wrongCode. Every error the server sends, including the ones its HTTP parser raises before any
 * route runs (400 invalid_http, 431, 408), must carry an OpenAI error body. `stalledPastTimeout`:
 * the client stopped reading for longer than the server's stream write timeout, so a 200 stream the
 * server closed before [DONE] is the timeout doing its job ("cut_off"), not a failure.
 * `closeWithoutResponse`: the server may close the connection without answering (a client that
 * never sent a request).
 */
export function classifyRaw(
  res,
  {
    expect = [200],
    clientFault = false,
    completedIfDone = true,
    code,
    stalledPastTimeout = false,
    closeWithoutResponse = false,
  },
) {
  const rec = { status: res.status || undefined, ms: Math.round(res.ms) };
  if (res.timedOut)
    return {
      ...rec,
      outcome: "failed",
      failure: `hung: no end within the client timeout (status ${res.status || "none"}, ${res.bytes} bytes)`,
    };
  if (res.status >= 500 && clientFault)
    return { ...rec, outcome: "failed", failure: `5xx for a client fault: ${res.raw.slice(0, 300)}` };
  if (res.status >= 500) return { ...rec, outcome: "failed", failure: `${res.status}: ${res.raw.slice(0, 300)}` };
  if (res.status && !expect.includes(res.status))
    return {
      ...rec,
      outcome: "failed",
      failure: `status ${res.status}, expected ${expect.join("/")}: ${res.raw.slice(0, 300)}`,
    };
  if (res.status >= 400) {
    const bodyText = res.raw.slice(res.raw.indexOf("\r\n\r\n") + 4);
    let j;
    try {
      j = JSON.parse(
        /^[0-9a-f]+\r\n/.test(bodyText)
          ? bodyText.replace(/^[0-9a-f]+\r\n/, "").replace(/\r\n0\r\n\r\n$/, "")
          : bodyText,
      );
    } catch {
      /* not JSON */
    }
    if (!isOpenAIError(j))
      return {
        ...rec,
        outcome: "failed",
        failure: `status ${res.status} without an OpenAI error body: ${bodyText.slice(0, 200)}`,
      };
    const wrong = wrongCode(j, code);
    if (wrong) return { ...rec, code: j.error.code, outcome: "failed", failure: `status ${res.status} with ${wrong}` };
    return { ...rec, outcome: "typed_error", code: j.error.code, type: j.error.type };
  }
  if (res.clientClosed) return { ...rec, outcome: res.done && completedIfDone ? "completed" : "aborted" };
  if (res.done) return { ...rec, outcome: "completed" };
  if (res.status === 200 && res.closedByServer && stalledPastTimeout) return { ...rec, outcome: "cut_off" };
  if (res.status === 200 && res.closedByServer)
    return { ...rec, outcome: "failed", failure: "the server closed a 200 stream before [DONE]" };
  if (!res.status && res.closedByServer && closeWithoutResponse)
    return { ...rec, outcome: "typed_error", code: "(closed without a response)" };
  if (!res.status && res.closedByServer)
    return {
      ...rec,
      outcome: "failed",
      failure: `the server closed the connection without a response${res.error ? ` (${res.error})` : ""}`,
    };
  return { ...rec, outcome: "completed" };
}
