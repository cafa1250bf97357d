#!/usr/bin/env bash
# Installs every Debian package gyre's build, tests and quick-start need. Idempotent; run as root.
# Why each dependency is here: docs/dependencies.md.
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build pkg-config git ca-certificates curl
  clang clang-format libclang-rt-dev          # libFuzzer + sanitizers, format check
  libopenblas-dev                             # CPU GEMM
  nlohmann-json3-dev libyaml-cpp-dev libcli11-dev libspdlog-dev libfmt-dev
  libpcre2-dev libutf8proc-dev                # tokenizer regexes, NFC
  libginac-dev libcln-dev                     # symbolic math equivalence (math rewards)
  libzstd-dev libxxhash-dev                   # delta weight sync, checksums
  libboost-dev libboost-system-dev            # Beast/Asio HTTP server
  libopenmpi-dev openmpi-bin                  # multi-process launcher + CPU collectives
  libgtest-dev libgmock-dev libbenchmark-dev  # tests, benchmarks
  wrk                                         # HTTP load benchmark
  python3                                     # bench scripts' JSON summaries and checks
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js + npm (e2e tests drive the server with the official OpenAI Node SDK). Images that ship
# NodeSource's nodejs already carry npm; Debian's split packages are installed only when absent.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  echo "[gyre] installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "[gyre] all Debian packages present"
fi
