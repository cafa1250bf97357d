// Chrome / Perfetto trace writer (the JSON "Trace Event Format": load the file in
// ui.perfetto.dev or chrome://tracing). Spans are complete events {"ph":"X", name, cat, ts, dur,
// pid, tid, args} with microsecond timestamps relative to the writer's creation; instant ("i") and
// counter ("C") events mark points and series; thread names are metadata ("M") events.
//
// Invariants: thread-safe (a mutex around the event list); a thread keeps one small tid for the
// life of the process; at most `max_events` are kept (later ones are counted in dropped()) so a
// forgotten trace cannot eat the host's memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace gyre::obs {

class TraceWriter {
 public:
  explicit TraceWriter(size_t max_events = 4'000'000);

  // Microseconds since this writer was created (steady clock).
  double now_us() const;
  void complete(std::string_view name, double ts_us, double dur_us, std::string_view category = {},
                nlohmann::json args = nullptr);
  void instant(std::string_view name, std::string_view category = {},
               nlohmann::json args = nullptr);
  // A counter track: each key of `values` (numbers) is one series.
  void counter(std::string_view name, const nlohmann::json& values);
  // Names the calling thread in the viewer.
  void set_thread_name(std::string_view name);

  size_t size() const;
  size_t dropped() const;
  // {"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}
  std::string to_json() const;
  void save(const std::string& path) const;

  // Process-wide writer used by GYRE_TRACE_SPAN; null (tracing off) unless set.
  static TraceWriter* global();
  static void set_global(TraceWriter* writer);
  // Small sequential id of the calling thread (1, 2, ...), stable for the process.
  static int64_t current_tid();

 private:
  struct Event {
    std::string name, cat;
    char ph;
    double ts, dur;
    int64_t tid;
    nlohmann::json args;
  };
  void push(Event e);

  double origin_s_;
  int64_t pid_;
  size_t max_events_;
  mutable std::mutex mu_;
  std::deque<Event> events_;  // a deque: growth never moves the recorded events
  size_t dropped_ = 0;
};

// RAII span: records a complete event from construction to destruction. A null writer makes it a
// no-op, so call sites need no `if (tracing)`.
class TraceSpan {
 public:
  TraceSpan(TraceWriter* writer, std::string name, std::string category = {});
  ~TraceSpan();
  TraceSpan(const TraceSpan&) = delete;
  TraceSpan& operator=(const TraceSpan&) = delete;
  // Attached to the event when the span closes (e.g. token counts).
  void arg(const std::string& key, nlohmann::json value);

 private:
  TraceWriter* writer_;
  std::string name_, category_;
  double start_us_ = 0;
  nlohmann::json args_;
};

}  // namespace gyre::obs

#define GYRE_TRACE_CONCAT_(a, b) a##b
#define GYRE_TRACE_CONCAT(a, b) GYRE_TRACE_CONCAT_(a, b)
// A span over the rest of the enclosing scope, on the global writer (no-op when tracing is off).
#define GYRE_TRACE_SPAN(...)                                            \
  ::gyre::obs::TraceSpan GYRE_TRACE_CONCAT(gyre_trace_span_, __LINE__)( \
      ::gyre::obs::TraceWriter::global(), __VA_ARGS__)
