// Semantic search: embed a few sentences and a query, rank the sentences by cosine similarity.
//
//   node examples/embeddings.mjs MODEL [QUERY]
//
// MODEL: a .gguf path, hf:OWNER/REPO:QUANT or an https:// URL. A model trained for embeddings gives
// meaningful rankings; any generative GGUF runs (its last token's hidden state is the vector, as
// llama.cpp's). Offline, make a small random-weight model first (rankings are then arbitrary, the
// machinery is real):
//   npx llmserve synth --dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 128 --vocab-size 400 -o tiny.gguf
import { Model } from "llmserve";

const [spec, query = "Which animal purrs?"] = process.argv.slice(2);
if (!spec) {
  console.error("usage: node examples/embeddings.mjs MODEL [QUERY]");
  process.exit(2);
}

const sentences = [
  "The cat sleeps on the warm windowsill.",
  "Stock markets fell sharply on Monday.",
  "A kitten chased a ball of yarn.",
  "The recipe needs two cups of flour.",
  "Rain is expected over the weekend.",
];

const model = await Model.load(spec);
try {
  // One call embeds every sentence; vectors are unit length (normalize: true), so the dot product
  // is the cosine similarity.
  const options = { pooling: "mean" };
  const docs = await model.embed(sentences, options);
  const [q] = await model.embed(query, options);
  const dot = (a, b) => a.reduce((s, x, i) => s + x * b[i], 0);
  const ranked = sentences.map((text, i) => ({ text, score: dot(q, docs[i]) })).sort((a, b) => b.score - a.score);
  console.log(`query: ${query}`);
  for (const r of ranked) console.log(`${r.score.toFixed(4)}  ${r.text}`);
  // Asking again is served from the model's embedding cache.
  await model.embed(query, options);
  const s = model.stats();
  console.log(
    `[${docs[0].length} dimensions; embedding cache: ${s.embeddingCacheHits} hits, ${s.embeddingCacheMisses} computed]`,
  );
} finally {
  await model.dispose();
}
