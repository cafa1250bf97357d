// cuDNN fused attention for training (cudnn_attention.h): a per-shape cache of plans for the SDPA
// forward-with-stats and backward graphs (built in cudnn_attention_graphs.cc), and their execution
// on gyre's stream with workspace from gyre's allocator.
#include "gyre/backend/cuda/cudnn_attention.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <tuple>

#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/cudnn_attention_graphs.h"
#include "gyre/backend/cuda/cudnn_graph.h"
#include "gyre/backend/cuda/gemm_tune.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/env.h"
#include "gyre/core/logging.h"

namespace gyre::cuda {

AttentionBackend attention_backend() {
  return env_choice("GYRE_ATTENTION_BACKEND", {"cudnn", "flash"}, "cudnn") == "flash"
             ? AttentionBackend::flash
             : AttentionBackend::cudnn;
}

namespace {

std::mutex g_mu;  // guards the plan cache, the stats and the logged-reasons set
CudnnAttentionStats g_stats;

}  // namespace

#if GYRE_HAVE_CUDNN_HEADERS

namespace {

// Logs each distinct reason for falling back once (info level).
void log_fallback_once(const std::string& why) {
  static std::set<std::string> logged;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (!logged.insert(why).second) return;
  }
  log::info("attention: cuDNN path not used, running the flash kernels: {}", why);
}

bool deterministic() {
  return env_choice("GYRE_CUDNN_ATTENTION_DETERMINISTIC", {"1", "0"}, "1") == "1";
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// The cached plans are keyed by device (a plan is bound to its device's handle) and bucketed shape.
struct Key {
  int device;
  bool backward;
  int64_t Bp, S, Hq, Hkv, D;
  bool det;
  bool operator<(const Key& o) const {
    return std::tie(device, backward, Bp, S, Hq, Hkv, D, det) <
           std::tie(o.device, o.backward, o.Bp, o.S, o.Hq, o.Hkv, o.D, o.det);
  }
};

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Shape buckets of the plan cache: B to a power of two (the extra sequences are empty), the
// longest sequence to a multiple of 128 up to 1024 and of 512 beyond (rows past a sequence's
// length are masked, and the kernels stop at each sequence's length). A backward plan takes up to
// ~1 s to build, so a run whose longest sequence wanders over 1-8k tokens should meet ~20 length
// buckets, not ~60; the deterministic backward's workspace grows as B_bucket · Hq · S_bucket², so
// the buckets stay within 2.25x of the needed size (1025 -> 1536 is the worst case).
int64_t batch_bucket(int64_t B) {
  int64_t p = 1;
  while (p < B) p *= 2;
  return p;
}
int64_t seq_bucket(int64_t max_seqlen) {
  const int64_t s = std::max<int64_t>(max_seqlen, 1);
  return s <= 1024 ? round_up(s, 128) : round_up(s, 512);
}

// GYRE_CUDNN_ATTENTION_MAX_WORKSPACE_MB (default 4096): plans needing more fall back to the flash
// kernels (the deterministic backward's dP scratch is B·Hq·S²·2 bytes: 2.1 GB at 4 x 4096, 16
// heads, but tens of GB for many short sequences next to one long one).
int64_t max_workspace_bytes() {
  return env_int("GYRE_CUDNN_ATTENTION_MAX_WORKSPACE_MB", 4096, 1, int64_t(1) << 24) << 20;
}

// Checks what the graphs need; empty when supported.
std::string unsupported(int64_t T, int64_t Hq, int64_t Hkv, int64_t D) {
  if (D % 8 != 0 || D > 128) return fmt::format("head dim {} (needs a multiple of 8, <= 128)", D);
  if (Hkv <= 0 || Hq % Hkv != 0) return fmt::format("{} query heads over {} kv heads", Hq, Hkv);
  if (T * Hq * D >= (int64_t(1) << 31)) return "ragged offsets beyond int32";
  return {};
}

using namespace sdpa_graph;  // Uid, Dims, build_forward, build_backward

// The plan for key, built on first use; null when building failed (then `why` says why).
// g_mu guards only the maps and the stats: a build (up to ~1 s for a backward plan) runs under the
// cuDNN handle's mutex alone, so lookups of other shapes, the fallback log and the stats never
// wait for it. Two threads missing the same key may both build it; the first insert wins and the
// other plan is dropped (same key, same plan).
std::map<Key, std::shared_ptr<cudnn::Plan>> g_cache;  // guarded by g_mu

std::shared_ptr<cudnn::Plan> plan_for(const Key& key, std::string& why) {
  static std::map<Key, std::string> failures;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (auto it = g_cache.find(key); it != g_cache.end()) return it->second;
    if (auto it = failures.find(key); it != failures.end()) {
      why = it->second;
      return nullptr;
    }
  }
  const cudnn::Api* a = cudnn::api();
  const Dims d{key.Bp, key.S, key.Hq, key.Hkv, key.D};
  std::string note;
  const auto t0 = std::chrono::steady_clock::now();
  std::shared_ptr<cudnn::Plan> plan;
  try {
    std::lock_guard<std::mutex> hl(cudnn::handle_mutex());
    cudnnHandle_t h = cudnn::handle_for_current_device();
    plan = std::make_shared<cudnn::Plan>(key.backward ? build_backward(*a, h, d, key.det, &note)
                                                      : build_forward(*a, h, d, &note));
  } catch (const std::exception& e) {
    why = fmt::format("{} plan for B {} S {} heads {}/{} D {}: {}",
                      key.backward ? "backward" : "forward", d.Bp, d.S, d.Hq, d.Hkv, d.D, e.what());
    std::lock_guard<std::mutex> lock(g_mu);
    failures.emplace(key, why);
    return nullptr;
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::lock_guard<std::mutex> lock(g_mu);
  if (auto it = g_cache.find(key); it != g_cache.end()) return it->second;  // built meanwhile
  g_stats.plans_built++;
  g_stats.build_ms += ms;
  g_stats.last_workspace_bytes = plan->workspace();
  g_stats.last_engine = note;
  log::debug(
      "attention: cuDNN {} plan B {} S {} heads {}/{} D {} built in {:.0f} ms ({}, workspace {} "
      "bytes)",
      key.backward ? "backward" : "forward", d.Bp, d.S, d.Hq, d.Hkv, d.D, ms, note,
      plan->workspace());
  g_cache.emplace(key, plan);
  return plan;
}

// Device index arrays of one call (seq lengths, ragged offsets), 16-byte aligned sections.
struct Indices {
  DeviceBuffer buf;
  int32_t *seqlen, *off_q, *off_kv, *off_lse;
  static int64_t sec(int64_t n) { return round_up(n, 4); }
  Indices(const int32_t* cu, int64_t B, int64_t Bp, int64_t Hq, int64_t Hkv, int64_t D)
      : buf(size_t(sec(Bp) + 3 * sec(Bp + 1)) * 4) {
    seqlen = buf.as<int32_t>();
    off_q = seqlen + sec(Bp);
    off_kv = off_q + sec(Bp + 1);
    off_lse = off_kv + sec(Bp + 1);
    cudnn_attention_prep(cu, B, Bp, int32_t(Hq * D), int32_t(Hkv * D), int32_t(Hq), seqlen, off_q,
                         off_kv, off_lse);
  }
};

// Looks up the plan of a call; null (and logs why once) when the cuDNN path cannot run it.
std::shared_ptr<cudnn::Plan> prepare(bool backward, bool det, int64_t B, int64_t max_seqlen,
                                     int64_t T, int64_t Hq, int64_t Hkv, int64_t D,
                                     std::initializer_list<const void*> ptrs, Key* key_out) {
  if (attention_backend() != AttentionBackend::cudnn) return nullptr;
  std::string why;
  if (!cudnn::api(&why)) {
    log_fallback_once(why);
    return nullptr;
  }
  why = unsupported(T, Hq, Hkv, D);
  for (const void* p : ptrs)
    if (why.empty() && !aligned16(p)) why = "a buffer is not 16-byte aligned";
  if (!why.empty()) {
    log_fallback_once(why);
    return nullptr;
  }
  int device = 0;
  GYRE_CUDA_CHECK(cudaGetDevice(&device));
  const Key key{device, backward, batch_bucket(B), seq_bucket(max_seqlen), Hq, Hkv, D, det};
  *key_out = key;
  auto plan = plan_for(key, why);
  if (plan && plan->workspace() > max_workspace_bytes()) {
    why = fmt::format(
        "{} plan for B {} S {} needs {} MB of workspace (over "
        "GYRE_CUDNN_ATTENTION_MAX_WORKSPACE_MB)",
        backward ? "backward" : "forward", key.Bp, key.S, plan->workspace() >> 20);
    plan = nullptr;
  }
  if (!plan) log_fallback_once(why);
  return plan;
}

// Executes on the calling thread's stream; false (logged once) when cuDNN refuses, so the caller
// can still run the flash kernels (a failed execute launches nothing).
// One tensor bound at execution: its UID in the graph and its device (or, for by-value scalars,
// host) address. Kept as pairs so a UID can never drift away from its pointer.
struct Binding {
  int64_t uid;
  void* ptr;
};

// Executes plan on the calling thread's stream (throws CudnnError).
void execute_on_stream(const cudnn::Plan& plan, const std::vector<Binding>& bindings,
                       void* workspace) {
  std::vector<int64_t> uids;
  std::vector<void*> ptrs;
  for (const Binding& b : bindings) uids.push_back(b.uid), ptrs.push_back(b.ptr);
  const cudnn::Api* a = cudnn::api();
  std::lock_guard<std::mutex> lock(cudnn::handle_mutex());
  cudnnHandle_t h = cudnn::handle_for_current_device();
  cudnn::check(a->set_stream(h, stream()), "cudnnSetStream");
  cudnn::execute(*a, h, plan, uids, ptrs, workspace);
}

bool run(bool backward, const cudnn::Plan& plan, const std::vector<Binding>& bindings,
         void* workspace) {
  try {
    execute_on_stream(plan, bindings, workspace);
  } catch (const cudnn::CudnnError& e) {
    log_fallback_once(std::string("execution failed: ") + e.what());
    return false;
  }
  std::lock_guard<std::mutex> lock(g_mu);
  (backward ? g_stats.bwd_calls : g_stats.fwd_calls)++;
  return true;
}

// ---- Measured plan choice (GYRE_CUDNN_ATTENTION_TUNE; cudnn_attention.h says when) ----

// An output a call writes; trials write it into scratch, and plans are compared on it.
struct Output {
  int64_t uid;
  size_t bytes;
};

// 0: off; 1: the heuristic lists' plans; 2: also every engine with each knob value alone (a probe:
// configurations cuDNN's heuristics never produce).
int tuning_mode() {
  const std::string v = env_choice("GYRE_CUDNN_ATTENTION_TUNE", {"0", "1", "2"}, "0");
  return v[0] - '0';
}

// On a key's first call that fills its bucket, with tuning on, times the graph's other plans on
// this call's own inputs and keeps the fastest whose outputs equal the current plan's bit for bit
// (gemm_tune.h's rule, through the same pick_fastest_same_bits: cold-L2 timings, a 1% margin), so
// no gradient or output changes by a bit. Each trial starts from a NaN-filled output, so a plan
// that leaves an element unwritten never passes. Only a call whose batch is its bucket's and
// whose longest sequence is the bucket's length is compared: a plan serves every call of its
// bucket, and engines that tile the keys differently agree on sequences shorter than their tiles —
// the bucket-filling call exercises every tile size up to the bucket. The call's outputs are not
// written by the trials (they write scratch); intermediates bound in `bindings` (the backward's
// softmax-sum scratch) are rewritten, which the call's own run does again. Only the deterministic
// graphs: the atomic-dQ backward differs from itself run to run. Never an error: a failure keeps
// the plan. Holds the cuDNN handle's mutex while building (other threads' attention waits).
void maybe_tune(const Key& key, std::shared_ptr<cudnn::Plan>& plan,
                const std::vector<Binding>& bindings, const std::vector<Output>& outputs, int64_t B,
                int64_t max_seqlen) {
  const int mode = tuning_mode();
  if (mode == 0 || (key.backward && !key.det)) return;
  if (B != key.Bp || max_seqlen != key.S) return;  // a later call may fill the bucket
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream(), &capturing) != cudaSuccess ||
      capturing != cudaStreamCaptureStatusNone) {
    cudaGetLastError();
    return;  // a graph capture cannot synchronise; a later uncaptured call tunes
  }
  {
    static std::set<Key> tuned;  // guarded by g_mu: each key is tried once per process
    std::lock_guard<std::mutex> lock(g_mu);
    if (!tuned.insert(key).second) return;
  }
  const int max_plans = int(env_int("GYRE_CUDNN_ATTENTION_TUNE_PLANS", 8, 1, 256));
  const double budget_ms = double(env_int("GYRE_CUDNN_ATTENTION_TUNE_MS", 3000, 0, 600000));
  const Dims d{key.Bp, key.S, key.Hq, key.Hkv, key.D};
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<cudnn::GraphBuilder::Candidate> cands;
  try {
    std::lock_guard<std::mutex> hl(cudnn::handle_mutex());
    cands = build_candidates(*cudnn::api(), cudnn::handle_for_current_device(), d, key.backward,
                             key.det, max_plans, budget_ms, /*sweep_knobs=*/mode == 2);
  } catch (const cudnn::CudnnError& e) {
    cudaGetLastError();  // nothing of a failed build may reach the next launch check
    log::info("attention: tuning skipped: {}", e.what());
    return;
  }
  const double build_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  // Trial 0 is the plan in use (the reference bits); then the admissible alternatives.
  std::vector<const cudnn::Plan*> plans{plan.get()};
  std::vector<int> cand_of{-1};
  std::string listing;
  int64_t workspace = std::max<int64_t>(plan->workspace(), 16);
  // An alternative may need a little more workspace than the heuristic plan, not gigabytes more
  // for a 1% gain.
  const int64_t ws_limit = std::min(
      max_workspace_bytes(), std::max(plan->workspace() * 5 / 4, plan->workspace() + (64 << 20)));
  for (size_t i = 0; i < cands.size(); ++i) {
    const bool ok = !cands[i].nondeterministic && cands[i].plan.workspace() <= ws_limit;
    listing += fmt::format("\n  {} {} (workspace {} MB){}",
                           ok ? fmt::format("#{}", plans.size()) : std::string("skipped"),
                           cands[i].note, cands[i].plan.workspace() >> 20,
                           cands[i].nondeterministic ? " nondeterministic" : "");
    if (!ok) continue;
    plans.push_back(&cands[i].plan);
    cand_of.push_back(int(i));
    workspace = std::max(workspace, cands[i].plan.workspace());
  }
  if (plans.size() < 2) {
    log::info("attention: nothing to tune for the {} plan B {} S {} heads {}/{} D {}{}",
              key.backward ? "backward" : "forward", d.Bp, d.S, d.Hq, d.Hkv, d.D, listing);
    std::lock_guard<std::mutex> lock(g_mu);
    g_stats.plans_tuned++;
    return;
  }
  std::vector<size_t> offset;
  size_t total = 0;
  for (const Output& o : outputs) offset.push_back(total), total += size_t(round_up(o.bytes, 256));
  RawDeviceBuffer ws{size_t(workspace)}, sentinel{total};
  if (!ws.p || !sentinel.p || cudaMemsetAsync(sentinel.p, 0xFF, total, stream()) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  TuneProblem p;
  p.d = sentinel.p;  // every trial starts from all-NaN outputs (0xFF bytes: NaN in bf16 and f32)
  p.reads_d = true;
  p.out_bytes = total;
  p.stream = stream();
  p.candidates = int(plans.size());
  p.run = [&](int i, void* out) {
    std::vector<Binding> b = bindings;
    for (Binding& x : b)
      for (size_t j = 0; j < outputs.size(); ++j)
        if (x.uid == outputs[j].uid) x.ptr = static_cast<char*>(out) + offset[j];
    try {
      execute_on_stream(*plans[size_t(i)], b, ws.p);
      return true;
    } catch (const cudnn::CudnnError&) {
      return false;
    }
  };
  std::string timings;
  const int best = pick_fastest_same_bits(p, &timings);
  std::string chosen = "the heuristic's plan";
  if (best > 0) {
    auto& c = cands[size_t(cand_of[size_t(best)])];
    chosen = c.note;
    plan = std::make_shared<cudnn::Plan>(std::move(c.plan));
  }
  std::lock_guard<std::mutex> lock(g_mu);
  if (best > 0) {
    g_cache[key] = plan;
    g_stats.plans_replaced++;
    g_stats.last_engine = chosen;
  }
  g_stats.plans_tuned++;
  log::info(
      "attention: tuned the {} plan B {} S {} heads {}/{} D {}: {} alternatives built in {:.0f} "
      "ms; kept {}; timings (#0 = the heuristic's plan): {}{}",
      key.backward ? "backward" : "forward", d.Bp, d.S, d.Hq, d.Hkv, d.D, cands.size(), build_ms,
      chosen, timings, listing);
}

}  // namespace

bool cudnn_attention_available(std::string* why) { return cudnn::api(why) != nullptr; }

bool cudnn_attention_fwd(const uint16_t* q, const uint16_t* k, const uint16_t* v,
                         const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                         int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* out,
                         float* lse) {
  Key key{};
  auto plan = prepare(false, false, B, max_seqlen, T, Hq, Hkv, D, {q, k, v, out, lse}, &key);
  if (!plan) return false;
  Indices ix(cu_seqlens, B, batch_bucket(B), Hq, Hkv, D);
  float scale_v = scale, neg_inf = -std::numeric_limits<float>::infinity();
  // The by-value scalars are read while the call is recorded (host pointers).
  auto* q_ = const_cast<uint16_t*>(q);
  auto* k_ = const_cast<uint16_t*>(k);
  auto* v_ = const_cast<uint16_t*>(v);
  const std::vector<Binding> bindings = {{kQ, q_},
                                         {kK, k_},
                                         {kV, v_},
                                         {kO, out},
                                         {kStats, lse},
                                         {kSeqQ, ix.seqlen},
                                         {kSeqKV, ix.seqlen},
                                         {kRagQ, ix.off_q},
                                         {kRagK, ix.off_kv},
                                         {kRagV, ix.off_kv},
                                         {kRagO, ix.off_q},
                                         {kRagStats, ix.off_lse},
                                         {kScale, &scale_v},
                                         {kNegInfPad, &neg_inf},
                                         {kNegInfCausal, &neg_inf}};
  maybe_tune(key, plan, bindings, {{kO, size_t(T * Hq * D) * 2}, {kStats, size_t(T * Hq) * 4}}, B,
             max_seqlen);
  DeviceBuffer ws(size_t(std::max<int64_t>(plan->workspace(), 16)));
  return run(false, *plan, bindings, ws.as<void>());
}

bool cudnn_attention_bwd(const uint16_t* dout, const uint16_t* q, const uint16_t* k,
                         const uint16_t* v, const uint16_t* out, const float* lse,
                         const int32_t* cu_seqlens, int64_t B, int64_t max_seqlen, int64_t T,
                         int64_t Hq, int64_t Hkv, int64_t D, float scale, uint16_t* dq,
                         uint16_t* dk, uint16_t* dv) {
  // The backend first: GYRE_CUDNN_ATTENTION_DETERMINISTIC is read (and checked) only when the
  // cuDNN path is the one asked for.
  if (attention_backend() != AttentionBackend::cudnn) return false;
  const bool det = deterministic();
  Key key{};
  auto plan =
      prepare(true, det, B, max_seqlen, T, Hq, Hkv, D, {dout, q, k, v, out, lse, dq, dk, dv}, &key);
  if (!plan) return false;
  Indices ix(cu_seqlens, B, batch_bucket(B), Hq, Hkv, D);
  // Packed like lse and dq (ragged), so T rows whatever the bucket.
  DeviceBuffer softmax_sum(size_t(T * Hq) * 4);
  DeviceBuffer dq_accum(det ? 16 : size_t(T * Hq * D) * 4);
  float scale_v = scale, neg_inf = -std::numeric_limits<float>::infinity(), one = 1.0f;
  std::vector<Binding> bindings = {{kQ, const_cast<uint16_t*>(q)},
                                   {kK, const_cast<uint16_t*>(k)},
                                   {kV, const_cast<uint16_t*>(v)},
                                   {kO, const_cast<uint16_t*>(out)},
                                   {kDO, const_cast<uint16_t*>(dout)},
                                   {kStats, const_cast<float*>(lse)},
                                   {kDQ, dq},
                                   {kDK, dk},
                                   {kDV, dv},
                                   {kSeqQ, ix.seqlen},
                                   {kSeqKV, ix.seqlen},
                                   {kRagQ, ix.off_q},
                                   {kRagK, ix.off_kv},
                                   {kRagV, ix.off_kv},
                                   {kRagO, ix.off_q},
                                   {kRagStats, ix.off_lse},
                                   {kRagDO, ix.off_q},
                                   {kRagDQ, ix.off_q},
                                   {kRagDK, ix.off_kv},
                                   {kRagDV, ix.off_kv},
                                   {kScale, &scale_v},
                                   {kNegInfPad, &neg_inf},
                                   {kNegInfCausal, &neg_inf},
                                   {kOne, &one},
                                   {kSoftmaxSum, softmax_sum.as<void>()},
                                   {kRagSoftmaxSum, ix.off_lse}};
  if (!det) {  // the f32 dQ accumulator, packed (and offset) like dq
    bindings.push_back({kDQAccum, dq_accum.as<void>()});
    bindings.push_back({kRagDQAccum, ix.off_q});
  }
  maybe_tune(key, plan, bindings,
             {{kDQ, size_t(T * Hq * D) * 2},
              {kDK, size_t(T * Hkv * D) * 2},
              {kDV, size_t(T * Hkv * D) * 2}},
             B, max_seqlen);
  DeviceBuffer ws(size_t(std::max<int64_t>(plan->workspace(), 16)));
  return run(true, *plan, bindings, ws.as<void>());
}

#else  // no cuDNN headers in this build: the flash kernels always run

bool cudnn_attention_available(std::string* why) {
  if (why) *why = "built without cuDNN headers";
  return false;
}
bool cudnn_attention_fwd(const uint16_t*, const uint16_t*, const uint16_t*, const int32_t*, int64_t,
                         int64_t, int64_t, int64_t, int64_t, int64_t, float, uint16_t*, float*) {
  return false;
}
bool cudnn_attention_bwd(const uint16_t*, const uint16_t*, const uint16_t*, const uint16_t*,
                         const uint16_t*, const float*, const int32_t*, int64_t, int64_t, int64_t,
                         int64_t, int64_t, int64_t, float, uint16_t*, uint16_t*, uint16_t*) {
  return false;
}

#endif  // GYRE_HAVE_CUDNN_HEADERS

CudnnAttentionStats cudnn_attention_stats() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_stats;
}

}  // namespace gyre::cuda
