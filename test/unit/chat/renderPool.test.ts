/**
 * lib/chat/renderPool.ts on its own: the order of the render attempts (base, fallback, folded),
 * output limits at their boundary, FIFO renders on a one-worker pool, how many workers a pool
 * starts, close() with running and queued renders, a render that overruns its time limit, a worker
 * that dies mid-render or cannot start, and variables that cannot cross to the worker.
 */
import { afterEach, describe, expect, it } from "vitest";
import { RenderPool, sharedRenderPool, type RenderJob } from "../../../lib/chat/renderPool.js";

/** Nested loops that run for minutes: only a time limit or close() ends them. */
const HOSTILE = "{% for a in range(1000000) %}{% for b in range(1000000) %}{% endfor %}{% endfor %}";
const user = [{ role: "user", content: "hi" }];

function job(text: string, over: Partial<RenderJob> = {}): RenderJob {
  return { text, messages: user, base: {}, fallback: {}, maxOutputChars: 1000, timeoutMs: 30_000, name: "t", ...over };
}

async function rejection(p: Promise<unknown>): Promise<{ code: string; message: string; cause?: unknown }> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeDefined();
  return err as { code: string; message: string; cause?: unknown };
}

/** The pool's workers (private): the crash tests need to reach one. */
type Internals = {
  slots: { worker: import("node:worker_threads").Worker; ready: boolean; current?: unknown }[];
  queue: unknown[];
  jinja?: string;
};
const internals = (pool: RenderPool) => pool as unknown as Internals;

const pools: RenderPool[] = [];
function newPool(size?: number, maxHeapMb?: number): RenderPool {
  const p = new RenderPool({ size, maxHeapMb });
  pools.push(p);
  return p;
}
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
});

describe("render attempts", () => {
  /** Fails unless `tools` is defined; prints x and how many tools. */
  const NEEDS_TOOLS =
    "{% if tools is not defined %}{{ raise_exception('no tools') }}{% endif %}{{ x }}:{{ tools | length }}";

  it("the first attempt uses base alone; when it throws, the second adds fallback under base", async () => {
    const pool = newPool(1);
    expect(await pool.render(job(NEEDS_TOOLS, { base: { x: "B", tools: [1] }, fallback: { tools: [1, 2, 3] } }))).toBe(
      "B:1",
    );
    expect(await pool.render(job(NEEDS_TOOLS, { base: { x: "B" }, fallback: { x: "F", tools: [1, 2] } }))).toBe("B:2");
  });

  /** Refuses a system turn; with `needTools`, also refuses to render without tools. */
  const NO_SYSTEM = (needTools: boolean) =>
    (needTools ? "{% if tools is not defined %}{{ raise_exception('no tools') }}{% endif %}" : "") +
    "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('system refused, tools=' ~ (tools is defined)) }}{% endif %}" +
    "[{{ m.role }}:{{ m.content }}]{% endfor %}{{ tools is defined }}";
  const withSystem = [
    { role: "system", content: "S" },
    { role: "user", content: "U" },
  ];
  const folded = [{ role: "user", content: "S\n\nU" }];

  it("folded messages are tried third with base alone, fourth with fallback", async () => {
    const pool = newPool(1);
    const tools = { tools: [] };
    expect(await pool.render(job(NO_SYSTEM(false), { messages: withSystem, folded, fallback: tools }))).toBe(
      "[user:S\n\nU]false",
    );
    expect(await pool.render(job(NO_SYSTEM(true), { messages: withSystem, folded, fallback: tools }))).toBe(
      "[user:S\n\nU]true",
    );
    // Messages the template takes are never folded.
    expect(await pool.render(job(NO_SYSTEM(false), { messages: user, folded: [{ role: "user", content: "F" }] }))).toBe(
      "[user:hi]false",
    );
  });

  it("when every attempt fails, the error of the first is reported as ERR_INVALID_ARGUMENT", async () => {
    const pool = newPool(1);
    const err = await rejection(
      pool.render(job(NO_SYSTEM(false), { messages: withSystem, fallback: { tools: [] }, name: "mine" })),
    );
    expect(err.code).toBe("ERR_INVALID_ARGUMENT");
    expect(err.message).toBe("The chat template (mine) rejected the messages: system refused, tools=false");
    const noFold = await rejection(
      pool.render(
        job(NO_SYSTEM(true), {
          messages: withSystem,
          folded: [{ role: "system", content: "X" }],
          fallback: { tools: [] },
        }),
      ),
    );
    expect(noFold.message).toBe("The chat template (t) rejected the messages: no tools");
  });

  it("a template that does not parse is rejected with the parser's message", async () => {
    const pool = newPool(1);
    const err = await rejection(pool.render(job("{{ a", { name: "broken" })));
    expect(err.code).toBe("ERR_INVALID_ARGUMENT");
    expect(err.message).toBe("The chat template (broken) rejected the messages: Unexpected end of input");
  });

  it("output of exactly maxOutputChars is returned; one character more is ERR_TEMPLATE_OUTPUT_TOO_LARGE", async () => {
    const pool = newPool(1);
    expect(await pool.render(job("abcde", { maxOutputChars: 5 }))).toBe("abcde");
    const err = await rejection(pool.render(job("abcdef", { maxOutputChars: 5, name: "big" })));
    expect(err.code).toBe("ERR_TEMPLATE_OUTPUT_TOO_LARGE");
    expect(err.message).toMatch(
      /^The chat template \(big\) rendered 6 characters, more than the limit of 5 characters \(more than the model's context can hold\)\. Shorten the conversation;/,
    );
  });

  it("variables that are not plain data are ERR_INVALID_ARGUMENT, and the worker stays in service", async () => {
    const pool = newPool(1);
    expect(await pool.render(job("ok"))).toBe("ok");
    const err = await rejection(pool.render(job("x", { base: { f: () => 1 } })));
    expect(err.code).toBe("ERR_INVALID_ARGUMENT");
    expect(err.message).toMatch(
      /^The chat template's variables cannot be passed to the renderer \(they must be plain data\): .*could not be cloned/,
    );
    expect(err.cause).toBeInstanceOf(Error);
    expect(await pool.render(job("{{ 1 + 1 }}"))).toBe("2");
    expect(pool.started).toBe(1);
    expect(internals(pool).slots[0]!.current).toBeUndefined();
  });
});

describe("workers", () => {
  it("a one-worker pool renders concurrent jobs one at a time, in order, on one worker", async () => {
    const pool = newPool(1);
    const done: number[] = [];
    const all = [0, 1, 2, 3].map((i) =>
      pool.render(job(`{{ messages[0].content }}-${i}`)).then((s) => {
        done.push(i);
        return s;
      }),
    );
    expect(internals(pool).queue.length).toBe(4); // nothing runs until the worker is ready
    expect(await Promise.all(all)).toEqual(["hi-0", "hi-1", "hi-2", "hi-3"]);
    expect(done).toEqual([0, 1, 2, 3]);
    expect(pool.started).toBe(1);
    expect(internals(pool).queue.length).toBe(0);
  });

  it("starts one worker at a time, never more than size, and reuses idle ones", async () => {
    const pool = newPool(2);
    const first = [pool.render(job("a")), pool.render(job("b"))];
    expect(pool.started).toBe(1); // a second worker is started only once the first is up
    expect(await Promise.all(first)).toEqual(["a", "b"]);
    const many = await Promise.all(Array.from({ length: 8 }, (_, i) => pool.render(job(`${i}`))));
    expect(many).toEqual(["0", "1", "2", "3", "4", "5", "6", "7"]);
    expect(pool.started).toBeLessThanOrEqual(2);
    expect(internals(pool).slots.length).toBe(pool.started);
    // Two slow renders at once need both workers.
    const slow = "{% for a in range(3000) %}{% endfor %}{{ messages[0].content }}";
    await Promise.all([pool.render(job(slow)), pool.render(job(slow)), pool.render(job(slow))]);
    expect(pool.started).toBe(2);
    expect(await pool.render(job("again"))).toBe("again");
    expect(pool.started).toBe(2);
  });

  it("workers run under the heap limit: 512 MiB by default, or the one given", async () => {
    const dflt = newPool();
    await dflt.render(job("x"));
    expect(internals(dflt).slots[0]!.worker.resourceLimits).toMatchObject({
      maxOldGenerationSizeMb: 512,
      maxYoungGenerationSizeMb: 32,
    });
    const small = newPool(1, 96);
    await small.render(job("x"));
    expect(internals(small).slots[0]!.worker.resourceLimits).toMatchObject({
      maxOldGenerationSizeMb: 96,
      maxYoungGenerationSizeMb: 32,
    });
  });

  it("a render over its time limit is ERR_TEMPLATE_TIMEOUT; its worker is replaced and the queue moves on", async () => {
    const pool = newPool(1);
    const slow = pool.render(job(HOSTILE, { timeoutMs: 300, name: "loop" }));
    const next = pool.render(job("{{ messages[0].content }}!"));
    const err = await rejection(slow);
    expect(err.code).toBe("ERR_TEMPLATE_TIMEOUT");
    expect(err.message).toMatch(
      /^The chat template \(loop\) did not finish rendering within 300 ms and was stopped\. A conversation this long/,
    );
    expect(await next).toBe("hi!");
    expect(pool.started).toBe(2);
    expect(internals(pool).slots.length).toBe(1);
  });

  it("a render that replies in time stops its timer: the worker is not retired afterwards", async () => {
    const pool = newPool(1);
    expect(await pool.render(job("quick", { timeoutMs: 500 }))).toBe("quick");
    await new Promise((r) => setTimeout(r, 800));
    expect(internals(pool).slots.length).toBe(1);
    expect(await pool.render(job("again", { timeoutMs: 500 }))).toBe("again");
    expect(pool.started).toBe(1);
  });

  it("close() fails the running and the queued renders with ERR_CANCELLED; later renders start a new worker", async () => {
    const pool = newPool(1);
    expect(await pool.render(job("warm"))).toBe("warm");
    const running = rejection(pool.render(job(HOSTILE)));
    const queued = rejection(pool.render(job("q")));
    expect(internals(pool).queue.length).toBe(1);
    await pool.close();
    for (const err of await Promise.all([running, queued])) {
      expect(err.code).toBe("ERR_CANCELLED");
      expect(err.message).toBe("The chat-template renderer was closed.");
    }
    expect(internals(pool).slots.length).toBe(0);
    expect(internals(pool).queue.length).toBe(0);
    expect(await pool.render(job("after"))).toBe("after");
    expect(pool.started).toBe(2);
  });

  it("a worker that dies mid-render fails that render with ERR_INTERNAL and is replaced", async () => {
    const pool = newPool(1);
    expect(await pool.render(job("warm"))).toBe("warm");
    const dying = rejection(pool.render(job(HOSTILE)));
    const queued = pool.render(job("{{ messages[0].content }}?"));
    await internals(pool).slots[0]!.worker.terminate();
    const err = await dying;
    expect(err.code).toBe("ERR_INTERNAL");
    expect(err.message).toBe("The chat-template renderer failed: the worker exited with code 1");
    expect(err.cause).toBeInstanceOf(Error);
    expect(await queued).toBe("hi?");
    expect(pool.started).toBe(2);
  });

  it("a worker that runs out of memory mid-render is ERR_TEMPLATE_OUTPUT_TOO_LARGE", async () => {
    const pool = newPool(1);
    expect(await pool.render(job("warm"))).toBe("warm");
    const p = rejection(pool.render(job(HOSTILE, { name: "oom", maxOutputChars: 77 })));
    const oom = Object.assign(new Error("Worker terminated due to reaching memory limit: JS heap out of memory"), {
      code: "ERR_WORKER_OUT_OF_MEMORY",
    });
    internals(pool).slots[0]!.worker.emit("error", oom);
    const err = await p;
    expect(err.code).toBe("ERR_TEMPLATE_OUTPUT_TOO_LARGE");
    expect(err.message).toMatch(
      /^The chat template \(oom\) rendered more text than the renderer's memory holds, more than the limit of 77 characters/,
    );
    expect(internals(pool).slots.length).toBe(0); // retired; the next render starts another
    expect(await pool.render(job("next"))).toBe("next");
    expect(pool.started).toBe(2);
  });

  it("an idle worker that exits is dropped without failing anything", async () => {
    const pool = newPool(1);
    expect(await pool.render(job("warm"))).toBe("warm");
    const exited = new Promise((r) => internals(pool).slots[0]!.worker.once("exit", r));
    await internals(pool).slots[0]!.worker.terminate();
    await exited;
    expect(internals(pool).slots.length).toBe(0);
    expect(await pool.render(job("again"))).toBe("again");
    expect(pool.started).toBe(2);
  });

  it("a worker that cannot start fails every waiting render, and is not respawned in a loop", async () => {
    const pool = newPool(1);
    internals(pool).jinja = "/nonexistent/llmserve-jinja.js";
    const a = rejection(pool.render(job("a")));
    const b = rejection(pool.render(job("b")));
    for (const err of await Promise.all([a, b])) {
      expect(err.code).toBe("ERR_INTERNAL");
      expect(err.message).toMatch(
        /^The chat-template renderer could not start: Cannot find module '\/nonexistent\/llmserve-jinja\.js'/,
      );
      expect(err.cause).toBeInstanceOf(Error);
    }
    await new Promise((r) => setTimeout(r, 200));
    expect(pool.started).toBe(1);
    expect(internals(pool).slots.length).toBe(0);
    expect(internals(pool).queue.length).toBe(0);
  });
});

describe("sharedRenderPool", () => {
  it("is one pool for the process", () => {
    const p = sharedRenderPool();
    expect(p).toBeInstanceOf(RenderPool);
    expect(sharedRenderPool()).toBe(p);
  });
});
