/**
 * Worker-thread entry of {@link TokenizerThread}: builds the same tokenizer from the vocabulary's
 * metadata and encodes the long texts the main thread sends it (ids come back as a transferred
 * Int32Array).
 */
import { parentPort, workerData } from "node:worker_threads";
import type { GgufMetaValue } from "../native.js";
import { Tokenizer, type EncodeOptions } from "./index.js";

const tokenizer = Tokenizer.fromMetadata(workerData.metadata as Record<string, GgufMetaValue>);
const port = parentPort!;
port.on("message", (m: { id: number; text: string; opts: EncodeOptions }) => {
  try {
    const ids = Int32Array.from(tokenizer.encode(m.text, m.opts));
    port.postMessage({ id: m.id, ids }, [ids.buffer]);
  } catch (err) {
    const e = err as { code?: string; message?: string };
    port.postMessage({ id: m.id, error: { code: e?.code, message: e?.message ?? String(err) } });
  }
});
port.postMessage({ ready: true });
