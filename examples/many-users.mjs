// Many users, one model: concurrent generate() calls are batched together by the engine
// (continuous batching), so N users cost far less than N times one user.
//
//   node examples/many-users.mjs MODEL [USERS]      (default 8 users)
//
// MODEL: see examples/streaming.mjs (a synth model works offline).
import { Model } from "llmserve";

const [spec, usersArg = "8"] = process.argv.slice(2);
const users = Number(usersArg);
if (!spec || !Number.isInteger(users) || users < 1) {
  console.error("usage: node examples/many-users.mjs MODEL [USERS]");
  process.exit(2);
}

const model = await Model.load(spec, { maxSequences: Math.max(users, 1), prefixCache: true });
try {
  // Every user's prompt starts with the same system text: its KV is computed once and shared.
  const system = "You are a helpful assistant. Answer in one sentence.\n";
  const started = performance.now();
  const answers = await Promise.all(
    Array.from({ length: users }, async (_, i) => {
      let text = "";
      let tokens = 0;
      for await (const c of model.generate(`${system}User ${i}: tell me about the number ${i}.\nAssistant:`, {
        maxTokens: 24,
        temperature: 0.7,
        seed: i,
      })) {
        text += c.text;
        tokens += c.tokens.length;
      }
      return { user: i, tokens, text: text.trim().slice(0, 60) };
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  for (const a of answers) console.log(`user ${a.user}: ${a.tokens} tokens: ${JSON.stringify(a.text)}`);
  const s = model.stats();
  const total = answers.reduce((n, a) => n + a.tokens, 0);
  console.log(
    `${users} users, ${total} tokens in ${seconds.toFixed(2)} s (${(total / seconds).toFixed(1)} tok/s); ` +
      `${s.steps} engine steps, ${s.sequencesPerStep.toFixed(2)} sequences per step, ` +
      `${s.reusedTokens} prompt tokens reused from the prefix cache`,
  );
} finally {
  await model.dispose();
}
