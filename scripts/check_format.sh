#!/usr/bin/env bash
# Fails when a C++/CUDA source differs from clang-format's output (.clang-format: Google, 100 cols).
# Fix with: bash scripts/check_format.sh --fix
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files '*.h' '*.cc' '*.cu' '*.cuh' 2>/dev/null || true)
[ -n "$files" ] || exit 0
if [ "${1:-}" = "--fix" ]; then
  echo "$files" | xargs clang-format -i
  exit 0
fi
bad=0
for f in $files; do
  if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
    echo "format: $f differs from clang-format (run: bash scripts/check_format.sh --fix)"
    bad=1
  fi
done
exit $bad
