#!/usr/bin/env bash
# Starts `kettle serve` on its embedded defaults (:8080, data in ./kettle-data).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
bash scripts/setup.sh
go generate ./web # the web page's WebAssembly verifier (docs/web.md)
go build -o bin/kettle ./cmd/kettle
exec bin/kettle serve "$@"
