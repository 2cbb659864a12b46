#!/usr/bin/env bash
# 500 kill -9 cycles of the crash test (CI runs 20). Prints the seed; replay a failure with
# SURGE_CRASH_SEED=<seed>.
set -euo pipefail
cd "$(dirname "$0")/.."
SURGE_CRASH_CYCLES="${SURGE_CRASH_CYCLES:-500}" SURGE_CRASH_ORDERS_PER_THREAD="${SURGE_CRASH_ORDERS_PER_THREAD:-60}" \
  cargo test --release --test recovery_crash -- --nocapture \
  | grep -v '^ACK '
