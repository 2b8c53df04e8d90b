// POSIX and Windows implementations of os.h. Each function has both branches side by side so a
// change to one is seen next to the other. The Windows branch is compiled here by
// `npm run check:windows` (MinGW-w64 cross compiler, when installed), not run: CI has no Windows.
#include "os.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <io.h>
#include <malloc.h>
#include <process.h>
#include <windows.h>
#else
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace llmserve::os {

#ifdef _WIN32
namespace {

std::wstring widen(const std::string& s) {
  if (s.empty()) return std::wstring();
  const int n = MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), nullptr, 0);
  std::wstring w(static_cast<size_t>(n > 0 ? n : 0), L'\0');
  if (n > 0) MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), w.data(), n);
  return w;
}

std::string win_error_text(DWORD e) {
  char buf[512] = {};
  const DWORD n = FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, nullptr, e, 0, buf,
                                 sizeof(buf), nullptr);
  std::string s(buf, n);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s.empty() ? "Windows error " + std::to_string(e) : s;
}

int errno_of(DWORD e) {
  switch (e) {
    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND: return ENOENT;
    case ERROR_ACCESS_DENIED: return EACCES;
    case ERROR_DISK_FULL: return ENOSPC;
    default: return EIO;
  }
}

HANDLE open_existing(const std::string& path) {
  return CreateFileW(widen(path).c_str(), GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr,
                     OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, nullptr);
}

}  // namespace
#endif

// ---- memory ----

void* aligned_alloc(size_t align, size_t bytes) {
  if (bytes == 0) bytes = align;
#ifdef _WIN32
  return _aligned_malloc(bytes, align);
#else
  // std::aligned_alloc wants a size that is a multiple of the alignment.
  const size_t n = (bytes + align - 1) / align * align;
  return std::aligned_alloc(align, n);
#endif
}

void aligned_free(void* p) {
#ifdef _WIN32
  _aligned_free(p);
#else
  std::free(p);
#endif
}

void advise_huge_pages(void* p, size_t n) {
#if defined(MADV_HUGEPAGE)
  if (p && n) madvise(p, n, MADV_HUGEPAGE);
#else
  (void)p;
  (void)n;
#endif
}

uint8_t* alloc_huge(size_t bytes) {
  // 2 MiB aligned and marked for transparent huge pages: a decode step streams every byte, and
  // with 4 KiB pages the TLB misses cost a visible share of the bandwidth.
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t cap = (bytes + kHuge - 1) / kHuge * kHuge;
  auto* p = static_cast<uint8_t*>(aligned_alloc(kHuge, cap));
  advise_huge_pages(p, cap);
  return p;
}

size_t page_size() {
#ifdef _WIN32
  SYSTEM_INFO si;
  GetSystemInfo(&si);
  return si.dwPageSize;
#else
  const long p = sysconf(_SC_PAGESIZE);
  return p > 0 ? static_cast<size_t>(p) : 4096;
#endif
}

// ---- mapped files ----

MappedFile::~MappedFile() { reset(); }

MappedFile::MappedFile(MappedFile&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    reset();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

void MappedFile::reset() {
  if (data_) {
#ifdef _WIN32
    UnmapViewOfFile(data_);
#else
    munmap(const_cast<uint8_t*>(data_), size_);
#endif
  }
  data_ = nullptr;
  size_ = 0;
}

OpenResult MappedFile::open(const std::string& path, MappedFile* out, std::string* error) {
  out->reset();
#ifdef _WIN32
  HANDLE h = open_existing(path);
  if (h == INVALID_HANDLE_VALUE) {
    const DWORD e = GetLastError();
    *error = win_error_text(e);
    return errno_of(e) == ENOENT ? OpenResult::NotFound : OpenResult::Error;
  }
  BY_HANDLE_FILE_INFORMATION info{};
  if (!GetFileInformationByHandle(h, &info) || (info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)) {
    CloseHandle(h);
    *error = "not a regular file";
    return OpenResult::NotRegular;
  }
  const uint64_t size = (static_cast<uint64_t>(info.nFileSizeHigh) << 32) | info.nFileSizeLow;
  if (size > static_cast<uint64_t>(SIZE_MAX)) {
    CloseHandle(h);
    *error = "file too large for this process's address space";
    return OpenResult::TooLarge;
  }
  if (size == 0) {
    CloseHandle(h);
    return OpenResult::Ok;
  }
  HANDLE m = CreateFileMappingW(h, nullptr, PAGE_READONLY, 0, 0, nullptr);
  CloseHandle(h);  // the mapping object keeps the file open
  if (!m) {
    *error = win_error_text(GetLastError());
    return OpenResult::Error;
  }
  void* p = MapViewOfFile(m, FILE_MAP_READ, 0, 0, 0);
  CloseHandle(m);  // the view keeps the mapping alive
  if (!p) {
    *error = win_error_text(GetLastError());
    return OpenResult::Error;
  }
  out->data_ = static_cast<const uint8_t*>(p);
  out->size_ = static_cast<size_t>(size);
  return OpenResult::Ok;
#else
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    *error = std::strerror(e);
    return e == ENOENT ? OpenResult::NotFound : OpenResult::Error;
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    *error = "not a regular file";
    return OpenResult::NotRegular;
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return OpenResult::Ok;
  }
  void* p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int e = errno;
  ::close(fd);  // the mapping keeps the file
  if (p == MAP_FAILED) {
    *error = std::strerror(e);
    return OpenResult::Error;
  }
  out->data_ = static_cast<const uint8_t*>(p);
  out->size_ = size;
  return OpenResult::Ok;
#endif
}

void MappedFile::release(const uint8_t* p, size_t n) const {
#ifdef _WIN32
  (void)p;
  (void)n;
#else
  if (!data_ || p < data_ || n > size_ || p + n > data_ + size_) return;
  const uintptr_t page = page_size();
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + page - 1) & ~(page - 1);
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + n) & ~(page - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
#endif
}

// ---- files ----

OpenResult read_small_file(const std::string& path, size_t max_bytes, std::string* out, std::string* error) {
  std::FILE* f = fopen_utf8(path, "rb");
  if (!f) {
    const int e = errno;
    *error = std::strerror(e);
    return e == ENOENT ? OpenResult::NotFound : OpenResult::Error;
  }
  const int64_t size = file_size(path);
  if (size < 0 || is_directory(path)) {
    std::fclose(f);
    *error = "not a regular file";
    return OpenResult::NotRegular;
  }
  if (static_cast<uint64_t>(size) > max_bytes) {
    std::fclose(f);
    *error = "larger than " + std::to_string(max_bytes) + " bytes";
    return OpenResult::TooLarge;
  }
  out->resize(static_cast<size_t>(size));
  const size_t got = out->empty() ? 0 : std::fread(out->data(), 1, out->size(), f);
  const bool err = std::ferror(f) != 0;
  std::fclose(f);
  if (err || got != out->size()) {
    *error = err ? "read error" : "file shrank while being read";
    return OpenResult::Error;
  }
  return OpenResult::Ok;
}

std::FILE* fopen_utf8(const std::string& path, const char* mode) {
#ifdef _WIN32
  return _wfopen(widen(path).c_str(), widen(mode).c_str());
#else
  return std::fopen(path.c_str(), mode);
#endif
}

int flush_to_disk(std::FILE* f) {
  if (std::fflush(f) != 0) return errno ? errno : EIO;
#ifdef _WIN32
  HANDLE h = reinterpret_cast<HANDLE>(_get_osfhandle(_fileno(f)));
  if (h == INVALID_HANDLE_VALUE || !FlushFileBuffers(h)) return EIO;
  return 0;
#else
  if (::fsync(::fileno(f)) != 0 && errno != EINVAL && errno != EROFS) return errno;
  return 0;
#endif
}

int replace_file(const std::string& from, const std::string& to) {
#ifdef _WIN32
  if (MoveFileExW(widen(from).c_str(), widen(to).c_str(), MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH)) return 0;
  return errno_of(GetLastError());
#else
  return std::rename(from.c_str(), to.c_str()) == 0 ? 0 : errno;
#endif
}

void remove_file(const std::string& path) {
#ifdef _WIN32
  DeleteFileW(widen(path).c_str());
#else
  std::remove(path.c_str());
#endif
}

bool same_file(const std::string& a, const std::string& b) {
#ifdef _WIN32
  HANDLE ha = open_existing(a);
  if (ha == INVALID_HANDLE_VALUE) return false;
  HANDLE hb = open_existing(b);
  if (hb == INVALID_HANDLE_VALUE) {
    CloseHandle(ha);
    return false;
  }
  BY_HANDLE_FILE_INFORMATION ia{}, ib{};
  const bool ok = GetFileInformationByHandle(ha, &ia) && GetFileInformationByHandle(hb, &ib);
  CloseHandle(ha);
  CloseHandle(hb);
  return ok && ia.dwVolumeSerialNumber == ib.dwVolumeSerialNumber && ia.nFileIndexHigh == ib.nFileIndexHigh &&
         ia.nFileIndexLow == ib.nFileIndexLow;
#else
  struct stat sa {
  }, sb{};
  if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
#endif
}

int64_t file_size(const std::string& path) {
#ifdef _WIN32
  WIN32_FILE_ATTRIBUTE_DATA d{};
  if (!GetFileAttributesExW(widen(path).c_str(), GetFileExInfoStandard, &d)) return -1;
  if (d.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) return -1;
  return static_cast<int64_t>((static_cast<uint64_t>(d.nFileSizeHigh) << 32) | d.nFileSizeLow);
#else
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return -1;
  return static_cast<int64_t>(st.st_size);
#endif
}

bool is_directory(const std::string& path) {
  if (path.find('\0') != std::string::npos) return false;
#ifdef _WIN32
  const DWORD a = GetFileAttributesW(widen(path).c_str());
  return a != INVALID_FILE_ATTRIBUTES && (a & FILE_ATTRIBUTE_DIRECTORY);
#else
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
#endif
}

long process_id() {
#ifdef _WIN32
  return static_cast<long>(GetCurrentProcessId());
#else
  return static_cast<long>(::getpid());
#endif
}

std::string error_text(int err) { return std::strerror(err); }

}  // namespace llmserve::os
