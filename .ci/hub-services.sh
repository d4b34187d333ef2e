#!/usr/bin/env bash
# System services the hub's tests need: git, git-lfs, chromium and PostgreSQL (Debian packages; chromium
# drives the web pages' test through Playwright, which never downloads a browser of its own). Idempotent and quiet;
# .ci/run calls it as root after `pip install -e .`.
set -euo pipefail
need=()
command -v git >/dev/null 2>&1 || need+=(git)
git lfs version >/dev/null 2>&1 || need+=(git-lfs)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)  # text in screenshots
# Chinese glyphs in figures (seq2seq's attention map; tests/test_report.py fails on a missing glyph under CI)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
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

# PostgreSQL for tests/test_hub_postgres.py: Debian's server, our own cluster "zupu" on 127.0.0.1:5433 (5432
# stays free for a cluster of the machine's own), a role that may create databases (each test run makes
# a fresh one and drops it), and its URL in build/pg-url, which the tests read (ZUPU_TEST_PG_URL overrides it).
if ! command -v pg_createcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
pg_port=5433
pg_version="$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1 | cut -d/ -f5)"
if ! pg_lsclusters -h | awk '{print $2}' | grep -qx zupu; then
  pg_createcluster -q -p "$pg_port" "$pg_version" zupu >/dev/null
  echo "listen_addresses = '127.0.0.1'" >"/etc/postgresql/$pg_version/zupu/conf.d/zupu.conf"
fi
pg_lsclusters -h | awk '$2 == "zupu" {print $4}' | grep -qx online || pg_ctlcluster "$pg_version" zupu start
psql_pg() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$pg_port" -d postgres "$@"; }
if [ "$(psql_pg -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'zupu'")" != 1 ]; then
  psql_pg -c "CREATE ROLE zupu LOGIN CREATEDB PASSWORD 'zupu'"
fi
if [ "$(psql_pg -tAc "SELECT 1 FROM pg_database WHERE datname = 'zupu'")" != 1 ]; then
  psql_pg -c "CREATE DATABASE zupu OWNER zupu"
fi
mkdir -p "$root/build"
echo "postgresql://zupu:zupu@127.0.0.1:$pg_port/zupu" >"$root/build/pg-url"
