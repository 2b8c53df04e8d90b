/**
 * Long tokenizations off the event loop: a {@link Tokenizer} encodes texts above
 * {@link OFFTHREAD_MIN_CHARS} on one worker thread of its own (started on first use with a copy of
 * the vocabulary, unref'd while idle), so a multi-megabyte prompt does not stall other requests.
 */
import type { Worker } from "node:worker_threads";
import { LlmserveError, type ErrorCode } from "../errors.js";
import type { GgufMetaValue } from "../native.js";
import { moduleWorker } from "../threads.js";
import type { EncodeOptions } from "./index.js";

/** Texts at least this long (UTF-16 code units) are encoded on the worker thread. */
export const OFFTHREAD_MIN_CHARS = 16 * 1024;

interface Pending {
  resolve: (ids: number[]) => void;
  reject: (err: unknown) => void;
}

/** The vocabulary metadata a worker rebuilds the tokenizer from (tokenizer.* and general.name/architecture). */
export function tokenizerMetadata(md: Record<string, GgufMetaValue>): Record<string, GgufMetaValue> {
  const out: Record<string, GgufMetaValue> = {};
  for (const [k, v] of Object.entries(md)) {
    if (k.startsWith("tokenizer.ggml.") || k === "general.name" || k === "general.architecture") out[k] = v;
  }
  return out;
}

/** One tokenizer worker thread; see the module comment. */
export class TokenizerThread {
  private worker: Worker | undefined;
  private starting: Promise<Worker> | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  /** @param metadata resolves with the vocabulary's metadata (read when the worker first starts) */
  constructor(private readonly metadata: () => Promise<Record<string, GgufMetaValue>>) {}

  /** Encodes on the worker thread (the same ids as Tokenizer.encode). */
  async encode(text: string, opts: EncodeOptions): Promise<number[]> {
    const worker = await this.start();
    // close() ran while this call waited for the worker: that worker is gone and will never answer
    if (worker !== this.worker) throw new LlmserveError("ERR_CANCELLED", "The tokenizer's worker thread was stopped.");
    const id = this.nextId++;
    return new Promise<number[]>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.ref();
      const { addSpecial, parseSpecial, continuation } = opts;
      worker.postMessage({ id, text, opts: { addSpecial, parseSpecial, continuation } });
    });
  }

  /** Stops the worker (pending encodes fail with ERR_CANCELLED); a later encode starts a new one. */
  async close(): Promise<void> {
    const w = this.worker ?? (await this.starting?.catch(() => undefined));
    this.worker = undefined;
    this.starting = undefined;
    this.failAll(new LlmserveError("ERR_CANCELLED", "The tokenizer's worker thread was stopped."));
    await w?.terminate();
  }

  private start(): Promise<Worker> {
    if (this.worker) return Promise.resolve(this.worker);
    this.starting ??= (async () => {
      const metadata = tokenizerMetadata(await this.metadata());
      const worker = moduleWorker(import.meta.url, "encodeWorker", { workerData: { metadata } });
      worker.unref();
      await new Promise<void>((resolve, reject) => {
        const onMessage = (m: { ready?: boolean }) => {
          if (!m.ready) return;
          worker.off("error", onError);
          worker.off("message", onMessage);
          resolve();
        };
        const onError = (err: unknown) =>
          reject(
            new LlmserveError(
              "ERR_INTERNAL",
              `The tokenizer's worker thread could not start: ${(err as Error)?.message ?? String(err)}`,
              { cause: err },
            ),
          );
        worker.on("message", onMessage);
        worker.once("error", onError);
        worker.ref(); // alive until it is ready (an await on it must not let the process exit)
      });
      worker.unref();
      worker.on("message", (m: { id: number; ids?: Int32Array; error?: { code?: string; message: string } }) => {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        if (this.pending.size === 0) worker.unref();
        if (m.ids) p.resolve(Array.from(m.ids));
        else {
          const code = (
            typeof m.error?.code === "string" && m.error.code.startsWith("ERR_") ? m.error.code : "ERR_TOKENIZER"
          ) as ErrorCode;
          p.reject(new LlmserveError(code, m.error?.message ?? "tokenization failed"));
        }
      });
      const lost = (err: unknown) => {
        if (this.worker !== worker) return;
        this.worker = undefined;
        this.starting = undefined;
        this.failAll(
          new LlmserveError(
            "ERR_INTERNAL",
            `The tokenizer's worker thread failed: ${(err as Error)?.message ?? String(err)}`,
            { cause: err },
          ),
        );
      };
      worker.on("error", lost);
      worker.on("exit", (code) => lost(new Error(`it exited with code ${code}`)));
      this.worker = worker;
      return worker;
    })();
    this.starting.catch(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  private failAll(err: LlmserveError): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(err);
  }
}
