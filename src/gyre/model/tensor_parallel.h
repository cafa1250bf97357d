// Megatron-style tensor parallelism (Shoeybi et al., "Megatron-LM: Training Multi-Billion Parameter
// Language Models Using Model Parallelism", 2019, §3) for CausalLM on the CPU and CUDA backends.
//
// What each of the tp ranks holds (rank r of n; every split is into n equal contiguous blocks):
// - column-parallel q/k/v/gate/up projections: rows [r*N/n, (r+1)*N/n) of the output dimension
//   (and of their biases); so rank r runs heads [r*Hq/n, ...) and kv heads [r*Hkv/n, ...) and
//   intermediate columns [r*I/n, ...) — attention and the SwiGLU need no communication;
// - row-parallel o_proj / down_proj: the matching input columns; the partial outputs are summed
//   with one all-reduce and the (replicated) bias is added once (by tp rank 0, into its partial);
// - vocab-parallel embedding and lm_head: vocabulary rows [r*V/n, (r+1)*V/n); ids outside the local
//   range embed to 0 rows and the embedding output is all-reduced; forward() returns the local
//   logits [R, V/n] (ForwardOptions::gather_vocab all-gathers them to [R, V]);
// - everything else (RMSNorm weights, q/k norms, the o_proj / down_proj biases) is replicated and
//   gets identical gradients on every rank.
// The conjugate operators of Megatron's Fig. 3: "f" (identity forward, all-reduce backward) at the
// input of every column-parallel block — the all-reduce of d(xn) after the q/k/v, gate/up and
// lm_head backward — and "g" (all-reduce forward, identity backward) at the output of every
// row-parallel block (o_proj, down_proj, the embedding).
//
// Parameters keep their checkpoint names with local shapes; gather_full() reassembles full tensors
// (checkpoints are always written full, so a TP=n checkpoint loads in one process).
//
// Devices: the model is sharded on the host (CausalLM::load with LoadOptions::tp), then moved. On a
// GPU the activations' all-reduces run on device buffers when the TpComm moves them (NCCL), else
// they are staged through host memory (MPI); the vocab-parallel log-prob all-gathers only [T, 4]
// softmax statistics; tp_gather_vocab (sampling) all-gathers [n, R, V/n] on the device and
// interleaves the columns there when the TpComm moves device buffers (NCCL), else through the host
// (MPI) — bitwise the same logits. With an NCCL group the rollout engine's decode forward is
// device work only (the vocab-parallel embedding reads the ids on the device), so it is captured
// in CUDA graphs (infer/decode_graph.h).
// Limits: vocab, heads and intermediate sizes must divide by n (an Error names the numbers); MoE
// layers are rejected (experts are not sharded yet).
//
// The model module sits below dist/ in the layering, so the collectives come through the small
// TpComm interface; dist::make_tp_comm (dist/tensor_parallel_comm.h) adapts a dist::Comm.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "gyre/core/tensor.h"
#include "gyre/model/config.h"

namespace gyre::model {

// The collectives tensor parallelism needs (every rank calls them in the same order). Buffers are
// host memory, or memory of buffer_device() (an NCCL group also takes host buffers, staged).
class TpComm {
 public:
  virtual ~TpComm() = default;
  virtual Device buffer_device() const { return Device::cpu; }
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual void all_reduce_sum(float* buf, size_t count) = 0;
  // The same for a buffer of buffer_device() that only later GPU work reads (activations): on
  // an NCCL group the call is stream-ordered (no host wait; NcclComm::all_reduce_ordered), so the
  // host keeps queueing kernels. Default: the blocking all_reduce_sum.
  virtual void all_reduce_sum_ordered(float* device_buf, size_t count) {
    all_reduce_sum(device_buf, count);
  }
  virtual void all_reduce_max(float* buf, size_t count) = 0;
  virtual void all_reduce_sum(double* buf, size_t count) = 0;
  // Every rank contributes `send_bytes`; `recv` receives size() blocks in rank order.
  virtual void all_gather(const void* send, void* recv, size_t send_bytes) = 0;
  // The same for buffers of buffer_device() that only later GPU work reads (the logits gathered
  // for sampling): stream-ordered on an NCCL group, like all_reduce_sum_ordered. Default: the
  // blocking all_gather.
  virtual void all_gather_ordered(const void* device_send, void* device_recv, size_t send_bytes) {
    all_gather(device_send, device_recv, send_bytes);
  }
  // Whether the *_ordered calls are device work only (no host staging, no host wait), so a CUDA
  // graph can capture them: true for an NCCL group. The TP rollout engine decodes with CUDA
  // graphs only then.
  virtual bool graph_capturable() const { return false; }
  // Called right after replaying a CUDA graph that holds this group's collectives: bounds the
  // replay's completion by the group's timeout (NCCL: its watchdog), since no ordered call saw
  // them run. Default: nothing.
  virtual void watch_replay(const char* /*what*/) {}
};

// How one parameter is split across the tp ranks.
enum class TpSplit { replicated, rows, cols };

// The tensor-parallel layout of one model: the comm, the split of every parameter (canonical
// order) and the per-rank sizes the layers run with.
struct TpLayout {
  TpComm* comm = nullptr;
  int rank = 0, size = 1;
  std::vector<TpSplit> split;  // one per parameter
  ModelConfig local;           // heads / kv heads / intermediate / vocab divided by size
  int64_t vocab_begin = 0, vocab_end = 0;
};

struct NamedTensor;
// This rank's shards of full tensors given in parameters() order (e.g. a checkpoint just read).
std::vector<NamedTensor> shard_like(const TpLayout& tp, const std::vector<NamedTensor>& full);

// All-reduce (sum) of an f32 tensor in place over `comm` (no-op when comm is null).
void tp_all_reduce(TpComm* comm, Tensor& t);
// Vocab-parallel embedding: out[t] = table[ids[t] - begin] when begin <= ids[t] < end, else 0.
void tp_embedding(const Tensor& ids, const Tensor& table, int64_t begin, Tensor& out);
void tp_embedding_backward(const Tensor& ids, const Tensor& dout, int64_t begin, Tensor& dtable);

// Vocab-parallel log-prob and entropy from local logits [T, V/n] without gathering the vocabulary:
// each rank's softmax statistics of its shard (max m, Σ exp(z - m), Σ exp(z - m)(z - m), the
// target's logit where the rank owns it) are all-gathered ([T, 4], 16 bytes a token) and folded
// on every rank in rank order — the same numbers everywhere, NaN kept (a NaN logit makes its row
// NaN as in one process) — into the log-prob and the entropy H = lse - Σ p z (Megatron's
// vocab-parallel cross entropy, §3 of the paper, extended to the entropy). Same contract as
// ops::token_logprobs (targets are full-vocabulary ids; -1 = no target, logp 0).
void tp_token_logprobs(const TpLayout& tp, const Tensor& logits, const Tensor& targets,
                       float temperature, Tensor& logp, Tensor& entropy);
// dlogits of the local shard, as ops::token_logprobs_backward:
// (1/τ)[dlogp (1[j = target] - p_j) - dentropy p_j (log p_j + H)].
void tp_token_logprobs_backward(const TpLayout& tp, const Tensor& logits, const Tensor& targets,
                                float temperature, const Tensor& dlogp, const Tensor& dentropy,
                                Tensor& dlogits);
// The same without the local logits (the fused "cut cross-entropy" path of scoring.cc under
// tensor parallelism): h [T, H] is the lm_head's input (replicated), w this rank's lm_head shard
// [V/n, H]. The shard is streamed `chunk` rows at a time (chunk <= 0: ops::default_logprob_chunk
// of V/n) — ops::linear into one [T, chunk] f32 block, folded by ops::logprob_chunk_stats — so no
// [T, V/n] tensor exists; the ranks' [T, 4] statistics are folded as tp_token_logprobs folds
// them, and logp, lse and (when defined) entropy are the global ones, the same on every rank.
void tp_linear_token_logprobs(const TpLayout& tp, const Tensor& h, const Tensor& w,
                              const Tensor& targets, float temperature, int64_t chunk, Tensor& logp,
                              Tensor& entropy, Tensor& lse);
// Its backward from the global lse / entropy: each chunk's logits recomputed, dz as
// tp_token_logprobs_backward, dh [T, H] = THIS RANK'S PARTIAL Σ_c dz_c · W_c (overwritten; the
// ranks' partials sum to the full dh — CausalLM::backward_from_hidden all-reduces it, Megatron's
// "f" at the vocab-parallel lm_head's input), dw (the shard's gradient; undefined: skipped) +=
// dz_c^T · h.
void tp_linear_token_logprobs_backward(const TpLayout& tp, const Tensor& h, const Tensor& w,
                                       const Tensor& targets, float temperature, int64_t chunk,
                                       const Tensor& lse, const Tensor& entropy,
                                       const Tensor& dlogp, const Tensor& dentropy, Tensor& dh,
                                       Tensor& dw);
// Local logits [R, V/n] -> full logits [R, V] on every rank (on the device when the comm moves
// the logits' device memory, see the header comment).
Tensor tp_gather_vocab(const TpLayout& tp, const Tensor& local_logits);
// The host path of tp_gather_vocab (copy to the host, all_gather, interleave, copy back), for
// every comm; the tests compare the two bitwise.
Tensor tp_gather_vocab_host(const TpLayout& tp, const Tensor& local_logits);

}  // namespace gyre::model
