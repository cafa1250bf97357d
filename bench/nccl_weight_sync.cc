// NCCL weight sync (issue 8's 2-GPU figure, issue 9's trainer-to-7-engines figure): broadcast of a
// named shape's bf16 weights (default Qwen2.5-1.5B) from the trainer GPU (rank 0) to every other
// GPU (the engines) in buckets (slime's --update-weight-buffer-size, default 512 MiB: parameters
// are packed into a flat bucket, broadcast, unpacked), timed end to end, against the all-reduce bus
// bandwidth measured over the same GPUs in the same run (nccl-tests' convention: busbw = algbw x
// 2(n-1)/n; a broadcast's busbw is its algbw, bytes / seconds). Goal: sync >= 80% of it. One
// process, one thread per GPU (the NCCL id is shared in memory). Prints one JSON line per figure.
// Usage: bench_nccl_weight_sync [--gpus N (default: every visible GPU, >= 2)] [--shape NAME]
//          [--bucket-mib 512] [--iters 5]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gyre/core/error.h"
#include "gyre/dist/nccl_comm.h"
#include "gyre/model/named_shapes.h"
#include "gyre/model/param_names.h"

#ifdef GYRE_HAVE_NCCL
#include <cuda_runtime.h>

#include <chrono>
#include <functional>
#include <thread>

namespace {

using gyre::dist::NcclComm;

// Parameter element counts of the shape, in checkpoint order (model/param_names.h).
std::vector<size_t> shape_params(const std::string& shape) {
  std::vector<size_t> p;
  for (const auto& [name, dims] : gyre::model::expected_tensors(gyre::model::named_shape(shape))) {
    size_t n = 1;
    for (int64_t d : dims) n *= size_t(d);
    p.push_back(n);
  }
  return p;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Result {
  double allreduce_busbw = 0, sync_s = 0, sync_gbps = 0;
  size_t bytes = 0;
};

void rank_main(const std::string& id, int n, int rank, const std::vector<size_t>& params,
               size_t bucket_bytes, int iters, Result* out) {
  auto owned = gyre::dist::nccl_comm_init(id, n, rank, rank, 120, "sync");
  auto& c = static_cast<NcclComm&>(*owned);
  cudaSetDevice(rank);
  cudaStream_t s = static_cast<cudaStream_t>(c.comm_stream());

  // All-reduce bus bandwidth on 1 GiB of f32 (nccl-tests' definition: busbw = algbw * 2(n-1)/n).
  const size_t ar_bytes = size_t(1) << 30;
  void* ar = nullptr;
  cudaMalloc(&ar, ar_bytes);
  cudaMemset(ar, 0, ar_bytes);
  for (int i = 0; i < 2; ++i)
    c.all_reduce_async(ar, ar_bytes / 4, gyre::DType::f32, gyre::dist::ReduceOp::sum);
  c.wait();
  double t0 = now_s();
  for (int i = 0; i < iters; ++i)
    c.all_reduce_async(ar, ar_bytes / 4, gyre::DType::f32, gyre::dist::ReduceOp::sum);
  c.wait();
  const double ar_s = (now_s() - t0) / iters;
  cudaFree(ar);
  out->allreduce_busbw = double(ar_bytes) / ar_s * (2.0 * (n - 1) / n) / 1e9;

  // The weights (bf16) and one bucket buffer on each GPU.
  std::vector<void*> w;
  size_t total = 0;
  for (size_t n : params) {
    void* p = nullptr;
    cudaMalloc(&p, n * 2);
    cudaMemsetAsync(p, rank == 0 ? 0x3c : 0, n * 2, s);
    w.push_back(p);
    total += n * 2;
  }
  void* bucket = nullptr;
  cudaMalloc(&bucket, bucket_bytes);
  cudaStreamSynchronize(s);
  out->bytes = total;

  auto sync_once = [&] {
    size_t i = 0;
    while (i < params.size()) {
      // Pack parameters [i, j) into the bucket (a tensor larger than the bucket goes alone,
      // broadcast in place).
      size_t j = i, used = 0;
      while (j < params.size() && (used + params[j] * 2 <= bucket_bytes || j == i)) {
        used += params[j] * 2;
        ++j;
      }
      if (j == i + 1 && used > bucket_bytes) {
        c.broadcast_async(w[i], used, 0);
      } else {
        size_t off = 0;
        if (rank == 0)
          for (size_t k = i; k < j; ++k) {
            cudaMemcpyAsync(static_cast<char*>(bucket) + off, w[k], params[k] * 2,
                            cudaMemcpyDeviceToDevice, s);
            off += params[k] * 2;
          }
        c.broadcast_async(bucket, used, 0);
        off = 0;
        if (rank != 0)
          for (size_t k = i; k < j; ++k) {
            cudaMemcpyAsync(w[k], static_cast<char*>(bucket) + off, params[k] * 2,
                            cudaMemcpyDeviceToDevice, s);
            off += params[k] * 2;
          }
      }
      i = j;
    }
    c.wait("weight sync");
  };
  sync_once();  // warm-up
  c.barrier();
  t0 = now_s();
  for (int it = 0; it < iters; ++it) sync_once();
  out->sync_s = (now_s() - t0) / iters;
  out->sync_gbps = double(total) / out->sync_s / 1e9;
  // Every engine's copy must equal the trainer's.
  if (rank != 0) {
    std::vector<uint16_t> probe(4);
    cudaMemcpy(probe.data(), w.back(), 8, cudaMemcpyDeviceToHost);
    if (probe[0] != 0x3c3c) {
      std::fprintf(stderr, "weight sync produced wrong bytes on rank %d\n", rank);
      std::exit(1);
    }
  }
  for (void* p : w) cudaFree(p);
  cudaFree(bucket);
}

}  // namespace

int run(int argc, char** argv) {
  size_t bucket_mib = 512;
  int iters = 5, gpus = gyre::dist::cuda_device_count();
  std::string shape = "qwen2.5-1.5b";
  for (int i = 1; i < argc; i += 2) {
    if (i + 1 >= argc)
      GYRE_THROW(invalid_argument, "flag {} needs a value (see bench/nccl_weight_sync.cc)",
                 argv[i]);
    if (!std::strcmp(argv[i], "--bucket-mib"))
      bucket_mib = size_t(std::atol(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--iters"))
      iters = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--gpus"))
      gpus = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--shape"))
      shape = argv[i + 1];
    else
      GYRE_THROW(invalid_argument,
                 "unknown flag {}; flags: --gpus N --shape NAME --bucket-mib M --iters K", argv[i]);
  }
  if (bucket_mib < 1 || iters < 1)
    GYRE_THROW(invalid_argument, "--bucket-mib {} --iters {}: both must be >= 1", bucket_mib,
               iters);
  const std::vector<size_t> params = shape_params(shape);  // an unknown shape lists the known ones
  const int visible = gyre::dist::cuda_device_count();
  if (visible < 2) {
    std::printf("{\"bench\": \"nccl_weight_sync\", \"skipped\": \"needs 2 GPUs, %d visible\"}\n",
                visible);
    return 0;
  }
  if (gpus < 2 || gpus > visible)
    GYRE_THROW(invalid_argument, "--gpus {}: need 2..{} (the visible GPUs)", gpus, visible);
  const std::string id = gyre::dist::nccl_unique_id();
  std::vector<Result> r(static_cast<size_t>(gpus));
  std::vector<std::thread> threads;
  for (int g = 1; g < gpus; ++g)
    threads.emplace_back(rank_main, id, gpus, g, std::cref(params), bucket_mib << 20, iters,
                         &r[size_t(g)]);
  rank_main(id, gpus, 0, params, bucket_mib << 20, iters, &r[0]);
  for (auto& t : threads) t.join();
  std::printf(
      "{\"bench\": \"nccl_allreduce_busbw\", \"gpus\": %d, \"bytes\": %zu, \"busbw_GBps\": "
      "%.1f, \"anchor\": \"the all-reduce bus bandwidth itself (nccl-tests definition)\"}\n",
      gpus, size_t(1) << 30, r[0].allreduce_busbw);
  std::printf(
      "{\"bench\": \"nccl_weight_sync\", \"shape\": \"%s bf16\", \"gpus\": %d, \"engines\": %d, "
      "\"bytes\": %zu, \"bucket_mib\": %zu, \"seconds\": %.4f, \"GBps\": %.1f, "
      "\"anchor_allreduce_busbw_GBps\": %.1f, \"ratio\": %.3f, \"goal_ratio\": 0.8}\n",
      shape.c_str(), gpus, gpus - 1, r[0].bytes, bucket_mib, r[0].sync_s, r[0].sync_gbps,
      r[0].allreduce_busbw, r[0].sync_gbps / r[0].allreduce_busbw);
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const gyre::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}

#else

int main() {
  std::printf("{\"bench\": \"nccl_weight_sync\", \"skipped\": \"built without NCCL\"}\n");
  return 0;
}

#endif
