"""``nas board``: genotypes and runs side by side in TensorBoard."""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from nas.errors import UserError

HELP = """Show genotypes and runs side by side in TensorBoard.

PATH may be a genotype JSON, a search run directory (its per-epoch op
probabilities, genotype diagrams and diffs are replayed), a retrain run
directory (its per-epoch metrics and final HParams record), or a folder of
any of these, e.g. genotypes/ or a sweep's trials/. Each becomes one
TensorBoard run with the genotype's diagram (Images tab), its table and
provenance (Text), its metrics (Scalars) and one row in the HParams table.
Then TensorBoard is started on 127.0.0.1 (unless --host says otherwise) and
its URL printed; Ctrl-C stops it.

examples:
  nas board genotypes/
  nas board runs/qs/search runs/qs/retrain --port 6007
  nas board genotypes/ --logdir runs/board --no-serve
"""

MARKER = ".vlnas-board"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("board", help="show genotypes and runs in TensorBoard", description=HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="genotype JSON, run directory, or a folder of them")
    parser.add_argument("--logdir", default="runs/board", help="where to write the logs (default runs/board)")
    parser.add_argument("--host", default="127.0.0.1", help="address TensorBoard binds to (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=6006, help="TensorBoard's port (default 6006; 0 picks a free one)")
    parser.add_argument("--no-serve", action="store_true", help="only write the logs")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nas.board.collect import collect, write_entry
    from nas.registry import SPACES

    entries = collect(args.paths)
    logdir = Path(args.logdir)
    for entry in entries:
        target = logdir / entry.name
        if target.exists():
            if not (target / MARKER).is_file():
                raise UserError(f"{target}: exists and was not written by nas board; choose another --logdir")
            shutil.rmtree(target)  # rewritten whole, so a second run does not duplicate events
        space = SPACES.get(entry.genotype.space) if entry.genotype.space in SPACES.names() else None
        out = write_entry(entry, logdir, dict(getattr(space, "short_names", {}) or {}),
                          dict(getattr(space, "diagram_links", {}) or {}))
        (out / MARKER).write_text("written by nas board\n")
        print(f"{entry.name}: {entry.source}")
    print(f"wrote {len(entries)} run(s) to {logdir}")
    if args.no_serve:
        print(f"view them with: tensorboard --logdir {logdir} --host 127.0.0.1")
        return 0
    serve(logdir, args.host, args.port)
    return 0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_tensorboard(logdir: Path, host: str, port: int, timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """Start ``tensorboard --logdir`` and wait until it answers; returns the process and its URL."""
    port = port or free_port(host)
    process = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", host,
                                "--port", str(port), "--reload_interval", "5"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://{host}:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise UserError(f"tensorboard did not start: {(process.stderr.read() or '').strip().splitlines()[-1:]}")
        try:
            with urllib.request.urlopen(url + "data/environment", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.3)
    process.terminate()
    raise UserError(f"tensorboard did not answer on {url} within {timeout:.0f} s")


def serve(logdir: Path, host: str, port: int) -> None:
    process, url = start_tensorboard(logdir, host, port)
    print(f"TensorBoard: {url}  (Ctrl-C to stop)", flush=True)
    try:
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        process.terminate()
        process.wait(timeout=10)
