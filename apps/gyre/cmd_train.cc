// gyre train: the RL / SFT loop (rl/loop/train_loop.h). Flags use slime's names; every flag can
// also be given as `name: value` in --config x.yaml (the command line wins).
#include "command.h"
#include "gyre/core/flags.h"
#include "gyre/rl/loop/train_loop.h"

static int run_train_cmd(int argc, char** argv) {
  gyre::FlagSet flags("gyre train",
                      "RL post-training (GRPO & family) or SFT of a Hugging Face model, colocated");
  gyre::rl::TrainConfig cfg;
  cfg.register_flags(flags);
  if (!flags.parse(argc, argv)) return 0;
  return gyre::rl::run_train(cfg, flags.dump_yaml());
}
GYRE_COMMAND(train, "RL (GRPO, GSPO, CISPO, REINFORCE++) or SFT training loop", run_train_cmd);
