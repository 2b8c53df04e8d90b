// Status: how core code reports failure. Core never aborts or exits on bad input.
#pragma once
#include <string>
#include <utility>

namespace llmserve {

// The one list of codes: (enumerator, JS error.code). The addon exports it (errorCodes(), OK left
// out) and test/native/truth.test.ts asserts it equals lib/errors.ts NATIVE_ERROR_CODES, in this
// order, and that every code is produced somewhere in native/ (no dead codes).
#define LLMS_STATUS_CODES(X)                  \
  X(Ok, "OK")                                 \
  X(FileNotFound, "ERR_FILE_NOT_FOUND")       \
  X(Io, "ERR_IO")                             \
  X(NotGguf, "ERR_NOT_GGUF")                  \
  X(GgufTruncated, "ERR_GGUF_TRUNCATED")      \
  X(GgufCorrupt, "ERR_GGUF_CORRUPT")          \
  X(GgufLimit, "ERR_GGUF_LIMIT")              \
  X(UnsupportedVersion, "ERR_GGUF_VERSION")   \
  X(UnsupportedType, "ERR_UNSUPPORTED_TYPE")  \
  X(UnsupportedArch, "ERR_UNSUPPORTED_ARCH")  \
  X(MissingTensor, "ERR_MISSING_TENSOR")      \
  X(BadShape, "ERR_BAD_SHAPE")                \
  X(InvalidArgument, "ERR_INVALID_ARGUMENT")  \
  X(ContextOverflow, "ERR_CONTEXT_OVERFLOW")  \
  X(OutOfMemory, "ERR_OUT_OF_MEMORY")         \
  X(Cancelled, "ERR_CANCELLED")               \
  X(QueueFull, "ERR_QUEUE_FULL")              \
  X(KvExhausted, "ERR_KV_EXHAUSTED")          \
  X(Disposed, "ERR_DISPOSED")                 \
  X(AdapterNotFound, "ERR_ADAPTER_NOT_FOUND") \
  X(BadImatrix, "ERR_BAD_IMATRIX")            \
  X(Grammar, "ERR_GRAMMAR")                   \
  X(Internal, "ERR_INTERNAL")

// Disposed: a call on a model whose engine has been shut down (the same code the TypeScript layer
// gives when it notices first); work already in flight at shutdown ends as Cancelled / "abort".
// AdapterNotFound: a request or call names a LoRA adapter that is not loaded (never was, or was
// unloaded); the message lists the loaded ones where the layer knows their names.
// BadImatrix: an importance-matrix file (llama.cpp's imatrix .dat or GGUF) that cannot be read or
// does not fit the model being quantized; the message names the entry and what is wrong.
// Grammar: a grammar (GBNF, or one compiled from a JSON schema) that does not parse, is left-recursive
// or too large, or a constrained generation that reached a state no token can continue.
// GgufLimit: a value in a model file is larger than llmserve accepts (a string, an array, a count,
// nesting, the metadata memory budget); the message names the key and the limit.
enum class Code {
#define LLMS_CODE_ENUM(e, s) e,
  LLMS_STATUS_CODES(LLMS_CODE_ENUM)
#undef LLMS_CODE_ENUM
};

// The JS-facing code string (error.code) for a Code.
inline const char* code_name(Code c) {
  switch (c) {
#define LLMS_CODE_NAME(e, s) \
  case Code::e: return s;
    LLMS_STATUS_CODES(LLMS_CODE_NAME)
#undef LLMS_CODE_NAME
  }
  return "ERR_INTERNAL";
}

struct Status {
  Code code = Code::Ok;
  std::string message;

  static Status ok() { return {}; }
  bool is_ok() const { return code == Code::Ok; }
  explicit operator bool() const { return is_ok(); }
};

inline Status make_error(Code c, std::string msg) { return Status{c, std::move(msg)}; }

#define LLMS_RETURN_IF_ERROR(expr)   \
  do {                               \
    ::llmserve::Status _st = (expr); \
    if (!_st.is_ok()) return _st;    \
  } while (0)

}  // namespace llmserve
