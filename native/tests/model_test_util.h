// What the model-level tests share: opening a GGUF file and loading its Model in one call.
#pragma once
#include <cstdio>
#include <memory>
#include <string>

#include "gguf/gguf.h"
#include "model/model.h"

namespace llmserve_test {

// The model at path, or null: the status goes to st_out when given, else to stderr.
inline std::unique_ptr<llmserve::Model> load_model(const std::string& path, llmserve::Status* st_out = nullptr) {
  std::unique_ptr<llmserve::GgufFile> f;
  llmserve::Status st = llmserve::GgufFile::open(path, &f);
  std::unique_ptr<llmserve::Model> m;
  if (st.is_ok()) st = llmserve::Model::load(std::shared_ptr<llmserve::GgufFile>(std::move(f)), &m);
  if (st_out) *st_out = st;
  else if (!st.is_ok()) std::fprintf(stderr, "  load %s: %s\n", path.c_str(), st.message.c_str());
  return m;
}

}  // namespace llmserve_test
