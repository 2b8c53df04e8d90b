/**
 * Built-in chat templates (Jinja, in the Hugging Face chat-template dialect), used when a GGUF file
 * carries no `tokenizer.chat_template`, and the heuristics that pick one from the vocabulary.
 */
import type { Tokenizer } from "../tokenizer/index.js";

/** The built-in chat templates by name (Jinja source). */
export const BUILTIN_CHAT_TEMPLATES = {
  /** `<|im_start|>role\n...<|im_end|>` (Qwen, Hermes, SmolLM, many fine-tunes); llama.cpp's default. */
  chatml:
    "{%- for message in messages -%}" +
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}" +
    "{%- endfor -%}" +
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}",
  /** Llama 3 / 3.1 / 3.2 instruct headers. */
  llama3:
    "{{- bos_token -}}" +
    "{%- for message in messages -%}" +
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' -}}" +
    "{%- endfor -%}" +
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}",
  /** Llama 2 chat / Mistral v0.1 `[INST]` turns; a system message goes into the first user turn. */
  llama2:
    "{%- if messages[0]['role'] == 'system' -%}" +
    "{%- set system = messages[0]['content'] -%}{%- set loop_messages = messages[1:] -%}" +
    "{%- else -%}{%- set system = '' -%}{%- set loop_messages = messages -%}{%- endif -%}" +
    "{%- for message in loop_messages -%}" +
    "{%- if message['role'] == 'assistant' -%}" +
    "{{- ' ' + message['content'] | trim + ' ' + eos_token -}}" +
    "{%- else -%}" +
    "{%- if loop.first and system -%}" +
    "{{- bos_token + '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + message['content'] | trim + ' [/INST]' -}}" +
    "{%- else -%}" +
    "{{- bos_token + '[INST] ' + message['content'] | trim + ' [/INST]' -}}" +
    "{%- endif -%}" +
    "{%- endif -%}" +
    "{%- endfor -%}",
  /** Zephyr / TinyLlama-chat: `<|user|>\n...</s>`. */
  zephyr:
    "{%- for message in messages -%}" +
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' -}}" +
    "{%- endfor -%}" +
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}",
  /** Phi-3 / Phi-3.5: `<|user|>\n...<|end|>`. */
  phi3:
    "{%- for message in messages -%}" +
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' -}}" +
    "{%- endfor -%}" +
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}",
  /** Gemma: `<start_of_turn>user|model`; system and tool messages are sent as user turns. */
  gemma:
    "{{- bos_token -}}" +
    "{%- for message in messages -%}" +
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}{%- set role = 'user' -%}{%- endif -%}" +
    "{{- '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' -}}" +
    "{%- endfor -%}" +
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}",
} as const;

/** A built-in chat template name. */
export type BuiltinChatTemplate = keyof typeof BUILTIN_CHAT_TEMPLATES;

/** The built-in chat template names: chatml, llama3, llama2, zephyr, phi3, gemma. */
export const BUILTIN_CHAT_TEMPLATE_NAMES = Object.keys(BUILTIN_CHAT_TEMPLATES) as BuiltinChatTemplate[];

/** End-of-turn markers of well-known templates: generation stops at them (as a token or as text). */
export const END_OF_TURN_MARKERS = [
  "<|im_end|>",
  "<|eot_id|>",
  "<|eom_id|>",
  "<|end|>",
  "<end_of_turn>",
  "<|endoftext|>",
  "<｜end▁of▁sentence｜>",
  "<|END_OF_TURN_TOKEN|>",
  "<|end_of_text|>",
];

/** The markers each built-in template ends a turn with (besides EOS). */
export const BUILTIN_END_MARKERS: Record<BuiltinChatTemplate, string[]> = {
  chatml: ["<|im_end|>"],
  llama3: ["<|eot_id|>"],
  llama2: [],
  zephyr: [],
  phi3: ["<|end|>"],
  gemma: ["<end_of_turn>"],
};

/**
 * Picks the built-in template whose markers are tokens of this vocabulary; ChatML when none match
 * (as llama.cpp does).
 */
export function detectBuiltinTemplate(tokenizer: Tokenizer): BuiltinChatTemplate {
  const has = (t: string) => tokenizer.tokenId(t) !== undefined;
  if (has("<|im_start|>")) return "chatml";
  if (has("<|start_header_id|>")) return "llama3";
  if (has("<start_of_turn>")) return "gemma";
  if (has("<|user|>") && has("<|end|>")) return "phi3";
  if (has("<|user|>")) return "zephyr";
  if (has("[INST]")) return "llama2";
  return "chatml";
}

export function isBuiltinChatTemplate(name: string): name is BuiltinChatTemplate {
  return Object.hasOwn(BUILTIN_CHAT_TEMPLATES, name);
}
