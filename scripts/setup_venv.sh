#!/usr/bin/env bash
# Creates .venv (once) and installs requirements.txt into it, then each requirements file
# given as an argument (e.g. requirements-beam.txt); a file is installed again only when it
# changed (its hash is kept in .venv/.<name>.sha256).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# pip, minus the one warning per package that a pip.conf naming absent local indexes prints.
pip_install() {
  .venv/bin/python -m pip install --quiet "$@" 2>&1 |
    { grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory" || true; }
}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
for file in requirements.txt "$@"; do
  stamp=.venv/.$(basename "$file" .txt).sha256
  want=$(sha256sum "$file" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing $file into .venv (the first time: a few minutes, TensorFlow is large)"
    pip_install --upgrade pip
    pip_install -r "$file"
    echo "$want" > "$stamp"
  fi
done
