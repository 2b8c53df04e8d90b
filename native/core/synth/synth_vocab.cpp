// Generated SentencePiece-style ("llama" tokenizer model) vocabulary for synth models.
//
// Layout: 0 <unk> (unknown), 1 <s>, 2 </s> (control), 3..258 <0x00>..<0xFF> (byte fallback), then
// normal pieces in priority order with scores -0, -1, -2, ... so earlier pieces win SentencePiece's
// bigram merges. A piece is only added after its one-character-shorter prefix, so every piece is
// reachable by merges; text with characters outside the vocabulary falls back to byte tokens, so
// any UTF-8 text tokenizes and decodes back.
#include <string>
#include <unordered_set>
#include <vector>

#include "synth.h"

namespace llmserve {
namespace {

const char* const kSpace = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's space

// Lowercase letters in rough English frequency order.
const char* const kLetters = "etaoinshrdlcumwfgypbvkjxqz";

const char* const kWords[] = {
    "the",     "of",     "and",      "to",     "a",       "in",      "is",      "it",    "you",    "that",     "he",
    "was",     "for",    "on",       "are",    "with",    "as",      "i",       "his",   "they",   "be",       "at",
    "one",     "have",   "this",     "from",   "or",      "had",     "by",      "not",   "word",   "but",      "what",
    "some",    "we",     "can",      "out",    "other",   "were",    "all",     "there", "when",   "up",       "use",
    "your",    "how",    "said",     "an",     "each",    "she",     "which",   "do",    "their",  "time",     "if",
    "will",    "way",    "about",    "many",   "then",    "them",    "write",   "would", "like",   "so",       "these",
    "her",     "long",   "make",     "thing",  "see",     "him",     "two",     "has",   "look",   "more",     "day",
    "could",   "go",     "come",     "did",    "number",  "sound",   "no",      "most",  "people", "my",       "over",
    "know",    "water",  "than",     "call",   "first",   "who",     "may",     "down",  "side",   "been",     "now",
    "find",    "any",    "new",      "work",   "part",    "take",    "get",     "place", "made",   "live",     "where",
    "after",   "back",   "little",   "only",   "round",   "man",     "year",    "came",  "show",   "every",    "good",
    "me",      "give",   "our",      "under",  "name",    "very",    "through", "just",  "form",   "sentence", "great",
    "think",   "say",    "help",     "low",    "line",    "differ",  "turn",    "cause", "much",   "mean",     "before",
    "move",    "right",  "boy",      "old",    "too",     "same",    "tell",    "does",  "set",    "three",    "want",
    "air",     "well",   "also",     "play",   "small",   "end",     "put",     "home",  "read",   "hand",     "port",
    "large",   "spell",  "add",      "even",   "land",    "here",    "must",    "big",   "high",   "such",     "follow",
    "act",     "why",    "ask",      "men",    "change",  "went",    "light",   "kind",  "off",    "need",     "house",
    "picture", "try",    "us",       "again",  "animal",  "point",   "mother",  "world", "near",   "build",    "self",
    "earth",   "father", "hello",    "model",  "story",   "once",    "upon",    "quick", "brown",  "fox",      "jumps",
    "lazy",    "dog",    "question", "answer", "because", "between", "should",  "never", "always", "while",
};

const char* const kSubwords[] = {
    "th",  "he",  "in",  "er",   "an",  "re",   "on",    "at",   "en",   "nd",   "ti",   "es",  "or",
    "te",  "of",  "ed",  "is",   "it",  "al",   "ar",    "st",   "to",   "nt",   "ng",   "se",  "ha",
    "as",  "ou",  "io",  "le",   "ve",  "co",   "me",    "de",   "hi",   "ri",   "ro",   "ic",  "ne",
    "ea",  "ra",  "ce",  "ing",  "ion", "tion", "ly",    "ment", "ness", "ers",  "ent",  "ant", "ter",
    "est", "ies", "ous", "able", "ive", "ity",  "ation", "ted",  "ting", "ally", "less", "ful",
};

const char* const kCapWords[] = {
    "The", "I",  "It",  "In",    "This", "A",   "He",  "She",   "We",   "They",     "What",   "And",
    "But", "If", "You", "There", "When", "How", "Why", "Hello", "Once", "Question", "Answer",
};

const char* const kPunct = ".,'\"-?!:;()/&*+=%$#@[]_<>{}|~`^\\";
const char* const kSpacedPunct = "(\"'-[{<";  // commonly seen after a space

// Splits a UTF-8 string into its characters (this file only produces valid UTF-8).
std::vector<std::string> utf8_chars(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : 4;
    if (i + len > s.size()) len = s.size() - i;
    out.push_back(s.substr(i, len));
    i += len;
  }
  return out;
}

class PieceList {
 public:
  explicit PieceList(size_t cap) : cap_(cap) { pieces_.reserve(cap); }
  bool full() const { return pieces_.size() >= cap_; }
  const std::vector<std::string>& pieces() const { return pieces_; }

  // Adds p after its prefix chain and its last character. Returns false once the list is full.
  bool add(const std::string& p) {
    if (p.empty() || seen_.count(p)) return !full();
    const auto chars = utf8_chars(p);
    if (chars.size() > 1) {
      if (!add(chars.back())) return false;
      std::string prefix = p.substr(0, p.size() - chars.back().size());
      if (!add(prefix)) return false;
    }
    if (full()) return false;
    seen_.insert(p);
    pieces_.push_back(p);
    return !full();
  }

 private:
  size_t cap_;
  std::vector<std::string> pieces_;
  std::unordered_set<std::string> seen_;
};

// Adds the candidates in priority order until the list is full.
void fill(PieceList& pl) {
  const std::string sp = kSpace;
  auto add = [&](const std::string& p) { return pl.add(p); };
  if (!add(sp)) return;
  for (const char* c = kLetters; *c; ++c)
    if (!add(std::string(1, *c))) return;
  for (const char* c = kLetters; *c; ++c)
    if (!add(sp + *c)) return;
  for (const char* w : kWords)
    if (!add(sp + w)) return;
  for (const char* w : kSubwords)
    if (!add(w)) return;
  for (const char* c = kLetters; *c; ++c)
    if (!add(std::string(1, static_cast<char>(*c - 32)))) return;
  for (const char* c = kLetters; *c; ++c)
    if (!add(sp + static_cast<char>(*c - 32))) return;
  for (char d = '0'; d <= '9'; ++d)
    if (!add(std::string(1, d))) return;
  for (const char* c = kPunct; *c; ++c)
    if (!add(std::string(1, *c))) return;
  for (char d = '0'; d <= '9'; ++d)
    if (!add(sp + d)) return;
  for (const char* c = kSpacedPunct; *c; ++c)
    if (!add(sp + *c)) return;
  for (const char* w : kCapWords)
    if (!add(sp + w)) return;
  for (const char* w : kWords)
    if (!add(w)) return;  // words inside longer words ("other")
  // Exhaustive letter n-grams until the requested size is reached.
  std::string g(2, 'a');
  for (char a = 'a'; a <= 'z'; ++a)
    for (char b = 'a'; b <= 'z'; ++b) {
      g[0] = a;
      g[1] = b;
      if (!add(g)) return;
    }
  for (char a = 'a'; a <= 'z'; ++a)
    for (char b = 'a'; b <= 'z'; ++b) {
      g[0] = a;
      g[1] = b;
      if (!add(sp + g)) return;
    }
  for (char a = 'A'; a <= 'Z'; ++a)
    for (char b = 'a'; b <= 'z'; ++b) {
      g[0] = a;
      g[1] = b;
      if (!add(sp + g)) return;
    }
  std::string t(3, 'a');
  for (char a = 'a'; a <= 'z'; ++a)
    for (char b = 'a'; b <= 'z'; ++b)
      for (char c = 'a'; c <= 'z'; ++c) {
        t[0] = a;
        t[1] = b;
        t[2] = c;
        if (!add(t)) return;
      }
  for (char a = 'a'; a <= 'z'; ++a)
    for (char b = 'a'; b <= 'z'; ++b)
      for (char c = 'a'; c <= 'z'; ++c) {
        t[0] = a;
        t[1] = b;
        t[2] = c;
        if (!add(sp + t)) return;
      }
  std::string q(4, 'a');
  for (char a = 'a'; a <= 'z'; ++a)
    for (char b = 'a'; b <= 'z'; ++b)
      for (char c = 'a'; c <= 'z'; ++c)
        for (char d = 'a'; d <= 'z'; ++d) {
          q[0] = a;
          q[1] = b;
          q[2] = c;
          q[3] = d;
          if (!add(q)) return;
        }
}

}  // namespace

SynthVocab synth_generate_vocab(int64_t n) {
  SynthVocab v;
  if (n < kSynthMinGeneratedVocab || n > kSynthMaxGeneratedVocab) return v;
  v.tokens.reserve(n);
  v.scores.reserve(n);
  v.types.reserve(n);
  auto push = [&](std::string tok, float score, int32_t type) {
    v.tokens.push_back(std::move(tok));
    v.scores.push_back(score);
    v.types.push_back(type);
  };
  push("<unk>", 0.0f, 2);
  push("<s>", 0.0f, 3);
  push("</s>", 0.0f, 3);
  static const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    std::string t = "<0x00>";
    t[3] = hex[b >> 4];
    t[4] = hex[b & 15];
    push(std::move(t), 0.0f, 6);
  }
  PieceList pl(static_cast<size_t>(n - 259));
  fill(pl);
  int64_t k = 0;
  for (const auto& p : pl.pieces()) push(p, -static_cast<float>(k++), 1);
  return v;
}

}  // namespace llmserve
