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
# Two clang-format processes at a time (CI has 2 cores); -Werror makes each unformatted file a
# warning naming it and a non-zero exit.
out=$(echo "$files" | xargs -P 2 -n 40 clang-format --dry-run -Werror 2>&1) && rc=0 || rc=$?
bad_files=$(printf '%s\n' "$out" |
  sed -n 's/^\([^: ]*\):[0-9]*:[0-9]*: [a-z]*: code should be clang-formatted.*/\1/p' | sort -u)
for f in $bad_files; do
  echo "format: $f differs from clang-format (run: bash scripts/check_format.sh --fix)"
done
if [ "$rc" != 0 ] && [ -z "$bad_files" ]; then
  printf '%s\n' "$out" >&2
  echo "format: clang-format failed (exit $rc)"
fi
[ "$rc" = 0 ]
