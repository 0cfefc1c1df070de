#!/usr/bin/env bash
# buf breaking (FILE rules) against main: on a branch, against main; on main itself, against
# the previous commit (so every commit that lands keeps v1 compatible), with uncommitted
# changes, against HEAD.
set -euo pipefail
BUF=${BUF:-.venv/bin/buf}
branch=$(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo "")
if [ "$branch" != "main" ] && git rev-parse --verify --quiet main >/dev/null; then
  against=main
elif [ -n "$(git status --porcelain -- proto 2>/dev/null)" ]; then
  against=HEAD
else
  against=HEAD~1
fi
if ! git cat-file -e "$against:proto/buf.yaml" 2>/dev/null; then
  echo "buf breaking: $against has no proto/ yet, nothing to compare"
  exit 0
fi
echo "buf breaking: proto/ against $against"
"$BUF" breaking proto --against ".git#ref=$(git rev-parse "$against"),subdir=proto"
