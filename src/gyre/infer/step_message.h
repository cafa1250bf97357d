// StepMessage: what a tensor-parallel engine's leader broadcasts to its followers before every
// forward step (and the few control messages between steps). It carries the step's StepBatch —
// the point where the scheduler's decisions have become model inputs — so a follower runs exactly
// the leader's forward with no scheduler, radix cache or page pool of its own: it writes its KV
// (its own kv heads) into the slots the plan names and attends through the plan's page table.
//
// Wire format (host byte order: the tp ranks of one replica run on one kind of machine):
//   u32 magic "GYSM", u32 format version, u32 op, u32 text bytes,
//   u64 seq, i64 weight_version, i64 num_pages, i32 page_size, i32 tp_size,
//   u32 count of each of the 8 i32 arrays (ids, positions, cu_seqlens_q, kv_lens, page_indptr,
//   page_indices, slot_mapping, logits_rows), then the arrays in that order, then the text.
// Invariants: seq counts every message the leader sent (followers check there is no gap); a forward
// message's logits_rows are exactly the rows the leader's forward computes (never empty: the model
// needs one row); the KV geometry is the leader's, and a follower's must equal it.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gyre/infer/step_batch.h"

namespace gyre::infer {

enum class StepOp : uint32_t {
  forward = 1,  // run the batch's forward (the follower discards the logits)
  idle = 2,     // keep-alive: the leader is alive with nothing to run
  release = 3,  // return from EngineFollower::run(): the tp group is needed for other work
  stop = 4,     // the leader stopped (text says why); followers return and do not come back
  // A pure decode step the leader runs through its CUDA decode graphs (infer/decode_graph.h):
  // the follower runs the same forward padded to the same bucket, so the collectives match.
  graph_replay = 5,   // the leader replays its bucket's graph (follower: replay, or padded eager)
  graph_capture = 6,  // the leader captures the bucket's graph now (follower: capture too)
};
const char* step_op_name(StepOp op);
// The ops that carry a StepBatch and run a forward.
inline bool is_forward(StepOp op) {
  return op == StepOp::forward || op == StepOp::graph_replay || op == StepOp::graph_capture;
}

struct StepHeader {
  StepOp op = StepOp::idle;
  uint64_t seq = 0;
  int64_t weight_version = 0;  // the leader's weight version when it sent the message
  int64_t num_pages = 0;       // the leader's KV pool geometry
  int32_t page_size = 0;
  int32_t tp_size = 0;
};

// Appends nothing: `out` is replaced. `batch` (its arrays, not `rows`) is required for forward and
// ignored otherwise; `logits_rows` replaces batch->logits_rows on the wire.
void encode_step_message(const StepHeader& h, const StepBatch* batch,
                         std::span<const int32_t> logits_rows, std::string_view text,
                         std::vector<uint8_t>& out);

struct StepMessage {
  StepHeader header;
  StepBatch batch;  // forward messages: every array but `rows`
  std::string text;
};
// Throws Error(invalid_argument) naming what is wrong when `bytes` is not a well-formed message
// (`from` prefixes the message, e.g. the channel's where()).
void decode_step_message(std::span<const uint8_t> bytes, StepMessage& out, const std::string& from);

}  // namespace gyre::infer
