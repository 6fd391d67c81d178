#!/usr/bin/env bash
# Starts `kettle serve` on its embedded defaults (:8080, data in ./kettle-data).
# Each slow step says what it is doing first: on a fresh machine installing
# the tools and the first compile take a minute or more.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "serve.sh: $*" >&2; }
. scripts/env.sh
say "checking the tools builds need (installs nix, bubblewrap, git, pnpm, … if missing)"
bash scripts/setup.sh
say "building the web page's WebAssembly verifier (docs/web.md; about a minute the first time)"
go generate ./web
say "compiling kettle (about a minute on a cold Go cache, seconds after that)"
go build -o bin/kettle ./cmd/kettle
say "starting: bin/kettle serve $*"
exec bin/kettle serve "$@"
