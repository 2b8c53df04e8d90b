/**
 * A local stand-in for the Hugging Face Hub, for download tests (never the network): the resolve
 * route (`/{owner}/{repo}/resolve/{rev}/{file}`: 302 to a CDN on another origin, with
 * X-Linked-Etag / X-Linked-Size as the Hub sends for LFS files), the model API
 * (`/api/models/{owner}/{repo}`), byte ranges, gated repositories, and misbehaviour on demand
 * (a connection dropped mid-body, a stalled body, a 5xx, a wrong checksum).
 */
import { createHash } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface MockFile {
  data: Buffer;
  /** Announce this sha256 instead of the real one (a corrupt file on the way). */
  announceSha256?: string;
}

export interface MockRepo {
  files: Record<string, MockFile>;
  /** Needs `Authorization: Bearer {token}` on the resolve route (401 otherwise). */
  gated?: boolean;
}

export interface SeenRequest {
  server: "hub" | "cdn";
  method: string;
  path: string;
  range?: string;
  authorization?: string;
}

export class MockHub {
  readonly repos = new Map<string, MockRepo>();
  readonly requests: SeenRequest[] = [];
  readonly token = "hf_test_token";
  /** The next CDN GET of this file sends this many body bytes, then drops the connection. */
  readonly dropAfter = new Map<string, number>();
  /** The next CDN GET of this file sends headers, then stalls (no body). */
  readonly stallOnce = new Set<string>();
  /** The next request of any kind answers 503. */
  fail503Once = false;
  /** Milliseconds between 64 KiB body chunks (to make downloads overlap). */
  chunkDelayMs = 0;
  private hub?: http.Server;
  private cdn?: http.Server;
  hubUrl = "";
  cdnUrl = "";

  static sha256(data: Buffer): string {
    return createHash("sha256").update(data).digest("hex");
  }

  async start(): Promise<void> {
    this.hub = http.createServer((q, r) => this.onHub(q, r));
    this.cdn = http.createServer((q, r) => this.onCdn(q, r));
    const listen = (s: http.Server) =>
      new Promise<string>((resolve) =>
        s.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(s.address() as AddressInfo).port}`)),
      );
    this.hubUrl = await listen(this.hub);
    this.cdnUrl = await listen(this.cdn); // another port: another origin, as the Hub's CDN
  }

  async close(): Promise<void> {
    for (const s of [this.hub, this.cdn]) {
      s?.closeAllConnections();
      await new Promise((r) => s?.close(r));
    }
  }

  count(f: (r: SeenRequest) => boolean): number {
    return this.requests.filter(f).length;
  }

  private seen(server: "hub" | "cdn", q: http.IncomingMessage): void {
    this.requests.push({
      server,
      method: q.method ?? "",
      path: decodeURIComponent((q.url ?? "").split("?")[0]),
      range: q.headers.range,
      authorization: q.headers.authorization,
    });
  }

  private onHub(q: http.IncomingMessage, r: http.ServerResponse): void {
    this.seen("hub", q);
    if (this.fail503Once) {
      this.fail503Once = false;
      r.writeHead(503).end();
      return;
    }
    const path = decodeURIComponent((q.url ?? "").split("?")[0]);
    const api = /^\/api\/models\/([^/]+\/[^/]+)(?:\/revision\/[^/]+)?$/.exec(path);
    if (api) {
      const repo = this.repos.get(api[1]);
      if (!repo) {
        r.writeHead(404, { "content-type": "application/json" }).end('{"error":"Repository not found"}');
        return;
      }
      const siblings = Object.keys(repo.files).map((rfilename) => ({ rfilename }));
      r.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ id: api[1], siblings }));
      return;
    }
    const m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    const repo = m && this.repos.get(m[1]);
    if (!m || !repo) {
      r.writeHead(404).end();
      return;
    }
    if (repo.gated && q.headers.authorization !== `Bearer ${this.token}`) {
      r.writeHead(401, { "x-error-code": "GatedRepo" }).end("Access to this model is restricted.");
      return;
    }
    const file = repo.files[m[3]];
    if (!file) {
      r.writeHead(404, { "x-error-code": "EntryNotFound" }).end();
      return;
    }
    const sha = file.announceSha256 ?? MockHub.sha256(file.data);
    r.writeHead(302, {
      location: `${this.cdnUrl}/cdn/${m[1]}/${m[3]}?signed=1`,
      "x-linked-etag": `"${sha}"`,
      "x-linked-size": String(file.data.length),
      etag: `"${sha}"`,
    }).end();
  }

  private onCdn(q: http.IncomingMessage, r: http.ServerResponse): void {
    this.seen("cdn", q);
    const path = decodeURIComponent((q.url ?? "").split("?")[0]);
    const m = /^\/cdn\/([^/]+\/[^/]+)\/(.+)$/.exec(path);
    const file = m && this.repos.get(m[1])?.files[m[2]];
    if (!m || !file) {
      r.writeHead(404).end();
      return;
    }
    const key = `${m[1]}/${m[2]}`;
    const size = file.data.length;
    let start = 0;
    const range = /^bytes=(\d+)-$/.exec(q.headers.range ?? "");
    if (range) {
      start = Number(range[1]);
      if (start >= size) {
        r.writeHead(416, { "content-range": `bytes */${size}` }).end();
        return;
      }
      r.writeHead(206, {
        "content-range": `bytes ${start}-${size - 1}/${size}`,
        "content-length": String(size - start),
        "accept-ranges": "bytes",
      });
    } else {
      r.writeHead(200, { "content-length": String(size), "accept-ranges": "bytes", etag: '"cdn-etag"' });
    }
    if (q.method === "HEAD") {
      r.end();
      return;
    }
    if (this.stallOnce.delete(key)) {
      r.flushHeaders(); // headers, then nothing: the client's idle timeout must fire
      return;
    }
    const drop = this.dropAfter.get(key);
    this.dropAfter.delete(key);
    const end = drop === undefined ? size : Math.min(size, start + drop);
    const send = async () => {
      for (let at = start; at < end; at += 65536) {
        if (r.destroyed) return;
        r.write(file.data.subarray(at, Math.min(end, at + 65536)));
        if (this.chunkDelayMs > 0) await new Promise((res) => setTimeout(res, this.chunkDelayMs));
      }
      if (drop !== undefined) {
        // Let the bytes written so far leave, then cut the connection mid-body.
        setTimeout(() => r.socket?.destroy(), 50);
      } else r.end();
    };
    void send();
  }
}
