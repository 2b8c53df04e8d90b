/**
 * The whole pre-tokenizer table against llama.cpp: every `tokenizer.ggml.pre` name this port
 * accepts, its flags, and how its regexes split one probe text that touches every branch of them
 * (contractions, case runs, digit groups, CJK/Hangul/kana/bopomofo, the poro stop characters,
 * chameleon's sentinel and image tokens, whitespace runs with \r\n and tabs, a combining mark,
 * U+3000).
 *
 * Where the expectations come from: llama.cpp's src/llama-vocab.cpp and src/unicode.cpp in the
 * llama.cpp tree that node-llama-cpp 3.21.1 bundles (llama/gitRelease.bundle). The flags are its
 * `tokenizer_pre == ...` chain (clean_spaces = false -> noClean, ignore_merges, add_bos,
 * special_bos_id = LLAMA_TOKEN_NULL -> noDefaultBos); the splits are what its
 * unicode_regex_split(probe, regex_exprs, false) returns for each pre-type's regex_exprs, compiled
 * on its own with unicode-data.cpp. Words are joined with "│". llama.cpp also emits the empty
 * strings of zero-width matches (superbpe's lookahead); they tokenize to nothing, so they are left
 * out here as this port does.
 */
import { describe, expect, it } from "vitest";
import { buildSplitter, findPreTokenizer, SUPPORTED_PRE_TOKENIZERS } from "../../../lib/tokenizer/pretokenize.js";

const PROBE =
  "Hello, y'all! HOW're you 'S I'M ok? 😁 我想在apple工作1314151天～ 가나다 ひらがな カタカナ ㄅㄆ\n\n  \t x  \r\n" +
  "3333333 12,345.67 <sentinel:12> IMGIMGABZ    f(x)…。，、।۔، CamelCaseWORDSxy é\u0301 \u3000 ÀΩ Ж !!! tail   ";

/** name -> "type [ignoreMerges] [noClean] [addBos] [noDefaultBos]", from llama.cpp's tokenizer_pre chain */
const META: Record<string, string> = {
  default: "default",
  llama3: "llama3 ignoreMerges addBos",
  "llama-v3": "llama3 ignoreMerges addBos",
  "llama-bpe": "llama3 ignoreMerges addBos",
  falcon3: "llama3 ignoreMerges addBos",
  "falcon-h1": "llama3 ignoreMerges addBos",
  pixtral: "llama3 ignoreMerges addBos",
  "midm-2.0": "llama3 ignoreMerges addBos",
  lfm2: "llama3 ignoreMerges addBos",
  "jina-v5-nano": "llama3 ignoreMerges addBos",
  dbrx: "dbrx",
  "smaug-bpe": "smaug",
  "jais-2": "jais-2",
  "deepseek-llm": "deepseek-llm noClean",
  "deepseek-coder": "deepseek-coder noClean",
  "deepseek-v3": "deepseek-v3 noClean",
  "hunyuan-dense": "hunyuan-dense noClean",
  "joyai-llm": "joyai-llm noClean",
  youtu: "youtu ignoreMerges noClean",
  falcon: "falcon",
  starcoder: "starcoder",
  refact: "refact",
  "command-r": "command-r noClean",
  smollm: "smollm noClean",
  codeshell: "codeshell",
  exaone: "exaone",
  "minerva-7b": "minerva",
  mellum2: "mellum2",
  "gpt-2": "gpt-2",
  "phi-2": "gpt-2",
  "jina-es": "gpt-2",
  "jina-de": "gpt-2",
  gigachat: "gpt-2",
  "jina-v2-es": "gpt-2",
  "jina-v2-de": "gpt-2",
  "a.x-4.0": "gpt-2",
  mellum: "gpt-2",
  "modern-bert": "gpt-2",
  "jina-v1-en": "gpt-2",
  "jina-v2-code": "gpt-2",
  "roberta-bpe": "gpt-2",
  mpt: "gpt-2",
  olmo: "gpt-2",
  jais: "gpt-2",
  exaone4: "gpt-2",
  trillion: "trillion noClean",
  "granite-docling": "granite-docling noClean",
  qwen2: "qwen2 noClean",
  "deepseek-r1-qwen": "qwen2 noClean",
  kormo: "qwen2 noClean",
  f2llmv2: "qwen2 noClean",
  hunyuan: "qwen2 noClean",
  "solar-open": "qwen2 noClean",
  stablelm2: "stablelm2",
  megrez: "qwen2",
  qwen35: "qwen35 noClean",
  "poro-chat": "poro noClean",
  bloom: "bloom",
  "gpt3-finnish": "gpt3-finnish",
  glm4: "chatglm4 noDefaultBos",
  "chatglm-bpe": "chatglm4 noDefaultBos",
  viking: "viking noClean",
  tekken: "tekken ignoreMerges noClean addBos",
  chameleon: "chameleon noClean addBos",
  "gpt-4o": "gpt-4o noClean",
  llama4: "gpt-4o noClean",
  kanana2: "gpt-4o noClean",
  talkie: "gpt-4o noClean",
  "minimax-m2": "gpt-4o noClean",
  "granite-embed-multi-97m": "granite-embed-multi ignoreMerges noClean",
  superbpe: "superbpe noClean",
  bailingmoe: "bailingmoe noClean",
  bailingmoe2: "bailingmoe noClean",
  "llada-moe": "bailingmoe noClean",
  "seed-coder": "seed-coder noClean",
  "grok-2": "grok-2 noClean",
  laguna: "laguna noClean",
  "exaone-moe": "exaone-moe",
  minicpm5: "minicpm5 ignoreMerges",
};

/** [names sharing one regex list, llama.cpp's split of PROBE joined with "│"] */
const SPLITS: Array<[string[], string]> = [
  [
    ["default"],
    "Hello│,│ y│'│all│!│ HOW│'│re│ you│ │'│S│ I│'│M│ ok│?│ 😁│ 我想在apple工作│131│415│1│天│～│ 가나다│ ひらがな│ カタカナ│ ㄅㄆ│\n\n  \t│ x│  \r│\n│333│333│3│ │12│,│345│.│67│ │<│sentinel│:│12│>│ IMGIMGABZ│   │ f│(│x│)…。，、।۔،│ CamelCaseWORDSxy│ é│́│ 　│ ÀΩ│ Ж│ │!!!│ tail│   ",
  ],
  [
    [
      "llama3",
      "llama-v3",
      "llama-bpe",
      "falcon3",
      "falcon-h1",
      "pixtral",
      "midm-2.0",
      "lfm2",
      "jina-v5-nano",
      "dbrx",
      "smaug-bpe",
      "glm4",
      "chatglm-bpe",
    ],
    "Hello│,│ y│'all│!│ HOW│'re│ you│ '│S│ I│'M│ ok│?│ 😁│ 我想在apple工作│131│415│1│天│～│ 가나다│ ひらがな│ カタカナ│ ㄅㄆ│\n\n│  \t│ x│  \r\n│333│333│3│ │12│,│345│.│67│ <│sentinel│:│12│>│ IMGIMGABZ│   │ f│(x│)…。，、।۔،│ CamelCaseWORDSxy│ é│́│ 　│ ÀΩ│ Ж│ !!!│ tail│   ",
  ],
  [
    ["jais-2"],
    "Hello│,│ y│'all│!│ HOW│'re│ you│ '│S│ I│'M│ ok│?│ 😁│ 我想在apple工作│131│415│1│天│～│ 가나다│ ひらがな│ カタカナ│ ㄅㄆ│\n\n│  │\t│ x│  \r\n│333│333│3│ │12│,│345│.│67│ <│sentinel│:│12│>│ IMGIMGABZ│  │ │ f│(x│)…。，、।۔،│ CamelCaseWORDSxy│ é│́│ 　│ ÀΩ│ Ж│ !!!│ tail│  │ ",
  ],
  [
    ["deepseek-llm"],
    "Hello│,│ y│'│all│!│ HOW│'│re│ you│ '│S│ I│'│M│ ok│?│ 😁 │我想在│apple│工作│1314151│天│～│ │가나다│ │ひらがな│ │カタカナ│ │ㄅㄆ│\n│\n│  \t│ x│  │\r│\n│3333333│ │12│,│345│.│67│ <│sentinel│:│12│>│ IMGIMGABZ│   │ f│(│x│)│…│。│，│、│।│۔،│ CamelCaseWORDSxy│ é│́│ 　│ ÀΩ│ Ж│ !!!│ tail│   ",
  ],
  [
    ["deepseek-coder"],
    "Hello│,│ y│'│all│!│ HOW│'│re│ you│ '│S│ I│'│M│ ok│?│ 😁│ │我想在│apple│工作│1│3│1│4│1│5│1│天│～│ │가나다│ │ひらがな│ │カタカナ│ │ㄅㄆ│\n│\n│  \t│ x│  │\r│\n│3│3│3│3│3│3│3│ │1│2│,│3│4│5│.│6│7│ <│sentinel│:│1│2│>│ IMGIMGABZ│   │ f│(│x│)│…。│，│、।│۔،│ CamelCaseWORDSxy│ é│́ 　│ ÀΩ│ Ж│ !!!│ tail│   ",
  ],
  [
    ["deepseek-v3", "hunyuan-dense", "joyai-llm"],
    "Hello│,│ y│'all│!│ HOW│'re│ you│ '│S│ I│'M│ ok│?│ 😁│ │我想在│apple│工作│131│415│1│天│～│ 가나다│ │ひらがな│ │カタカナ│ ㄅㄆ│\n\n│  \t│ x│  \r\n│333│333│3│ │12│,│345│.│67│ <│sentinel│:│12│>│ IMGIMGABZ│   │ f│(x│)…。，、।۔،│ CamelCaseWORDSxy│ é́│ 　│ ÀΩ│ Ж│ !!!│ tail│   ",
  ],
  [
    ["youtu"],
    "Hello│,│ y│'all│!│ HOW're│ you│ '│S│ I'M│ ok│?│ 😁│ │我想在│apple│工作│1│3│1│4│1│5│1│天│～│ │가나다│ │ひらがな│ │カタカナ│ │ㄅㄆ│\n\n│  \t│ x│  \r\n│3│3│3│3│3│3│3│ │1│2│,│3│4│5│.│6│7│ <│sentinel│:│1│2│>│ IMGIMGABZ│   │ f│(x│)│…。，、│।۔،│ CamelCaseWORDSxy│ é́│ 　│ ÀΩ│ Ж│ !!!│ tail│   ",
  ],
  [
    ["falcon"],
    "Hello│,│ y│'│all│!│ HOW│'│re│ you│ │'│S│ I│'│M│ ok│?│ 😁│ 我想在apple工作│131│415│1│天│～│ 가나다│ ひらがな│ カタカナ│ ㄅㄆ│\n\n  \t│ x│  \r│\n│333│333│3│ 12│,│345│.│67│ │<│sentinel│:│12│>│ IMGIMGABZ│   │ f│(│x│)…。，、।۔،│ CamelCaseWORDSxy│ é│́│ 　│ ÀΩ│ Ж│ │!!!│ tail│   ",
  ],
  [
    ["starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"],
    "Hello│,│ y│'│all│!│ HOW│'re│ you│ '│S│ I│'│M│ ok│?│ 😁│ 我想在apple工作│1│3│1│4│1│5│1│天│～│ 가나다│ ひらがな│ カタカナ│ ㄅㄆ│\n\n  \t│ x│  \r\n│3│3│3│3│3│3│3│ │1│2│,│3│4│5│.│6│7│ <│sentinel│:│1│2│>│ IMGIMGABZ│   │ f│(│x│)…。，、।۔،│ CamelCaseWORDSxy│ é│́│ 　│ ÀΩ│ Ж│ !!!│ tail│   ",
  ],
  [
    [
      "gpt-2",
      "phi-2",
      "jina-es",
      "jina-de",
      "gigachat",
      "jina-v2-es",
      "jina-v2-de",
      "a.x-4.0",
      "mellum",
      "modern-bert",
      "jina-v1-en",
      "jina-v2-code",
      "roberta-bpe",
      "mpt",
      "olmo",
      "jais",
      "exaone4",
      "trillion",
      "granite-docling",
    ],
    "Hello│,│ y│'│all│!│ HOW│'re│ you│ '│S│ I│'│M│ ok│?│ 😁│ 我想在apple工作│1314151│天│～│ 가나다│ ひらがな│ カタカナ│ ㄅㄆ│\n\n  \t│ x│  \r│\n│3333333│ 12│,│345│.│67│ <│sentinel│:│12│>│ IMGIMGABZ│   │ f│(│x│)…。，、।۔،│ CamelCaseWORDSxy│ é│́│ 　│ ÀΩ│ Ж│ !!!│ tail│   ",
  ],
  [
    ["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open", "stablelm2", "megrez", "grok-2"],
    "Hello│,│ y│'all│!│ HOW│'re│ you│ '│S│ I│'M│ ok│?│ 😁│ 我想在apple工作│1│3│1│4│1│5│1│天│～│ 가나다│ ひらがな│ カタカナ│ ㄅㄆ│\n\n│  \t│ x│  \r\n│3│3│3│3│3│3│3│ │1│2│,│3│4│5│.│6│7│ <│sentinel│:│1│2│>│ IMGIMGABZ│   │ f│(x│)…。，、।۔،│ CamelCaseWORDSxy│ é│́│ 　│ ÀΩ│ Ж│ !!!│ tail│   ",
  ],
  [
    ["qwen35"],
    "Hello│,│ y│'all│!│ HOW│'re│ you│ '│S│ I│'M│ ok│?│ 😁│ 我想在apple工作│1│3│1│4│1│5│1│天│～│ 가나다│ ひらがな│ カタカナ│ ㄅㄆ│\n\n│  \t│ x│  \r\n│3│3│3│3│3│3│3│ │1│2│,│3│4│5│.│6│7│ <│sentinel│:│1│2│>│ IMGIMGABZ│   │ f│(x│)…。，、।۔،│ CamelCaseWORDSxy│ é́│ 　│ ÀΩ│ Ж│ !!!│ tail│   ",
  ],
  [
    ["poro-chat", "bloom", "gpt3-finnish"],
    "Hello│,│ y'all│!│ HOW're│ you│ 'S│ I'M│ ok│?│ 😁│ 我想在apple工作1314151天～│ 가나다│ ひらがな│ カタカナ│ ㄅㄆ│\n\n  \t│ x│  \r\n│3333333│ 12│,│345│.│67│ <sentinel:12>│ IMGIMGABZ│   │ f│(│x│)…。，、।۔،│ CamelCaseWORDSxy│ é́│ 　│ ÀΩ│ Ж│ !!!│ tail│   ",
  ],
  [
    ["viking"],
    "Hello│,│ y'all│!│ HOW're│ you│ 'S│ I'M│ ok│?│ 😁│ 我想在apple工作│1│3│1│4│1│5│1│天～│ 가나다│ ひらがな│ カタカナ│ ㄅㄆ│\n\n  \t│ x│  \r\n│3│3│3│3│3│3│3│ │1│2│,│3│4│5│.│6│7│ <sentinel:│1│2│>│ IMGIMGABZ│   │ f│(│x│)…。，、।۔،│ CamelCaseWORDSxy│ é́│ 　│ ÀΩ│ Ж│ !!!│ tail│   ",
  ],
  [
    ["tekken"],
    "Hello│,│ y│'all│!│ HOW│'re│ you│ '│S│ I│'M│ ok│?│ 😁│ 我想在apple工作│1│3│1│4│1│5│1│天│～│ 가나다│ ひらがな│ カタカナ│ ㄅㄆ│\n\n│  \t│ x│  \r\n│3│3│3│3│3│3│3│ │1│2│,│3│4│5│.│6│7│ <│sentinel│:│1│2│>│ IMGIMGABZ│   │ f│(x│)…。，、।۔،│ Camel│Case│WORDSxy│ é│́│ 　│ ÀΩ│ Ж│ !!!│ tail│   ",
  ],
  [
    ["chameleon"],
    "Hello│,│ y│'│all│!│ HOW│'│re│ you│ │'│S│ I│'│M│ ok│?│ 😁│ 我想在apple工作│1│3│1│4│1│5│1│天│～│ 가나다│ ひらがな│ カタカナ│ ㄅㄆ│\n│\n│  │\t│ x│  │\r│\n│3│3│3│3│3│3│3│ │1│2│,│3│4│5│.│6│7│ │<│sentinel│:│1│2│>│ │IMGIMGABZ│    │f│(│x│)│…│。│，│、│।│۔│،│ CamelCaseWORDSxy│ é│́│ 　│ ÀΩ│ Ж│ │!│!│!│ tail│  │ ",
  ],
  [
    ["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"],
    "Hello│,│ y│'all│!│ HOW're│ you│ '│S│ I'M│ ok│?│ 😁│ 我想在apple工作│131│415│1│天│～│ 가나다│ ひらがな│ カタカナ│ ㄅㄆ│\n\n│  \t│ x│  \r\n│333│333│3│ │12│,│345│.│67│ <│sentinel│:│12│>│ IMGIMGABZ│   │ f│(x│)…。，、।۔،│ Camel│Case│WORDSxy│ é│́│ 　│ ÀΩ│ Ж│ !!!│ tail│   ",
  ],
  [
    ["granite-embed-multi-97m"],
    "Hello│,│ y│'all│!│ HOW're│ you│ '│S│ I'M│ ok│?│ 😁│ 我想在apple工作│131│415│1│天│～│ 가나다│ ひらがな│ カタカナ│ ㄅㄆ│\n\n│  \t│ x│  \r\n│333│333│3│ │12│,│345│.│67│ <│sentinel│:│12│>│ IMGIMGABZ│   │ f│(x│)…。，、।۔،│ Camel│Case│WORDSxy│ é́│ 　│ ÀΩ│ Ж│ !!!│ tail│   ",
  ],
  [
    ["superbpe"],
    "Hello, y'all! HOW're you 'S I'M ok? 😁 我想在apple工作│1│314│151│天～ 가나다 ひらがな カタカナ ㄅㄆ\n\n  \t x  \r\n│3│333│333│ │12│,│345│.│67│ <sentinel:│12│> IMGIMGABZ    f(x)…。，、।۔، CamelCaseWORDSxy é́ 　 ÀΩ Ж !!! tail   ",
  ],
  [
    ["bailingmoe", "bailingmoe2", "llada-moe"],
    "Hello│,│ y│'all│!│ HOW│'re│ you│ '│S│ I│'M│ ok│?│ 😁│ 我想在apple工作│1│3│1│4│1│5│1│天│～│ 가나다│ ひらがな│ カタカナ│ ㄅㄆ│\n\n│  \t│ x│  \r\n│3│3│3│3│3│3│3│ │1│2│,│3│4│5│.│6│7│ <│sentinel│:│1│2│>│ IMGIMGABZ│   │ f│(x│)…。，、।۔،│ CamelCaseWORDSxy│ é│́│ 　│ ÀΩ│ Ж│ !!!│ tail│   ",
  ],
  [
    ["seed-coder"],
    "Hello│,│ y│'all│!│ HOW│'re│ you│ '│S│ I│'M│ ok│?│ 😁│ 我想在apple工作│1│3│1│4│1│5│1│天│～│ 가나다│ ひらがな│ カタカナ│ ㄅㄆ│\n\n│  \t│ x│  \r\n│3│3│3│3│3│3│3│ │1│2│,│3│4│5│.│6│7│ <│sentinel│:│1│2│>│ IMGIMGABZ│   │ f│(x│)…。，、।۔،│ CamelCaseWORDSxy│ é│́│ 　│ ÀΩ│ Ж│ !!!│ tail│   ",
  ],
  [
    ["laguna"],
    "Hello│,│ y│'all│!│ HOW│'re│ you│ '│S│ I│'M│ ok│?│ 😁│ 我想在apple工作│1│3│1│4│1│5│1│天│～│ 가나다│ ひらがな│ カタカナ│ ㄅㄆ│\n\n│  \t│ x│  \r│\n│3│3│3│3│3│3│3│ │1│2│,│3│4│5│.│6│7│ <│sentinel│:│1│2│>│ IMGIMGABZ│   │ f│(x│)…。，、।۔،│ CamelCaseWORDSxy│ é│́│ 　│ ÀΩ│ Ж│ !!!│ tail│   ",
  ],
  [
    ["exaone-moe"],
    "Hello│,│ y│'all│!│ HOW│'re│ you│ '│S I│'M│ ok│?│ 😁│ 我想在apple工作│1│3│1│4│1│5│1│天│～│ 가나다 ひらがな カタカナ ㄅㄆ│\n\n│  \t│ x│  \r\n│3│3│3│3│3│3│3│ │1│2│,│3│4│5│.│6│7│ <│sentinel│:│1│2│>│ IMGIMGABZ│   │ f│(x│)…。，、।۔،│ CamelCaseWORDSxy é́│ 　│ ÀΩ Ж│ !!!│ tail│   ",
  ],
  [
    ["minicpm5"],
    "Hello│,│ y│'all│!│ HOW│'re│ you│ '│S│ I│'M│ ok│?│ 😁│ 我想在apple工作│131│415│1│天│～│ 가나다│ ひらがな│ カタカナ│ ㄅㄆ│\n\n│  \t│ x│  \r\n│333│333│3│ │12│,│345│.│67│ <│sentinel│:│12│>│ IMGIMGABZ│   │ f│(x│)…。，、।۔،│ CamelCaseWORDSxy│ é│́│ 　│ ÀΩ│ Ж│ !!!│ tail│   ",
  ],
];

function describeMeta(name: string): string {
  const p = findPreTokenizer(name);
  if ("error" in p) return p.error;
  const flags = [
    p.ignoreMerges === true && "ignoreMerges",
    p.cleanSpaces === false && "noClean",
    p.addBos === true && "addBos",
    p.noDefaultBos === true && "noDefaultBos",
  ];
  return [p.type, ...flags.filter((f) => f !== false)].join(" ");
}

describe("every pre-tokenizer in the table matches llama.cpp", () => {
  it("accepts exactly llama.cpp's supported names", () => {
    expect([...SUPPORTED_PRE_TOKENIZERS].sort()).toEqual(Object.keys(META).sort());
    expect(SPLITS.flatMap(([names]) => names).sort()).toEqual(Object.keys(META).sort());
  });

  // in llama.cpp's chain, but split by custom code (or not byte-level BPE): a specific error, not "unknown"
  it.each([
    "kimi-k2",
    "afmoe",
    "tiny_aya",
    "cohere2moe",
    "gemma4",
    "granite-embed-multi-311m",
    "sarvam-moe",
    "whitespace",
  ])("%s: named as not implemented", (name) => {
    expect(describeMeta(name)).toBe(
      `the BPE pre-tokenizer '${name}' (tokenizer.ggml.pre) needs custom splitting code that llmserve does not implement yet`,
    );
  });

  it.each(Object.entries(META))("%s: type and flags", (name, meta) => {
    expect(describeMeta(name)).toBe(meta);
  });

  for (const [names, joined] of SPLITS) {
    it.each(names)(`%s splits like llama.cpp (${names[0]} family)`, (name) => {
      const p = findPreTokenizer(name);
      if ("error" in p) throw new Error(p.error);
      expect(buildSplitter(p.regexes).split(PROBE).join("│")).toBe(joined);
    });
  }
});
