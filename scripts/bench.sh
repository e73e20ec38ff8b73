#!/usr/bin/env bash
# npm run bench -- <name> [args…]: runs bench/<name>.ts; its last line is one JSON object.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=${1:-}
if [ -z "$name" ] || [ ! -f "$root/bench/$name.ts" ]; then
  echo "usage: npm run bench -- <name>; available: $(cd "$root/bench" && ls *.ts 2>/dev/null | grep -v "^lib.ts$" | sed 's/\.ts$//' | tr '\n' ' ')" >&2
  exit 2
fi
shift
cd "$root"
exec node --import tsx "bench/$name.ts" "$@"
