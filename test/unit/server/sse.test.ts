/**
 * lib/server/sse.ts against a stand-in ServerResponse: the event-stream headers, the `data:` framing,
 * backpressure (wait for drain, shared by concurrent sends), the write timeout, and close detection.
 */
import { EventEmitter } from "node:events";
import type { ServerResponse } from "node:http";
import { afterEach, describe, expect, it, vi } from "vitest";
import { SseStream } from "../../../lib/server/sse.js";

/** Records what is written; `write` returns `accept` (false: the socket buffer is full). */
class FakeResponse extends EventEmitter {
  writes: string[] = [];
  ended: string | undefined;
  head: [number, Record<string, string>] | undefined;
  flushed = 0;
  destroyed = false;
  writableEnded = false;
  accept = true;
  writeHead(status: number, headers: Record<string, string>) {
    this.head = [status, headers];
    return this;
  }
  flushHeaders() {
    this.flushed++;
  }
  write(s: string): boolean {
    this.writes.push(s);
    return this.accept;
  }
  end(s: string) {
    this.ended = s;
    this.writableEnded = true;
  }
  destroy() {
    this.destroyed = true;
    this.emit("close");
  }
}

const make = (timeoutMs?: number, onTimeout?: () => void) => {
  const res = new FakeResponse();
  return { res, sse: new SseStream(res as unknown as ServerResponse, timeoutMs, onTimeout) };
};

afterEach(() => {
  vi.useRealTimers();
});

describe("SseStream", () => {
  it("open() sends 200 with the event-stream headers and flushes them", () => {
    const { res, sse } = make();
    sse.open();
    expect(res.head).toEqual([
      200,
      {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        Connection: "keep-alive",
        "X-Accel-Buffering": "no",
      },
    ]);
    expect(res.flushed).toBe(1);
  });

  it("send() writes one `data: <json>` event; end() writes [DONE] and closes the stream", async () => {
    const { res, sse } = make();
    await sse.send({ a: 1, b: "x" });
    await sse.send([1, 2]);
    expect(res.writes).toEqual(['data: {"a":1,"b":"x"}\n\n', "data: [1,2]\n\n"]);
    expect(sse.closed).toBe(false);
    sse.end();
    expect(res.ended).toBe("data: [DONE]\n\n");
    expect(sse.closed).toBe(true);
    await sse.send({ late: true });
    expect(res.writes).toHaveLength(2);
  });

  it("closed: after the response's close event, once destroyed, once ended; nothing is written then", async () => {
    const a = make();
    a.res.emit("close");
    expect(a.sse.closed).toBe(true);
    await a.sse.send(1);
    a.sse.end();
    expect(a.res.writes).toEqual([]);
    expect(a.res.ended).toBeUndefined();

    const b = make();
    b.res.destroyed = true;
    expect(b.sse.closed).toBe(true);
    b.sse.end();
    expect(b.res.ended).toBeUndefined();

    const c = make();
    c.res.writableEnded = true;
    expect(c.sse.closed).toBe(true);
    await c.sse.send(1);
    expect(c.res.writes).toEqual([]);
  });

  it("a full socket: send() waits for drain; concurrent sends share the wait; listeners are removed after", async () => {
    const { res, sse } = make();
    res.accept = false;
    let done1 = false;
    let done2 = false;
    const p1 = sse.send(1).then(() => (done1 = true));
    const p2 = sse.send(2).then(() => (done2 = true));
    await new Promise((r) => setTimeout(r, 10));
    expect([done1, done2]).toEqual([false, false]);
    expect(res.writes).toEqual(["data: 1\n\n", "data: 2\n\n"]);
    expect(res.listenerCount("drain")).toBe(1); // one shared wait
    res.emit("drain");
    await Promise.all([p1, p2]);
    expect(res.listenerCount("drain")).toBe(0);
    expect(res.listenerCount("close")).toBe(1); // the constructor's own

    // The next full write waits again (the finished wait is not reused).
    let done3 = false;
    const p3 = sse.send(3).then(() => (done3 = true));
    await new Promise((r) => setTimeout(r, 10));
    expect(done3).toBe(false);
    res.emit("drain");
    await p3;
  });

  it("a client that closes while a send waits releases it", async () => {
    const { res, sse } = make();
    res.accept = false;
    const p = sse.send("x");
    res.emit("close");
    await p;
    expect(sse.closed).toBe(true);
    expect(res.listenerCount("drain")).toBe(0);
  });

  it("no drain within writeTimeoutMs: onWriteTimeout once, the response destroyed, the send released", async () => {
    vi.useFakeTimers();
    const onTimeout = vi.fn();
    const { res, sse } = make(500, onTimeout);
    res.accept = false;
    let released = false;
    const p = sse.send("x").then(() => (released = true));
    await vi.advanceTimersByTimeAsync(499);
    expect(onTimeout).not.toHaveBeenCalled();
    expect(res.destroyed).toBe(false);
    expect(released).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await p;
    expect(onTimeout).toHaveBeenCalledTimes(1);
    expect(res.destroyed).toBe(true);
    expect(sse.closed).toBe(true);
  });

  it("a drain in time cancels the write timeout", async () => {
    vi.useFakeTimers();
    const onTimeout = vi.fn();
    const { res, sse } = make(500, onTimeout);
    res.accept = false;
    const p = sse.send("x");
    await vi.advanceTimersByTimeAsync(400);
    res.emit("drain");
    await p;
    await vi.advanceTimersByTimeAsync(1000);
    expect(onTimeout).not.toHaveBeenCalled();
    expect(res.destroyed).toBe(false);
  });

  it("defaults: a 30 s write timeout and no callback needed", async () => {
    vi.useFakeTimers();
    const { res, sse } = make();
    res.accept = false;
    const p = sse.send("x");
    await vi.advanceTimersByTimeAsync(29_999);
    expect(res.destroyed).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await p;
    expect(res.destroyed).toBe(true);
  });
});
