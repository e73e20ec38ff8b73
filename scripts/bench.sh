#!/usr/bin/env bash
# npm run bench -- <name> [args…]: runs bench/<name>.ts; its last line is one JSON object.
# The services and copies a bench starts run from their bundles (dist/, built here first with
# scripts/build.mjs), as a deployment runs them; UNDERSTUDY_RUN_BUILT=0 runs them from source
# under tsx instead. The bench's own load process always runs under tsx.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=${1:-}
if [ -z "$name" ] || [ ! -f "$root/bench/$name.ts" ]; then
  echo "usage: npm run bench -- <name>; available: $(cd "$root/bench" && ls *.ts 2>/dev/null | grep -v "^lib.ts$" | sed 's/\.ts$//' | tr '\n' ' ')" >&2
  exit 2
fi
shift
cd "$root"
export UNDERSTUDY_RUN_BUILT=${UNDERSTUDY_RUN_BUILT:-1}
if [ "$UNDERSTUDY_RUN_BUILT" = 1 ]; then node scripts/build.mjs --all >/dev/null; fi
exec node --import tsx "bench/$name.ts" "$@"
