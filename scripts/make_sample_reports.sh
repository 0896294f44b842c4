#!/usr/bin/env bash
# Regenerate sample_reports/ from a fresh run of the bundled demo.
set -euo pipefail
cd "$(dirname "$0")/.."
run=$(mktemp -d)/demo
python3 -m commprof demo --out "$run" > /dev/null
python3 -m commprof report "$run" --width 110 -o sample_reports/demo.txt
python3 -m commprof report "$run" -o sample_reports/demo.json
echo "sample reports written from $run"
