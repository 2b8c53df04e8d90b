/**
 * Byte-level BPE as llama.cpp's llm_tokenizer_bpe does it: pre-tokenize into words, map each
 * word's UTF-8 bytes to GPT-2's printable characters, then repeatedly merge the adjacent pair with
 * the lowest merge rank (leftmost on ties). Results are cached per word.
 */
import { mergeSymbols } from "./merge.js";
import { buildSplitter, type CompiledSplitter } from "./pretokenize.js";
import { byteLevelEncode } from "./unicode.js";
import type { Vocab } from "./vocab.js";

const CACHE_LIMIT = 100_000;

export class BpeTokenizer {
  private readonly splitter: CompiledSplitter;
  private readonly cache = new Map<string, number[]>();

  constructor(private readonly vocab: Vocab) {
    this.splitter = buildSplitter(vocab.pre!.regexes);
  }

  /** Pre-tokenizes a raw-text fragment (llama.cpp's word split; exposed for tests). */
  words(text: string): string[] {
    return this.splitter.split(text);
  }

  /** Tokenizes one raw-text fragment (no special tokens inside); appends ids to `out`. */
  tokenize(text: string, out: number[]): void {
    for (const word of this.splitter.split(text)) {
      const encoded = byteLevelEncode(word);
      let ids = this.cache.get(encoded);
      if (ids === undefined) {
        ids = this.tokenizeWord(encoded);
        if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
        this.cache.set(encoded, ids);
      }
      for (const id of ids) out.push(id);
    }
  }

  /** Merges one byte-level-encoded word (every character is one symbol). */
  private tokenizeWord(word: string): number[] {
    const { textToId, mergeRanks } = this.vocab;
    if (this.vocab.ignoreMerges) {
      const id = textToId.get(word);
      if (id !== undefined) return [id];
    }
    const n = word.length;
    if (n === 0) return [];
    const out: number[] = [];
    if (n === 1) {
      this.emit(word, out);
      return out;
    }
    // every character starts as one symbol
    const start = new Int32Array(n);
    const len = new Int32Array(n).fill(1);
    for (let i = 0; i < n; i++) start[i] = i;
    const next = mergeSymbols(len, n, (left, right) =>
      mergeRanks.get(`${word.substr(start[left], len[left])} ${word.substr(start[right], len[right])}`),
    );
    for (let i = 0; i !== -1; i = next[i]) this.emit(word.substr(start[i], len[i]), out);
    return out;
  }

  private emit(piece: string, out: number[]): void {
    const id = this.vocab.textToId.get(piece);
    if (id !== undefined) {
      out.push(id);
      return;
    }
    // llama.cpp falls back to single-byte strings; only ASCII characters can be found that way
    for (let j = 0; j < piece.length; j++) {
      const c = piece.charCodeAt(j);
      if (c >= 0x80) continue;
      const b = this.vocab.textToId.get(piece[j]);
      if (b !== undefined) out.push(b);
    }
  }
}
