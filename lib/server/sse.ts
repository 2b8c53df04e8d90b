/** Server-Sent Events over a raw Node response, with backpressure and close detection. */
import type { ServerResponse } from "node:http";

export class SseStream {
  private closedFlag = false;
  private drained: Promise<void> | undefined;
  private readonly res: ServerResponse;
  private readonly writeTimeoutMs: number;
  private readonly onWriteTimeout: () => void;

  /**
   * @param writeTimeoutMs a client whose socket takes no data for this long (it stopped reading) is
   *   cut off: the response is destroyed, which the endpoint sees as a disconnect (request cancelled)
   * @param onWriteTimeout called once when that happens (metrics)
   */
  constructor(res: ServerResponse, writeTimeoutMs = 30_000, onWriteTimeout: () => void = () => {}) {
    this.res = res;
    this.writeTimeoutMs = writeTimeoutMs;
    this.onWriteTimeout = onWriteTimeout;
    res.on("close", () => {
      this.closedFlag = true;
    });
  }

  /** Sends the status line and event-stream headers. */
  open(): void {
    this.res.writeHead(200, {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-cache",
      Connection: "keep-alive",
      "X-Accel-Buffering": "no",
    });
    this.res.flushHeaders();
  }

  /** True once the client has gone (or the stream was ended). */
  get closed(): boolean {
    return this.closedFlag || this.res.destroyed || this.res.writableEnded;
  }

  /** Writes `data: <json>`; resolves when the socket can take more (or the client has gone). */
  async send(data: unknown): Promise<void> {
    if (this.closed) return;
    if (this.res.write(`data: ${JSON.stringify(data)}\n\n`)) return;
    this.drained ??= new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.onWriteTimeout();
        this.res.destroy(); // emits "close": done() runs and the endpoint cancels the request
      }, this.writeTimeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.res.off("drain", done);
        this.res.off("close", done);
        this.drained = undefined;
        resolve();
      };
      this.res.on("drain", done);
      this.res.on("close", done);
    });
    await this.drained;
  }

  /** Ends the stream with `data: [DONE]`. */
  end(): void {
    if (this.closed) return;
    this.res.end("data: [DONE]\n\n");
  }
}
