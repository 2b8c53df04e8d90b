file(REMOVE_RECURSE
  "CMakeFiles/llmserve_native_tests.dir/native/tests/test_gguf_reader.cpp.o"
  "CMakeFiles/llmserve_native_tests.dir/native/tests/test_gguf_reader.cpp.o.d"
  "CMakeFiles/llmserve_native_tests.dir/native/tests/test_main.cpp.o"
  "CMakeFiles/llmserve_native_tests.dir/native/tests/test_main.cpp.o.d"
  "CMakeFiles/llmserve_native_tests.dir/native/tests/test_model.cpp.o"
  "CMakeFiles/llmserve_native_tests.dir/native/tests/test_model.cpp.o.d"
  "CMakeFiles/llmserve_native_tests.dir/native/tests/test_quant.cpp.o"
  "CMakeFiles/llmserve_native_tests.dir/native/tests/test_quant.cpp.o.d"
  "CMakeFiles/llmserve_native_tests.dir/native/tests/test_sampling.cpp.o"
  "CMakeFiles/llmserve_native_tests.dir/native/tests/test_sampling.cpp.o.d"
  "CMakeFiles/llmserve_native_tests.dir/native/tests/test_synth.cpp.o"
  "CMakeFiles/llmserve_native_tests.dir/native/tests/test_synth.cpp.o.d"
  "bin/llmserve_native_tests"
  "bin/llmserve_native_tests.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang CXX)
  include(CMakeFiles/llmserve_native_tests.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
