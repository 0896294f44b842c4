#!/usr/bin/env bash
# Regenerate sample_reports/ from fresh runs on this machine: the bundled demo (DDP) and a
# multi-op job (all_gather, reduce_scatter, all_to_all, broadcast, send/recv, all_reduce), each
# as terminal text, JSON, HTML and a Perfetto trace, plus a PNG screenshot of the demo's HTML
# (needs chromium) — one command:  bash scripts/make_sample_reports.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=sample_reports
tmp=$(mktemp -d)
mkdir -p "$out"
python3 -m commprof run -q --out "$tmp/demo" --probe --probe-sizes 64K:16MiB:4 -- \
    python3 -m torch.distributed.run --standalone --nproc-per-node=2 \
    commprof/examples/demo_train.py --steps 60 > /dev/null
python3 -m commprof run -q --out "$tmp/multi_op" -- \
    python3 -m torch.distributed.run --standalone --nproc-per-node=2 \
    commprof/examples/multi_op_train.py --steps 20 > /dev/null
for name in demo multi_op; do
    python3 -m commprof report "$tmp/$name" --width 110 -o "$out/$name.txt"
    python3 -m commprof report "$tmp/$name" -o "$out/$name.json"
    python3 -m commprof report "$tmp/$name" -o "$out/$name.html"
    python3 -m commprof report "$tmp/$name" -o "$out/$name.trace.json"
done
if command -v chromium > /dev/null; then
    chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
        --hide-scrollbars --window-size=1300,2300 --virtual-time-budget=10000 \
        --screenshot="$out/demo.png" "file://$PWD/$out/demo.html" 2> /dev/null
else
    echo "chromium not found: $out/demo.png not refreshed" >&2
fi
echo "sample reports written to $out/ from $tmp"
