// The few operating-system services the core needs, behind one interface so the rest of the core
// is the same on POSIX (Linux, macOS) and Windows: read-only file mappings (GGUF, safetensors),
// aligned and huge-page memory, durable atomic file replacement, file identity.
//
// Why a folder of its own: before it, mmap/madvise/fsync/stat calls sat in five files, and a
// Windows build failed in each (issue: per-platform prebuilds). Paths are UTF-8 everywhere in the
// core; on Windows they are converted to UTF-16 here, so non-ASCII paths open there too.
// No dependencies inside the core (check-includes level 0).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace llmserve::os {

// ---- memory ----

// `bytes` rounded up by the caller as needed; `align` a power of two. Free with aligned_free
// (Windows' _aligned_malloc memory must not reach free()). nullptr when out of memory.
void* aligned_alloc(size_t align, size_t bytes);
void aligned_free(void* p);
struct AlignedFree {
  void operator()(void* p) const { aligned_free(p); }
};

// Asks for transparent huge pages over [p, p + n) where the OS has them (Linux); no-op elsewhere.
void advise_huge_pages(void* p, size_t n);
// A 2 MiB aligned buffer of at least `bytes` (rounded up to whole 2 MiB), marked for transparent
// huge pages (free it with aligned_free), or null when memory is short.
uint8_t* alloc_huge(size_t bytes);

size_t page_size();

// ---- files ----

// Characters that end a folder name in a path: the slash everywhere, and the backslash on Windows too.
#ifdef _WIN32
inline constexpr const char* kPathSeparators = "/\\";
#else
inline constexpr const char* kPathSeparators = "/";
#endif

enum class OpenResult { Ok, NotFound, NotRegular, TooLarge, Error };

// A whole regular file mapped read-only (copy-on-write private mapping). An empty file is Ok
// with data() == nullptr. Move-only; unmaps when destroyed.
class MappedFile {
 public:
  MappedFile() = default;
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // On failure *error holds the OS's reason (strerror / FormatMessage text).
  static OpenResult open(const std::string& path, MappedFile* out, std::string* error);

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool mapped() const { return data_ != nullptr; }

  // Tells the OS the pages fully inside [p, p + n) are not needed now; they are read back from
  // the file if touched again. No-op outside the mapping, and on Windows (a view's pages of a
  // read-only file are dropped by the OS under pressure anyway).
  void release(const uint8_t* p, size_t n) const;

 private:
  void reset();
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole regular file of at most max_bytes into *out.
OpenResult read_small_file(const std::string& path, size_t max_bytes, std::string* out, std::string* error);

// fopen(path, mode) with a UTF-8 path on every OS.
std::FILE* fopen_utf8(const std::string& path, const char* mode);

// Flushes the stdio buffer and asks the OS to put the file's data on disk. Returns 0 or an errno
// value; file systems that cannot sync (EINVAL/EROFS) count as success.
int flush_to_disk(std::FILE* f);

// Renames from → to, replacing an existing `to` in one step (POSIX rename; Windows MoveFileEx with
// MOVEFILE_REPLACE_EXISTING). Returns 0 or an errno-style value.
int replace_file(const std::string& from, const std::string& to);

// Removes a file; errors are ignored (best-effort cleanup of temp files).
void remove_file(const std::string& path);

// True when both paths name the same existing file (hard links and symlinks included): device +
// inode on POSIX, volume serial + file index on Windows (where stat's st_ino is always 0).
bool same_file(const std::string& a, const std::string& b);

// Size of a regular file, or -1.
int64_t file_size(const std::string& path);

// Whether path is an existing directory.
bool is_directory(const std::string& path);

// This process's id (temp file names).
long process_id();

// Text for an errno-style value.
std::string error_text(int err);

}  // namespace llmserve::os
