#!/usr/bin/env bash
# The test command (README): contract check, typecheck, then every test file with node's runner.
# `bash scripts/test.sh [DIR…]` limits the test files to those folders (nx test targets use it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export NX_NO_CLOUD=true NX_DAEMON=false
if ! command -v redis-server >/dev/null; then
  echo "test: redis-server is required (apt-get install -y redis-server)" >&2; exit 1
fi
if [ $# -gt 0 ]; then
  files=$(for d in "$@"; do find "$d" -path '*/node_modules' -prune -o -name '*.test.ts' -print; done | sort)
else
  bash scripts/proto.sh lint
  bash scripts/proto.sh check
  npx tsc -p tsconfig.json
  files=$(find libs services cli examples test -path '*/node_modules' -prune -o -name '*.test.ts' -print | sort)
fi
[ -n "$files" ] || { echo "test: no test files found" >&2; exit 1; }
# Files run one at a time: e2e suites start several processes each and the CI box has 2 cores.
exec node --import tsx --test --test-concurrency=1 --test-timeout=600000 $files
