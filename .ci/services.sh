#!/usr/bin/env bash
# Installs and starts what the test suite talks to for real: a local PostgreSQL server (sweeps with
# several workers) and Chromium (the report page renders without script errors).
set -euo pipefail
# --- PostgreSQL (owner: sweep engineer) --------------------------------------------------------
# A local server with role/password/database urbansound/urbansound/urbansound_test, the default of
# the tests marked `postgres` (URBANSOUND_TEST_POSTGRES_URL points them elsewhere). Idempotent:
# installs only when missing, starts only when stopped, creates the role and database only once.
# A failure here only makes those tests skip (with the reason), so it never stops CI.
postgres_service() {
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    echo "services: installing PostgreSQL"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null || return 1
  fi
  local version
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1) || return 1
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$version main"; then
    pg_createcluster "$version" main >/dev/null || return 1
  fi
  if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $4}' | grep -qx online; then
    pg_ctlcluster "$version" main start || return 1
  fi
  for _ in $(seq 1 30); do
    pg_isready -q -h localhost && break
    sleep 1
  done
  pg_isready -q -h localhost || return 1
  local psql=(runuser -u postgres -- psql -v ON_ERROR_STOP=1 -tAq)
  if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = 'urbansound'")" != "1" ]; then
    "${psql[@]}" -c "CREATE ROLE urbansound LOGIN PASSWORD 'urbansound'" || return 1
  fi
  if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'urbansound_test'")" != "1" ]; then
    "${psql[@]}" -c "CREATE DATABASE urbansound_test OWNER urbansound" || return 1
  fi
  echo "services: PostgreSQL $version on localhost:5432 (database urbansound_test)"
}
# (set -e does not apply inside a function called from `if`: each step says `|| return 1`.)
if ! postgres_service; then
  echo "services: PostgreSQL is not available; the tests marked postgres will skip"
fi
# --- Chromium (owner: report engineer) ---------------------------------------------------------
# Debian's chromium renders report.html headless in tests/test_report.py, which skips (saying why)
# where it is absent. Idempotent: installs only when missing; a failure never stops CI.
chromium_service() {
  if ! command -v chromium >/dev/null 2>&1; then
    echo "services: installing chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null || return 1
  fi
  command -v chromium >/dev/null 2>&1 || return 1
  echo "services: $(chromium --version 2>/dev/null | head -n 1)"
}
if ! chromium_service; then
  echo "services: chromium is not available; the report page test will skip"
fi
