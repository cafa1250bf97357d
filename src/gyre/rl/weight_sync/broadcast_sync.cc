// Bucketed broadcast weight sync (broadcast_sync.h).
#include "gyre/rl/weight_sync/broadcast_sync.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "gyre/core/timer.h"

namespace gyre::rl {

namespace {

struct Entry {
  std::string name;
  Shape shape;
  Tensor* tensor = nullptr;  // this rank's parameter
  size_t wire_bytes = 0;
};

DType parse_wire_dtype(const std::string& s) {
  if (s == "f32") return DType::f32;
  if (s == "bf16") return DType::bf16;
  if (s == "f16") return DType::f16;
  GYRE_THROW(invalid_argument, "broadcast weight sync: wire dtype '{}' is not f32, bf16 or f16", s);
}

}  // namespace

SyncStats broadcast_weights(dist::Comm& comm, model::CausalLM& model, int64_t version,
                            const BroadcastSyncOptions& o) {
  Timer timer;
  if (o.bucket_bytes < 1024)
    GYRE_THROW(invalid_argument, "--update-weight-buffer-size {} bytes is too small (>= 1 KiB)",
               o.bucket_bytes);
  const bool root = comm.rank() == o.root;
  auto params = model.parameters();
  std::vector<Tensor> local;
  for (auto& p : params) local.push_back(p.tensor);

  // 1) Manifest from the root.
  std::string manifest;
  if (root) {
    parse_wire_dtype(dtype_name(o.wire_dtype));  // rejects e.g. i32 before anything is sent
    nlohmann::json ts = nlohmann::json::array();
    for (auto& p : params) ts.push_back({{"name", p.name}, {"shape", p.tensor.shape()}});
    manifest = nlohmann::json({{"version", version},
                               {"wire_dtype", dtype_name(o.wire_dtype)},
                               {"bucket_bytes", o.bucket_bytes},
                               {"tensors", ts}})
                   .dump();
  }
  comm.broadcast(manifest, o.root);

  // 2) Every rank checks the manifest against its model; the group agrees before data moves.
  std::string refusal;
  std::vector<Entry> plan;
  int64_t sent_version = version;
  DType wire = o.wire_dtype;
  size_t bucket_bytes = o.bucket_bytes;
  try {
    nlohmann::json j = nlohmann::json::parse(manifest);
    sent_version = j.at("version").get<int64_t>();
    wire = parse_wire_dtype(j.at("wire_dtype").get<std::string>());
    bucket_bytes = j.at("bucket_bytes").get<size_t>();
    const auto& ts = j.at("tensors");
    if (ts.size() != params.size())
      refusal = fmt::format("the trainer sends {} tensors but this model has {}", ts.size(),
                            params.size());
    for (size_t i = 0; refusal.empty() && i < ts.size(); ++i) {
      Entry e;
      e.name = ts[i].at("name").get<std::string>();
      e.shape = ts[i].at("shape").get<Shape>();
      auto it = std::find_if(params.begin(), params.end(),
                             [&](const model::NamedTensor& p) { return p.name == e.name; });
      if (it == params.end()) {
        refusal = fmt::format("tensor '{}' is not a parameter of this model", e.name);
      } else if (it->tensor.shape() != e.shape || it->tensor.dtype() != DType::f32) {
        refusal = fmt::format("tensor '{}' is {} on the trainer but {} {} here", e.name,
                              shape_str(e.shape), dtype_name(it->tensor.dtype()),
                              shape_str(it->tensor.shape()));
      } else {
        e.tensor = &local[size_t(it - params.begin())];
        e.wire_bytes = size_t(e.tensor->numel()) * dtype_size(wire);
        plan.push_back(std::move(e));
      }
    }
  } catch (const nlohmann::json::exception& e) {
    refusal = fmt::format("unreadable manifest: {}", e.what());
  }
  const double refused = comm.all_reduce(refusal.empty() ? 0.0 : 1.0, dist::ReduceOp::max);
  if (!refusal.empty())
    GYRE_THROW(invalid_argument,
               "{}: broadcast weight sync v{} refused: {} (trainer and engines must load the same "
               "architecture)",
               comm.where(), sent_version, refusal);
  if (refused != 0.0)
    GYRE_THROW(invalid_argument,
               "{}: broadcast weight sync v{} refused by another rank of '{}' (its error names the "
               "tensor); nothing was sent",
               comm.where(), sent_version, comm.name());

  // 3) Buckets of whole tensors, the same cut on every rank (it depends only on the manifest).
  size_t max_bucket = 0;
  std::vector<std::pair<size_t, size_t>> buckets;  // [first, last) entries
  for (size_t i = 0; i < plan.size();) {
    size_t j = i, bytes = 0;
    while (j < plan.size() && (j == i || bytes + plan[j].wire_bytes <= bucket_bytes))
      bytes += plan[j++].wire_bytes;
    buckets.emplace_back(i, j);
    max_bucket = std::max(max_bucket, bytes);
    i = j;
  }
  // One bucket buffer per thread, kept across syncs: a fresh 512 MiB buffer per call costs its
  // page faults and the MPI transport's first-touch setup every time (measured 30x slower on
  // bench_dist_sync than a reused one).
  thread_local std::vector<char> buf;
  if (buf.size() < max_bucket) buf.resize(max_bucket);
  uint64_t total = 0;
  for (auto [first, last] : buckets) {
    size_t off = 0;
    if (root)
      for (size_t k = first; k < last; ++k) {
        const Tensor& t = *plan[k].tensor;
        if (wire == DType::f32)
          std::memcpy(buf.data() + off, t.raw(), plan[k].wire_bytes);
        else
          convert_from_f32(t.f32(), wire, buf.data() + off, size_t(t.numel()));
        off += plan[k].wire_bytes;
      }
    else
      for (size_t k = first; k < last; ++k) off += plan[k].wire_bytes;
    comm.broadcast(buf.data(), off, o.root);
    total += off;
    if (!root) {
      off = 0;
      for (size_t k = first; k < last; ++k) {
        Tensor& t = *plan[k].tensor;
        if (wire == DType::f32)
          std::memcpy(t.raw(), buf.data() + off, plan[k].wire_bytes);
        else
          convert_to_f32(wire, buf.data() + off, t.f32(), size_t(t.numel()));
        off += plan[k].wire_bytes;
      }
    }
  }
  SyncStats s;
  s.method = "broadcast";
  s.version = sent_version;
  s.bytes = total;
  s.raw_bytes = uint64_t(model.num_parameters()) * sizeof(float);
  s.tensors = s.changed_tensors = int64_t(plan.size());
  s.seconds = timer.elapsed();
  if (root) log_sync(s);
  return s;
}

}  // namespace gyre::rl
