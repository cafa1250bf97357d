#!/usr/bin/env bash
# Installs the Node packages the e2e tests use (the official OpenAI Node SDK for
# tests/e2e/serve/openai_node_test.cc) into tests/e2e/node/node_modules (git-ignored).
# Skipped, with a note, where npm is missing; the e2e test then skips its Node cases.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null 2>&1; then
  echo "[gyre] npm not found: skipping Node e2e dependencies (apt-get install npm)" >&2
  exit 0
fi
if [ -d tests/e2e/node/node_modules/openai ]; then
  exit 0
fi
(cd tests/e2e/node && npm install --no-audit --no-fund --loglevel=error)
