#!/usr/bin/env bash
# Builds kiln's bench binaries (forward/decode and whole generation) and runs them beside
# diffusers (pinned venv from scripts/reference).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${KILN_REF_VENV:-.venv-ref}
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q -r scripts/reference/requirements.txt; }
cargo build --release -p kiln-models --example bench_wan
cargo build --release -p kiln-pipeline --example bench_generate
"$venv/bin/python" scripts/bench/wan_forward.py "$@"
