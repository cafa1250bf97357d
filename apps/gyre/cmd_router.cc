// `gyre router --worker-urls URL... [--policy cache_aware|round_robin|power_of_two|
// consistent_hashing|random] [--port N]`: load balancer in front of `gyre serve` workers, a
// drop-in for sgl-router (serve/router.h). Flag names follow sgl-router's; defaults follow slime's
// launch (balance thresholds 10 / 1.2). Prints "gyre router: listening on http://HOST:PORT" on
// stdout once ready, then serves until SIGINT/SIGTERM.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>

#include "command.h"
#include "gyre/core/error.h"
#include "gyre/core/logging.h"
#include "gyre/serve/router.h"

namespace {

using namespace gyre;

int run_router(int argc, char** argv) {
  CLI::App app{"Load-balance requests over gyre serve / SGLang workers"};
  serve::RouterConfig rc;
  std::string policy = "cache_aware";
  rc.http.port = 30000;
  app.add_option("--worker-urls", rc.worker_urls, "worker base URLs (http://host:port)");
  app.add_option("--policy", policy,
                 "cache_aware | round_robin | power_of_two | consistent_hashing | random");
  app.add_option("--host", rc.http.host, "address to listen on");
  app.add_option("--port", rc.http.port, "port (0: pick a free one)")->check(CLI::Range(0, 65535));
  app.add_option("--api-key", rc.http.api_key, "require Authorization: Bearer <key> from clients");
  app.add_option("--worker-api-key", rc.worker_api_key, "Bearer key sent to workers");
  app.add_option("--io-threads", rc.http.io_threads, "HTTP server I/O threads");
  app.add_option("--client-threads", rc.client_threads, "upstream client I/O threads");
  app.add_option("--max-payload-size", rc.http.max_body_bytes, "larger bodies get 413");
  app.add_option("--cache-threshold", rc.policy.cache_threshold,
                 "cache_aware: min prefix match rate to follow the cache");
  app.add_option("--balance-abs-threshold", rc.policy.balance_abs_threshold,
                 "cache_aware: load gap that counts as imbalance");
  app.add_option("--balance-rel-threshold", rc.policy.balance_rel_threshold,
                 "cache_aware: load ratio that counts as imbalance");
  app.add_option("--max-tree-size", rc.policy.max_tree_size, "cache_aware: bytes per worker tree");
  app.add_option("--eviction-interval-secs", rc.eviction_interval_s, "tree eviction period");
  app.add_option("--health-check-interval-secs", rc.health_check_interval_s, "probe period");
  app.add_option("--health-check-timeout-secs", rc.health_check_timeout_s, "probe timeout");
  app.add_option("--health-failure-threshold", rc.health_failure_threshold,
                 "failed probes before a worker leaves the rotation");
  app.add_option("--health-success-threshold", rc.health_success_threshold,
                 "good probes before it comes back");
  app.add_flag("--disable-health-check", rc.disable_health_check, "no periodic probes");
  app.add_option("--retry-max-retries", rc.max_attempts, "attempts per request");
  app.add_option("--request-timeout-secs", rc.request_timeout_s, "per forwarded request");
  app.add_option("--worker-startup-timeout-secs", rc.worker_startup_timeout_s,
                 "how long a new worker is probed quickly");
  CLI11_PARSE(app, argc, argv);
  rc.policy.kind = serve::parse_policy(policy);
  if (rc.max_attempts < 1)
    GYRE_THROW(invalid_argument, "--retry-max-retries must be >= 1, got {}", rc.max_attempts);

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  serve::Router router(rc);
  router.start();
  std::printf("gyre router: listening on http://%s:%d\n", rc.http.host.c_str(), router.port());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  log::info("router: signal {}, shutting down", sig);
  router.stop();
  return 0;
}

}  // namespace

GYRE_COMMAND(router, "load-balance requests over serve workers (sgl-router compatible)",
             run_router);
