// StepTimers (see header).
#include "gyre/obs/step_timer.h"

#include "gyre/core/error.h"
#include "gyre/core/timer.h"

namespace gyre::obs {

StepTimers::Scope::Scope(StepTimers* owner, std::string name)
    : owner_(owner), name_(std::move(name)), start_s_(now_seconds()) {
  if (owner_->trace_) start_us_ = owner_->trace_->now_us();
}

StepTimers::Scope::Scope(Scope&& other) noexcept
    : owner_(other.owner_),
      name_(std::move(other.name_)),
      start_s_(other.start_s_),
      start_us_(other.start_us_) {
  other.owner_ = nullptr;
}

StepTimers::Scope::~Scope() {
  try {
    stop();
  } catch (...) {
    // Destructors must not throw; a lost timing is not worth a crash.
  }
}

double StepTimers::Scope::stop() {
  if (!owner_) return 0;
  double s = now_seconds() - start_s_;
  owner_->add(name_, s);
  if (owner_->trace_)
    owner_->trace_->complete(name_, start_us_, owner_->trace_->now_us() - start_us_, "phase");
  owner_ = nullptr;
  return s;
}

void StepTimers::add(const std::string& name, double seconds) {
  if (name.empty()) GYRE_THROW(invalid_argument, "step timer phase name is empty");
  std::lock_guard<std::mutex> lock(mu_);
  totals_[name] += seconds;
}

double StepTimers::seconds(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = totals_.find(name);
  return it == totals_.end() ? 0.0 : it->second;
}

Metrics StepTimers::metrics(const std::string& prefix) const {
  std::lock_guard<std::mutex> lock(mu_);
  Metrics m;
  for (const auto& [k, v] : totals_) m[prefix + k + "_time"] = v;
  return m;
}

Metrics StepTimers::take(const std::string& prefix) {
  std::lock_guard<std::mutex> lock(mu_);
  Metrics m;
  for (const auto& [k, v] : totals_) m[prefix + k + "_time"] = v;
  totals_.clear();
  return m;
}

void StepTimers::reset() {
  std::lock_guard<std::mutex> lock(mu_);
  totals_.clear();
}

}  // namespace gyre::obs
