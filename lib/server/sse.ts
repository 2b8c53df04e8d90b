/** Server-Sent Events over a raw Node response, with backpressure and close detection. */
import type { ServerResponse } from "node:http";

export class SseStream {
  private closedFlag = false;
  private drained: Promise<void> | undefined;
  private readonly res: ServerResponse;

  constructor(res: ServerResponse) {
    this.res = res;
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
      const done = () => {
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
