#!/usr/bin/env bash
# Generate, check (stale generated code fails) or lint the protobuf contracts.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
buf="$root/node_modules/.bin/buf"
case "${1:-}" in
  generate)
    rm -rf "$root/libs/proto/src/gen"
    (cd "$root/proto" && "$buf" generate) ;;
  check)
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    (cd "$root/proto" && "$buf" generate --template "$(sed "s#out: ../libs/proto/src/gen#out: $tmp/gen#; s#local: ../node_modules#local: $root/node_modules#" buf.gen.yaml)")
    if ! diff -r "$tmp/gen" "$root/libs/proto/src/gen" >/dev/null; then
      echo "proto: generated code in libs/proto/src/gen is stale; run: npm run proto:gen" >&2
      diff -r "$tmp/gen" "$root/libs/proto/src/gen" | head -20 >&2
      exit 1
    fi
    echo "proto: generated code is up to date" ;;
  lint)
    (cd "$root/proto" && "$buf" lint) ;;
  *) echo "usage: proto.sh generate|check|lint" >&2; exit 2 ;;
esac
