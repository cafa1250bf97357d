// A GPU timeline recorder for any CUDA program, loaded with LD_PRELOAD: every kernel, memcpy and
// memset with its device start / end (CUPTI's activity API), and every CUDA runtime / driver call
// with its host start / end, written as CSV to $GYRE_CUPTI_TRACE. bench/cupti_timeline.py turns it
// into the numbers that ncu cannot give: how long the GPU sat idle inside a training step, where
// (between which kernels), and what the host was doing meanwhile (a synchronisation, a slow
// library call). ncu times each kernel alone; nsys is not usable on the device machines
// (/work/.library/device/KINDS.md), so this is the project's timeline tool.
//
// Usage (device machine): GYRE_CUPTI_TRACE=/path/trace.csv LD_PRELOAD=libgyre_cupti_trace.so
// PROGRAM ARGS..., with libcupti.so.13 on LD_LIBRARY_PATH (the nvidia-cuda-cupti wheel has it).
// Tracing costs ~1 us of host time per API call; kernel start / end are GPU timestamps, unaffected.
//
// CSV columns: kind,start_ns,end_ns,stream,correlation,name — kind is kernel | memcpy | memset |
// runtime | driver; the times of every kind are on CUPTI's one clock (cuptiGetTimestamp), so host
// API intervals and GPU intervals compare directly; name is the mangled kernel name, the memcpy
// kind and bytes, the memset bytes, or the API function's name.
#include <cupti.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace {

constexpr size_t kBufferBytes = 16u << 20;
constexpr size_t kAlign = 8;

FILE* g_out = nullptr;
std::mutex g_mu;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  void* p = nullptr;
  if (posix_memalign(&p, kAlign, kBufferBytes) != 0) p = nullptr;
  *buffer = static_cast<uint8_t*>(p);
  *size = p ? kBufferBytes : 0;
  *max_records = 0;  // as many as fit
}

const char* memcpy_kind(uint8_t k) {
  switch (k) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return "HtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return "DtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return "DtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_PTOP: return "PtoP";
    default: return "other";
  }
}

void write_api(const CUpti_ActivityAPI* a, CUpti_CallbackDomain domain, const char* kind) {
  const char* name = nullptr;
  if (cuptiGetCallbackName(domain, a->cbid, &name) != CUPTI_SUCCESS || !name) name = "?";
  std::fprintf(g_out, "%s,%llu,%llu,,%u,%s\n", kind, (unsigned long long)a->start,
               (unsigned long long)a->end, a->correlationId, name);
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  std::lock_guard<std::mutex> lock(g_mu);
  CUpti_Activity* r = nullptr;
  while (g_out && cuptiActivityGetNextRecord(buffer, valid, &r) == CUPTI_SUCCESS) {
    switch (r->kind) {
      case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL:
      case CUPTI_ACTIVITY_KIND_KERNEL: {
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(r);
        std::fprintf(g_out, "kernel,%llu,%llu,%u,%u,%s\n", (unsigned long long)k->start,
                     (unsigned long long)k->end, k->streamId, k->correlationId,
                     k->name ? k->name : "?");
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(r);
        std::fprintf(g_out, "memcpy,%llu,%llu,%u,%u,%s %llu\n", (unsigned long long)m->start,
                     (unsigned long long)m->end, m->streamId, m->correlationId,
                     memcpy_kind(m->copyKind), (unsigned long long)m->bytes);
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMSET: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(r);
        std::fprintf(g_out, "memset,%llu,%llu,%u,%u,memset %llu\n", (unsigned long long)m->start,
                     (unsigned long long)m->end, m->streamId, m->correlationId,
                     (unsigned long long)m->bytes);
        break;
      }
      case CUPTI_ACTIVITY_KIND_RUNTIME:
        write_api(reinterpret_cast<const CUpti_ActivityAPI*>(r), CUPTI_CB_DOMAIN_RUNTIME_API,
                  "runtime");
        break;
      case CUPTI_ACTIVITY_KIND_DRIVER:
        write_api(reinterpret_cast<const CUpti_ActivityAPI*>(r), CUPTI_CB_DOMAIN_DRIVER_API,
                  "driver");
        break;
      default: break;
    }
  }
  size_t dropped = 0;
  if (cuptiActivityGetNumDroppedRecords(nullptr, 0, &dropped) == CUPTI_SUCCESS && dropped)
    std::fprintf(stderr, "[cupti_trace] %zu records dropped\n", dropped);
  std::free(buffer);
}

bool check(CUptiResult r, const char* what) {
  if (r == CUPTI_SUCCESS) return true;
  const char* msg = nullptr;
  cuptiGetResultString(r, &msg);
  std::fprintf(stderr, "[cupti_trace] %s failed: %s — no trace\n", what, msg ? msg : "?");
  return false;
}

void finish() {
  cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_out) std::fclose(g_out);
  g_out = nullptr;
}

__attribute__((constructor)) void start() {
  const char* path = std::getenv("GYRE_CUPTI_TRACE");
  if (!path || !*path) return;
  g_out = std::fopen(path, "w");
  if (!g_out) {
    std::fprintf(stderr, "[cupti_trace] cannot write %s: %s — no trace\n", path,
                 std::strerror(errno));
    return;
  }
  std::fprintf(g_out, "kind,start_ns,end_ns,stream,correlation,name\n");
  if (!check(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed),
             "cuptiActivityRegisterCallbacks"))
    return;
  const CUpti_ActivityKind kinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL,
                                      CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_MEMSET,
                                      CUPTI_ACTIVITY_KIND_RUNTIME, CUPTI_ACTIVITY_KIND_DRIVER};
  for (CUpti_ActivityKind k : kinds)
    if (!check(cuptiActivityEnable(k), "cuptiActivityEnable")) return;
  // Completed buffers are handed over every 200 ms, so a program that exits without running
  // atexit handlers (or after the CUDA context is gone) still leaves most of its trace.
  cuptiActivityFlushPeriod(200);
  std::atexit(finish);
}

}  // namespace
