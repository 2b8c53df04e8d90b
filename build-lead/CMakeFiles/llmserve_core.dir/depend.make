# Empty dependencies file for llmserve_core.
# This may be replaced when dependencies are built.
