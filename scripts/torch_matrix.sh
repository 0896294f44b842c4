#!/usr/bin/env bash
# Run the tests that depend on torch's internals against one torch release, in a virtual
# environment of its own (never the environment you run this from: pip must not replace a torch).
#
#   bash scripts/torch_matrix.sh 2.14.1                 # venv in ${TMPDIR:-/tmp}/commprof-torch-2.14.1
#   bash scripts/torch_matrix.sh 2.15.0 ~/venvs/t215    # or where you say
#   TORCH_MATRIX_TESTS="tests/unit/test_native_wait.py" bash scripts/torch_matrix.sh 2.14.1
#
# What it runs (TORCH_MATRIX_TESTS overrides): the capture coverage suite (record for record,
# native against Python path, on real torchrun jobs), the native kernel and its Work.wait,
# SIGKILL safety, `commprof try`'s fixes (DDP comm hooks, FSDP2 options) and the GPU windows'
# conversion of torch.profiler events.  The native kernel must build (COMMPROF_TEST_REQUIRE_NATIVE).
#
# torch is installed first, then commprof with a constraint that pins that torch, and the script
# checks afterwards that the venv still has it.  A machine whose pip configuration caps torch
# (this project's CI machines: /etc/xdg/pip/constraints.txt, torch<=2.14.1) refuses newer
# releases; `PIP_CONSTRAINT= bash scripts/torch_matrix.sh 2.15.0` lifts the cap for this script's
# venv only.  Results are recorded in docs/compatibility.md.
set -euo pipefail
version="${1:?usage: scripts/torch_matrix.sh TORCH_VERSION [VENV_DIR]}"
venv="${2:-${TMPDIR:-/tmp}/commprof-torch-$version}"
cd "$(dirname "$0")/.."
repo="$PWD"
tests="${TORCH_MATRIX_TESTS:-tests/integration/test_capture_coverage.py tests/integration/test_native_capture.py tests/unit/test_native_wait.py tests/integration/test_sigkill_capture.py tests/integration/test_try_fixes.py tests/integration/test_gpu_windows.py tests/integration/test_torch_degrade.py}"

say() { echo "torch-matrix[$version]: $*"; }
quiet_pip() { "$venv/bin/python" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
installed() { "$venv/bin/python" -c 'from importlib import metadata; print(metadata.version("torch"))' 2>/dev/null || true; }

if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv"
    python3 -m venv "$venv"
fi
if [ "$(installed)" != "$version" ]; then
    say "installing torch==$version (from the package index or its local cache; minutes)"
    t0=$SECONDS
    quiet_pip "torch==$version"
    say "torch installed in $((SECONDS - t0)) s"
fi
pin="$(mktemp)"
trap 'rm -f "$pin"' EXIT
echo "torch==$version" > "$pin"
quiet_pip -c "$pin" -e "$repo[test]"
have="$(installed)"
if [ "$have" != "$version" ]; then
    say "error: the venv has torch $have after installing commprof, not $version"
    exit 2
fi
say "running: $tests"
t0=$SECONDS
# shellcheck disable=SC2086  # the test list is word-split on purpose
COMMPROF_TEST_REQUIRE_NATIVE=1 PATH="$venv/bin:$PATH" "$venv/bin/python" -m pytest -q -p no:cacheprovider $tests
say "passed in $((SECONDS - t0)) s"
