// NCCL weight sync on 2 GPUs (issue 8's numbers): broadcast of a Qwen2.5-1.5B-shaped set of bf16
// weights from the trainer GPU to the engine GPU in buckets (slime's --update-weight-buffer-size,
// default 512 MiB: parameters are packed into a flat bucket, broadcast, unpacked), timed end to
// end, against the all-reduce bus bandwidth measured in the same run (goal: sync >= 80% of it).
// One process, one thread per GPU (the NCCL id is shared in memory). Prints one JSON line per
// figure. Usage: bench_nccl_weight_sync [--bucket-mib 512] [--iters 5]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gyre/dist/nccl_comm.h"

#ifdef GYRE_HAVE_NCCL
#include <cuda_runtime.h>

#include <chrono>
#include <thread>

namespace {

using gyre::dist::NcclComm;

// Parameter element counts of Qwen2.5-1.5B (hidden 1536, 28 layers, intermediate 8960, 12 query
// heads and 2 kv heads of 128, vocab 151936, tied embeddings, q/k/v biases).
std::vector<size_t> qwen25_15b_params() {
  const size_t h = 1536, inter = 8960, kv = 256, vocab = 151936;
  std::vector<size_t> p = {vocab * h, h};  // embed_tokens, final norm
  for (int l = 0; l < 28; ++l) {
    for (size_t n :
         {h * h, h, kv * h, kv, kv * h, kv, h * h, inter * h, inter * h, h * inter, h, h})
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

void rank_main(const std::string& id, int rank, size_t bucket_bytes, int iters, Result* out) {
  auto owned = gyre::dist::nccl_comm_init(id, 2, rank, rank, 120, "sync");
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
  out->allreduce_busbw = double(ar_bytes) / ar_s * (2.0 * (2 - 1) / 2) / 1e9;

  // The weights (bf16) and one bucket buffer on each GPU.
  std::vector<size_t> params = qwen25_15b_params();
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
        if (rank == 1)
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
  // The engine's copy must equal the trainer's.
  if (rank == 1) {
    std::vector<uint16_t> probe(4);
    cudaMemcpy(probe.data(), w.back(), 8, cudaMemcpyDeviceToHost);
    if (probe[0] != 0x3c3c) {
      std::fprintf(stderr, "weight sync produced wrong bytes\n");
      std::exit(1);
    }
  }
  for (void* p : w) cudaFree(p);
  cudaFree(bucket);
}

}  // namespace

int main(int argc, char** argv) {
  size_t bucket_mib = 512;
  int iters = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--bucket-mib"))
      bucket_mib = size_t(std::atol(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--iters"))
      iters = std::atoi(argv[i + 1]);
  }
  if (gyre::dist::cuda_device_count() < 2) {
    std::printf("{\"bench\": \"nccl_weight_sync\", \"skipped\": \"needs 2 GPUs, %d visible\"}\n",
                gyre::dist::cuda_device_count());
    return 0;
  }
  const std::string id = gyre::dist::nccl_unique_id();
  Result r[2];
  std::thread t1(rank_main, id, 1, bucket_mib << 20, iters, &r[1]);
  rank_main(id, 0, bucket_mib << 20, iters, &r[0]);
  t1.join();
  std::printf(
      "{\"bench\": \"nccl_allreduce_busbw\", \"bytes\": %zu, \"busbw_GBps\": %.1f, \"anchor\": "
      "\"the all-reduce bus bandwidth itself (nccl-tests definition)\"}\n",
      size_t(1) << 30, r[0].allreduce_busbw);
  std::printf(
      "{\"bench\": \"nccl_weight_sync\", \"shape\": \"qwen2.5-1.5b bf16\", \"bytes\": %zu, "
      "\"bucket_mib\": %zu, \"seconds\": %.4f, \"GBps\": %.1f, \"anchor_allreduce_busbw_GBps\": "
      "%.1f, \"ratio\": %.3f, \"goal_ratio\": 0.8}\n",
      r[0].bytes, bucket_mib, r[0].sync_s, r[0].sync_gbps, r[0].allreduce_busbw,
      r[0].sync_gbps / r[0].allreduce_busbw);
  return 0;
}

#else

int main() {
  std::printf("{\"bench\": \"nccl_weight_sync\", \"skipped\": \"built without NCCL\"}\n");
  return 0;
}

#endif
