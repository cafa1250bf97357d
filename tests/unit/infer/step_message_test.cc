// Step messages of a tensor-parallel engine (infer/step_message.h): a forward plan and the control
// messages round-trip exactly, and malformed bytes are an Error naming what is wrong (never a crash
// or an out-of-range read on a follower).
#include "gyre/infer/step_message.h"

#include <gtest/gtest.h>

#include <cstring>

#include "gyre/core/error.h"

using namespace gyre;
using namespace gyre::infer;

namespace {

// Two sequences: a 3-token prefill chunk (prompt log-prob row + sampling row) and one decode token.
StepBatch two_sequences() {
  StepBatch b;
  b.ids = {5, 6, 7, 9};
  b.positions = {0, 1, 2, 8};
  b.cu_seqlens_q = {0, 3, 4};
  b.kv_lens = {3, 9};
  b.page_indptr = {0, 1, 4};
  b.page_indices = {2, 0, 1, 3};
  b.slot_mapping = {8, 9, 10, 12};
  b.logits_rows = {1, 2, 3};
  b.rows = {{0, 1, false}, {0, 2, true}, {1, 8, true}};
  return b;
}

StepHeader header(StepOp op) {
  StepHeader h;
  h.op = op;
  h.seq = 41;
  h.weight_version = 3;
  h.num_pages = 64;
  h.page_size = 4;
  h.tp_size = 2;
  return h;
}

std::string decode_error(const std::vector<uint8_t>& bytes) {
  StepMessage m;
  try {
    decode_step_message(bytes, m, "rank 1 of 2 in 'tp'");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(StepMessage, ForwardPlanRoundTrips) {
  const StepBatch b = two_sequences();
  std::vector<uint8_t> wire;
  encode_step_message(header(StepOp::forward), &b, b.logits_rows, {}, wire);
  StepMessage m;
  decode_step_message(wire, m, "test");
  EXPECT_EQ(m.header.op, StepOp::forward);
  EXPECT_EQ(m.header.seq, 41u);
  EXPECT_EQ(m.header.weight_version, 3);
  EXPECT_EQ(m.header.num_pages, 64);
  EXPECT_EQ(m.header.page_size, 4);
  EXPECT_EQ(m.header.tp_size, 2);
  EXPECT_EQ(m.batch.ids, b.ids);
  EXPECT_EQ(m.batch.positions, b.positions);
  EXPECT_EQ(m.batch.cu_seqlens_q, b.cu_seqlens_q);
  EXPECT_EQ(m.batch.kv_lens, b.kv_lens);
  EXPECT_EQ(m.batch.page_indptr, b.page_indptr);
  EXPECT_EQ(m.batch.page_indices, b.page_indices);
  EXPECT_EQ(m.batch.slot_mapping, b.slot_mapping);
  EXPECT_EQ(m.batch.logits_rows, b.logits_rows);
  EXPECT_TRUE(m.batch.rows.empty());  // the leader's bookkeeping stays on the leader
  EXPECT_TRUE(m.text.empty());
}

// The decode-graph steps (graph_capture / graph_replay) carry their plan like a forward.
TEST(StepMessage, GraphStepsCarryTheirPlan) {
  const StepBatch b = two_sequences();
  for (StepOp op : {StepOp::graph_capture, StepOp::graph_replay}) {
    EXPECT_TRUE(is_forward(op));
    std::vector<uint8_t> wire;
    encode_step_message(header(op), &b, b.logits_rows, {}, wire);
    StepMessage m;
    decode_step_message(wire, m, "test");
    EXPECT_EQ(m.header.op, op) << step_op_name(op);
    EXPECT_EQ(m.batch.ids, b.ids);
    EXPECT_EQ(m.batch.page_indices, b.page_indices);
    EXPECT_EQ(m.batch.logits_rows, b.logits_rows);
  }
  EXPECT_STREQ(step_op_name(StepOp::graph_capture), "graph_capture");
  EXPECT_STREQ(step_op_name(StepOp::graph_replay), "graph_replay");
  for (StepOp op : {StepOp::idle, StepOp::release, StepOp::stop}) EXPECT_FALSE(is_forward(op));
}

TEST(StepMessage, LogitsRowsOnTheWireAreTheOnesGiven) {
  // A step without logits rows: the leader's forward asks for row 0, and so must the follower's.
  StepBatch b = two_sequences();
  b.logits_rows.clear();
  const std::vector<int32_t> one_row = {0};
  std::vector<uint8_t> wire;
  encode_step_message(header(StepOp::forward), &b, one_row, {}, wire);
  StepMessage m;
  decode_step_message(wire, m, "test");
  EXPECT_EQ(m.batch.logits_rows, one_row);
}

TEST(StepMessage, ControlMessagesCarryNoArraysAndStopCarriesItsReason) {
  for (StepOp op : {StepOp::idle, StepOp::release, StepOp::stop}) {
    SCOPED_TRACE(step_op_name(op));
    const StepBatch b = two_sequences();
    std::vector<uint8_t> wire;
    const std::string why = op == StepOp::stop ? "reward function failed on rank 0" : "";
    encode_step_message(header(op), &b, b.logits_rows, why, wire);  // the batch is ignored
    StepMessage m;
    m.batch = two_sequences();  // stale content from an earlier message is replaced
    decode_step_message(wire, m, "test");
    EXPECT_EQ(m.header.op, op);
    EXPECT_TRUE(m.batch.ids.empty());
    EXPECT_TRUE(m.batch.logits_rows.empty());
    EXPECT_EQ(m.text, why);
  }
}

TEST(StepMessage, MalformedBytesAreAnErrorNamingTheProblem) {
  const StepBatch b = two_sequences();
  std::vector<uint8_t> good;
  encode_step_message(header(StepOp::forward), &b, b.logits_rows, {}, good);

  auto err = decode_error({1, 2, 3});
  EXPECT_NE(err.find("rank 1 of 2 in 'tp'"), std::string::npos) << err;
  EXPECT_NE(err.find("shorter than the"), std::string::npos) << err;

  std::vector<uint8_t> w = good;
  w[0] ^= 0xFF;
  EXPECT_NE(decode_error(w).find("magic"), std::string::npos);

  w = good;
  w[4] = 9;  // format version
  EXPECT_NE(decode_error(w).find("format version 9"), std::string::npos);

  w = good;
  w[8] = 7;  // op
  EXPECT_NE(decode_error(w).find("unknown op 7"), std::string::npos);

  w = good;
  w.pop_back();  // truncated
  EXPECT_NE(decode_error(w).find("header describes"), std::string::npos);

  // Structurally inconsistent plans (each encoded well, so only the structure is wrong).
  auto plan_error = [](StepBatch x, std::vector<int32_t> rows) {
    std::vector<uint8_t> wire;
    encode_step_message(header(StepOp::forward), &x, rows, {}, wire);
    return decode_error(wire);
  };
  StepBatch x = two_sequences();
  x.positions.pop_back();
  EXPECT_NE(plan_error(x, x.logits_rows).find("4 ids but 3 positions"), std::string::npos);
  x = two_sequences();
  x.page_indptr.pop_back();
  EXPECT_NE(plan_error(x, x.logits_rows).find("cu_seqlens_q and page_indptr"), std::string::npos);
  x = two_sequences();
  x.cu_seqlens_q.back() = 3;
  EXPECT_NE(plan_error(x, x.logits_rows).find("cu_seqlens_q runs from 0 to 3"), std::string::npos);
  x = two_sequences();
  EXPECT_NE(plan_error(x, {}).find("without logits rows"), std::string::npos);
  EXPECT_NE(plan_error(x, {0, 4}).find("logits_rows[1] = 4 outside"), std::string::npos);
  StepBatch empty;
  EXPECT_NE(plan_error(empty, {0}).find("0 tokens"), std::string::npos);

  // A control message that claims arrays.
  std::vector<uint8_t> ctl;
  encode_step_message(header(StepOp::idle), nullptr, {}, {}, ctl);
  std::vector<uint8_t> bad = ctl;
  const uint32_t one = 1;
  std::memcpy(bad.data() + 48, &one, 4);  // count of ids
  bad.resize(bad.size() + 4, 0);
  EXPECT_NE(decode_error(bad).find("idle message carries 1 ids"), std::string::npos)
      << decode_error(bad);

  // A KV geometry no pool can have.
  StepHeader h = header(StepOp::idle);
  h.page_size = 0;
  encode_step_message(h, nullptr, {}, {}, ctl);
  EXPECT_NE(decode_error(ctl).find("KV geometry"), std::string::npos);
}
