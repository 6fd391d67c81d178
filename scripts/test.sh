#!/usr/bin/env bash
# Runs every check and test: gofmt, go vet, and the whole suite under -race,
# with TMPDIR set to a fresh empty directory that must be empty again
# afterwards (docs/testing.md). Extra arguments go to `go test`; arguments
# naming packages (./x/..., github.com/...) replace ./... .
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
bash scripts/setup.sh

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt: these files need formatting:" >&2
  echo "$unformatted" >&2
  exit 1
fi
# The web page's WebAssembly verifier, which the kettle binary embeds
# (docs/web.md): generated, not committed.
go generate ./web
go vet ./...

pkgs=() flags=()
for a in "$@"; do
  case "$a" in
  ./* | github.com/*) pkgs+=("$a") ;;
  *) flags+=("$a") ;;
  esac
done
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)

# A fresh TMPDIR beside the caller's: whatever a test, a kettle process it
# started or a tool they ran leaves behind shows up here. GOTMPDIR too:
# t.TempDir follows it, and go removes its own build files when it exits.
parent="${TMPDIR:-/tmp}"
tmp=$(mktemp -d "$parent/kettle-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

status=0
TMPDIR="$tmp" GOTMPDIR="$tmp" go test -race -count=1 -timeout 14m ${flags[@]+"${flags[@]}"} "${pkgs[@]}" || status=$?

left=$(find "$tmp" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort)
if [ -n "$left" ]; then
  echo "test.sh: the tests left these in TMPDIR (nothing may be left; spools belong in the data dir):" >&2
  find "$tmp" -mindepth 1 -maxdepth 2 -printf '  %P\n' | sort | head -50 >&2
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
