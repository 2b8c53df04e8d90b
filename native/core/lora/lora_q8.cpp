// LoraAdapter::store_as_q8_0 (lora.h): resident q8_0 factors for the batched low-rank kernels.
//
// Why: memory. q8_0 takes 34 bytes per 32 elements against f16's 64, so twice the adapters fit.
// (It was also meant to cut the bytes a decode step streams per adapter; on 2 AVX-512 cores the
// extra conversion per element made decode 6-18% slower instead: bench/README.md, "Multi-LoRA".) Quantized with ggml's weight quantizer (what
// llama-quantize writes for q8_0), so the values are those of the same adapter converted to q8_0
// by llama.cpp's tools, except that B is quantized along n_out (B^T's rows), the axis the kernel
// streams, where a q8_0 GGUF adapter's B is blocked along r.
#include <cstring>
#include <vector>

#include "../quant/quant.h"
#include "lora.h"

namespace llmserve {

namespace {

constexpr int64_t kBlock = 32;  // q8_0 elements per block

size_t stored_bytes(const MatrixView& m) { return static_cast<size_t>(m.n_out) * m.row_bytes; }

}  // namespace

int64_t LoraAdapter::store_as_q8_0() {
  int64_t converted = 0;
  std::vector<float> row, b, col;
  auto convert = [&](LoraPair& pr) {
    if (!pr.present() || pr.q8_a) return;
    const int64_t r = pr.a.n_out, n_in = pr.a.n_in, n_out = pr.b.n_out;
    if (n_in % kBlock != 0 || n_out % kBlock != 0) return;
    const size_t a_row = row_size(GgmlType::Q8_0, n_in), bt_row = row_size(GgmlType::Q8_0, n_out);
    // A: [r rows of n_in], in place when the file already has q8_0 rows.
    if (pr.a.type == GgmlType::Q8_0 && pr.a.row_bytes == a_row) {
      pr.q8_a = pr.a.data;
    } else {
      std::unique_ptr<uint8_t[]> qa(new uint8_t[static_cast<size_t>(r) * a_row]);
      row.resize(static_cast<size_t>(n_in));
      for (int64_t k = 0; k < r; ++k) {
        dequantize_row(pr.a.type, pr.a.row(k), row.data(), n_in);
        quantize_row_weights(GgmlType::Q8_0, row.data(), qa.get() + static_cast<size_t>(k) * a_row, n_in);
      }
      pr.q8_a = qa.get();
      owned_.push_back(std::move(qa));
    }
    // B: [n_out rows of r] -> B^T: [r rows of n_out], each row quantized.
    b.resize(static_cast<size_t>(n_out * r));
    for (int64_t j = 0; j < n_out; ++j) dequantize_row(pr.b.type, pr.b.row(j), b.data() + j * r, r);
    std::unique_ptr<uint8_t[]> qbt(new uint8_t[static_cast<size_t>(r) * bt_row]);
    col.resize(static_cast<size_t>(n_out));
    for (int64_t k = 0; k < r; ++k) {
      for (int64_t j = 0; j < n_out; ++j) col[static_cast<size_t>(j)] = b[static_cast<size_t>(j * r + k)];
      quantize_row_weights(GgmlType::Q8_0, col.data(), qbt.get() + static_cast<size_t>(k) * bt_row, n_out);
    }
    pr.q8_bt = qbt.get();
    owned_.push_back(std::move(qbt));
    // Bytes: the file's A and B (and the copy of B^T, dropped) leave the count; the two q8_0
    // matrices the kernels read enter it.
    bytes_ -= stored_bytes(pr.a) + stored_bytes(pr.b);
    if (pr.bt) {
      bytes_ -= static_cast<size_t>(r * n_out) * (pr.a.type == GgmlType::F16 ? 2 : 4);
      for (auto it = owned_.begin(); it != owned_.end(); ++it)
        if (it->get() == pr.bt) {
          owned_.erase(it);
          break;
        }
      pr.bt = nullptr;
    }
    bytes_ += static_cast<size_t>(r) * (a_row + bt_row);
    ++converted;
  };
  for (auto& layer : layers_)
    for (auto& pr : layer) convert(pr);
  convert(output_);
  return converted;
}

}  // namespace llmserve
