#!/usr/bin/env python3
"""Benchmark what a key costs: typed during a flood from the other side, and typed at the end
of a long input line. Side by side with a baseline talk.py (by default the one of the commit
before these fixes), measured in the same run, round after round.

    python3 tests/bench/bench_keys.py [--baseline REV] [--rounds N]

Not a test: nothing here asserts anything about time. It prints, for each talk.py:

- the time from a key written into the pty to that key on the input row, on an idle
  conversation and 0.1 s into a flood of 100,000 lines from the other side; and the time
  until the whole flood is on the screen;
- the time per key (write, then wait for its echo) for 100 keys typed at the end of an empty
  line and of a line of 2,000 characters; and what InputLine alone costs a key there (insert
  and view, in a process of its own: the pty's round trip hides a fraction of a millisecond).

Every talk.py runs in a pseudo-terminal through the end-to-end harness (tests/terminal.py), its
socket in a temporary directory of its own; all of it is removed on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_talk import pump_until
from terminal import REPO_ROOT, Peer, Talk, socket_dir

FLOOD_LINES = 100_000
FLOOD_KEY_AFTER = 0.1
LONG_LINE = 2000
KEYS = 100
#: The last commit before keys came first and a key's cost stopped growing with the line.
DEFAULT_BASELINE = "4818c10"


def input_row(talk: Talk) -> str:
    return talk.display[-1].rstrip()


def ends_with(key: str) -> Callable[[Talk], bool]:
    return lambda talk: input_row(talk).endswith(key)


def connected(program: Path, directory: str) -> tuple[Talk, Peer]:
    path = os.path.join(directory, f"k{time.monotonic_ns()}.sock")
    talk = Talk(path, program=program)
    pump_until(talk, lambda t: t.display[0].startswith("Waiting"), "the first screen")
    peer = Peer.connect(path)
    pump_until(talk, lambda t: t.display[0].startswith("Talking"), "the peer")
    return talk, peer


def send_all(peer: Peer, data: bytes) -> None:
    """The flood; it ends when the talk that reads it is gone."""
    with contextlib.suppress(OSError):
        peer.sock.sendall(data)


def key_during(program: Path, directory: str, flood: bool) -> float:
    """Seconds from a key written to it on the input row (0.1 s into a flood, if ``flood``)."""
    talk, peer = connected(program, directory)
    try:
        sender = None
        if flood:
            data = b"".join(b"flood line %06d\n" % n for n in range(FLOOD_LINES))
            sender = threading.Thread(target=send_all, args=(peer, data), daemon=True)
            sender.start()
            end = time.perf_counter() + FLOOD_KEY_AFTER
            while time.perf_counter() < end:
                talk.pump(0.005)
        start = time.perf_counter()
        os.write(talk.child.child_fd, b"z")
        shown = pump_until(talk, lambda t: input_row(t).endswith("z"), "the key")
        return shown - start
    finally:
        peer.close()
        talk.child.kill(9)
        talk.close()


def whole_flood(program: Path, directory: str) -> float:
    """Seconds from the start of the flood to its last line on the screen: what taking the
    flood a share at a time costs in all."""
    talk, peer = connected(program, directory)
    try:
        data = b"".join(b"flood line %06d\n" % n for n in range(FLOOD_LINES))
        last = f"<you> flood line {FLOOD_LINES - 1:06d}"
        start = time.perf_counter()
        threading.Thread(target=send_all, args=(peer, data), daemon=True).start()
        return pump_until(talk, lambda t: last in t.display, "the last line") - start
    finally:
        peer.close()
        talk.child.kill(9)
        talk.close()


def per_key(program: Path, directory: str, length: int) -> float:
    """Seconds per key, each written and waited for, at the end of a line of ``length``."""
    talk, peer = connected(program, directory)
    try:
        fd = talk.child.child_fd
        if length:
            os.write(fd, b"\x1b[200~" + b"x" * length + b"\x1b[201~")  # a paste, in one go
            pump_until(talk, lambda t: input_row(t).endswith("x" * 10), "the long line")
        start = time.perf_counter()
        for n in range(KEYS):
            key = "abcdefghij"[n % 10]
            os.write(fd, key.encode())
            pump_until(talk, ends_with(key), "the key")
        return (time.perf_counter() - start) / KEYS
    finally:
        peer.close()
        talk.child.kill(9)
        talk.close()


_VIEW_COST = """
import sys, time
import talk
line = talk.InputLine()
for ch in ("wörd 漢字 " * 400)[: int(sys.argv[1])]:
    line.insert(ch)
line.view(79)
start = time.perf_counter()
for _ in range(1000):
    line.insert("a")
    line.view(79)
print((time.perf_counter() - start) / 1000)
"""


def view_cost(program: Path, length: int) -> float:
    """Seconds per key of InputLine alone (insert, then view), in a process of its own,
    at the end of a line of ``length`` characters, some of them wide."""
    ran = subprocess.run(
        [sys.executable, "-c", _VIEW_COST, str(length)],
        cwd=program.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(ran.stdout)


def baseline_copy(rev: str, directory: str) -> Path:
    for name in ("talk.py", "pubmarine.py"):
        shown = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "show", f"{rev}:{name}"], capture_output=True, check=True
        )
        Path(directory, name).write_bytes(shown.stdout)
    return Path(directory, "talk.py")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision to compare")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    directory = socket_dir(prefix="talk-bench-")
    try:
        programs = {
            f"baseline ({args.baseline})": baseline_copy(args.baseline, directory),
            "talk.py": REPO_ROOT / "talk.py",
        }
        cases: dict[str, Callable[[Path], float]] = {
            "key, idle": lambda p: key_during(p, directory, False),
            f"key, 0.1 s into a flood of {FLOOD_LINES:,} lines": lambda p: key_during(
                p, directory, True
            ),
            f"the whole flood of {FLOOD_LINES:,} lines shown": lambda p: whole_flood(p, directory),
            "per key, empty line": lambda p: per_key(p, directory, 0),
            f"per key, line of {LONG_LINE:,}": lambda p: per_key(p, directory, LONG_LINE),
            "InputLine alone, per key, empty line": lambda p: view_cost(p, 0),
            f"InputLine alone, per key, line of {LONG_LINE:,}": lambda p: view_cost(p, LONG_LINE),
        }
        results: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):  # round after round, so that both meet the same noise
            for case, measure in cases.items():
                for name, program in programs.items():
                    results.setdefault((case, name), []).append(measure(program))
        print(f"median (min-max) of {args.rounds} rounds, ms")
        print(f"{'':48}" + "".join(f"{name:>26}" for name in programs))
        for case in cases:
            cells = []
            for name in programs:
                got = [t * 1000 for t in results[(case, name)]]
                cells.append(f"{statistics.median(got):.1f} ({min(got):.1f}-{max(got):.1f})")
            print(f"{case:48}" + "".join(f"{cell:>26}" for cell in cells))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
