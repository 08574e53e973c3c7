#!/usr/bin/env bash
# Installs and starts what the test suite talks to for real: a local PostgreSQL server (sweeps with
# several workers) and Chromium (the report page renders without script errors).
set -euo pipefail
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
