// libFuzzer target for the safetensors reader: arbitrary bytes are written to a file and opened.
// Invariants checked: malformed input only ever raises gyre::Error (never a crash, sanitizer report
// or out-of-bounds view), and whatever opens round-trips bit-exactly through the writer.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "gyre/core/error.h"
#include "gyre/model/safetensors.h"

namespace {

std::string scratch_path(const char* tag) {
  return std::string("/tmp/gyre_fuzz_st_") + std::to_string(::getpid()) + tag + ".safetensors";
}

void write_bytes(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string in = scratch_path("_in"), out = scratch_path("_out");
  write_bytes(in, data, size);
  try {
    auto r = gyre::model::SafetensorsReader::open(in);
    std::map<std::string, gyre::Tensor> tensors;
    size_t total = 0;
    for (const auto& name : r.names()) {
      gyre::Tensor t = r.get(name);
      // Touch every byte of the view: an out-of-bounds view faults or trips ASan here.
      uint8_t acc = 0;
      const auto* p = static_cast<const uint8_t*>(t.raw());
      for (size_t i = 0; i < t.nbytes(); ++i) acc ^= p[i];
      (void)acc;
      total += t.nbytes();
      tensors.emplace(name, t);
    }
    if (total <= (1u << 20)) {
      gyre::model::write_safetensors(out, tensors, r.metadata());
      auto back = gyre::model::SafetensorsReader::open(out);
      if (back.names() != r.names() || back.metadata() != r.metadata()) std::abort();
      for (const auto& name : r.names()) {
        gyre::Tensor a = r.get(name), b = back.get(name);
        if (a.dtype() != b.dtype() || a.shape() != b.shape()) std::abort();
        if (a.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) != 0) std::abort();
      }
    }
  } catch (const gyre::Error&) {
    // Rejected input: the expected outcome for almost everything the fuzzer makes.
  }
  return 0;
}
