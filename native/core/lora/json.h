// A small, strict JSON reader for the two JSON texts a PEFT adapter brings: the safetensors header
// and adapter_config.json (RFC 8259: no comments, no trailing commas, no NaN). Hardened like the
// GGUF reader: nesting depth, value count and string length are capped before anything is sized
// from them, duplicate object keys are an error (a header with two entries for one tensor is
// ambiguous), and every failure is a Status naming the byte offset, never an exception or a crash.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../status.h"

namespace llmserve {

struct JsonMember;

struct JsonValue {
  enum class Kind : uint8_t { Null, Bool, Number, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  double number = 0;
  // A number written as a plain non-negative integer (no sign, fraction or exponent) that fits in
  // uint64: its exact value (safetensors offsets and shapes must not go through a double).
  bool is_uint = false;
  uint64_t uint = 0;
  std::string str;
  std::vector<JsonValue> items;     // Array
  std::vector<JsonMember> members;  // Object, in file order, keys unique

  // The member named key of an object, or null (also for non-objects).
  const JsonValue* get(std::string_view key) const;
  // "null", "a boolean", "a number", "a string", "an array", "an object": for messages.
  const char* kind_name() const;
};

// An object member (its own type: std::pair<std::string, JsonValue> would need JsonValue complete
// inside its own definition, which libstdc++ under clang rejects).
struct JsonMember {
  std::string key;
  JsonValue value;
};

struct JsonLimits {
  int max_depth = 32;                       // nested arrays/objects
  uint64_t max_values = uint64_t(1) << 20;  // values in the whole text
  uint64_t max_string_bytes = uint64_t(1) << 20;
};

// Parses text (one JSON value, optional surrounding whitespace). Errors: InvalidArgument
// "<what> is not valid JSON: <reason> at byte N" (or over a limit, naming it).
Status parse_json(std::string_view text, const std::string& what, JsonValue* out,
                  const JsonLimits& limits = JsonLimits());

}  // namespace llmserve
