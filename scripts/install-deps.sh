#!/usr/bin/env bash
# Installs what grantfs's scripts need on a fresh Debian 12 machine with only the Rust toolchain:
# fuse3 (fusermount3), sqlite3 and git for the end-to-end tests, libacl1-dev/acl for pjdfstest,
# rustfmt/clippy. Idempotent: installs only what is missing. Needs root for apt-get.
set -euo pipefail

want=()
command -v fusermount3 >/dev/null || want+=(fuse3)
command -v sqlite3 >/dev/null || want+=(sqlite3)
command -v git >/dev/null || want+=(git)
command -v curl >/dev/null || want+=(curl)
command -v python3 >/dev/null || want+=(python3)
[ -e /usr/include/sys/acl.h ] || want+=(libacl1-dev)
command -v setfacl >/dev/null || want+=(acl)
for extra in "$@"; do
  command -v "${extra%%:*}" >/dev/null || want+=("${extra##*:}")
done

if [ ${#want[@]} -gt 0 ]; then
  echo "install-deps: installing ${want[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: need root to apt-get install ${want[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null
fi

if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

if [ ! -e /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
fi
