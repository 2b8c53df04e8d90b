file(REMOVE_RECURSE
  "libllmserve_core.a"
)
