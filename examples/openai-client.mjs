// The official `openai` client against `llmserve serve` (OpenAI-compatible API).
//
//   npm install openai
//   node examples/openai-client.mjs MODEL                 start `llmserve serve -m MODEL` on a free port,
//                                                        talk to it, stop it
//   node examples/openai-client.mjs --base-url URL [KEY]  talk to a server already running, e.g.
//                                                        http://127.0.0.1:8080/v1
//
// MODEL: see examples/streaming.mjs (a synth model works offline).
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import OpenAI from "openai";

const args = process.argv.slice(2);
if (args.length === 0 || (args[0] === "--base-url" && !args[1])) {
  console.error("usage: node examples/openai-client.mjs MODEL | --base-url URL [API_KEY]");
  process.exit(2);
}

/** Starts `llmserve serve` as a child process; resolves with its URL once it listens. */
function startServer(model, apiKey) {
  const require = createRequire(import.meta.url);
  const pkgPath = require.resolve("llmserve/package.json");
  const cli = join(dirname(pkgPath), require(pkgPath).bin.llmserve);
  const child = spawn(process.execPath, [cli, "serve", "-m", model, "--port", "0", "--api-key", apiKey], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      // "llmserve: serving NAME at http://127.0.0.1:PORT/v1 (...)"
      const m = / at (http:\/\/\S+\/v1)/.exec(out);
      if (m) resolve({ child, baseURL: m[1] });
    });
    child.on("exit", (code) => reject(new Error(`llmserve serve exited with ${code} before listening`)));
    child.on("error", reject);
  });
}

let server;
let baseURL;
let apiKey;
if (args[0] === "--base-url") {
  baseURL = args[1];
  apiKey = args[2] ?? process.env.LLMSERVE_API_KEY ?? "none";
} else {
  apiKey = "example-key";
  server = await startServer(args[0], apiKey);
  baseURL = server.baseURL;
}

try {
  const client = new OpenAI({ baseURL, apiKey });
  const models = await client.models.list();
  const model = models.data[0].id;
  console.log(`server ${baseURL}, model ${model}`);

  const r = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Say hello." }],
    max_tokens: 16,
    temperature: 0,
  });
  console.log(`chat: ${JSON.stringify(r.choices[0].message.content)} (${r.usage?.completion_tokens} tokens)`);

  process.stdout.write("stream: ");
  const stream = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Count to five." }],
    max_tokens: 16,
    stream: true,
  });
  for await (const part of stream) process.stdout.write(part.choices[0]?.delta?.content ?? "");
  process.stdout.write("\n");
} finally {
  if (server) {
    // SIGTERM: the server drains in-flight requests and exits 0.
    const exited = new Promise((resolve) => server.child.once("exit", resolve));
    server.child.kill("SIGTERM");
    console.log(`server stopped (exit ${await exited})`);
  }
}
