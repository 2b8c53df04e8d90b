// libFuzzer target: a GGUF image through the code Model.load runs (GgufFile parse -> metadata
// getters -> read_model_config -> Model::load's tensor binding), then reads the last byte of every
// bound weight so a bounds check that lets a tensor reach past the file shows up under ASan.
// The input is parsed in place (GgufFile::parse: the same parse_all() as the mmap path).
// Build and run: npm run fuzz (scripts/fuzz.mjs).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "gguf/gguf.h"
#include "model/model.h"
#include "model/model_config.h"
#include "quant/quant.h"

using namespace llmserve;

namespace {

volatile float g_sink;
volatile uint8_t g_sink8;

void touch_value(const GgufValue& v) {
  // What the N-API reader (native/napi/gguf_wrap.cc) does with every value.
  g_sink = static_cast<float>(v.as_double());
  g_sink8 = static_cast<uint8_t>(v.as_int());
  if (!v.s.empty()) g_sink8 = static_cast<uint8_t>(v.s.back());
  if (v.type != GgufType::ARRAY) return;
  const uint64_t n = v.arr_len < 64 ? v.arr_len : 64;
  if (v.arr_data) {
    for (uint64_t k = 0; k < n; ++k) g_sink = static_cast<float>(v.arr_double(k) + (double)v.arr_int(k));
    if (v.arr_len) g_sink = static_cast<float>(v.arr_double(v.arr_len - 1));
  }
  for (const auto& s : v.arr_str)
    if (!s.empty()) g_sink8 = static_cast<uint8_t>(s.front() ^ s.back());
  for (const auto& nested : v.arr_nested) touch_value(nested);
}

void touch_matrix(const MatrixView& m, std::vector<float>& row) {
  if (!m.data || m.n_out <= 0) return;
  row.resize(static_cast<size_t>(m.n_in));
  dequantize_row(m.type, m.row(m.n_out - 1), row.data(), m.n_in);  // the last row of the matrix
  g_sink = row.back();
}

void touch_vector(const float* v, int64_t n) {
  if (v && n > 0) g_sink = v[n - 1];
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Copy into an exact-size heap buffer so ASan flags any read past the image.
  std::unique_ptr<uint8_t[]> buf(new uint8_t[size ? size : 1]);
  if (size) std::memcpy(buf.get(), data, size);
  std::unique_ptr<GgufFile> f;
  if (!GgufFile::parse(buf.get(), size, &f)) return 0;

  for (const auto& [key, v] : f->metadata()) {
    touch_value(v);
    int64_t i = 0;
    double d = 0;
    std::string s;
    bool found = false;
    (void)f->get_int(key, &i, &found);
    (void)f->get_float(key, &d, &found);
    (void)f->get_string(key, &s, &found);
  }
  for (const auto& t : f->tensors()) {
    if (f->find_tensor(t.name) != &t) std::abort();  // index and list disagree
    if (t.nbytes) g_sink8 = t.data[t.nbytes - 1];    // the reader said these bytes are inside
  }

  ModelConfig cfg;
  (void)read_model_config(*f, &cfg);

  std::shared_ptr<GgufFile> shared(std::move(f));
  std::unique_ptr<Model> m;
  if (!Model::load(shared, &m)) return 0;
  const ModelConfig& c = m->config();
  const ModelWeights& w = m->weights();
  std::vector<float> row;
  touch_matrix(w.tok_embd, row);
  touch_matrix(w.output, row);
  touch_vector(w.output_norm, c.n_embd);
  touch_vector(w.rope_freqs, c.n_rot / 2);
  for (const LayerWeights& L : w.layers) {
    for (const MatrixView* mv : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down})
      touch_matrix(*mv, row);
    touch_vector(L.attn_norm, c.n_embd);
    touch_vector(L.ffn_norm, c.n_embd);
    touch_vector(L.bq, c.n_embd_q());
    touch_vector(L.bk, c.n_embd_kv());
    touch_vector(L.bv, c.n_embd_kv());
    touch_vector(L.bo, c.n_embd);
    touch_vector(L.ffn_gate_b, c.n_ff);
    touch_vector(L.ffn_up_b, c.n_ff);
    touch_vector(L.ffn_down_b, c.n_embd);
  }
  return 0;
}
