#include "gyre/rl/trainer/actor_trainer.h"

#include <algorithm>
#include <cmath>
#include <exception>

#include "gyre/core/logging.h"
#include "gyre/core/timer.h"
#include "gyre/model/scoring.h"
#include "gyre/model/step_weight_copies.h"
#include "gyre/rl/algorithms/advantages.h"
#include "gyre/rl/algorithms/loss_reducer.h"
#include "gyre/rl/algorithms/policy_loss.h"
#include "gyre/rl/trainer/dp_balance.h"
#include "gyre/rl/trainer/phase_timer.h"

namespace gyre::rl {

namespace {

// Row of the packed batch that predicts response token k of sample j: slime's alignment (logits at
// position t-1 predict token t), so response logps are rows [P-1, L-1) of each sequence.
struct Layout {
  std::vector<int64_t> first_row;  // per sample in the micro-batch
};

Layout layout_of(const std::vector<Sample>& samples, const std::vector<int64_t>& mb) {
  Layout l;
  int64_t offset = 0;
  for (int64_t j : mb) {
    const Sample& s = samples[size_t(j)];
    l.first_row.push_back(offset + s.prompt_length() - 1);
    offset += int64_t(s.tokens.size());
  }
  return l;
}

std::vector<std::vector<int32_t>> seqs_of(const std::vector<Sample>& samples,
                                          const std::vector<int64_t>& mb) {
  std::vector<std::vector<int32_t>> seqs;
  for (int64_t j : mb) seqs.push_back(samples[size_t(j)].tokens);
  return seqs;
}

void check_samples(const std::vector<Sample>& samples) {
  for (size_t i = 0; i < samples.size(); ++i) {
    const Sample& s = samples[i];
    if (s.prompt_length() < 1)
      GYRE_THROW(invalid_argument,
                 "sample {} (index {}): prompt length {} — a trained sample needs at least one "
                 "prompt token before its response",
                 i, s.index.value_or(-1), s.prompt_length());
    s.validate(fmt::format("sample {}", i));
  }
}

void add_metrics(Metrics& into, const Metrics& from) {
  for (auto& [k, v] : from) into[k] += v;
}

// Data parallel: each rank filled the per-token values of its own samples (others are empty);
// afterwards every rank holds all of them (x + 0 is exact, so the owner's bits survive).
void sum_over_ranks(dist::Comm& comm, const std::vector<Sample>& samples, BatchTokenValues& v) {
  size_t total = 0;
  for (auto& s : samples) total += size_t(s.response_length);
  std::vector<float> flat(total, 0.0f);
  size_t off = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    const size_t R = size_t(samples[i].response_length);
    if (v[i].size() == R) std::copy(v[i].begin(), v[i].end(), flat.begin() + off);
    off += R;
  }
  comm.all_reduce(flat);
  off = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    const size_t R = size_t(samples[i].response_length);
    v[i].assign(flat.begin() + off, flat.begin() + off + R);
    off += R;
  }
}

// Data parallel: the micro-batch metrics are partial sums (normalised by the whole step), so the
// step values are their sums over the ranks. Every rank must report the same metric names.
void sum_metrics_over_ranks(dist::Comm& comm, Metrics& m) {
  std::string keys;
  std::vector<double> vals;
  for (auto& [k, v] : m) keys += k + "\n", vals.push_back(v);
  std::string root_keys = keys;
  comm.broadcast(root_keys, 0);
  if (comm.all_reduce(root_keys == keys ? 0.0 : 1.0, dist::ReduceOp::max) != 0.0)
    GYRE_THROW(internal, "{}: data-parallel ranks computed different train metrics ({} here)",
               comm.where(), m.size());
  comm.all_reduce(vals);
  size_t i = 0;
  for (auto& [k, v] : m) v = vals[i++];
}

}  // namespace

std::vector<std::vector<float>> loss_masks_of(const std::vector<Sample>& samples) {
  std::vector<std::vector<float>> masks(samples.size());
  for (size_t i = 0; i < samples.size(); ++i) {
    const Sample& s = samples[i];
    auto& m = masks[i];
    m.assign(size_t(s.response_length), s.remove_sample ? 0.0f : 1.0f);
    if (!s.remove_sample && !s.loss_mask.empty())
      for (size_t t = 0; t < m.size(); ++t) m[t] = float(s.loss_mask[t]);
  }
  return masks;
}

ActorTrainer::ActorTrainer(model::CausalLM& actor, model::CausalLM* ref, train::AdamW& optimizer,
                           ActorTrainerOptions options)
    : actor_(actor), ref_(ref), optimizer_(optimizer), opt_(std::move(options)) {
  opt_.algo.validate();
  if (opt_.global_batch_size < 1)
    GYRE_THROW(invalid_argument, "--global-batch-size must be >= 1, got {}",
               opt_.global_batch_size);
  if (!(opt_.temperature > 0))
    GYRE_THROW(invalid_argument, "--rollout-temperature must be > 0 for training, got {}",
               opt_.temperature);
  if (opt_.algo.advantage_estimator == AdvantageEstimator::ppo && !opt_.critic)
    GYRE_THROW(invalid_argument, "--advantage-estimator ppo needs a critic model");
  if (opt_.critic && opt_.data_parallel && opt_.data_parallel->size() > 1)
    GYRE_THROW(unsupported,
               "the PPO critic runs on one process; data parallelism is for the actor");
  const bool needs_ref = opt_.algo.use_kl_loss || opt_.algo.kl_coef != 0;
  if (needs_ref && !ref_)
    GYRE_THROW(invalid_argument,
               "--use-kl-loss / --kl-coef need a reference model: pass --ref-load DIR");
}

std::vector<std::vector<float>> ActorTrainer::response_logprobs(
    model::CausalLM& m, const std::vector<Sample>& samples,
    const std::vector<std::vector<int64_t>>& schedule) const {
  std::vector<std::vector<float>> out(samples.size());
  for (const auto& mb : schedule) {
    // The same code path as training (score_for_training) so the numbers are bitwise those the
    // first training micro-step computes; the saved activations are dropped right away.
    model::ScoredBatch sb = model::score_for_training(m, seqs_of(samples, mb), opt_.temperature);
    sb.state.clear();
    const Layout l = layout_of(samples, mb);
    const Tensor lp_host = sb.logp.to(Device::cpu);  // the model's device -> host (no-op on CPU)
    const float* lp = lp_host.f32();
    for (size_t k = 0; k < mb.size(); ++k) {
      const Sample& s = samples[size_t(mb[k])];
      auto& v = out[size_t(mb[k])];
      v.assign(lp + l.first_row[k], lp + l.first_row[k] + s.response_length);
    }
  }
  return out;
}

Metrics ActorTrainer::train(const std::vector<Sample>& samples, const std::vector<float>& rewards) {
  const int64_t n = int64_t(samples.size());
  if (n == 0) GYRE_THROW(invalid_argument, "train: no samples");
  if (int64_t(rewards.size()) != n)
    GYRE_THROW(invalid_argument, "train: {} samples but {} rewards", n, rewards.size());
  if (n % opt_.global_batch_size != 0)
    GYRE_THROW(invalid_argument,
               "train: {} samples is not a multiple of --global-batch-size {} (rollout_batch_size "
               "x n_samples_per_prompt must equal global_batch_size x num_steps_per_rollout)",
               n, opt_.global_batch_size);
  check_samples(samples);
  const int64_t num_steps = n / opt_.global_batch_size;
  dist::DataParallelOptimizer* dp = opt_.data_parallel;
  const int dp_size = dp ? dp->size() : 1, dp_rank = dp ? dp->rank() : 0;
  if (opt_.global_batch_size % dp_size != 0)
    GYRE_THROW(invalid_argument,
               "--global-batch-size {} is not a multiple of the {} data-parallel ranks (each rank "
               "trains on an equal share of every step)",
               opt_.global_batch_size, dp_size);
  // This rank's share of every step's samples (all of them without DP): a contiguous slice, or
  // with --balance-data its part of the step's balanced partition (every rank computes the same).
  const bool balance = opt_.balance_data && dp_size > 1;

  // The micro-batch schedule of every step, fixed up front: old/ref log-prob passes use it too.
  std::vector<std::vector<std::vector<int64_t>>> steps(static_cast<size_t>(num_steps));
  std::vector<std::vector<int64_t>> all_mbs;
  double imbalance_sum = 0;  // Σ over steps of (the heaviest rank's tokens / the mean)
  for (int64_t s = 0; s < num_steps; ++s) {
    const int64_t begin = s * opt_.global_batch_size;
    std::vector<int64_t> step_lengths;
    for (int64_t i = 0; i < opt_.global_batch_size; ++i)
      step_lengths.push_back(int64_t(samples[size_t(begin + i)].tokens.size()));
    std::vector<std::vector<int64_t>> parts;  // every rank's step-relative indices
    if (balance) {
      parts = balanced_partitions(step_lengths, dp_size);
    } else {
      for (int r = 0; r < dp_size; ++r) {
        const dist::Range rr = dist::shard_range(opt_.global_batch_size, r, dp_size);
        parts.emplace_back();
        for (int64_t i = rr.begin; i < rr.end; ++i) parts.back().push_back(i);
      }
    }
    int64_t heaviest = 0, total = 0;
    for (const auto& part : parts) {
      int64_t t = 0;
      for (int64_t i : part) t += step_lengths[size_t(i)];
      heaviest = std::max(heaviest, t), total += t;
    }
    imbalance_sum += total > 0 ? double(heaviest) * dp_size / double(total) : 1.0;
    const auto& mine = parts[size_t(dp_rank)];
    std::vector<int64_t> lengths;
    for (int64_t i : mine) lengths.push_back(step_lengths[size_t(i)]);
    auto mbs = make_micro_batches(lengths, opt_.micro);
    for (auto& mb : mbs) {
      for (auto& j : mb) j = begin + mine[size_t(j)];
      all_mbs.push_back(mb);
    }
    steps[size_t(s)] = std::move(mbs);
  }

  const auto masks = loss_masks_of(samples);
  BatchTokenValues rollout_lp(static_cast<size_t>(n));
  bool have_rollout_lp = true;
  for (int64_t i = 0; i < n; ++i) {
    rollout_lp[size_t(i)] = samples[size_t(i)].rollout_log_probs;
    if (int64_t(rollout_lp[size_t(i)].size()) != samples[size_t(i)].response_length)
      have_rollout_lp = false;
  }
  if (opt_.algo.use_rollout_logprobs && !have_rollout_lp)
    GYRE_THROW(invalid_argument,
               "--use-rollout-logprobs: some samples carry no rollout log-probs (one per response "
               "token); the rollout must return log-probs");

  Metrics metrics;
  // How evenly the step's tokens were spread over the DP ranks: 1 = evenly.
  if (dp_size > 1) metrics["train/dp_tokens_max_over_mean"] = imbalance_sum / double(num_steps);
  // One bf16 copy of each actor weight per optimizer step (bf16 on CUDA; step_weight_copies.h):
  // installed around the actor's passes — the old-log-prob pass and every micro-step's forward and
  // backward — so a weight is rounded once per step instead of once per pass. Same numbers as
  // per-call rounding (the ratio check below stays exact). An optimizer with no engine copies to
  // write (not colocated: AdamW, or the data-parallel optimizer on every rank) writes these in its
  // update and they carry over to the next step (Megatron's bf16 parameters), and past the call's
  // last step to the next call, whose old-log-prob pass then rounds nothing — unless the actor's
  // weights changed in between (weights_generation(): load_weights, to(), mark_weights_changed()).
  // Colocated, they serve only a first call (see below) and are dropped before each optimizer
  // step.
  std::unique_ptr<model::StepWeightCopies> copies_owner = std::move(kept_copies_);
  if (!copies_owner || kept_generation_ != actor_.weights_generation())
    copies_owner = std::make_unique<model::StepWeightCopies>(actor_);
  model::StepWeightCopies& actor_copies = *copies_owner;
  // Colocated (share_bf16_weight_copies: AdamW writes the rollout engine's copies, the same
  // weights' bf16 roundings under the same storage keys), the passes read the engine's copies
  // instead of making their own — from the second call on, and only while the actor's
  // weights_generation() is what it was when the previous call ended without an error: then
  // every copy is bf16(current value) (AdamW wrote it in the last update, or the engine's weight
  // sync re-cast it, or the engine converted it from these values), so a pass converts nothing
  // and the first-step ratio stays exact. A copy the engine lacks is converted on first use into
  // its cache and written by AdamW from then on; the engine reads it after its next weight sync,
  // whose StreamFence orders this thread's stream first. Saves a cast per weight per step and the
  // trainer's own 2 bytes per parameter. Under data parallelism the same holds for the optimizer
  // that steps: dist::DataParallelOptimizer writes the attached copies in its update too (ZeRO-1:
  // its final unflatten; all_reduce: its inner AdamW).
  const std::shared_ptr<ops::Bf16WeightCache> engine_copies = actor_copies.cache() == nullptr
                                                                  ? nullptr
                                                              : dp ? dp->bf16_copies()
                                                                   : optimizer_.bf16_copies();
  const bool read_engine_copies = engine_copies && engine_copies_current_ &&
                                  engine_copies_generation_ == actor_.weights_generation();
  engine_copies_current_ = false;  // set again only by a call that ends without an error
  ops::Bf16WeightCache* const pass_copies =
      read_engine_copies ? engine_copies.get() : actor_copies.cache();
  const bool optimizer_writes_copies = actor_copies.cache() != nullptr && !engine_copies;
  // The optimizer writes the copies only inside this call: detach them on every exit (kept ones
  // are attached again by the next call, which checks the generation first).
  struct DetachCopies {
    train::AdamW* opt;
    dist::DataParallelOptimizer* dp;
    ~DetachCopies() {
      if (dp) dp->set_bf16_copies({});
      if (opt) opt->set_bf16_copies({});
    }
  } detach{optimizer_writes_copies && !dp ? &optimizer_ : nullptr,
           optimizer_writes_copies ? dp : nullptr};
  if (optimizer_writes_copies) {
    if (dp)
      dp->set_bf16_copies(actor_copies.for_optimizer());
    else
      optimizer_.set_bf16_copies(actor_copies.for_optimizer());
  }
  // Old log-probs: recomputed (default) before any weight change (slime's perf/log_probs_time;
  // the reference model's pass is timed with it).
  BatchTokenValues old_lp;
  BatchTokenValues ref_lp;
  BatchTokenValues values;  // critic values before any update (ppo)
  {
    PhaseTimer phase(metrics, "log_probs");
    if (!opt_.algo.use_rollout_logprobs) {
      const ops::UseBf16WeightCache use_copies(pass_copies);
      old_lp = response_logprobs(actor_, samples, all_mbs);
    }
    if (ref_) ref_lp = response_logprobs(*ref_, samples, all_mbs);
    if (opt_.critic) values = opt_.critic->values(samples, all_mbs);
    if (dp && dp_size > 1) {
      if (!old_lp.empty()) sum_over_ranks(dp->comm(), samples, old_lp);
      if (!ref_lp.empty()) sum_over_ranks(dp->comm(), samples, ref_lp);
    }
  }

  // Rollout-vs-trainer mismatch, every step (slime's train_rollout_logprob_abs_diff, plus max).
  if (have_rollout_lp && !old_lp.empty()) {
    double sum = 0, cnt = 0, mx = 0;
    for (int64_t i = 0; i < n; ++i)
      for (size_t t = 0; t < masks[size_t(i)].size(); ++t) {
        if (masks[size_t(i)][t] == 0) continue;
        double d = std::fabs(double(old_lp[size_t(i)][t]) - rollout_lp[size_t(i)][t]);
        sum += d, cnt += 1, mx = std::max(mx, d);
      }
    metrics["train/train_rollout_logprob_abs_diff"] = cnt ? sum / cnt : 0.0;
    metrics["train/train_rollout_logprob_abs_diff_max"] = mx;
  }

  // Advantages and returns (slime's compute_advantages_and_returns).
  AdvantageInputs ain;
  ain.rewards = rewards;
  ain.loss_masks = masks;
  ain.log_probs = opt_.algo.use_rollout_logprobs ? rollout_lp : old_lp;
  if (have_rollout_lp) ain.rollout_log_probs = rollout_lp;
  ain.ref_log_probs = ref_lp;
  ain.values = values;
  AdvantageOutputs adv = compute_advantages_and_returns(opt_.algo, ain);

  std::vector<int64_t> rollout_ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    rollout_ids[size_t(i)] =
        samples[size_t(i)].rollout_id.value_or(samples[size_t(i)].index.value_or(i));

  // Optimizer steps (slime's perf/actor_train_time: forward, backward and AdamW).
  Metrics step_sum;
  PhaseTimer train_phase(metrics, "actor_train");
  for (int64_t s = 0; s < num_steps; ++s) {
    // The step normaliser (loss_reducer.h): rollouts in the step (per-sample mean, slime's
    // default) or the step's token count (--calculate-per-token-loss), over the whole step (every
    // DP rank), so the ranks' gradients add up to the single-process one. Indexed by sample.
    const int64_t step_begin = s * opt_.global_batch_size;
    BatchTokenValues step_masks;
    std::vector<int64_t> step_rollouts;
    for (int64_t j = step_begin; j < step_begin + opt_.global_batch_size; ++j)
      step_masks.push_back(masks[size_t(j)]), step_rollouts.push_back(rollout_ids[size_t(j)]);
    std::vector<int64_t> uniq = step_rollouts;
    std::sort(uniq.begin(), uniq.end());
    uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
    const double normalizer =
        opt_.algo.calculate_per_token_loss ? num_loss_tokens(step_masks) : double(uniq.size());
    const auto denoms = rollout_mask_sums(step_rollouts, step_masks);

    model::Gradients grads = actor_.zeros_like_parameters();
    // The optimizer's lists: the parameters and this step's gradient tensors, in parameters()
    // order (the indices the gradient-ready hook reports).
    train::NamedTensors params, gradv;
    for (auto& p : actor_.parameters()) params.emplace_back(p.name, p.tensor);
    for (auto& g : grads.tensors) gradv.emplace_back(g.name, g.tensor);
    Metrics mb_sum;
    if (opt_.critic) {
      // Value-loss step on the same micro-batches and normaliser (slime trains the critic on the
      // returns of the same rollout, one step per actor step).
      std::vector<double> full_denoms(static_cast<size_t>(n), 1.0);
      for (int64_t j = step_begin; j < step_begin + opt_.global_batch_size; ++j)
        full_denoms[size_t(j)] = denoms[size_t(j - step_begin)];
      for (auto& [k, v] : opt_.critic->train_step(opt_.algo, samples, steps[size_t(s)], adv.returns,
                                                  values, masks, full_denoms, normalizer))
        mb_sum[k] += v;
    }
    for (size_t mbi = 0; mbi < steps[size_t(s)].size(); ++mbi) {
      const ops::UseBf16WeightCache use_copies(pass_copies);  // forward and backward
      const auto& mb = steps[size_t(s)][mbi];
      const bool want_entropy = true;  // train/entropy is always logged (slime computes it too)
      model::ScoredBatch sb =
          model::score_for_training(actor_, seqs_of(samples, mb), opt_.temperature, want_entropy);
      const Layout l = layout_of(samples, mb);
      LossBatch lb;
      // The loss runs on the host over the response rows (a GPU model's [T] vectors come down).
      const Tensor lp_host = sb.logp.to(Device::cpu), ent_host = sb.entropy.to(Device::cpu);
      const float* lp = lp_host.f32();
      const float* ent = ent_host.f32();
      for (size_t k = 0; k < mb.size(); ++k) {
        const size_t j = size_t(mb[k]);
        const int64_t r0 = l.first_row[k], R = samples[j].response_length;
        lb.loss_masks.push_back(masks[j]);
        lb.log_probs.emplace_back(lp + r0, lp + r0 + R);
        lb.entropy.emplace_back(ent + r0, ent + r0 + R);
        if (!old_lp.empty()) lb.old_log_probs.push_back(old_lp[j]);
        if (have_rollout_lp) lb.rollout_log_probs.push_back(rollout_lp[j]);
        if (!ref_lp.empty()) lb.ref_log_probs.push_back(ref_lp[j]);
        lb.advantages.push_back(adv.advantages[j]);
        lb.sample_denoms.push_back(denoms[size_t(mb[k] - step_begin)]);
      }
      // Runtime check: first micro-step of the rollout, weights untouched since old log-probs.
      if (s == 0 && mbi == 0 && !old_lp.empty() && opt_.check_first_step_ratio) {
        for (size_t k = 0; k < mb.size(); ++k)
          for (size_t t = 0; t < lb.log_probs[k].size(); ++t)
            if (lb.log_probs[k][t] != lb.old_log_probs[k][t])
              GYRE_THROW(internal,
                         "runtime check failed: first optimizer micro-step sees ratio != 1 "
                         "(sample {}, token {}: logp {} vs recomputed old logp {}). The training "
                         "forward is not bitwise reproducible or the weights changed after the "
                         "old log-prob pass; pass --skip-ratio-check to continue anyway",
                         mb[k], t, lb.log_probs[k][t], lb.old_log_probs[k][t]);
      }
      LossOutput lo = compute_loss(opt_.algo, lb, normalizer);
      if (s == 0 && mbi == 0 && !old_lp.empty() && opt_.check_first_step_ratio &&
          opt_.algo.loss_type == LossType::policy_loss) {
        if (lo.metrics["train/ppo_kl"] != 0.0 || lo.metrics["train/pg_clipfrac"] != 0.0)
          GYRE_THROW(internal,
                     "runtime check failed: train/ppo_kl = {} and train/pg_clipfrac = {} "
                     "on the first micro-step (must be exactly 0)",
                     lo.metrics["train/ppo_kl"], lo.metrics["train/pg_clipfrac"]);
      }
      // Scatter per-token loss gradients into the packed rows and backpropagate.
      const int64_t T = sb.batch.num_tokens();
      Tensor dlogp = Tensor::zeros({T});
      Tensor dent;
      if (!lo.grad_entropy.empty()) dent = Tensor::zeros({T});
      for (size_t k = 0; k < mb.size(); ++k) {
        const int64_t r0 = l.first_row[k];
        for (size_t t = 0; t < lo.grad_log_probs[k].size(); ++t)
          dlogp.f32()[r0 + int64_t(t)] = lo.grad_log_probs[k][t];
        if (dent.defined())
          for (size_t t = 0; t < lo.grad_entropy[k].size(); ++t)
            dent.f32()[r0 + int64_t(t)] = lo.grad_entropy[k][t];
      }
      // Data parallel: the step's last backward completes the gradients, so it starts reducing
      // each bucket as soon as its layers are done (communication overlapped with the rest of
      // the backward); earlier micro-batches only accumulate.
      const bool overlap = dp && mbi + 1 == steps[size_t(s)].size();
      if (overlap) {
        dp->begin_overlap(params, gradv);
        actor_.set_grad_ready_hook(dp->grad_ready_hook());
      }
      // On the way out: the model forgets the hook; when the backward threw, the optimizer is
      // disarmed too (step() will not run for this step).
      struct HookReset {
        model::CausalLM* m;
        dist::DataParallelOptimizer* dp;
        int exceptions = std::uncaught_exceptions();
        ~HookReset() {
          if (!m) return;
          m->set_grad_ready_hook({});
          if (std::uncaught_exceptions() > exceptions) dp->abort_overlap();
        }
      } hook_reset{overlap ? &actor_ : nullptr, dp};
      model::backward_from_logprobs(actor_, sb, dlogp, dent, grads);
      add_metrics(mb_sum, lo.metrics);
      // Entropy of the response tokens, per-sample mean reduced like the loss (for logging).
      LossReducer red(lb.loss_masks, lb.sample_denoms, opt_.algo.calculate_per_token_loss,
                      normalizer);
      mb_sum["train/entropy"] += red.reduce(lb.entropy);
    }
    // Optimizer step (data parallel: finishes the reductions the last backward started). The
    // metrics' collective comes after it: the buckets' collectives were issued inside the
    // backward, so one between them and step()'s would put the ranks' calls in different orders
    // if a rank had not overlapped, and would make the host wait for every reduction.
    // Copies the optimizer does not write go first: dropping them here lowers the peak (AdamW /
    // ZeRO-1 scratch) and leaves no window in which they are stale. Written ones are kept when
    // the update covered every copy (after_optimizer_step), else dropped.
    if (!optimizer_writes_copies) actor_copies.weights_changed();
    auto [norm, lr] = dp ? dp->step(params, gradv) : optimizer_.step(params, gradv);
    if (optimizer_writes_copies) actor_copies.after_optimizer_step();
    if (dp && dp_size > 1) sum_metrics_over_ranks(dp->comm(), mb_sum);
    mb_sum["train/grad_norm"] = norm;
    mb_sum["train/lr"] = lr;
    mb_sum["train/loss_normalizer"] = normalizer;
    add_metrics(step_sum, mb_sum);
  }
  for (auto& [k, v] : step_sum) metrics[k] = v / double(num_steps);
  train_phase.stop();
  metrics["train/num_steps"] = double(num_steps);
  // Carry the copies the last update wrote (after_optimizer_step kept them only if it covered
  // every one) to the next call. Any exit before this line drops them.
  if (optimizer_writes_copies && actor_copies.cache()->entries() > 0) {
    kept_copies_ = std::move(copies_owner);
    kept_generation_ = actor_.weights_generation();
  }
  if (engine_copies) {
    engine_copies_current_ = true;
    engine_copies_generation_ = actor_.weights_generation();
  }
  last_call_read_engine_copies_ = read_engine_copies;
  return metrics;
}

const ops::Bf16WeightCache* ActorTrainer::kept_weight_copies() const {
  return kept_copies_ ? kept_copies_->cache() : nullptr;
}

}  // namespace gyre::rl
