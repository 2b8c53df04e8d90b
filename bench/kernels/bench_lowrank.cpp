// The batched low-rank (LoRA) update of one projection, as the engine runs it for a decode step of
// many streams: lowrank_apply over `tokens` rows spread round-robin over k adapters of rank r (f16
// or q8_0 factors), 2 threads. The factors rotate over copies (>= 256 MiB in all) so each call
// reads them from DRAM, as a step does; the machine's read bandwidth is measured in the same run.
//
//   llmserve_bench_kernels --lowrank [--ranks 8,64] [--adapters 1,4,16] [--tokens 16]
//                                    [--shapes 2048x2048,5632x2048,2048x5632] [--type f16|q8_0]
//                                    [--threads 2] [--min-time 0.3]
//
// Per configuration: median us per call, factor bytes read per call, and those bytes / time as a
// fraction of the read bandwidth (the bound for a call whose factors come from memory).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "model/lowrank.h"
#include "os/os.h"
#include "quant/gemm.h"
#include "quant/quant.h"
#include "threadpool/thread_pool.h"

using namespace llmserve;

namespace {

struct Adapter {
  std::vector<uint8_t> a, bt;  // Q8_0Gemm: A, B [n_out, r], and their packed copies
  std::vector<uint8_t> a_packed, b_packed;
};

// Factors of rank r stored as `type`: A [r, n_in], Bt [r, n_out] (Q8_0Gemm: B [n_out, r], packed
// unless raw).
Adapter make_adapter(LowRankType type, int64_t r, int64_t n_in, int64_t n_out, uint32_t seed, bool raw) {
  if (type == LowRankType::Q8_0Gemm) {
    Adapter q = make_adapter(LowRankType::Q8_0, n_out, r, 0, seed, raw);  // n_out rows of r: B
    Adapter a = make_adapter(LowRankType::Q8_0, r, n_in, 0, seed + 7777, raw);
    Adapter out;
    out.a = std::move(a.a), out.bt = std::move(q.a);
    if (!raw) {
      out.a_packed.resize(gemm_packed_bytes(GgmlType::Q8_0, n_in, r));
      gemm_pack(GgmlType::Q8_0, out.a.data(), row_size(GgmlType::Q8_0, n_in), n_in, r, out.a_packed.data());
      out.b_packed.resize(gemm_packed_bytes(GgmlType::Q8_0, r, n_out));
      gemm_pack(GgmlType::Q8_0, out.bt.data(), row_size(GgmlType::Q8_0, r), r, n_out, out.b_packed.data());
      out.a.clear(), out.bt.clear();
    }
    return out;
  }
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 0.02f);
  const GgmlType gt = type == LowRankType::Q8_0 ? GgmlType::Q8_0 : GgmlType::F16;
  auto fill = [&](int64_t rows, int64_t n) {
    std::vector<uint8_t> out(row_size(gt, n) * static_cast<size_t>(rows));
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t k = 0; k < rows; ++k) {
      for (auto& e : x) e = g(rng);
      quantize_row(gt, x.data(), out.data() + row_size(gt, n) * static_cast<size_t>(k), n);
    }
    return out;
  };
  Adapter out;
  out.a = fill(r, n_in), out.bt = fill(r, n_out);
  return out;
}

}  // namespace

int run_lowrank_bench(int argc, char** argv) {
  std::vector<int64_t> ranks = {8, 64}, adapters = {1, 4, 16};
  std::vector<std::pair<int64_t, int64_t>> shapes = {{2048, 2048}, {5632, 2048}, {2048, 5632}};
  int64_t tokens = 16;
  int threads = 2;
  LowRankType type = LowRankType::F16;
  bool raw = false;  // q8_0-gemm-raw: Q8_0Gemm factors without packed copies
  double min_time = 0.3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--lowrank") continue;
    const std::string val = i + 1 < argc ? argv[i + 1] : "";
    bool ok = true;
    if (a == "--ranks") {
      ok = bench::parse_counts(val, &ranks);
    } else if (a == "--adapters") {
      ok = bench::parse_counts(val, &adapters);
    } else if (a == "--tokens") {
      tokens = std::atoll(val.c_str());
      ok = tokens > 0;
    } else if (a == "--threads") {
      threads = std::atoi(val.c_str());
      ok = threads > 0;
    } else if (a == "--min-time") {
      min_time = std::atof(val.c_str());
      ok = min_time > 0;
    } else if (a == "--type") {
      ok = val == "f16" || val == "q8_0" || val == "q8_0-gemm" || val == "q8_0-gemm-raw";
      type = val == "q8_0" ? LowRankType::Q8_0 : val == "f16" ? LowRankType::F16 : LowRankType::Q8_0Gemm;
      raw = val == "q8_0-gemm-raw";
    } else if (a == "--shapes") {
      shapes.clear();
      for (auto& s : bench::split_list(val)) {
        int64_t n_out, n_in;
        if (!bench::parse_shape(s, &n_out, &n_in) || n_out % 32 || n_in % 32) ok = false;
        else shapes.push_back({n_out, n_in});
      }
      ok = ok && !shapes.empty();
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr,
                   "usage: llmserve_bench_kernels --lowrank [--ranks 8,64] [--adapters 1,4,16] [--tokens 16] "
                   "[--shapes 2048x2048,...] (multiples of 32) [--type f16|q8_0|q8_0-gemm|q8_0-gemm-raw] [--threads 2] "
                   "[--min-time 0.3]\n");
      return 2;
    }
    ++i;
  }
  ThreadPool pool(threads);
  std::vector<const uint8_t*> huge_a, huge_b;
  const double bw = bench::read_bandwidth_gbs(pool);
  if (bw <= 0) std::printf("(the read-bandwidth probe failed: no share of bandwidth below)\n");
  std::printf("lowrank_apply, %s, %d threads, %s factors, %lld rows; read bandwidth %.1f GB/s\n",
              bench::cpu_name().c_str(), threads,
              type == LowRankType::F16    ? "f16"
              : type == LowRankType::Q8_0 ? "q8_0"
              : raw                       ? "q8_0 gemm (raw rows)"
                                          : "q8_0 gemm",
              static_cast<long long>(tokens), bw);
  std::printf("| n_out x n_in | rank | adapters | us/call | factor MB/call | GB/s | of bandwidth |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  for (auto [n_out, n_in] : shapes) {
    std::vector<float> x(static_cast<size_t>(tokens * n_in)), y(static_cast<size_t>(tokens * n_out), 0.0f);
    std::mt19937 rng(3);
    std::normal_distribution<float> g(0.0f, 1.0f);
    for (auto& e : x) e = g(rng);
    for (int64_t r : ranks)
      for (int64_t k : adapters) {
        if (k > tokens) continue;
        const GgmlType ft = type == LowRankType::F16 ? GgmlType::F16 : GgmlType::Q8_0;
        const size_t per = row_size(ft, n_in) * r + row_size(ft, n_out) * r;
        const size_t call_bytes = per * static_cast<size_t>(k);
        const int copies = static_cast<int>(std::max<size_t>(1, (size_t(256) << 20) / call_bytes));
        std::vector<Adapter> ad;
        for (int c = 0; c < copies * k; ++c)
          ad.push_back(make_adapter(type, r, n_in, n_out, static_cast<uint32_t>(c + 1), raw));
        std::vector<std::vector<int64_t>> rows(static_cast<size_t>(k));
        for (int64_t t = 0; t < tokens; ++t) rows[static_cast<size_t>(t % k)].push_back(t);
        std::vector<LowRankGroup> groups(static_cast<size_t>(k));
        // q8_0-gemm: the packed factors in one 2 MiB-page arena, as LoraAdapter keeps them.
        uint8_t* arena = nullptr;
        if (type == LowRankType::Q8_0Gemm && !raw) {
          size_t total = 0;
          for (auto& A : ad) total += (A.a_packed.size() + 63) / 64 * 64 + (A.b_packed.size() + 63) / 64 * 64;
          const size_t cap = (total + (size_t(2) << 20) - 1) / (size_t(2) << 20) * (size_t(2) << 20);
          arena = static_cast<uint8_t*>(os::aligned_alloc(size_t(2) << 20, cap));
          os::advise_huge_pages(arena, cap);
          size_t off = 0;
          for (auto& A : ad) {
            std::memcpy(arena + off, A.a_packed.data(), A.a_packed.size());
            huge_a.push_back(arena + off);
            off += (A.a_packed.size() + 63) / 64 * 64;
            std::memcpy(arena + off, A.b_packed.data(), A.b_packed.size());
            huge_b.push_back(arena + off);
            off += (A.b_packed.size() + 63) / 64 * 64;
          }
        }
        auto call = [&](int c) {
          for (int64_t i = 0; i < k; ++i) {
            const Adapter& A = ad[static_cast<size_t>(c * k + i)];
            LowRankGroup& G = groups[static_cast<size_t>(i)];
            G.f = {A.a.data(), A.bt.data(), type, r, 0.5f};
            if (type == LowRankType::Q8_0Gemm) {
              G.f.a = raw ? A.a.data() : nullptr, G.f.bt = nullptr, G.f.b = raw ? A.bt.data() : nullptr;
              G.f.a_packed = raw ? nullptr : A.a_packed.data(), G.f.b_packed = raw ? nullptr : A.b_packed.data();
              if (arena)
                G.f.a_packed = huge_a[static_cast<size_t>(c * k + i)],
                G.f.b_packed = huge_b[static_cast<size_t>(c * k + i)];
            }
            G.rows = rows[static_cast<size_t>(i)].data();
            G.n_rows = static_cast<int64_t>(rows[static_cast<size_t>(i)].size());
          }
          lowrank_apply(groups.data(), k, x.data(), n_in, y.data(), n_out, n_out, pool);
        };
        const double ms = bench::median_ms(call, copies, min_time);
        if (arena) os::aligned_free(arena);
        huge_a.clear(), huge_b.clear();
        const double gbs = static_cast<double>(call_bytes) / (ms * 1e6);
        std::printf("| %lldx%lld | %lld | %lld | %.1f | %.2f | %.1f | %.0f%% |\n", static_cast<long long>(n_out),
                    static_cast<long long>(n_in), static_cast<long long>(r), static_cast<long long>(k), ms * 1e3,
                    static_cast<double>(call_bytes) / 1e6, gbs, bw > 0 ? 100.0 * gbs / bw : 0.0);
      }
  }
  return 0;
}
