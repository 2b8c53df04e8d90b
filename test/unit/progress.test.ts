/** lib/progress.ts: rate and ETA from a windowed rate, throttling, and the plain-line display. */
import { describe, expect, it } from "vitest";
import { describeProgress, ProgressReporter, ProgressTracker, type ProgressEvent } from "../../lib/progress.js";

describe("ProgressTracker", () => {
  it("reports rate over the last seconds and the ETA at that rate; the first and last reports always go out", () => {
    let now = 0;
    const events: ProgressEvent[] = [];
    const t = new ProgressTracker(
      "download",
      "m.gguf",
      1000,
      "bytes",
      (e) => events.push(e),
      100,
      () => now,
    );
    t.update(0);
    now = 50;
    t.update(10); // throttled
    now = 1000;
    t.update(100); // 100 B/s since the start
    expect(events.map((e) => e.done)).toEqual([0, 100]);
    expect(events[1].rate).toBeCloseTo(100);
    expect(events[1].etaSeconds).toBeCloseTo(9);
    // The rate follows a change of speed once older samples leave the 5 s window.
    for (let s = 2; s <= 12; s++) {
      now = s * 1000;
      t.update(100 + (s - 1) * 50);
    }
    const last = events[events.length - 1];
    expect(last.rate).toBeCloseTo(50);
    expect(last.etaSeconds).toBeCloseTo((1000 - last.done) / 50);
    t.finish();
    expect(events[events.length - 1]).toMatchObject({ finished: true, etaSeconds: 0 });
  });

  it("unknown totals give no ETA; describeProgress shows what is known", () => {
    let now = 0;
    const events: ProgressEvent[] = [];
    const t = new ProgressTracker(
      "download",
      "x",
      0,
      "bytes",
      (e) => events.push(e),
      0,
      () => now,
    );
    t.update(0);
    now = 1000;
    t.update(2048);
    expect(events[1].etaSeconds).toBeUndefined();
    expect(describeProgress(events[1])).toBe("2.0 KiB 2.0 KiB/s");
    expect(describeProgress({ ...events[1], total: 4096, etaSeconds: 75, rate: 2048, done: 2048 })).toBe(
      "50% 2.0 KiB/4.0 KiB 2.0 KiB/s eta 1m15s",
    );
  });
});

describe("ProgressReporter", () => {
  const sink = () => {
    const out: string[] = [];
    return { out, stream: { write: (s: string) => out.push(s), isTTY: false } as unknown as NodeJS.WriteStream };
  };
  const ev = (done: number, finished = false): ProgressEvent => ({
    phase: "download",
    label: "m.gguf",
    done,
    total: 100,
    unit: "bytes",
    rate: 10,
    etaSeconds: (100 - done) / 10,
    finished,
  });

  it("not a terminal: a plain line at the start, at most one per interval, and one at the end", () => {
    const { out, stream } = sink();
    const r = new ProgressReporter({ stream, intervalMs: 60_000 });
    r.report(ev(0));
    r.report(ev(50));
    r.report(ev(100, true));
    expect(out).toEqual([
      "download m.gguf: 0% 0 B/100 B 10 B/s eta 10s\n",
      "download m.gguf: done 100% 100 B/100 B 10 B/s\n",
    ]);
  });

  it("quiet prints nothing; fraction() reports load-style work with a done line", () => {
    const { out, stream } = sink();
    new ProgressReporter({ stream, quiet: true }).report(ev(10));
    expect(out).toEqual([]);
    const r = new ProgressReporter({ stream, intervalMs: 0 });
    const f = r.fraction("load", "m.gguf");
    f(0.5);
    f(1);
    f(1); // repeated end: one done line
    expect(out[0]).toMatch(/^load m\.gguf: 50%/);
    expect(out.filter((l) => l.includes("done"))).toEqual(["load m.gguf: done 100%\n"]);
  });
});
