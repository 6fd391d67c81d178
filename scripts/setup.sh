#!/usr/bin/env bash
# Installs what kettle and its whole test suite need on a fresh machine of
# this kind (Debian, root), from Debian's packages and the npm registry:
# Nix, bubblewrap, git (with git-http-backend and git daemon), zip, unzip,
# curl, veritysetup and sgdisk, Node.js/npm, pnpm, and Debian's cargo where rustup's is absent.
# Idempotent, and silent when everything is already there. docs/testing.md
# lists which tests need which tool.
set -euo pipefail
. "$(dirname "$0")/env.sh"

has() { command -v "$1" >/dev/null 2>&1; }

need=()
has nix-build || need+=(nix-bin)
has bwrap || need+=(bubblewrap)
# git-http-backend and git-daemon come with Debian's git, under its exec path.
if ! has git || [ ! -x "$(git --exec-path 2>/dev/null)/git-http-backend" ] ||
  [ ! -x "$(git --exec-path 2>/dev/null)/git-daemon" ]; then
  need+=(git)
fi
has zip || need+=(zip)
has unzip || need+=(unzip)
has curl || need+=(curl)
has xz || need+=(xz-utils)
# dm-verity disk images for the image-policy tests (verity/, kettle verify --image).
has veritysetup || need+=(cryptsetup-bin)
has sgdisk || need+=(gdisk)
[ -s /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
has node || need+=(nodejs)
has npm || need+=(npm)
# The web page's browser test (test/e2e/web_test.go).
has chromium || need+=(chromium)
# rustup's cargo (~/.cargo/bin, on PATH through env.sh) wins; Debian's is the
# fallback on a machine without it.
has cargo || need+=(cargo)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  # Another process may hold the apt lock (unattended upgrades, a neighbour's
  # setup): wait for it instead of failing.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    "${need[@]}" >/dev/null
fi

if ! has pnpm; then
  echo "setup: installing pnpm from the npm registry" >&2
  npm install -g --silent pnpm@9 >/dev/null
fi

# Nix from Debian: flakes need the experimental features; offline builds must
# not wait on the public cache.
mkdir -p /etc/nix
if ! grep -q '^experimental-features' /etc/nix/nix.conf 2>/dev/null; then
  echo 'experimental-features = nix-command flakes' >> /etc/nix/nix.conf
fi

if ! has go; then
  echo "setup: go is not installed (expected at /usr/local/go); it cannot be installed from here" >&2
  exit 1
fi
