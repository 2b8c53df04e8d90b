// Facts about the machine, for sizing decisions and benchmarks: readBandwidth({threads, megabytes})
// resolves with the measured read bandwidth in GB/s (machine/bandwidth.h), off the JS thread.
#include <memory>

#include "errors.h"
#include "machine/bandwidth.h"
#include "threadpool/thread_pool.h"
#include "wrap_common.h"

namespace llmserve::napi {
namespace {

class BandwidthWorker : public StatusWorker<Napi::AsyncWorker> {
 public:
  BandwidthWorker(Napi::Env env, int threads, size_t bytes)
      : StatusWorker(env), deferred_(Napi::Promise::Deferred::New(env)), threads_(threads), bytes_(bytes) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    // A pool of its own: the probe must not share threads with a model's engine.
    ThreadPool pool(threads_);
    Status s = measure_read_bandwidth(pool, bytes_, 5, &gbs_);
    if (!s) fail(s);
  }
  void OnOK() override {
    settle(Code::Internal, "readBandwidth", [&] { deferred_.Resolve(Napi::Number::New(Env(), gbs_)); });
  }
  void reject(Napi::Value err) override { deferred_.Reject(err); }

 private:
  Napi::Promise::Deferred deferred_;
  int threads_;
  size_t bytes_;
  double gbs_ = 0;
};

Napi::Value ReadBandwidth(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject())
    throw_invalid(env, false, "Expected an options object { threads, megabytes } for readBandwidth");
  Napi::Object o = info[0].As<Napi::Object>();
  const int threads = get_number<int, limits::kBandwidthThreads>(o);
  const size_t megabytes = get_number<size_t, limits::kBandwidthMegabytes>(o);
  static_assert(sizeof(size_t) >= 8, "megabytes << 20 must not wrap");
  auto* w = new BandwidthWorker(env, threads, megabytes << 20);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

}  // namespace

void init_machine(Napi::Env env, Napi::Object exports) {
  exports.Set("readBandwidth", Napi::Function::New(env, ReadBandwidth));
}

}  // namespace llmserve::napi
