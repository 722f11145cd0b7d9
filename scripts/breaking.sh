#!/usr/bin/env bash
# buf breaking for the tunnel and admin contracts: compares proto/ of the working tree with the
# previous release (the newest v* tag reachable from the commit before HEAD) or, before the first
# release, with the commit before HEAD. The older tree is taken with `git archive`, so the check
# works in clones, worktrees and temporary repositories alike.
#
# Usage: scripts/breaking.sh [REPO]   (default: this repository; BUF names the buf binary)
set -euo pipefail
repo=${1:-$(cd "$(dirname "$0")/.." && pwd)}
BUF=${BUF:-buf}
cd "$repo"

if ! git rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null; then
  echo "breaking: HEAD has no parent in this clone: nothing to compare"
  exit 0
fi
against=$(git describe --tags --abbrev=0 --match 'v[0-9]*' HEAD~1 2>/dev/null || true)
what="release $against"
if [ -z "$against" ]; then
  against=$(git rev-parse --short HEAD~1)
  what="commit $against (no release tag yet)"
fi
if ! git ls-tree -r --name-only "$against" -- proto | grep -q '\.proto$'; then
  echo "breaking: $what has no protos: nothing to compare"
  exit 0
fi

old=$(mktemp -d)
trap 'rm -rf "$old"' EXIT
git archive "$against" -- buf.yaml proto | tar -x -C "$old"
echo "breaking: proto/ against $what"
"$BUF" breaking --against "$old"
