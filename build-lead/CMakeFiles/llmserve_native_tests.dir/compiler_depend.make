# Empty compiler generated dependencies file for llmserve_native_tests.
# This may be replaced when dependencies are built.
