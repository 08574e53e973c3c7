#!/usr/bin/env bash
# Installs and starts what the test suite talks to for real: a local PostgreSQL server (sweeps with
# several workers) and Chromium (the report page renders without script errors).
set -euo pipefail
echo "services: none yet"
