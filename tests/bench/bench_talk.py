#!/usr/bin/env python3
"""Benchmark the real talk.py on this machine: start-up, latency, a big paste, idle CPU, memory.

Run it with one command from anywhere::

    python3 tests/bench/bench_talk.py [--markdown]

It is not a test: pytest does not collect it (the name does not match ``test_*.py`` and it has
no test functions), and nothing here asserts anything about time. It measures, prints a table
with each figure beside its goal (PASS/MISS), and with ``--markdown`` also prints the same table
ready to paste into an issue or a README. The exit status is 1 only if a measurement could not
be made at all (talk.py crashed, lines were lost, ...), never because a goal was missed.

Every talk.py runs in a pseudo-terminal through the end-to-end harness (tests/terminal.py), with
its socket in a temporary directory of its own, never the default /var/tmp/talk.sock. All the
processes, sockets and the directory are cleaned up on the way out, also after a failure or a
Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import select
import shutil
import signal
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from terminal import Peer, Talk, socket_dir

ROWS, COLS = 24, 80
STARTS = 10  # start-ups measured (median)
WARMUP = 3  # messages sent before the latency sample (first-use costs)
MESSAGES = 30  # messages in the latency sample
PASTE_LINES = 2000
PASTE_CHUNK = 4096  # bytes per write() into the pty during the paste
IDLE_SECONDS = 5.0
POLL = 0.001  # longest single wait in the read loops; select() returns as soon as data arrives
WAIT = 10.0  # deadline of any one wait for a screen
PASTE_DEADLINE = 20.0

WAITING = "Waiting for someone to connect to"
TALKING = "Talking to"
MYSELF, YOU = "<myself>", "<you>"
# A python that becomes `cat`: the Talk harness always starts sys.executable.
CAT_ARGS = ["-c", "import os; os.execvp('cat', ['cat'])"]

GOAL_STARTUP_MS = 150.0
GOAL_LATENCY_MS = 5.0
GOAL_PASTE_S = 3.0
GOAL_IDLE_PERCENT = 1.0
GOAL_RSS_MIB = 40.0


@dataclass
class Row:
    """One line of the result table. ``verdict`` is PASS, MISS, ERROR, or empty for context."""

    measure: str
    result: str
    goal: str = ""
    verdict: str = ""


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# ---------------------------------------------------------------------------------------------
# Processes and waiting
# ---------------------------------------------------------------------------------------------


class Session:
    """Owns every process, socket and the temporary directory of one benchmark run."""

    def __init__(self) -> None:
        self.dir = socket_dir(prefix="talk-bench-")  # under TMPDIR if short enough for AF_UNIX
        self.talks: list[Talk] = []
        self.peers: list[Peer] = []
        # Kept alive from one section to the next (idle CPU and memory look at them).
        self.live: dict[str, Talk] = {}

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def spawn(self, socket_path: str, **kwargs: object) -> Talk:
        talk = Talk(socket_path, rows=ROWS, cols=COLS, **kwargs)  # type: ignore[arg-type]
        self.talks.append(talk)
        return talk

    def connect(self, socket_path: str) -> Peer:
        peer = Peer.connect(socket_path, WAIT)
        self.peers.append(peer)
        return peer

    @staticmethod
    def dispose(talk: Talk) -> None:
        """Kill ``talk`` at once and release its pty, without pexpect's sleeps on close."""
        child = talk.child
        if child.closed:
            return
        with contextlib.suppress(Exception):
            if child.isalive():
                child.kill(signal.SIGKILL)
                deadline = time.monotonic() + 2.0
                while child.isalive() and time.monotonic() < deadline:
                    time.sleep(0.002)
        with contextlib.suppress(Exception):
            child.ptyproc.delayafterclose = 0.0
            talk.close()

    def close(self) -> None:
        for peer in self.peers:
            with contextlib.suppress(OSError):
                peer.close()
        for talk in self.talks:
            self.dispose(talk)
        shutil.rmtree(self.dir, ignore_errors=True)


def describe(talk: Talk) -> str:
    """The screen (and the farewell, if the program ended) for an error message."""
    screen = "\n".join(f"  {i:2}|{line}" for i, line in enumerate(talk.display))
    tail = f"\n  after exit: {talk.after_exit!r}" if talk.eof else ""
    return f"{screen}{tail}"


def pump_until(talk: Talk, done: Callable[[Talk], bool], what: str, timeout: float = WAIT) -> float:
    """Read ``talk``'s pty in a tight loop until ``done(talk)``; perf_counter() at that moment.

    ``done`` is looked at again only when new output has been fed to the screen. Each read waits
    at most POLL seconds, and select() inside returns as soon as there is something to read.
    """
    deadline = time.perf_counter() + timeout
    seen = -1
    while True:
        if len(talk.raw) != seen:
            seen = len(talk.raw)
            if done(talk):
                return time.perf_counter()
        if not talk.pump(POLL):
            if done(talk):
                return time.perf_counter()
            raise RuntimeError(f"talk.py ended while waiting for {what}:\n{describe(talk)}")
        if time.perf_counter() > deadline:
            raise RuntimeError(
                f"timed out after {timeout:g} s waiting for {what}:\n{describe(talk)}"
            )


def drain(talk: Talk, quiet: float = 0.2, timeout: float = WAIT) -> None:
    """Read and throw away ``talk``'s output until it has been quiet for ``quiet`` seconds."""
    fd = talk.child.child_fd
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], quiet)
        if not ready:
            return
        try:
            if not os.read(fd, 1 << 16):
                return
        except OSError:  # EIO: the program is gone
            return


def screen_drawn(talk: Talk) -> bool:
    """Status line says it waits, and both separators are there: the first full screen."""
    rows = talk.display
    return (
        rows[0].startswith(WAITING)
        and rows[1] == "-" * (COLS - 1)
        and rows[ROWS - 2] == "=" * (COLS - 1)
    )


def status_is(prefix: str) -> Callable[[Talk], bool]:
    return lambda talk: talk.display[0].startswith(prefix)


def shows_row(text: str) -> Callable[[Talk], bool]:
    """Some row is exactly ``text`` (so 'msg 1' is not mistaken for 'msg 10')."""
    return lambda talk: text in talk.display


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc/PID/stat, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wakeups(pid: int) -> int:
    """Context switches of all threads of ``pid`` so far: a program that polls keeps waking up."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    total += int(line.split()[1])
    return total


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` from /proc/PID/status, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no VmRSS for pid {pid}")


# ---------------------------------------------------------------------------------------------
# The measurements
# ---------------------------------------------------------------------------------------------


def spawn_to_exit(session: Session, args: list[str]) -> float:
    """Seconds from spawning ``python ARGS`` in a pty until its pty reports end of file."""
    start = time.perf_counter()
    talk = session.spawn("", args=args)
    while talk.pump(POLL):
        if time.perf_counter() - start > WAIT:
            raise RuntimeError(f"python {' '.join(args)} still running after {WAIT:g} s")
    end = time.perf_counter()
    session.dispose(talk)
    return end - start


def bench_startup(session: Session) -> list[Row]:
    """1. Spawn -> the first full screen, median of STARTS; interpreter start as a baseline."""
    times = []
    for i in range(STARTS):
        start = time.perf_counter()
        talk = session.spawn(session.path(f"start{i}.sock"))
        times.append(pump_until(talk, screen_drawn, "first full screen") - start)
        session.dispose(talk)
    bare = [spawn_to_exit(session, ["-c", "pass"]) for _ in range(STARTS)]
    imports = [spawn_to_exit(session, ["-c", "import talk"]) for _ in range(STARTS)]
    median = statistics.median(times)
    return [
        Row(
            f"1. start-up to full screen (median of {STARTS})",
            f"median {ms(median)}, min {ms(min(times))}",
            f"< {GOAL_STARTUP_MS:g} ms",
            verdict(median * 1000 < GOAL_STARTUP_MS),
        ),
        Row("   baseline: python -c pass, to exit", f"median {ms(statistics.median(bare))}"),
        Row(
            "   baseline: python -c 'import talk', to exit",
            f"median {ms(statistics.median(imports))}",
        ),
    ]


def round_trips(
    sender: Talk, receiver: Talk, shown: Callable[[str], str], echo: str
) -> list[float]:
    """Write 'msg N\\r' into ``sender``'s pty; time until ``receiver``'s screen shows it.

    ``shown(line)`` is the row the receiver shows for it; ``echo`` (if not empty) is the prefix
    of the sender's own copy, waited for (untimed) before the next message.
    """
    fd = sender.child.child_fd
    times = []
    for n in range(WARMUP + MESSAGES):
        line = f"msg {n}"
        data = f"{line}\r".encode()
        start = time.perf_counter()
        os.write(fd, data)
        end = pump_until(receiver, shows_row(shown(line)), f"{shown(line)!r} on the screen")
        if echo:
            pump_until(sender, shows_row(f"{echo} {line}"), f"{echo} {line!r} on the screen")
        if n >= WARMUP:
            times.append(end - start)
    return times


def bench_latency(session: Session) -> list[Row]:
    """2. Enter on A -> the line on B's screen; and the harness alone through `cat`."""
    path = session.path("pair.sock")
    a = session.spawn(path)
    pump_until(a, screen_drawn, "A's first screen")
    b = session.spawn(path)
    pump_until(b, status_is(TALKING), "B talking")
    pump_until(a, status_is(TALKING), "A talking")
    times = round_trips(a, b, lambda line: f"{YOU} {line}", MYSELF)
    session.live.update(A=a, B=b)  # for idle CPU and memory, once they have talked

    cat = session.spawn("", args=CAT_ARGS)
    try:
        base = round_trips(cat, cat, lambda line: line, "")
    finally:
        session.dispose(cat)

    median = statistics.median(times)
    return [
        Row(
            "2. Enter on A -> line on B's screen",
            f"median {ms(median)}, max {ms(max(times))}",
            f"median < {GOAL_LATENCY_MS:g} ms",
            verdict(median * 1000 < GOAL_LATENCY_MS),
        ),
        Row(
            "   baseline: harness only, pty -> cat -> pyte",
            f"median {ms(statistics.median(base))}, max {ms(max(base))}",
        ),
    ]


def bench_paste(session: Session) -> list[Row]:
    """3. PASTE_LINES lines typed into A as fast as the pty takes them; a plain peer reads."""
    path = session.path("paste.sock")
    talk = session.spawn(path)
    pump_until(talk, screen_drawn, "the paste instance's first screen")
    peer = session.connect(path)
    pump_until(talk, status_is(TALKING), "the paste instance talking")
    drain(talk)

    expected = [f"line {n}" for n in range(PASTE_LINES)]
    data = "".join(f"{line}\r" for line in expected).encode()
    fd = talk.child.child_fd
    written: list[float] = []  # when the pty had taken the last byte
    failed: list[BaseException] = []

    def write_all() -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view[:PASTE_CHUNK]) :]
            written.append(time.perf_counter())
        except OSError as e:  # the program died under us; reported below
            failed.append(e)

    writer = threading.Thread(target=write_all, name="paste-writer", daemon=True)
    sock = peer.sock
    sock.setblocking(False)
    received = bytearray()
    lines = 0
    start = time.perf_counter()
    writer.start()
    end = start
    # Meanwhile keep reading the program's screen output, or it would block writing it and stop
    # reading keys; the output is thrown away (feeding it to pyte would only cost us CPU).
    while lines < PASTE_LINES and time.perf_counter() - start < PASTE_DEADLINE:
        ready, _, _ = select.select([fd, sock.fileno()], [], [], 0.05)
        if fd in ready:
            try:
                os.read(fd, 1 << 16)
            except OSError:
                break  # EIO: talk.py is gone
        if sock.fileno() in ready:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            received += chunk
            lines += chunk.count(b"\n")
            end = time.perf_counter()
    writer.join(2.0)
    drain(talk)  # its last redraw, so the idle measurement starts idle

    got = bytes(received).decode("utf-8", "replace").split("\n")[:-1]
    if got == expected:
        session.live["paste"] = talk
        took = end - start
        rows = [
            Row(
                f"3. {PASTE_LINES}-line paste, until the peer has all",
                f"{took:.3f} s, {PASTE_LINES}/{PASTE_LINES} in order",
                f"< {GOAL_PASTE_S:g} s, none lost",
                verdict(took < GOAL_PASTE_S),
            )
        ]
        pty = f", pty took all input in {written[0] - start:.3f} s" if written else ""
        rows.append(Row("   paste throughput", f"{PASTE_LINES / took:.0f} lines/s{pty}"))
        return rows
    missing = sorted(set(expected) - set(got))
    first_bad = next((i for i, (x, y) in enumerate(zip(got, expected)) if x != y), len(got))
    why = f"; writer: {failed[0]}" if failed else ""
    raise RuntimeError(
        f"paste: the peer got {len(got)} of {PASTE_LINES} lines, {len(missing)} missing, "
        f"first difference at line {first_bad}{why}"
    )


def bench_idle(session: Session) -> list[Row]:
    """4. CPU time of each live instance over IDLE_SECONDS of silence."""
    live = {name: talk for name, talk in session.live.items() if talk.child.isalive()}
    if not live:
        raise RuntimeError("no talk.py left running to measure")
    for talk in live.values():
        drain(talk)
    before = {name: (cpu_seconds(talk.pid), wakeups(talk.pid)) for name, talk in live.items()}
    start = time.perf_counter()
    time.sleep(IDLE_SECONDS)  # not a synchronisation: this is the idle time being measured
    elapsed = time.perf_counter() - start
    rows = []
    for name, talk in live.items():
        cpu, woke = before[name]
        percent = (cpu_seconds(talk.pid) - cpu) / elapsed * 100
        woke = wakeups(talk.pid) - woke
        rows.append(
            Row(
                f"4. idle CPU over {IDLE_SECONDS:g} s, {label(name)}",
                f"{percent:.2f} % of one CPU, {woke} wake-ups",
                f"< {GOAL_IDLE_PERCENT:g} %",
                verdict(percent < GOAL_IDLE_PERCENT),
            )
        )
    return rows


def bench_memory(session: Session) -> list[Row]:
    """5. VmRSS of each live instance after its conversation."""
    rows = []
    for name, talk in session.live.items():
        if not talk.child.isalive():
            continue
        rss = rss_mib(talk.pid)
        rows.append(
            Row(
                f"5. memory (VmRSS) after talking, {label(name)}",
                f"{rss:.1f} MiB",
                f"< {GOAL_RSS_MIB:g} MiB",
                verdict(rss < GOAL_RSS_MIB),
            )
        )
    if not rows:
        raise RuntimeError("no talk.py left running to measure")
    return rows


def label(name: str) -> str:
    return "paste inst." if name == "paste" else name


SECTIONS: list[tuple[str, Callable[[Session], list[Row]], str]] = [
    ("1. start-up to full screen", bench_startup, f"< {GOAL_STARTUP_MS:g} ms"),
    ("2. Enter on A -> line on B's screen", bench_latency, f"median < {GOAL_LATENCY_MS:g} ms"),
    (f"3. {PASTE_LINES}-line paste", bench_paste, f"< {GOAL_PASTE_S:g} s, none lost"),
    ("4. idle CPU", bench_idle, f"< {GOAL_IDLE_PERCENT:g} %"),
    ("5. memory (VmRSS)", bench_memory, f"< {GOAL_RSS_MIB:g} MiB"),
]


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

HEADER = ("Measure", "Result", "Goal", "")


def plain_table(rows: list[Row]) -> str:
    cells = [HEADER] + [(r.measure, r.result, r.goal, r.verdict) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]

    def line(c: tuple[str, ...]) -> str:
        return "  ".join(text.ljust(width) for text, width in zip(c, widths)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(c) for c in cells[1:])])


def markdown_table(rows: list[Row]) -> str:
    def line(c: tuple[str, ...]) -> str:
        return "| " + " | ".join(text.replace("|", "\\|") for text in c) + " |"

    out = [line(("Measure", "Result", "Goal", "Verdict")), "|---|---|---|---|"]
    for r in rows:
        verdict_text = f"**{r.verdict}**" if r.verdict in ("MISS", "ERROR") else r.verdict
        out.append(line((r.measure.strip(), r.result, r.goal, verdict_text)))
    return "\n".join(out)


def machine() -> str:
    cpus = os.cpu_count() or 0
    load = os.getloadavg()[0]
    return (
        f"{platform.system()} {platform.release()} {platform.machine()}, {cpus} CPUs "
        f"(load {load:.2f}), Python {platform.python_version()}, pty {ROWS}x{COLS}"
    )


NOTES = f"""\
Notes:
- Times are wall clock with time.perf_counter(); the harness reads each pty with pexpect's
  read_nonblocking() in a tight loop (at most {POLL * 1000:g} ms per wait, and select() returns as
  soon as output arrives), feeds it to pyte and checks the screen after every read. So
  figures 1 and 2 include pexpect + pyte work; the `cat` baseline shows how much.
- 1: spawn (fork/exec of {Path(sys.executable).name}) until row 0 says "{WAITING} ..."
  and both separators are drawn; the baselines time spawn until the pty closes.
- 2: A and B talk over a socket; {WARMUP} warm-up messages, then {MESSAGES} timed ones; after each,
  A's own copy is awaited (untimed) before the next.
- 3: 'line N\\r' written in {PASTE_CHUNK}-byte write()s as fast as the pty takes them, from a
  thread; a plain AF_UNIX socket reads on the other side; every line checked, in order.
- 4: utime+stime from /proc/PID/stat (ticks of 1/{os.sysconf("SC_CLK_TCK")} s), nobody typing:
  A and B talking to each other, the paste instance to its silent peer. Wake-ups are
  context switches (all threads); a program that polls wakes up again and again.
- 5: after 2 (A, B: {WARMUP + MESSAGES} messages each) and 3 ({PASTE_LINES} messages).
- Interpreter: {sys.executable}"""


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark talk.py: start-up, latency, a 2000-line paste, idle CPU, memory."
    )
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally below: clean up

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)

    rows: list[Row] = []
    errors: list[str] = []
    began = time.perf_counter()
    session = Session()
    try:
        for title, section, goal in SECTIONS:
            print(f"measuring {title} ...", file=sys.stderr, flush=True)
            try:
                rows += section(session)
            except Exception as e:
                rows.append(Row(title, "could not measure", goal, "ERROR"))
                errors.append(f"{title}: {e}")
                if not isinstance(e, RuntimeError):
                    errors.append(traceback.format_exc())
    finally:
        session.close()

    print()
    print(f"talk.py benchmark on {machine()}")
    print()
    print(plain_table(rows))
    print()
    print(NOTES)
    print(f"Whole run: {time.perf_counter() - began:.1f} s.")
    if args.markdown:
        print()
        print(markdown_table(rows))
    if errors:
        print("\nErrors:", file=sys.stderr)
        for error in errors:
            print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(run())
    except KeyboardInterrupt:  # cleaned up already, in run()
        sys.exit(130)
