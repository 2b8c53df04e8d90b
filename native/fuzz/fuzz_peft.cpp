// libFuzzer target: a PEFT adapter through the code Model.loadAdapter runs for a PEFT folder. The
// input is [u16 little-endian n][n bytes of adapter_config.json][adapter_model.safetensors image]:
// the image goes through SafetensorsFile::parse (the same parse_all() as the mmap path) and, when
// valid, LoraAdapter::from_peft over a tiny synthesized llama (the config through the JSON reader and
// the pattern compiler); the last row of every pair is then read so a view past its tensor shows up
// under ASan. The config text is also compiled as a pattern and matched against module names.
// Seeds: make_seeds writes valid adapters for this model's shape. Build and run: npm run fuzz.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "lora/json.h"
#include "lora/lora.h"
#include "lora/pattern.h"
#include "lora/safetensors.h"
#include "model/model.h"
#include "quant/quant.h"
#include "synth/synth.h"

using namespace llmserve;

namespace {

std::unique_ptr<Model> g_model;
volatile float g_sink;

void touch(const MatrixView& m, std::vector<float>& row) {
  if (!m.data || m.n_out <= 0) return;
  row.resize(static_cast<size_t>(m.n_in));
  dequantize_row(m.type, m.row(m.n_out - 1), row.data(), m.n_in);
  g_sink = row.back();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char tmpl[] = "/tmp/llmserve-fuzz-peft-XXXXXX";
  int fd = mkstemp(tmpl);
  if (fd < 0) std::abort();
  close(fd);
  SynthOptions so;  // the shape make_seeds writes adapters for
  so.dim = 32, so.layers = 2, so.heads = 2, so.kv_heads = 1, so.ffn = 32, so.context = 64, so.vocab_size = 300;
  Status st = synth_model(so, tmpl);
  std::unique_ptr<GgufFile> f;
  if (st) st = GgufFile::open(tmpl, &f);
  if (st) st = Model::load(std::shared_ptr<GgufFile>(std::move(f)), &g_model);
  unlink(tmpl);
  if (!st) {
    std::fprintf(stderr, "fuzz_peft: %s\n", st.message.c_str());
    std::abort();
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  size_t n = static_cast<size_t>(data[0] | (data[1] << 8));
  if (n > size - 2) n = size - 2;
  const std::string config(reinterpret_cast<const char*>(data + 2), n);
  // Exact-size heap copy so ASan flags any read past the image.
  const size_t m = size - 2 - n;
  std::unique_ptr<uint8_t[]> img(new uint8_t[m ? m : 1]);
  if (m) std::memcpy(img.get(), data + 2 + n, m);

  JsonValue j;
  (void)parse_json(config, "fuzz", &j);
  Pattern p;
  if (Pattern::compile(config, "fuzz", &p)) {
    g_sink = p.full_match("model.layers.1.self_attn.q_proj") + p.full_match(config) + p.full_match("");
  }
  // LLMSERVE_FUZZ_VERBOSE=1: print why an input stops (to check that the seeds load).
  static const bool verbose = std::getenv("LLMSERVE_FUZZ_VERBOSE") != nullptr;
  std::unique_ptr<SafetensorsFile> st;
  Status s = SafetensorsFile::parse(img.get(), m, "fuzz", &st);
  if (verbose) std::fprintf(stderr, "fuzz_peft: safetensors: %s\n", s ? "ok" : s.message.c_str());
  if (!s) return 0;
  for (const auto& t : st->tensors())
    if (t.nbytes()) g_sink = static_cast<float>(t.data[t.nbytes() - 1]);
  std::unique_ptr<LoraAdapter> a;
  s = LoraAdapter::from_peft(std::shared_ptr<const SafetensorsFile>(std::move(st)), config, "fuzz", *g_model, 1.0f, &a);
  if (verbose) std::fprintf(stderr, "fuzz_peft: adapter: %s\n", s ? "ok" : s.message.c_str());
  if (!s) return 0;
  std::vector<float> row;
  for (int64_t il = -1; il < g_model->config().n_layer; ++il)
    for (int pi = 0; pi < kProjCount; ++pi) {
      const LoraPair* pr = a->pair(il, static_cast<Proj>(pi));
      if (!pr) continue;
      touch(pr->a, row);
      touch(pr->b, row);
    }
  return 0;
}
