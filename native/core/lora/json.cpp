// Recursive descent over the text with an explicit depth cap (so the C++ stack is bounded), a value
// budget (so the parsed tree is bounded by the caps, not by what a small text can ask for) and
// per-object duplicate-key checks.
#include "json.h"

#include <charconv>
#include <cmath>
#include <unordered_set>

namespace llmserve {

const JsonValue* JsonValue::get(std::string_view key) const {
  if (kind != Kind::Object) return nullptr;
  for (const auto& [k, v] : members)
    if (k == key) return &v;
  return nullptr;
}

const char* JsonValue::kind_name() const {
  switch (kind) {
    case Kind::Null: return "null";
    case Kind::Bool: return "a boolean";
    case Kind::Number: return "a number";
    case Kind::String: return "a string";
    case Kind::Array: return "an array";
    default: return "an object";
  }
}

namespace {

class Parser {
 public:
  Parser(std::string_view t, const std::string& what, const JsonLimits& lim) : t_(t), what_(what), lim_(lim) {}

  Status document(JsonValue* out) {
    skip_ws();
    LLMS_RETURN_IF_ERROR(value(out, 0));
    skip_ws();
    if (pos_ != t_.size()) return fail("unexpected text after the value");
    return Status::ok();
  }

 private:
  Status fail(const std::string& why) const {
    return make_error(Code::InvalidArgument,
                      what_ + " is not valid JSON: " + why + " at byte " + std::to_string(pos_) + ".");
  }
  Status over(const std::string& what, uint64_t max) const {
    return make_error(Code::InvalidArgument,
                      what_ + ": " + what + " is over llmserve's limit of " + std::to_string(max) + " (at byte " +
                          std::to_string(pos_) +
                          "); no real adapter comes near it, so the file is corrupt or crafted.");
  }
  void skip_ws() {
    while (pos_ < t_.size() && (t_[pos_] == ' ' || t_[pos_] == '\t' || t_[pos_] == '\n' || t_[pos_] == '\r')) ++pos_;
  }
  bool eat(char c) {
    if (pos_ < t_.size() && t_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool literal(std::string_view w) {
    if (t_.substr(pos_, w.size()) != w) return false;
    pos_ += w.size();
    return true;
  }

  Status value(JsonValue* v, int depth) {
    if (++values_ > lim_.max_values) return over("the number of values", lim_.max_values);
    if (pos_ >= t_.size()) return fail("the text ends where a value should start");
    const char c = t_[pos_];
    if (c == '{' || c == '[') {
      if (depth >= lim_.max_depth) return over("the nesting depth", static_cast<uint64_t>(lim_.max_depth));
      return c == '{' ? object(v, depth + 1) : array(v, depth + 1);
    }
    if (c == '"') {
      v->kind = JsonValue::Kind::String;
      return string(&v->str);
    }
    if (literal("true") || literal("false")) {
      v->kind = JsonValue::Kind::Bool;
      v->boolean = c == 't';
      return Status::ok();
    }
    if (literal("null")) {
      v->kind = JsonValue::Kind::Null;
      return Status::ok();
    }
    if (c == '-' || (c >= '0' && c <= '9')) return number(v);
    return fail(std::string("unexpected character '") + (c >= 0x20 && c < 0x7f ? std::string(1, c) : "?") + "'");
  }

  Status object(JsonValue* v, int depth) {
    v->kind = JsonValue::Kind::Object;
    ++pos_;  // '{'
    std::unordered_set<std::string> seen;
    skip_ws();
    if (eat('}')) return Status::ok();
    for (;;) {
      skip_ws();
      if (pos_ >= t_.size() || t_[pos_] != '"') return fail("expected a string key");
      std::string key;
      LLMS_RETURN_IF_ERROR(string(&key));
      if (!seen.insert(key).second) return fail("duplicate key \"" + key + "\"");
      skip_ws();
      if (!eat(':')) return fail("expected ':' after a key");
      skip_ws();
      v->members.push_back(JsonMember{std::move(key), JsonValue()});
      LLMS_RETURN_IF_ERROR(value(&v->members.back().value, depth));
      skip_ws();
      if (eat('}')) return Status::ok();
      if (!eat(',')) return fail("expected ',' or '}' in an object");
    }
  }

  Status array(JsonValue* v, int depth) {
    v->kind = JsonValue::Kind::Array;
    ++pos_;  // '['
    skip_ws();
    if (eat(']')) return Status::ok();
    for (;;) {
      skip_ws();
      v->items.emplace_back();
      LLMS_RETURN_IF_ERROR(value(&v->items.back(), depth));
      skip_ws();
      if (eat(']')) return Status::ok();
      if (!eat(',')) return fail("expected ',' or ']' in an array");
    }
  }

  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  bool hex4(uint32_t* u) {
    if (t_.size() - pos_ < 4) return false;
    uint32_t x = 0;
    for (int i = 0; i < 4; ++i) {
      const int h = hex(t_[pos_ + static_cast<size_t>(i)]);
      if (h < 0) return false;
      x = x * 16 + static_cast<uint32_t>(h);
    }
    pos_ += 4;
    *u = x;
    return true;
  }
  static void utf8(uint32_t cp, std::string* s) {
    if (cp < 0x80) {
      s->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      s->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      s->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      s->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  Status string(std::string* s) {
    ++pos_;  // '"'
    for (;;) {
      if (s->size() > lim_.max_string_bytes) return over("the length of a string", lim_.max_string_bytes);
      if (pos_ >= t_.size()) return fail("unterminated string");
      const char c = t_[pos_++];
      if (c == '"') return Status::ok();
      if (static_cast<unsigned char>(c) < 0x20) return fail("control character in a string");
      if (c != '\\') {
        s->push_back(c);
        continue;
      }
      if (pos_ >= t_.size()) return fail("unterminated escape");
      const char e = t_[pos_++];
      switch (e) {
        case '"': s->push_back('"'); break;
        case '\\': s->push_back('\\'); break;
        case '/': s->push_back('/'); break;
        case 'b': s->push_back('\b'); break;
        case 'f': s->push_back('\f'); break;
        case 'n': s->push_back('\n'); break;
        case 'r': s->push_back('\r'); break;
        case 't': s->push_back('\t'); break;
        case 'u': {
          uint32_t cp = 0;
          if (!hex4(&cp)) return fail("bad \\u escape");
          if (cp >= 0xD800 && cp < 0xDC00) {  // a high surrogate must be followed by a low one
            uint32_t lo = 0;
            if (!literal("\\u") || !hex4(&lo) || lo < 0xDC00 || lo >= 0xE000) return fail("unpaired surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            return fail("unpaired surrogate");
          }
          utf8(cp, s);
          break;
        }
        default: return fail("bad escape");
      }
    }
  }

  Status number(JsonValue* v) {
    const size_t start = pos_;
    auto digits = [&] {
      const size_t b = pos_;
      while (pos_ < t_.size() && t_[pos_] >= '0' && t_[pos_] <= '9') ++pos_;
      return pos_ - b;
    };
    const bool neg = eat('-');
    const size_t int_start = pos_;
    const size_t nint = digits();
    if (nint == 0) return fail("bad number");
    if (nint > 1 && t_[int_start] == '0') return fail("leading zero in a number");
    bool plain = !neg;
    if (eat('.')) {
      plain = false;
      if (digits() == 0) return fail("bad number");
    }
    if (pos_ < t_.size() && (t_[pos_] == 'e' || t_[pos_] == 'E')) {
      ++pos_;
      plain = false;
      if (!eat('+')) eat('-');
      if (digits() == 0) return fail("bad number");
    }
    const char* b = t_.data() + start;
    const char* e = t_.data() + pos_;
    v->kind = JsonValue::Kind::Number;
    double d = 0;
    auto r = std::from_chars(b, e, d);
    // Out-of-range magnitudes (1e999) are not finite numbers: refuse rather than become inf.
    if (r.ec != std::errc() || r.ptr != e || !std::isfinite(d)) return fail("number out of range");
    v->number = d;
    if (plain) {
      uint64_t u = 0;
      auto ru = std::from_chars(t_.data() + int_start, e, u);
      v->is_uint = ru.ec == std::errc() && ru.ptr == e;
      v->uint = v->is_uint ? u : 0;
    }
    return Status::ok();
  }

  std::string_view t_;
  const std::string& what_;
  const JsonLimits& lim_;
  size_t pos_ = 0;
  uint64_t values_ = 0;
};

}  // namespace

Status parse_json(std::string_view text, const std::string& what, JsonValue* out, const JsonLimits& limits) {
  *out = JsonValue();
  Parser p(text, what, limits);
  return p.document(out);
}

}  // namespace llmserve
