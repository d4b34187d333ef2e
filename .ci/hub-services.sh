#!/usr/bin/env bash
# System services the hub's tests need: git, git-lfs and chromium (Debian packages; chromium drives the
# web pages' test through Playwright, which never downloads a browser of its own). Idempotent and quiet;
# .ci/run calls it as root after `pip install -e .`.
set -euo pipefail
need=()
command -v git >/dev/null 2>&1 || need+=(git)
git lfs version >/dev/null 2>&1 || need+=(git-lfs)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)  # text in screenshots
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# An older huggingface_hub (0.36.x, which falls back from Xet to LFS by itself) in its own venv, for
# tests/test_hub_old_client.py. build/ is git-ignored.
root="$(cd "$(dirname "$0")/.." && pwd)"
old="$root/build/hf-0.36"
if ! "$old/bin/python" -c "import huggingface_hub as h; assert h.__version__.startswith('0.36.')" 2>/dev/null; then
  python3 -m venv "$old"
  "$old/bin/pip" install -q --disable-pip-version-check "huggingface_hub>=0.36,<0.37"
fi
