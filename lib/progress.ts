/**
 * Progress of long work (download, checksum, load, synth): one event shape the library reports
 * (`onProgress` callbacks) and one renderer the CLI draws it with.
 */
import cliProgress from "cli-progress";

/** One progress report; the same shape for every kind of long work. */
export interface ProgressEvent {
  /** What is being done: "download", "verify" (checksum of a resumed file), "load", "synth", "quantize". */
  phase: string;
  /** What it is done to, e.g. a file name. */
  label: string;
  /** Units done: bytes for "download"/"verify", else a fraction in [0, 1] (see `unit`). */
  done: number;
  /** Units in all; 0 when unknown (a download without Content-Length). */
  total: number;
  /** "bytes" or "fraction". */
  unit: "bytes" | "fraction";
  /** Units per second over the last few seconds (0 until two reports are apart in time). */
  rate: number;
  /** Seconds left at that rate; undefined when unknown. */
  etaSeconds?: number;
  /** True on the last report of this work. */
  finished: boolean;
  /** Extra text drawn after the numbers, e.g. finetune's "loss 2.3141 1520 tok/s". */
  detail?: string;
}

/** Receives {@link ProgressEvent}s. */
export type ProgressCallback = (event: ProgressEvent) => void;

// Rate window: long enough to smooth bursty network reads, short enough to follow a slowdown.
const RATE_WINDOW_MS = 5000;

/**
 * Turns "done so far" updates into {@link ProgressEvent}s with a windowed rate and an ETA.
 * `minIntervalMs` throttles reports (the first and the last always go out); the rate counts only
 * work done since the tracker started (a resumed download's earlier bytes are not "speed").
 */
export class ProgressTracker {
  private readonly samples: { t: number; done: number }[] = [];
  private lastEmit = Number.NEGATIVE_INFINITY;
  private done = 0;

  constructor(
    private readonly phase: string,
    private readonly label: string,
    private total: number,
    private readonly unit: "bytes" | "fraction",
    private readonly emit: ProgressCallback,
    private readonly minIntervalMs = 0,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Reports `done` units (and a new total, when it became known). */
  update(done: number, total?: number): void {
    if (total !== undefined) this.total = total;
    this.done = done;
    const t = this.now();
    this.samples.push({ t, done });
    while (this.samples.length > 2 && t - this.samples[1].t >= RATE_WINDOW_MS) this.samples.shift();
    if (t - this.lastEmit < this.minIntervalMs) return;
    this.lastEmit = t;
    this.emit(this.event(false));
  }

  /** The last report: `finished` set. */
  finish(): void {
    this.emit(this.event(true));
  }

  private event(finished: boolean): ProgressEvent {
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    const dt = first && last ? (last.t - first.t) / 1000 : 0;
    const rate = dt > 0 ? Math.max(0, (last.done - first.done) / dt) : 0;
    const left = this.total - this.done;
    const etaSeconds = finished ? 0 : rate > 0 && this.total > 0 ? Math.max(0, left) / rate : undefined;
    return {
      phase: this.phase,
      label: this.label,
      done: this.done,
      total: this.total,
      unit: this.unit,
      rate,
      etaSeconds,
      finished,
    };
  }
}

/** `n` bytes as "12.3 MiB". */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

function formatSeconds(s: number | undefined): string {
  if (s === undefined || !Number.isFinite(s)) return "?";
  const r = Math.round(s);
  if (r < 60) return `${r}s`;
  if (r < 3600) return `${Math.floor(r / 60)}m${String(r % 60).padStart(2, "0")}s`;
  return `${Math.floor(r / 3600)}h${String(Math.floor((r % 3600) / 60)).padStart(2, "0")}m`;
}

/** "45% 12.0 MiB/35.2 MiB 5.1 MiB/s eta 5s" (the parts that are known). */
export function describeProgress(e: ProgressEvent): string {
  const parts: string[] = [];
  if (e.total > 0) parts.push(`${Math.floor((100 * e.done) / e.total)}%`);
  if (e.unit === "bytes") {
    parts.push(e.total > 0 ? `${formatBytes(e.done)}/${formatBytes(e.total)}` : formatBytes(e.done));
    if (e.rate > 0) parts.push(`${formatBytes(e.rate)}/s`);
  }
  if (!e.finished && e.etaSeconds !== undefined) parts.push(`eta ${formatSeconds(e.etaSeconds)}`);
  if (e.detail) parts.push(e.detail);
  return parts.join(" ");
}

/** Options of {@link ProgressReporter}. */
export interface ReporterOptions {
  /** Print nothing (`--quiet`). */
  quiet?: boolean;
  /** Where to draw (default process.stderr, so stdout stays clean for `--json` and piping). */
  stream?: NodeJS.WriteStream;
  /** Draw a live bar (default: the stream is a terminal); otherwise plain lines every `intervalMs`. */
  tty?: boolean;
  /** Milliseconds between plain lines (default 2000). */
  intervalMs?: number;
}

/**
 * The CLI's one progress display: a live bar with rate and ETA on a terminal, a plain line every
 * few seconds (and at the end) otherwise, nothing with `quiet`. Feed it events with {@link report},
 * or fractions with {@link fraction} (native load and synth report fractions).
 */
export class ProgressReporter {
  private readonly quiet: boolean;
  private readonly stream: NodeJS.WriteStream;
  private readonly tty: boolean;
  private readonly intervalMs: number;
  private bar: cliProgress.SingleBar | undefined;
  private key = "";
  private lastLine = Number.NEGATIVE_INFINITY;

  constructor(options: ReporterOptions = {}) {
    this.quiet = options.quiet === true;
    this.stream = options.stream ?? process.stderr;
    this.tty = options.tty ?? this.stream.isTTY === true;
    this.intervalMs = options.intervalMs ?? 2000;
  }

  /** Draws one event (a new phase or label ends the previous bar). */
  readonly report: ProgressCallback = (e) => {
    if (this.quiet) return;
    const key = `${e.phase}\u0000${e.label}`;
    if (key !== this.key) {
      this.stop();
      this.key = key;
      this.lastLine = Number.NEGATIVE_INFINITY;
    }
    const text = describeProgress(e);
    if (!this.tty) {
      const t = performance.now();
      if (!e.finished && t - this.lastLine < this.intervalMs) return;
      this.lastLine = t;
      this.stream.write(`${e.phase} ${e.label}: ${e.finished ? `done ${text}` : text}\n`);
      if (e.finished) this.key = "";
      return;
    }
    const total = e.unit === "fraction" ? 1000 : Math.max(e.total, e.done, 1);
    const value = e.unit === "fraction" ? Math.round(e.done * 1000) : e.done;
    if (!this.bar) {
      this.bar = new cliProgress.SingleBar(
        {
          format: `${e.phase} ${e.label} [{bar}] {text}`,
          stream: this.stream,
          hideCursor: true,
          clearOnComplete: e.unit === "fraction",
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(total, value, { text });
    } else {
      this.bar.setTotal(total);
      this.bar.update(value, { text });
    }
    if (e.finished) this.stop();
  };

  /** A fraction callback (load, synth) that reports through this display with a rate and ETA. */
  fraction(phase: string, label: string): (fraction: number) => void {
    const tracker = new ProgressTracker(phase, label, 1, "fraction", this.report);
    let finished = false;
    return (f) => {
      if (finished) return;
      tracker.update(f);
      if (f >= 1) {
        finished = true;
        tracker.finish();
      }
    };
  }

  /** Ends the bar being drawn, if any. */
  stop(): void {
    if (this.bar) {
      this.bar.stop();
      this.bar = undefined;
    }
    this.key = "";
  }
}
