// Test helper: a small deterministic EngineApi for the HTTP-layer unit tests (the e2e tests use
// the real engine). One thread advances every active request by one token per tick:
//   - with a script: emits script tokens in order, then stops with finish "stop" on token 506
//     (<|im_end|> of tiny_tokenizer.h);
//   - without: token i of a request is (last prompt id + 1 + i) % 256 (printable bytes mostly);
// logprob of output token i is -0.125 * (i + 1). Requests are validated with the real
// infer::validate_request; n > 1, rids, abort, pause, flush and weight versions behave as the
// engine's contract says (types.h), so the server cannot tell the difference in shape.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "gyre/infer/types.h"
#include "gyre/infer/validate.h"
#include "gyre/tokenizer/tokenizer.h"

namespace gyre::test {

class FakeEngine final : public infer::EngineApi {
 public:
  explicit FakeEngine(std::shared_ptr<const tokenizer::Tokenizer> tok = nullptr,
                      double tick_ms = 1.0)
      : tok_(std::move(tok)), tick_(tick_ms) {
    thread_ = std::thread([this] { loop(); });
  }
  ~FakeEngine() override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  std::vector<int32_t> script;  // set before submitting
  std::atomic<int> submitted{0};

  void submit(infer::GenerateRequest req, infer::RequestCallbacks cb) override {
    submitted++;
    infer::RequestLimits lim{512, 512, 512 * 64};
    std::string err = infer::validate_request(req, lim);
    std::string base = req.rid.empty() ? "fake-" + std::to_string(counter_++) : req.rid;
    int n = std::max(1, req.sampling.n);
    std::vector<std::pair<infer::RequestCallbacks, infer::GenerateResult>> rejected;
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (int i = 0; i < n; ++i) {
        auto r = std::make_shared<Active>();
        r->req = req;
        r->req.rid = n == 1 ? base : base + "-" + std::to_string(i);
        r->base = base;
        r->index = i;
        r->cb = cb;
        r->start = now();
        if (tok_)
          r->detok = std::make_unique<tokenizer::IncrementalDetokenizer>(
              tok_, req.sampling.skip_special_tokens);
        if (!err.empty()) {
          infer::GenerateResult res;
          res.rid = r->req.rid;
          res.index = i;
          res.error = err;
          res.finish = {infer::FinishType::abort, {}, {}, err};
          rejected.emplace_back(cb, std::move(res));
          continue;
        }
        active_[r->req.rid] = r;
      }
    }
    for (auto& [c, res] : rejected) c.on_done(std::move(res));
    cv_.notify_all();
  }
  void abort(const std::string& rid) override {
    std::lock_guard<std::mutex> lk(mu_);
    aborted_rids.insert(rid);
    for (auto& [id, r] : active_)
      if (id == rid || r->base == rid) r->abort = true;
  }
  void abort_all() override {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& [id, r] : active_) r->abort = true;
  }
  void pause() override {
    std::lock_guard<std::mutex> lk(mu_);
    paused_ = true;
  }
  void resume() override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      paused_ = false;
    }
    cv_.notify_all();
  }
  bool flush_cache() override {
    std::lock_guard<std::mutex> lk(mu_);
    if (!active_.empty()) return false;
    flushes++;
    return true;
  }
  infer::EngineStats stats() const override {
    std::lock_guard<std::mutex> lk(mu_);
    infer::EngineStats s;
    s.running = int32_t(active_.size());
    s.total_pages = 64;
    s.free_pages = 64 - int64_t(active_.size());
    s.page_size = 512;
    s.weight_version = version_;
    s.paused = paused_;
    return s;
  }
  int64_t update_weights(const std::function<void()>& apply) override {
    std::lock_guard<std::mutex> lk(mu_);
    apply();
    return ++version_;
  }
  int64_t weight_version() const override {
    std::lock_guard<std::mutex> lk(mu_);
    return version_;
  }

  std::set<std::string> aborted_rids;  // guarded by mu_ (read after the fact in tests)
  int flushes = 0;
  size_t active() const {
    std::lock_guard<std::mutex> lk(mu_);
    return active_.size();
  }
  std::set<std::string> aborted() const {
    std::lock_guard<std::mutex> lk(mu_);
    return aborted_rids;
  }

 private:
  struct Active {
    infer::GenerateRequest req;
    std::string base;
    int32_t index = 0;
    infer::RequestCallbacks cb;
    infer::GenerateResult res;
    std::unique_ptr<tokenizer::IncrementalDetokenizer> detok;
    bool abort = false;
    double start = 0;
  };
  static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  void loop() {
    while (true) {
      std::vector<std::function<void()>> calls;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait_for(lk, std::chrono::microseconds(int64_t(tick_ * 1000)));
        if (stop_) {
          for (auto& [id, r] : active_) finish(*r, infer::FinishType::abort, calls, "shutdown");
          active_.clear();
          lk.unlock();
          for (auto& c : calls) c();
          return;
        }
        std::vector<std::string> done;
        for (auto& [id, r] : active_) {
          if (r->abort) {
            finish(*r, infer::FinishType::abort, calls, "aborted by request");
            done.push_back(id);
            continue;
          }
          if (paused_) continue;
          step(*r, calls, done);
        }
        for (auto& id : done) active_.erase(id);
      }
      for (auto& c : calls) c();
    }
  }

  void step(Active& r, std::vector<std::function<void()>>& calls, std::vector<std::string>& done) {
    size_t i = r.res.output_ids.size();
    if (int32_t(i) >= r.req.sampling.max_new_tokens) {
      finish(r, infer::FinishType::length, calls, "");
      done.push_back(r.req.rid);
      return;
    }
    int32_t tok = script.empty() ? (r.req.input_ids.back() + 1 + int32_t(i)) % 256
                                 : (i < script.size() ? script[i] : 506);
    float lp = -0.125f * float(i + 1);
    r.res.output_ids.push_back(tok);
    r.res.output_logprobs.push_back(lp);
    bool stop = !script.empty() && tok == 506 && !r.req.sampling.ignore_eos;
    std::string text;
    if (r.detok && !(stop && !r.req.sampling.no_stop_trim)) text = r.detok->push(tok);
    r.res.text += text;
    if (r.req.stream && r.cb.on_chunk) {
      infer::TokenChunk c;
      c.rid = r.req.rid;
      c.output_ids = {tok};
      c.output_logprobs = {lp};
      c.text = text;
      auto cb = r.cb.on_chunk;
      calls.push_back([cb, c] { cb(c); });
    }
    if (stop) {
      r.res.finish.matched_token = 506;
      finish(r, infer::FinishType::stop, calls, "");
      done.push_back(r.req.rid);
    }
  }

  void finish(Active& r, infer::FinishType t, std::vector<std::function<void()>>& calls,
              const std::string& msg) {
    r.res.rid = r.req.rid;
    r.res.index = r.index;
    r.res.finish.type = t;
    r.res.finish.message = msg;
    r.res.prompt_tokens = int32_t(r.req.input_ids.size());
    r.res.completion_tokens = int32_t(r.res.output_ids.size());
    r.res.weight_version = version_;
    r.res.e2e_latency = now() - r.start;
    auto cb = r.cb.on_done;
    auto res = std::make_shared<infer::GenerateResult>(std::move(r.res));
    calls.push_back([cb, res] { cb(std::move(*res)); });
  }

  std::shared_ptr<const tokenizer::Tokenizer> tok_;
  double tick_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::shared_ptr<Active>> active_;
  bool paused_ = false, stop_ = false;
  int64_t version_ = 0;
  std::atomic<int64_t> counter_{0};
  std::thread thread_;
};

}  // namespace gyre::test
