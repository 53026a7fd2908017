#!/usr/bin/env bash
# The documented TensorBoard check (issue 6): write `nas board genotypes/`, serve it on loopback and
# let headless Chromium (Debian: apt-get install chromium chromium-driver) photograph the Images tab.
# Usage: bash benchmarks/board_screenshot.sh [OUT.png] [PATH...]   (default docs/board.png genotypes/)
set -eu
shot=${1:-docs/board.png}
shift || true
paths=("${@:-genotypes/}")
logdir=$(mktemp -d)
nas board "${paths[@]}" --logdir "$logdir" --no-serve
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
python3 -m tensorboard.main --logdir "$logdir" --host 127.0.0.1 --port "$port" >/dev/null 2>&1 &
board=$!
trap 'kill $board 2>/dev/null; rm -rf "$logdir"' EXIT
for _ in $(seq 60); do curl -fs "http://127.0.0.1:$port/data/runs" >/dev/null && break; sleep 0.5; done
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1500,1300 \
  --virtual-time-budget=15000 --screenshot="$shot" "http://127.0.0.1:$port/?darkMode=false#images"
echo "screenshot: $shot"
