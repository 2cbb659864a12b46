#!/usr/bin/env bash
# Validate the live /metrics exposition with `promtool check metrics` (Debian package
# `prometheus`): a real server on loopback ports takes traffic, is scraped, and promtool lints
# the result (tests/observability_metrics.rs). Fails if promtool reports anything.
# Skips (exit 0, with a message) only if promtool is missing and cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
  as_root=()
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then as_root=(sudo -n); fi
  if command -v apt-get >/dev/null 2>&1; then
    echo "promtool missing: installing the Debian package prometheus" >&2
    { "${as_root[@]}" apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends prometheus; } \
      >/dev/null 2>&1 || true
  fi
fi
if ! command -v promtool >/dev/null 2>&1; then
  echo "SKIP promtool check: promtool is not installed and the Debian package prometheus could not be installed" >&2
  exit 0
fi
promtool --version 2>&1 | head -n 1

dump="$(mktemp)"
trap 'rm -f "$dump"' EXIT
SURGE_REQUIRE_PROMTOOL=1 SURGE_METRICS_DUMP="$dump" \
  cargo test --quiet --test observability_metrics -- --test-threads=1
# The test already ran promtool; run it once more here so its verdict is visible in CI logs.
promtool check metrics <"$dump"
echo "promtool check metrics: OK ($(grep -c '^# TYPE' "$dump") metrics)"
