// Chrome/Perfetto JSON trace writer (see header).
#include "gyre/obs/trace.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>

#include "gyre/core/error.h"

namespace gyre::obs {

namespace {

double steady_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

std::atomic<TraceWriter*> g_writer{nullptr};
std::atomic<int64_t> g_next_tid{1};

}  // namespace

TraceWriter::TraceWriter(size_t max_events)
    : origin_s_(steady_seconds()), pid_(int64_t(getpid())), max_events_(max_events) {}

double TraceWriter::now_us() const { return (steady_seconds() - origin_s_) * 1e6; }

int64_t TraceWriter::current_tid() {
  thread_local int64_t tid = g_next_tid.fetch_add(1);
  return tid;
}

TraceWriter* TraceWriter::global() { return g_writer.load(std::memory_order_acquire); }
void TraceWriter::set_global(TraceWriter* writer) {
  g_writer.store(writer, std::memory_order_release);
}

void TraceWriter::push(Event e) {
  std::lock_guard<std::mutex> lock(mu_);
  if (events_.size() >= max_events_) {
    ++dropped_;
    return;
  }
  events_.push_back(std::move(e));
}

void TraceWriter::complete(std::string_view name, double ts_us, double dur_us,
                           std::string_view category, nlohmann::json args) {
  push({std::string(name), std::string(category), 'X', ts_us, dur_us < 0 ? 0 : dur_us,
        current_tid(), std::move(args)});
}

void TraceWriter::instant(std::string_view name, std::string_view category, nlohmann::json args) {
  push(
      {std::string(name), std::string(category), 'i', now_us(), 0, current_tid(), std::move(args)});
}

void TraceWriter::counter(std::string_view name, const nlohmann::json& values) {
  if (!values.is_object())
    GYRE_THROW(invalid_argument, "trace counter '{}' needs an object of series -> number", name);
  push({std::string(name), "", 'C', now_us(), 0, current_tid(), values});
}

void TraceWriter::set_thread_name(std::string_view name) {
  push({"thread_name", "", 'M', 0, 0, current_tid(), {{"name", std::string(name)}}});
}

size_t TraceWriter::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_.size();
}

size_t TraceWriter::dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

std::string TraceWriter::to_json() const {
  nlohmann::json events = nlohmann::json::array();
  size_t dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    dropped = dropped_;
    for (const auto& e : events_) {
      nlohmann::json j = {{"name", e.name},
                          {"ph", std::string(1, e.ph)},
                          {"ts", e.ts},
                          {"pid", pid_},
                          {"tid", e.tid}};
      if (!e.cat.empty()) j["cat"] = e.cat;
      if (e.ph == 'X') j["dur"] = e.dur;
      if (e.ph == 'i') j["s"] = "t";  // thread-scoped instant
      if (!e.args.is_null()) j["args"] = e.args;
      events.push_back(std::move(j));
    }
  }
  nlohmann::json doc = {{"traceEvents", std::move(events)},
                        {"displayTimeUnit", "ms"},
                        {"otherData", {{"producer", "gyre"}, {"dropped_events", dropped}}}};
  return doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void TraceWriter::save(const std::string& path) const {
  std::string text = to_json();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) GYRE_THROW(io, "cannot open trace file '{}' for writing: {}", path, strerror(errno));
  out << text;
  if (!out) GYRE_THROW(io, "write to trace file '{}' failed", path);
}

TraceSpan::TraceSpan(TraceWriter* writer, std::string name, std::string category)
    : writer_(writer), name_(std::move(name)), category_(std::move(category)) {
  if (writer_) start_us_ = writer_->now_us();
}

TraceSpan::~TraceSpan() {
  if (!writer_) return;
  double end = writer_->now_us();
  try {
    writer_->complete(name_, start_us_, end - start_us_, category_, std::move(args_));
  } catch (...) {
    // A destructor must not throw; a lost span (out of memory) is not worth a crash.
  }
}

void TraceSpan::arg(const std::string& key, nlohmann::json value) {
  if (!writer_) return;
  if (args_.is_null()) args_ = nlohmann::json::object();
  args_[key] = std::move(value);
}

}  // namespace gyre::obs
