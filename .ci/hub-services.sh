#!/usr/bin/env bash
# System services the hub's tests need: git and git-lfs (Debian packages). Idempotent and quiet;
# .ci/run calls it as root after `pip install -e .`.
set -euo pipefail
need=()
command -v git >/dev/null 2>&1 || need+=(git)
git lfs version >/dev/null 2>&1 || need+=(git-lfs)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
