// Status: how core code reports failure. Core never aborts or exits on bad input.
#pragma once
#include <string>
#include <utility>

namespace llmserve {

enum class Code {
  Ok = 0,
  FileNotFound,       // ERR_FILE_NOT_FOUND
  Io,                 // ERR_IO
  NotGguf,            // ERR_NOT_GGUF
  GgufTruncated,      // ERR_GGUF_TRUNCATED
  GgufCorrupt,        // ERR_GGUF_CORRUPT
  UnsupportedVersion, // ERR_GGUF_VERSION
  UnsupportedType,    // ERR_UNSUPPORTED_TYPE
  UnsupportedArch,    // ERR_UNSUPPORTED_ARCH
  MissingTensor,      // ERR_MISSING_TENSOR
  BadShape,           // ERR_BAD_SHAPE
  InvalidArgument,    // ERR_INVALID_ARGUMENT
  ContextOverflow,    // ERR_CONTEXT_OVERFLOW
  OutOfMemory,        // ERR_OUT_OF_MEMORY
  Cancelled,          // ERR_CANCELLED
  QueueFull,          // ERR_QUEUE_FULL
  KvExhausted,        // ERR_KV_EXHAUSTED
  Internal,           // ERR_INTERNAL
};

// The JS-facing code string (error.code) for a Code.
inline const char* code_name(Code c) {
  switch (c) {
    case Code::Ok: return "OK";
    case Code::FileNotFound: return "ERR_FILE_NOT_FOUND";
    case Code::Io: return "ERR_IO";
    case Code::NotGguf: return "ERR_NOT_GGUF";
    case Code::GgufTruncated: return "ERR_GGUF_TRUNCATED";
    case Code::GgufCorrupt: return "ERR_GGUF_CORRUPT";
    case Code::UnsupportedVersion: return "ERR_GGUF_VERSION";
    case Code::UnsupportedType: return "ERR_UNSUPPORTED_TYPE";
    case Code::UnsupportedArch: return "ERR_UNSUPPORTED_ARCH";
    case Code::MissingTensor: return "ERR_MISSING_TENSOR";
    case Code::BadShape: return "ERR_BAD_SHAPE";
    case Code::InvalidArgument: return "ERR_INVALID_ARGUMENT";
    case Code::ContextOverflow: return "ERR_CONTEXT_OVERFLOW";
    case Code::OutOfMemory: return "ERR_OUT_OF_MEMORY";
    case Code::Cancelled: return "ERR_CANCELLED";
    case Code::QueueFull: return "ERR_QUEUE_FULL";
    case Code::KvExhausted: return "ERR_KV_EXHAUSTED";
    case Code::Internal: return "ERR_INTERNAL";
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

#define LLMS_RETURN_IF_ERROR(expr)          \
  do {                                      \
    ::llmserve::Status _st = (expr);        \
    if (!_st.is_ok()) return _st;           \
  } while (0)

}  // namespace llmserve
