// Engine side of SGLang's NCCL weight update (weight_update_group.h).
#include "gyre/dist/weight_update_group.h"

#include <algorithm>

#include "gyre/backend/ops.h"
#include "gyre/core/error.h"
#include "gyre/core/logging.h"
#include "gyre/dist/nccl_comm.h"
#include "gyre/dist/tcp_rendezvous.h"

namespace gyre::dist {

DType parse_torch_dtype(const std::string& s) {
  const std::string t = s.rfind("torch.", 0) == 0 ? s.substr(6) : s;
  if (t == "bfloat16") return DType::bf16;
  if (t == "float32" || t == "float") return DType::f32;
  if (t == "float16" || t == "half") return DType::f16;
  GYRE_THROW(invalid_argument, "dtype '{}' is not one of bfloat16, float32, float16", s);
}

const char* torch_dtype_name(DType d) {
  switch (d) {
    case DType::bf16: return "bfloat16";
    case DType::f32: return "float32";
    case DType::f16: return "float16";
    default: break;
  }
  GYRE_THROW(invalid_argument, "dtype {} has no torch wire name (weights travel as bf16/f32/f16)",
             dtype_name(d));
}

WeightUpdateGroups::WeightUpdateGroups(model::CausalLM& model, double timeout_s)
    : model_(model), timeout_s_(timeout_s) {}

WeightUpdateGroups::~WeightUpdateGroups() = default;

bool WeightUpdateGroups::has(const std::string& group) const {
  std::lock_guard<std::mutex> lk(mu_);
  return groups_.count(group) > 0;
}

void WeightUpdateGroups::init(const std::string& master_address, int master_port, int rank,
                              int world_size, const std::string& group,
                              const std::string& backend) {
  if (backend != "nccl")
    GYRE_THROW(invalid_argument,
               "init_weights_update_group '{}': backend '{}' is not supported; gyre serve joins "
               "weight-update groups over \"nccl\"",
               group, backend);
  if (world_size < 2 || rank < 1 || rank >= world_size)
    GYRE_THROW(invalid_argument,
               "init_weights_update_group '{}': rank_offset {} must be in [1, world_size {}) (the "
               "trainer is rank 0)",
               group, rank, world_size);
  if (model_.device() != Device::cuda)
    GYRE_THROW(unsupported,
               "init_weights_update_group '{}': this server's model is on the CPU; NCCL weight "
               "updates need `gyre serve --device cuda` (CPU servers take "
               "/update_weights_from_disk)",
               group);
  if (has(group))
    GYRE_THROW(invalid_argument,
               "init_weights_update_group: group '{}' already exists; call "
               "/destroy_weights_update_group first",
               group);
  RendezvousOptions ro;
  ro.host = master_address, ro.port = master_port, ro.rank = rank, ro.world_size = world_size;
  ro.group = group, ro.timeout_s = timeout_s_;
  const std::string id = tcp_rendezvous_share(ro, "");
  auto comm = nccl_comm_init(id, world_size, rank, 0, timeout_s_, group);
  log::info("serve: joined weight-update group '{}' as rank {} of {} (trainer at {}:{})", group,
            rank, world_size, master_address, master_port);
  std::lock_guard<std::mutex> lk(mu_);
  groups_[group] = std::move(comm);
}

void WeightUpdateGroups::destroy(const std::string& group) {
  std::unique_ptr<Comm> gone;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = groups_.find(group);
    if (it == groups_.end())
      GYRE_THROW(not_found, "destroy_weights_update_group: no group named '{}'", group);
    gone = std::move(it->second);
    groups_.erase(it);
  }
  // The communicator is finalised outside the lock. Finalize waits for the other members: the
  // trainer finalises its member while it asks for this destroy (nccl_push.cc), or it is gone (a
  // crashed trainer; the next one destroys first), so a short bound, then abort, is enough.
#ifdef GYRE_HAVE_NCCL
  if (auto* n = dynamic_cast<NcclComm*>(gone.get())) n->set_timeout(std::min(timeout_s_, 30.0));
#endif
}

int64_t WeightUpdateGroups::receive_and_load(const std::string& group,
                                             const std::vector<std::string>& names,
                                             const std::vector<std::string>& dtypes,
                                             const std::vector<std::vector<int64_t>>& shapes,
                                             bool flattened_bucket) {
  Comm* comm = nullptr;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = groups_.find(group);
    if (it != groups_.end()) comm = it->second.get();
  }
  if (!comm)
    GYRE_THROW(not_found,
               "update_weights_from_distributed: no weight-update group '{}' (call "
               "/init_weights_update_group first)",
               group);
  if (names.size() != dtypes.size() || names.size() != shapes.size())
    GYRE_THROW(invalid_argument,
               "update_weights_from_distributed: {} names, {} dtypes and {} shapes; one of each "
               "per tensor",
               names.size(), dtypes.size(), shapes.size());
  // What arrives (sizes need only the dtypes and shapes), and whether it fits this model.
  auto params = model_.parameters();
  const bool tied = model_.config().tie_word_embeddings;
  std::string refusal;
  std::vector<Tensor> incoming;
  std::vector<std::pair<Shape, DType>> kinds;
  std::vector<Tensor*> target;  // null: received and dropped (a tied lm_head)
  size_t total = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    const DType dt = parse_torch_dtype(dtypes[i]);  // unknown dtype: sizes unknown, cannot drain
    int64_t numel = 1;
    for (int64_t d : shapes[i]) {
      if (d < 0)
        GYRE_THROW(invalid_argument, "update_weights_from_distributed: tensor '{}' has shape {}",
                   names[i], shape_str(shapes[i]));
      numel *= d;
    }
    // Per-tensor broadcasts land in tensors of their own; a flattened bucket lands in one buffer,
    // viewed below (so its bytes are allocated once).
    incoming.push_back(flattened_bucket ? Tensor() : Tensor::empty(shapes[i], dt, Device::cuda));
    kinds.emplace_back(shapes[i], dt);
    total += size_t(numel) * dtype_size(dt);
    auto it = std::find_if(params.begin(), params.end(),
                           [&](const model::NamedTensor& p) { return p.name == names[i]; });
    Tensor* t = it == params.end() ? nullptr : &it->tensor;
    if (!t && !(tied && names[i] == "lm_head.weight") && refusal.empty())
      refusal = fmt::format("'{}' is not a parameter of this model", names[i]);
    if (t && t->shape() != shapes[i] && refusal.empty())
      refusal = fmt::format("'{}' is {} here but {} was sent", names[i], shape_str(t->shape()),
                            shape_str(shapes[i]));
    if (dt == DType::f16 && refusal.empty())
      refusal = fmt::format("'{}' arrives as float16; send bfloat16 or float32", names[i]);
    target.push_back(t);
  }
  // Receive every byte (rank 0 broadcasts whether or not we accept).
  if (flattened_bucket) {
    Tensor flat = Tensor::empty({int64_t(total)}, DType::u8, Device::cuda);
    comm->broadcast(flat.raw(), total, 0);
    size_t off = 0;
    for (size_t i = 0; i < incoming.size(); ++i) {
      const auto& [shape, dt] = kinds[i];
      if (off % dtype_size(dt) != 0 && refusal.empty())
        refusal = fmt::format(
            "flattened bucket: a {} tensor starts at byte {}, not aligned to its element size "
            "(order the bucket by dtype)",
            dtype_name(dt), off);
      incoming[i] = Tensor::borrow(static_cast<char*>(flat.raw()) + off, shape, dt, Device::cuda,
                                   flat.storage());
      off += size_t(incoming[i].nbytes());
    }
  } else {
    for (auto& t : incoming) comm->broadcast(t.raw(), t.nbytes(), 0);
  }
  if (!refusal.empty())
    GYRE_THROW(invalid_argument,
               "update_weights_from_distributed (group '{}'): {}; received and dropped all {} "
               "tensors, the weights are unchanged",
               group, refusal, names.size());
  int64_t loaded = 0;
  for (size_t i = 0; i < incoming.size(); ++i) {
    if (!target[i]) continue;
    ops::copy(incoming[i], *target[i]);  // rounds / widens to the parameter's dtype on the GPU
    ++loaded;
  }
  return loaded;
}

}  // namespace gyre::dist
