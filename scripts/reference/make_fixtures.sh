#!/usr/bin/env bash
# Regenerate tests/fixtures/wan/** with the pinned reference stack.
#   bash scripts/reference/make_fixtures.sh [--case tiny_cfg ...] [--out DIR]
# The venv lives in $KILN_REF_VENV (default: .venv-ref in the repo root); it is created, or
# re-synced when requirements.txt changes. Extra pip arguments (for example a CPU-only torch
# index: --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple)
# can be given in $KILN_REF_PIP_ARGS.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${KILN_REF_VENV:-$root/.venv-ref}"
requirements="$root/scripts/reference/requirements.txt"
stamp="$venv/.kiln-ref-requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --quiet ${KILN_REF_PIP_ARGS:-} -r "$requirements"
    echo "$want" >"$stamp"
fi
if "$venv/bin/python" -c "import ftfy" 2>/dev/null; then
    echo "ftfy is installed in $venv; it changes prompt cleaning. Run: $venv/bin/python -m pip uninstall -y ftfy" >&2
    exit 1
fi

exec "$venv/bin/python" "$root/scripts/reference/make_fixtures.py" "$@"
