
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/native/tests/test_gguf_reader.cpp" "CMakeFiles/llmserve_native_tests.dir/native/tests/test_gguf_reader.cpp.o" "gcc" "CMakeFiles/llmserve_native_tests.dir/native/tests/test_gguf_reader.cpp.o.d"
  "/work/main/native/tests/test_main.cpp" "CMakeFiles/llmserve_native_tests.dir/native/tests/test_main.cpp.o" "gcc" "CMakeFiles/llmserve_native_tests.dir/native/tests/test_main.cpp.o.d"
  "/work/main/native/tests/test_sampling.cpp" "CMakeFiles/llmserve_native_tests.dir/native/tests/test_sampling.cpp.o" "gcc" "CMakeFiles/llmserve_native_tests.dir/native/tests/test_sampling.cpp.o.d"
  "/work/main/native/tests/test_synth.cpp" "CMakeFiles/llmserve_native_tests.dir/native/tests/test_synth.cpp.o" "gcc" "CMakeFiles/llmserve_native_tests.dir/native/tests/test_synth.cpp.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  "/work/main/build-lead/CMakeFiles/llmserve_core.dir/DependInfo.cmake"
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
