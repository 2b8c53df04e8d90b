
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/native/core/engine/engine.cpp" "CMakeFiles/llmserve_core.dir/native/core/engine/engine.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/engine/engine.cpp.o.d"
  "/work/main/native/core/gguf/gguf_reader.cpp" "CMakeFiles/llmserve_core.dir/native/core/gguf/gguf_reader.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/gguf/gguf_reader.cpp.o.d"
  "/work/main/native/core/gguf/gguf_writer.cpp" "CMakeFiles/llmserve_core.dir/native/core/gguf/gguf_writer.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/gguf/gguf_writer.cpp.o.d"
  "/work/main/native/core/model/forward.cpp" "CMakeFiles/llmserve_core.dir/native/core/model/forward.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/model/forward.cpp.o.d"
  "/work/main/native/core/model/kv_cache.cpp" "CMakeFiles/llmserve_core.dir/native/core/model/kv_cache.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/model/kv_cache.cpp.o.d"
  "/work/main/native/core/model/model.cpp" "CMakeFiles/llmserve_core.dir/native/core/model/model.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/model/model.cpp.o.d"
  "/work/main/native/core/model/model_config.cpp" "CMakeFiles/llmserve_core.dir/native/core/model/model_config.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/model/model_config.cpp.o.d"
  "/work/main/native/core/model/ops.cpp" "CMakeFiles/llmserve_core.dir/native/core/model/ops.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/model/ops.cpp.o.d"
  "/work/main/native/core/quant/dispatch.cpp" "CMakeFiles/llmserve_core.dir/native/core/quant/dispatch.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/quant/dispatch.cpp.o.d"
  "/work/main/native/core/quant/float_ref.cpp" "CMakeFiles/llmserve_core.dir/native/core/quant/float_ref.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/quant/float_ref.cpp.o.d"
  "/work/main/native/core/quant/k_quants_ref.cpp" "CMakeFiles/llmserve_core.dir/native/core/quant/k_quants_ref.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/quant/k_quants_ref.cpp.o.d"
  "/work/main/native/core/quant/kernels_avx2.cpp" "CMakeFiles/llmserve_core.dir/native/core/quant/kernels_avx2.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/quant/kernels_avx2.cpp.o.d"
  "/work/main/native/core/quant/kernels_avx512.cpp" "CMakeFiles/llmserve_core.dir/native/core/quant/kernels_avx512.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/quant/kernels_avx512.cpp.o.d"
  "/work/main/native/core/quant/q4_0_ref.cpp" "CMakeFiles/llmserve_core.dir/native/core/quant/q4_0_ref.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/quant/q4_0_ref.cpp.o.d"
  "/work/main/native/core/quant/q8_0_ref.cpp" "CMakeFiles/llmserve_core.dir/native/core/quant/q8_0_ref.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/quant/q8_0_ref.cpp.o.d"
  "/work/main/native/core/quant/types.cpp" "CMakeFiles/llmserve_core.dir/native/core/quant/types.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/quant/types.cpp.o.d"
  "/work/main/native/core/sampling/sampler.cpp" "CMakeFiles/llmserve_core.dir/native/core/sampling/sampler.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/sampling/sampler.cpp.o.d"
  "/work/main/native/core/synth/synth.cpp" "CMakeFiles/llmserve_core.dir/native/core/synth/synth.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/synth/synth.cpp.o.d"
  "/work/main/native/core/synth/synth_vocab.cpp" "CMakeFiles/llmserve_core.dir/native/core/synth/synth_vocab.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/synth/synth_vocab.cpp.o.d"
  "/work/main/native/core/threadpool/thread_pool.cpp" "CMakeFiles/llmserve_core.dir/native/core/threadpool/thread_pool.cpp.o" "gcc" "CMakeFiles/llmserve_core.dir/native/core/threadpool/thread_pool.cpp.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
