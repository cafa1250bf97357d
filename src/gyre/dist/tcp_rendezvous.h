// TCP rendezvous: how processes that share no MPI job agree on an NCCL unique id.
//
// NCCL needs one opaque id (ncclUniqueId, 128 bytes) drawn by rank 0 and handed to every other
// rank out of band; NCCL then builds its own transport. Inside an MPI job the id travels over MPI
// (nccl_comm_from). Two kinds of launch have no MPI job: torchrun-style launches (RANK, WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT: every rank started by a shell, a container runtime or torchrun
// itself), and SGLang's weight-update group, where a trainer and separately started servers meet
// at the trainer's `master_address:master_port` (/init_weights_update_group). Both are the same
// step: rank 0 listens on the port, every other rank connects, says who it is, and reads the id.
// This carries only the bootstrap bytes; the weights and gradients go over NCCL.
//
// Wire (one TCP connection per non-zero rank, closed after the reply): the client sends the
// 8-byte magic "GYRERDV1", its rank and the world size it expects (two little-endian int32, plus
// the group name's length-prefixed bytes); rank 0 answers with one status byte (0 = ok) and a
// length-prefixed payload (the id, or an error text when the rank, world size or group name
// disagree — the client then throws that text, and rank 0 keeps waiting for the right ranks: a
// stray client of another job cannot abort it). Rank 0 returns once every rank 1..world-1 has been
// served; a rank that connects twice is refused by name. Rank 0's timeout message names the
// missing ranks and the last refusal.
//
// Invariants: every wait is bounded by the timeout — a rank that never arrives makes rank 0 throw
// naming the missing ranks and the port; a client that cannot reach rank 0 retries until the
// timeout and then throws naming the address. No call blocks past its deadline.
#pragma once
#include <functional>
#include <string>

namespace gyre::dist {

struct RendezvousOptions {
  std::string host;  // rank 0's address (a name or an IPv4/IPv6 literal); rank 0 listens on all
  int port = 0;      // 1..65535
  int rank = 0, world_size = 1;
  std::string group = "world";  // must match on every rank (a stale client of another group fails)
  double timeout_s = 600;
  // Rank 0 only, polled about every 100 ms while it waits: a non-empty reason stops the wait with
  // an io Error carrying it (the NCCL weight push: an engine already answered that it will not
  // join). Empty function: wait for the ranks or the timeout.
  std::function<std::string()> abort_check;
};

// Rank 0 passes `payload` and gets it back; every other rank gets rank 0's payload. Errors
// (gyre::Error): a bad option (port, rank outside the world), a port in use on rank 0, an
// unreachable rank 0 after the timeout, ranks missing at rank 0's deadline, mismatched world size
// or group name (named on both sides).
std::string tcp_rendezvous_share(const RendezvousOptions& options, const std::string& payload);

// A TCP port that was free on this host a moment ago (bound to port 0 and released), for a rank 0
// that picks its own master_port. Another process may take it before rank 0 listens again: the
// rendezvous then fails naming the port.
int pick_free_port();

}  // namespace gyre::dist
