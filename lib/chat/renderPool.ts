/**
 * Renders chat templates on worker threads, never on the event loop: a template is code from the
 * model file (or the operator), and a loop in it must not freeze the server. A small shared pool
 * of workers (started on first use, unref'd while idle so they never keep the process alive) runs
 * one render each at a time under a time limit; a worker that overruns it is terminated and
 * replaced. Workers also run under a heap limit, so a template building an enormous string fails
 * with a typed error instead of exhausting the process's memory.
 */
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import { LlmserveError } from "../errors.js";

/** One render: the template text, the contexts to try in order (the first that renders wins). */
export interface RenderJob {
  /** Jinja source. */
  text: string;
  /** The messages (normalized) and the variables of each attempt. */
  messages: Record<string, unknown>[];
  /** Messages with the system turns folded into the first user turn (tried after `messages`). */
  folded?: Record<string, unknown>[];
  /** Variables of the first attempt. */
  base: Record<string, unknown>;
  /** Extra variables of the second attempt (tool-use templates: tools, functions, datetime). */
  fallback: Record<string, unknown>;
  /** Most characters of output. */
  maxOutputChars: number;
  /** Milliseconds the render may take once a worker runs it. */
  timeoutMs: number;
  /** The template's name, for messages. */
  name: string;
}

type Reply = { id: number; text?: string; error?: string; tooLarge?: number };

// The worker: plain CommonJS (it needs only @huggingface/jinja), so it starts fast from sources and builds alike.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { Template } = require(workerData.jinja);
const cache = new Map();
function compiled(text) {
  let t = cache.get(text);
  if (t === undefined) {
    t = new Template(text);
    if (cache.size >= 16) cache.delete(cache.keys().next().value);
    cache.set(text, t);
  }
  return t;
}
parentPort.on("message", (job) => {
  let first;
  try {
    const t = compiled(job.text);
    const attempts = [{ ...job.base, messages: job.messages }, { ...job.fallback, ...job.base, messages: job.messages }];
    if (job.folded) attempts.push({ ...job.base, messages: job.folded }, { ...job.fallback, ...job.base, messages: job.folded });
    for (const ctx of attempts) {
      try {
        const out = t.render(ctx);
        if (out.length > job.maxOutputChars) return parentPort.postMessage({ id: job.id, tooLarge: out.length });
        return parentPort.postMessage({ id: job.id, text: out });
      } catch (err) {
        if (err instanceof RangeError && /string length/i.test(err.message)) return parentPort.postMessage({ id: job.id, tooLarge: -1 });
        if (first === undefined) first = err;
      }
    }
  } catch (err) {
    if (first === undefined) first = err;
  }
  parentPort.postMessage({ id: job.id, error: first && typeof first.message === "string" ? first.message : String(first) });
});
parentPort.postMessage({ ready: true });
`;

interface Pending {
  id: number;
  job: RenderJob;
  resolve: (text: string) => void;
  reject: (err: unknown) => void;
}

interface Slot {
  worker: Worker;
  ready: boolean;
  current?: Pending;
  timer?: NodeJS.Timeout;
}

/** Options of {@link RenderPool}. */
export interface RenderPoolOptions {
  /** Most workers (default 2). */
  size?: number;
  /** Heap limit of each worker in MiB (default 512). */
  maxHeapMb?: number;
}

/** A pool of template-rendering worker threads; see the module comment. */
export class RenderPool {
  private readonly size: number;
  private readonly maxHeapMb: number;
  private readonly slots: Slot[] = [];
  private readonly queue: Pending[] = [];
  private nextId = 1;
  private jinja: string | undefined;
  /** Workers started so far (replacements included); for tests and diagnostics. */
  started = 0;

  constructor(options: RenderPoolOptions = {}) {
    this.size = options.size ?? 2;
    this.maxHeapMb = options.maxHeapMb ?? 512;
  }

  /** Renders on a worker; rejects with ERR_TEMPLATE_TIMEOUT, ERR_TEMPLATE_OUTPUT_TOO_LARGE or ERR_INVALID_ARGUMENT. */
  render(job: RenderJob): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      this.queue.push({ id: this.nextId++, job, resolve, reject });
      this.dispatch();
    });
  }

  /** Terminates every worker (queued and running renders fail); later renders start new ones. */
  async close(): Promise<void> {
    const slots = this.slots.splice(0);
    const err = new LlmserveError("ERR_CANCELLED", "The chat-template renderer was closed.");
    for (const p of this.queue.splice(0)) p.reject(err);
    await Promise.all(
      slots.map((s) => {
        clearTimeout(s.timer);
        s.current?.reject(err);
        s.current = undefined;
        return s.worker.terminate();
      }),
    );
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      const slot = this.slots.find((s) => s.ready && s.current === undefined);
      if (!slot) {
        if (this.slots.length < this.size && !this.slots.some((s) => !s.ready)) this.spawn();
        return;
      }
      this.assign(slot, this.queue.shift()!);
    }
  }

  private assign(slot: Slot, p: Pending): void {
    slot.current = p;
    slot.worker.ref();
    slot.timer = setTimeout(() => {
      this.retire(slot);
      p.reject(
        new LlmserveError(
          "ERR_TEMPLATE_TIMEOUT",
          `The chat template (${p.job.name}) did not finish rendering within ${p.job.timeoutMs} ms and was stopped. A conversation this long may be too much for it: shorten it; if it is short, the template itself loops too long: serve the model with another chat template (chatTemplate / --chat-template).`,
        ),
      );
      this.dispatch();
    }, p.job.timeoutMs);
    const { job } = p;
    try {
      slot.worker.postMessage({
        id: p.id,
        text: job.text,
        messages: job.messages,
        folded: job.folded,
        base: job.base,
        fallback: job.fallback,
        maxOutputChars: job.maxOutputChars,
      });
    } catch (err) {
      clearTimeout(slot.timer);
      slot.current = undefined;
      slot.worker.unref();
      p.reject(
        new LlmserveError(
          "ERR_INVALID_ARGUMENT",
          `The chat template's variables cannot be passed to the renderer (they must be plain data): ${(err as Error).message}`,
          { cause: err },
        ),
      );
      this.dispatch();
    }
  }

  private spawn(): void {
    this.jinja ??= createRequire(import.meta.url).resolve("@huggingface/jinja");
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { jinja: this.jinja },
      resourceLimits: { maxOldGenerationSizeMb: this.maxHeapMb, maxYoungGenerationSizeMb: 32 },
      stdout: false,
      stderr: false,
    });
    this.started++;
    worker.unref();
    const slot: Slot = { worker, ready: false };
    this.slots.push(slot);
    worker.on("message", (m: Reply & { ready?: boolean }) => {
      if (m.ready) {
        slot.ready = true;
        this.dispatch();
        return;
      }
      const p = slot.current;
      if (!p || p.id !== m.id) return;
      clearTimeout(slot.timer);
      slot.current = undefined;
      worker.unref();
      if (m.text !== undefined) p.resolve(m.text);
      else if (m.tooLarge !== undefined) p.reject(tooLarge(p.job, m.tooLarge));
      else
        p.reject(
          new LlmserveError(
            "ERR_INVALID_ARGUMENT",
            `The chat template (${p.job.name}) rejected the messages: ${m.error}`,
          ),
        );
      this.dispatch();
    });
    const fail = (err: unknown) => {
      if (!this.slots.includes(slot)) return;
      this.retire(slot);
      const p = slot.current;
      slot.current = undefined;
      if (p) {
        const e = err as { code?: string; message?: string };
        if (e?.code === "ERR_WORKER_OUT_OF_MEMORY") p.reject(tooLarge(p.job, -1));
        else
          p.reject(
            new LlmserveError("ERR_INTERNAL", `The chat-template renderer failed: ${e?.message ?? String(err)}`, {
              cause: err,
            }),
          );
      } else if (!slot.ready) {
        // The worker cannot even start: fail what waits rather than respawning forever.
        const e = new LlmserveError(
          "ERR_INTERNAL",
          `The chat-template renderer could not start: ${(err as Error)?.message ?? String(err)}`,
          { cause: err },
        );
        for (const q of this.queue.splice(0)) q.reject(e);
      }
      this.dispatch();
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`the worker exited with code ${code}`)));
  }

  /** Removes a slot and terminates its worker (used on timeout and failure). */
  private retire(slot: Slot): void {
    clearTimeout(slot.timer);
    const i = this.slots.indexOf(slot);
    if (i >= 0) this.slots.splice(i, 1);
    void slot.worker.terminate().catch(() => {});
  }
}

function tooLarge(job: RenderJob, chars: number): LlmserveError {
  const size = chars >= 0 ? `${chars} characters` : "more text than the renderer's memory holds";
  return new LlmserveError(
    "ERR_TEMPLATE_OUTPUT_TOO_LARGE",
    `The chat template (${job.name}) rendered ${size}, more than the limit of ${job.maxOutputChars} characters (more than the model's context can hold). Shorten the conversation; if it is short, the template itself produces too much text: serve the model with another chat template (chatTemplate / --chat-template).`,
  );
}

let shared: RenderPool | undefined;

/** The process-wide pool every {@link ChatTemplate} renders on by default. */
export function sharedRenderPool(): RenderPool {
  shared ??= new RenderPool();
  return shared;
}
