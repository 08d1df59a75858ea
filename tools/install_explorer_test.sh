#!/usr/bin/env bash
# What the explorer's browser test (tests/test_explorer_browser.py) needs, where it is missing: Debian's chromium
# and chromedriver (apt-get, when /usr/bin/chromium or /usr/bin/chromedriver is not there), and the "explore"
# extra (gradio) with selenium in the virtual environment (default ./.venv; FSA_VENV=/path for another).
#
#   bash tools/install_explorer_test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FSA_VENV:-.venv}
[ -x "$VENV/bin/python" ] || { echo "[explorer-test] error: no virtual environment at $VENV (run bash tools/install.sh)" >&2; exit 2; }

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  SUDO=
  [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "[explorer-test] installing Debian's chromium and chromium-driver"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

if ! "$VENV/bin/python" -c "import gradio, selenium" 2>/dev/null; then
  echo "[explorer-test] installing the explore extra (gradio) and selenium into $VENV"
  "$VENV/bin/python" -m pip install -q -e ".[explore]" selenium
fi
"$VENV/bin/python" -c "import gradio, selenium; print('[explorer-test] gradio', gradio.__version__, '| selenium', selenium.__version__)"
/usr/bin/chromium --version 2>/dev/null || true
