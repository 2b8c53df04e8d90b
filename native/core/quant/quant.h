// Weight/activation block formats, bit-exact with ggml (llama.cpp).
// Every format has a scalar reference (*_ref) that defines the truth; fast variants
// (AVX2/AVX-512) are chosen once at startup by dispatch and tested against the reference.
#pragma once
#include <cstddef>
#include <cstdint>

namespace llmserve {

// Numeric values are ggml's type ids as stored in GGUF tensor infos.
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ4_NL = 20,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
};
constexpr uint32_t kGgmlTypeCount = 40;  // ids >= this are rejected as corrupt

struct TypeTraits {
  const char* name;       // "q4_0", ... ; "unknown" for ids we do not know
  int64_t block_size;     // elements per block (1 for F32/F16/BF16)
  size_t type_size;       // bytes per block
  bool known;             // ggml defines this id (so sizes are valid)
  bool supported;         // we can dequantize / dot it
  GgmlType vec_dot_type;  // format activations are converted to before vec_dot (as ggml does)
};

const TypeTraits& type_traits(GgmlType t);
inline const TypeTraits& type_traits(uint32_t id) { return type_traits(static_cast<GgmlType>(id)); }

// Bytes for one row of n elements (n must be a multiple of block_size).
size_t row_size(GgmlType t, int64_t n);

// half / bfloat16 scalar conversions (IEEE round-to-nearest-even, as ggml).
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);

// x: [n] in type t  ->  y: [n] f32.   n % block_size == 0.
void dequantize_row(GgmlType t, const void* x, float* y, int64_t n);
// x: [n] f32  ->  y: row_size(t, n) bytes. Reference quantizer (ggml's *_ref; for IQ4_NL/IQ4_XS
// ggml's quantize_iq4_nl/xs without an importance matrix, as llama-quantize writes them); used by
// synth, and (for vec_dot types Q8_0/Q8_1/Q8_K/F16/BF16/F32) to convert activations before a dot.
void quantize_row(GgmlType t, const float* x, void* y, int64_t n);
// x: [n] f32 -> y: row_size(t, n) bytes: exactly what ggml_quantize_chunk (so llama-quantize) writes
// without an importance matrix. quantize_row_ref for every type but Q8_0, whose weights ggml rounds
// with id = 1/d and roundf (ggml's quantize_row_q8_0_ref), not as its x86 activation quantizer (the
// Q8_0 quantize_row_ref above, which matmuls need). Used by quantize.
void quantize_row_weights(GgmlType t, const float* x, void* y, int64_t n);
// Same with llama.cpp's importance matrix: qw holds the row's n per-column weights (the imatrix
// entry of the tensor), and y gets exactly what ggml_quantize_chunk(t, x, y, 0, 1, n, qw) writes
// (ggml's *_impl quantizers with quant_weights). qw == nullptr: quantize_row_weights. Q8_0 and the
// float types ignore the weights, as ggml does.
void quantize_row_imatrix(GgmlType t, const float* x, void* y, int64_t n, const float* qw);
// dot(w_row, x_row): w in type t, xq in type_traits(t).vec_dot_type, both [n] elements.
// xq must come from quantize_row(vec_dot_type): the SIMD kernels rely on its invariants (Q8_K bsums
// match qs; Q8_1 s = d * sum(qs); Q8_0/Q8_1 values lie in [-127, 127]).
float vec_dot(GgmlType t, int64_t n, const void* w, const void* xq);

// Scalar references, always available; the dispatched functions above must agree with these.
void dequantize_row_ref(GgmlType t, const void* x, float* y, int64_t n);
void quantize_row_ref(GgmlType t, const float* x, void* y, int64_t n);
float vec_dot_ref(GgmlType t, int64_t n, const void* w, const void* xq);

// Which kernel family the dispatcher picked ("avx512", "avx2", "scalar"); LLMSERVE_FORCE_SCALAR=1
// in the environment forces "scalar".
const char* kernel_isa();

}  // namespace llmserve
