// native/core/os on this machine (POSIX): mappings, small reads, atomic replace, file identity,
// aligned memory. The Windows branches are compiled by scripts/check-windows.mjs, not run.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "os/os.h"
#include "testing.h"

using namespace llmserve;

namespace {

std::string tmp_path(const std::string& name) {
  return "/tmp/llmserve_test_os_" + std::to_string(static_cast<long>(::getpid())) + "_" + name;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  CHECK(f != nullptr);
  if (!f) return;
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

std::string read_all(const std::string& path) {
  std::string out, err;
  CHECK(os::read_small_file(path, 1 << 20, &out, &err) == os::OpenResult::Ok);
  return out;
}

}  // namespace

TEST(os_mapped_file_maps_the_bytes_and_reports_each_failure) {
  const std::string p = tmp_path("map.bin");
  write_file(p, "hello mapping");
  os::MappedFile m;
  std::string err;
  CHECK(os::MappedFile::open(p, &m, &err) == os::OpenResult::Ok);
  CHECK_EQ(m.size(), size_t(13));
  CHECK(m.mapped() && std::string(reinterpret_cast<const char*>(m.data()), m.size()) == "hello mapping");
  m.release(m.data(), m.size());       // inside the mapping: allowed (no whole page here: a no-op)
  m.release(m.data() + 4096 * 16, 8);  // outside: ignored, never touches foreign memory
  CHECK(std::string(reinterpret_cast<const char*>(m.data()), 5) == "hello");

  os::MappedFile moved(std::move(m));
  CHECK(!m.mapped() && moved.mapped() && moved.size() == 13);

  CHECK(os::MappedFile::open(tmp_path("missing.bin"), &m, &err) == os::OpenResult::NotFound);
  CHECK(!err.empty());
  CHECK(os::MappedFile::open("/tmp", &m, &err) == os::OpenResult::NotRegular);

  const std::string empty = tmp_path("empty.bin");
  write_file(empty, "");
  CHECK(os::MappedFile::open(empty, &m, &err) == os::OpenResult::Ok);
  CHECK(!m.mapped() && m.size() == 0);
  std::remove(p.c_str());
  std::remove(empty.c_str());
}

TEST(os_read_small_file_limits_and_kinds) {
  const std::string p = tmp_path("small.txt");
  write_file(p, std::string(100, 'x'));
  std::string out, err;
  CHECK(os::read_small_file(p, 100, &out, &err) == os::OpenResult::Ok);
  CHECK_EQ(out.size(), size_t(100));
  CHECK(os::read_small_file(p, 99, &out, &err) == os::OpenResult::TooLarge);
  CHECK(os::read_small_file("/tmp", 1000, &out, &err) == os::OpenResult::NotRegular);
  CHECK(os::read_small_file(tmp_path("none.txt"), 1000, &out, &err) == os::OpenResult::NotFound);
  CHECK_EQ(os::file_size(p), int64_t(100));
  CHECK_EQ(os::file_size("/tmp"), int64_t(-1));
  CHECK(os::is_directory("/tmp") && !os::is_directory(p) && !os::is_directory(std::string("/tmp\0x", 6)));
  std::remove(p.c_str());
}

TEST(os_replace_file_overwrites_in_one_step) {
  const std::string a = tmp_path("a.txt"), b = tmp_path("b.txt");
  write_file(a, "new");
  write_file(b, "old contents");
  CHECK_EQ(os::replace_file(a, b), 0);
  CHECK(read_all(b) == "new");
  CHECK_EQ(os::file_size(a), int64_t(-1));
  CHECK(os::replace_file(tmp_path("none"), b) != 0);  // errno-style failure, target untouched
  CHECK(read_all(b) == "new");
  os::remove_file(b);
  CHECK_EQ(os::file_size(b), int64_t(-1));
}

TEST(os_same_file_sees_links_and_tells_files_apart) {
  const std::string a = tmp_path("same_a"), b = tmp_path("same_b"), hard = tmp_path("same_hard"),
                    sym = tmp_path("same_sym");
  write_file(a, "1");
  write_file(b, "1");
  CHECK(::link(a.c_str(), hard.c_str()) == 0);
  CHECK(::symlink(a.c_str(), sym.c_str()) == 0);
  CHECK(os::same_file(a, a));
  CHECK(os::same_file(a, hard));
  CHECK(os::same_file(a, sym));
  CHECK(!os::same_file(a, b));  // equal bytes, different files
  CHECK(!os::same_file(a, tmp_path("same_missing")));
  for (const auto& p : {a, b, hard, sym}) std::remove(p.c_str());
}

TEST(os_flush_to_disk_and_fopen_utf8) {
  const std::string p = tmp_path("caf\xc3\xa9.bin");  // UTF-8 name
  std::FILE* f = os::fopen_utf8(p, "wb");
  CHECK(f != nullptr);
  if (!f) return;
  std::fputs("durable", f);
  CHECK_EQ(os::flush_to_disk(f), 0);
  std::fclose(f);
  CHECK(read_all(p) == "durable");
  std::remove(p.c_str());
}

TEST(os_aligned_alloc_honours_alignment) {
  for (size_t align : {size_t(64), size_t(4096), size_t(2) << 20}) {
    for (size_t bytes : {size_t(0), size_t(1), align + 1, 3 * align}) {
      void* p = os::aligned_alloc(align, bytes);
      CHECK(p != nullptr);
      CHECK_EQ(reinterpret_cast<uintptr_t>(p) % align, uintptr_t(0));
      os::aligned_free(p);
    }
  }
  CHECK(os::page_size() >= 4096 && (os::page_size() & (os::page_size() - 1)) == 0);
  CHECK(os::process_id() == static_cast<long>(::getpid()));
}
