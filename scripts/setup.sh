#!/usr/bin/env bash
# Installs what kettle and its tests need on a fresh machine of this kind
# (Debian, root): Nix, bubblewrap, git, pnpm. Idempotent and quiet when
# everything is already there.
set -euo pipefail

need=()
command -v nix-build >/dev/null 2>&1 || need+=(nix-bin)
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v git >/dev/null 2>&1 || need+=(git)
command -v git-http-backend >/dev/null 2>&1 || [ -x /usr/lib/git-core/git-http-backend ] || need+=(git)
command -v unzip >/dev/null 2>&1 || need+=(unzip)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v pnpm >/dev/null 2>&1; then
  echo "setup: installing pnpm from the npm registry" >&2
  npm install -g --silent pnpm@9 >/dev/null
fi

# Nix from Debian: flakes need the experimental features; offline builds must
# not wait on the public cache.
mkdir -p /etc/nix
if ! grep -q '^experimental-features' /etc/nix/nix.conf 2>/dev/null; then
  echo 'experimental-features = nix-command flakes' >> /etc/nix/nix.conf
fi
