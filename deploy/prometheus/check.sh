#!/bin/sh
# Checks the Prometheus rules with promtool (Debian: `apt-get install prometheus`): syntax, then the
# unit tests that fire each rule. Run from anywhere: `deploy/prometheus/check.sh`.
set -eu
cd "$(dirname "$0")"
if ! command -v promtool >/dev/null 2>&1; then
    echo "promtool not found: install Debian's prometheus package (apt-get install prometheus)" >&2
    exit 2
fi
promtool check rules trellis-rules.yml
promtool test rules trellis-rules.test.yml
