// The dynamic batching policy's cost model (EngineOptions::target_step_ms): a step's wall time
// fitted online as ms ≈ a + b·tokens + c·rows (tokens: every token of the flattened batch; rows:
// the sequences that sample, each paying the output head and the sampler), by exponentially
// weighted least squares, so recent steps count most (the cost of a token grows with the context
// it attends to). The scheduler asks it how many prompt tokens a step may add next to its decode
// tokens and still end within the target, instead of a fixed prefill_chunk.
#pragma once
#include <cstdint>

namespace llmserve {

class StepCostModel {
 public:
  // decay: each observation's weight is multiplied by this at every later one (0.97: about the
  // last 30 steps matter).
  explicit StepCostModel(double decay = 0.97) : decay_(decay) {}

  void observe(int64_t tokens, int64_t rows, double ms);
  // True once the recent steps vary enough in prompt tokens (tokens - rows) to tell a token's
  // cost from a row's: before that the scheduler keeps its fixed prefill_chunk.
  bool ready() const;
  double predict(int64_t tokens, int64_t rows) const;
  // Prompt tokens a step with n_decode decode tokens may add and stay within target_ms (the chunk
  // may end a prompt, so one more row is counted), clamped to [min_chunk, max_chunk]: a prompt
  // always advances, even when decode alone fills the target.
  int64_t prefill_budget(double target_ms, int64_t n_decode, int64_t min_chunk, int64_t max_chunk) const;
  // The fitted coefficients (ms, ms per token, ms per row); refit on each observe().
  double a() const { return coef_[0]; }
  double b() const { return coef_[1]; }
  double c() const { return coef_[2]; }

 private:
  void refit();
  double decay_;
  double s_[3][3] = {};     // Σ w·x·xᵀ with x = (1, tokens, rows)
  double r_[3] = {};        // Σ w·x·ms
  double w_ = 0;            // Σ w
  double p1_ = 0, p2_ = 0;  // Σ w·p and Σ w·p² of the prompt tokens p = tokens - rows
  double coef_[3] = {0, 0, 0};
};

}  // namespace llmserve
