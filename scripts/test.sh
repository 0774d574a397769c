#!/usr/bin/env bash
# Install everything the tests need (pip, and Debian packages for the ARM tests when apt-get is there),
# then lint (ruff, settings in pyproject.toml) and run the default test selection (not slow, not bench).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e ".[train,test]"
bash scripts/install-system-deps.sh || echo "scripts/test.sh: system packages not installed; ARM tests will skip"
bash scripts/fetch-aarch64-runtime.sh || echo "scripts/test.sh: aarch64 TVM runtime not fetched; ARM run tests will skip"
python3 -m ruff check .
python3 -m pytest "$@"
