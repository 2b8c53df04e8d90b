// LoraAdapter::store_as (lora.h): resident q8_0 or q4_0 factors for the batched low-rank kernels,
// and the packed copies their gemm passes read.
//
// Why: memory, and at ranks that are multiples of 32 time too. q8_0 takes 34 bytes per 32 elements
// against f16's 64, q4_0 18, so two or three and a half times the adapters fit. Such a rank runs
// the gemm passes (llama.cpp's arithmetic for a q8_0 or q4_0 adapter file: int8 dots on quantized
// activations, model/lowrank.h), which stream the factors at the int8 kernels' speed; a decode
// step over many rank-64 adapters reads more factor bytes than base weights, so there fewer bytes
// are less time. Other ranks keep the f32 passes over q8_0 (A and B transposed; those passes have
// no q4_0 form, and at such ranks the conversion per element costs about what the bytes save).
// Quantized with ggml's weight quantizer (what llama-quantize writes for q8_0 / q4_0), so the
// values are those of the same adapter converted by llama.cpp's tools; in the f32 passes' form B
// is blocked along n_out (B^T's rows, the axis those kernels stream), where a quantized GGUF
// adapter's B is blocked along r.
#include <cstring>
#include <new>
#include <vector>

#include "../model/matmul.h"
#include "../os/os.h"
#include "../quant/gemm.h"
#include "../quant/quant.h"
#include "lora.h"

namespace llmserve {

namespace {

constexpr int64_t kBlock = 32;  // q8_0 elements per block
constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kHugeMin = size_t(4) << 20;  // smaller blocks would waste most of a 2 MiB page

size_t round64(size_t n) { return (n + 63) / 64 * 64; }

size_t stored_bytes(const MatrixView& m) { return static_cast<size_t>(m.n_out) * m.row_bytes; }

}  // namespace

LoraAdapter::~LoraAdapter() {
  for (PackedBlock& b : packed_) os::aligned_free(b.p);
}

size_t LoraAdapter::packed_size(const LoraPair& pr, GgmlType t) {
  const int64_t r = pr.a.n_out, n_in = pr.a.n_in, n_out = pr.b.n_out;
  return round64(gemm_packed_bytes(t, n_in, r)) + round64(gemm_packed_bytes(t, r, n_out));
}

void LoraAdapter::reserve_packed(size_t bytes) {
  if (bytes == 0) return;
  PackedBlock b;
  if (bytes >= kHugeMin) {
    b.p = os::alloc_huge(bytes);
    b.cap = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  } else {
    b.p = static_cast<uint8_t*>(os::aligned_alloc(64, bytes));
    b.cap = bytes;
  }
  if (!b.p) throw std::bad_alloc();
  packed_.push_back(b);
}

void LoraAdapter::pack_for_gemm(LoraPair& pr, GgmlType t, const uint8_t* a, const uint8_t* b) {
  const int64_t r = pr.a.n_out, n_in = pr.a.n_in, n_out = pr.b.n_out;
  const size_t a_bytes = gemm_packed_bytes(t, n_in, r), b_bytes = gemm_packed_bytes(t, r, n_out);
  const size_t need = packed_size(pr, t);
  if (packed_.empty() || packed_.back().cap - packed_.back().used < need) reserve_packed(need);
  PackedBlock& blk = packed_.back();
  uint8_t* pa = blk.p + blk.used;
  uint8_t* pb = pa + round64(a_bytes);
  blk.used += need;
  gemm_pack(t, a, row_size(t, n_in), n_in, r, pa);
  gemm_pack(t, b, row_size(t, r), r, n_out, pb);
  pr.gemm_a = pa, pr.gemm_b = pb, pr.gemm_type = t;
  bytes_ += a_bytes + b_bytes;
}

int64_t LoraAdapter::store_as(GgmlType t) {
  if (t != GgmlType::Q8_0 && t != GgmlType::Q4_0) return 0;
  int64_t converted = 0;
  std::vector<float> row, b, col;
  std::vector<uint8_t> qa_rows, qb_rows;
  auto convertible = [](const LoraPair& pr) {
    return pr.present() && !pr.q8_a && !pr.gemm_a && pr.a.n_in % kBlock == 0 && pr.b.n_out % kBlock == 0;
  };
  size_t packed = 0;  // the gemm form's slices, in one block
  for (auto& layer : layers_)
    for (auto& pr : layer)
      if (convertible(pr) && pr.a.n_out % kBlock == 0) packed += packed_size(pr, t);
  if (convertible(output_) && output_.a.n_out % kBlock == 0) packed += packed_size(output_, t);
  reserve_packed(packed);
  auto convert = [&](LoraPair& pr) {
    if (!convertible(pr)) return;
    const int64_t r = pr.a.n_out, n_in = pr.a.n_in, n_out = pr.b.n_out;
    const size_t a_row = row_size(GgmlType::Q8_0, n_in), bt_row = row_size(GgmlType::Q8_0, n_out);
    auto drop_bt = [&] {  // the f16/f32 copy of B transposed, no longer read
      if (!pr.bt) return;
      bytes_ -= static_cast<size_t>(r * n_out) * (pr.a.type == GgmlType::F16 ? 2 : 4);
      for (auto it = owned_.begin(); it != owned_.end(); ++it)
        if (it->get() == pr.bt) {
          owned_.erase(it);
          break;
        }
      pr.bt = nullptr;
    };
    if (r % kBlock == 0) {
      // The gemm form: A's rows and B's rows (of r) quantized, as in a q8_0 / q4_0 adapter file.
      const size_t ga_row = row_size(t, n_in), gb_row = row_size(t, r);
      qa_rows.resize(static_cast<size_t>(r) * ga_row);
      qb_rows.resize(static_cast<size_t>(n_out) * gb_row);
      row.resize(static_cast<size_t>(std::max(n_in, r)));
      for (int64_t k = 0; k < r; ++k) {
        dequantize_row(pr.a.type, pr.a.row(k), row.data(), n_in);
        quantize_row_weights(t, row.data(), qa_rows.data() + static_cast<size_t>(k) * ga_row, n_in);
      }
      for (int64_t j = 0; j < n_out; ++j) {
        dequantize_row(pr.b.type, pr.b.row(j), row.data(), r);
        quantize_row_weights(t, row.data(), qb_rows.data() + static_cast<size_t>(j) * gb_row, r);
      }
      bytes_ -= stored_bytes(pr.a) + stored_bytes(pr.b);
      drop_bt();
      pack_for_gemm(pr, t, qa_rows.data(), qb_rows.data());
      ++converted;
      return;
    }
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
    drop_bt();
    bytes_ += static_cast<size_t>(r) * (a_row + bt_row);
    ++converted;
  };
  for (auto& layer : layers_)
    for (auto& pr : layer) convert(pr);
  convert(output_);
  return converted;
}

}  // namespace llmserve
