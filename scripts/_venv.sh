# Sourced by scripts/demo and scripts/test: a project virtual environment with gridwatch installed.
# Usage: . scripts/_venv.sh EXTRA   (EXTRA is "embedded" or "dev")
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${GRIDWATCH_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
stamp="$venv/.gridwatch-$1-$(cksum < "$root/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e "$root[$1]"
    touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
cd "$root"
