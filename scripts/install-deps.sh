#!/usr/bin/env bash
# Install the Debian packages labctl's tests and demo need (only what is missing).
# As root: apt-get install. Otherwise: name what is missing and fail.
set -euo pipefail
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps package scripts from starting system services (sshd, influxdb):
  # labctl's tests start their own instances on their own ports.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Rust lint needs clippy; rustup brings it from the toolchain's own registry-free component store.
if command -v cargo >/dev/null && ! cargo clippy --version >/dev/null 2>&1 && command -v rustup >/dev/null; then
  rustup component add clippy >/dev/null 2>&1 || echo "warning: could not add clippy" >&2
fi
exit 0
