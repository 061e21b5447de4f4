"""Drive the real talk.py in a pseudo-terminal and look at what a person would see.

Not a test file: the end-to-end tests import it.

- ``Talk`` runs ``talk.py --socket PATH`` under pexpect in a pty of a given size and feeds every
  byte it writes into a ``pyte`` screen, so tests assert on rows and columns, not escape codes.
- ``Peer`` is a plain AF_UNIX stream socket, the test's own ``nc -U``; ``Listener`` serves one.
- ``Spawner`` and ``Peers`` are the ``spawn`` and ``peer`` fixtures of conftest.py: they start
  ``Talk`` and ``Peer`` objects and close them all at the end of a test.
- ``wait_until`` polls a condition that is not on a screen (a socket file appears, ...).
- ``socket_dir`` makes a directory for sockets under TMPDIR, short enough for AF_UNIX paths
  (``public=True``: one every user can reach); ``child_env`` is the environment the program
  gets (a known TERM, a UTF-8 locale, no PYTHONUNBUFFERED and the like).
- ``ENTER_ALTERNATE_SCREEN`` and ``LEAVE_ALTERNATE_SCREEN`` are the bytes curses sends when it
  takes the terminal and gives it back (``Talk.left_alternate_screen``, ``Talk.after_exit``).
- ``waiting``, ``talking_to``, ``conversation``, ``input_row``, ``drawn``, ``wait_for_status``,
  ``wait_for_waiting``, ``assert_layout``, ``start_server`` and ``start_with_peer`` are what
  talk.py's screen shows and how a test gets talk.py to it.
- ``wait_all_ended`` reads several programs at once until each ends, so that each one's
  ``eof_at`` is when it ended, not when the test got round to reading it.

Nothing here sleeps to synchronise: every wait has a deadline and ends as soon as its condition
holds, and a failed wait raises ``AssertionError`` that shows what was there instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import pwd
import re
import select
import signal
import socket
import stat
import struct
import sys
import tempfile
import termios
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pexpect
import pyte

REPO_ROOT = Path(__file__).resolve().parent.parent
TALK_PY = REPO_ROOT / "talk.py"
if str(REPO_ROOT) not in sys.path:  # for the benchmarks, which run from tests/bench
    sys.path.append(str(REPO_ROOT))
from talk import QUIT_HINTS  # noqa: E402 (talk.py's own words, not a copy)

LOGIN = pwd.getpwuid(os.getuid()).pw_name  # the user name talk.py shows for this process

#: Deadlines, generous because the machine is shared and noisy: for anything to show up; from
#: a trigger (a signal, a peer's death) to the program's exit; from ``.`` or a signal to the
#: exit where talk must be quick (the spec says 0.5 s).
DEADLINE = 10.0
PROMPTLY = 5.0
EXIT_WITHIN = 2.0
NOBODY = 65534  # the uid of nobody, who owns nothing of the test's
#: What a terminal sends around pasted text once bracketed paste is on.
PASTE_START, PASTE_END = b"\x1b[200~", b"\x1b[201~"
_READ_SLICE = 0.05  # longest single blocking read; waits loop on it until their deadline

# What an xterm sends for each key once curses has turned keypad mode on (smkx puts the cursor
# keys in application mode). These are the strings of the xterm-256color terminfo entry, which is
# what curses in the child matches against (TERM is set below).
KEYS: dict[str, bytes] = {
    "enter": b"\r",
    "backspace": b"\x7f",  # DEL; also terminfo kbs, i.e. KEY_BACKSPACE, for xterm-256color
    "ctrl_h": b"\x08",
    "ctrl_a": b"\x01",
    "ctrl_e": b"\x05",
    "ctrl_l": b"\x0c",
    "ctrl_u": b"\x15",
    "ctrl_w": b"\x17",
    "ctrl_c": b"\x03",
    "escape": b"\x1b",
    "tab": b"\t",
    "left": b"\x1bOD",
    "right": b"\x1bOC",
    "up": b"\x1bOA",
    "down": b"\x1bOB",
    "home": b"\x1bOH",
    "end": b"\x1bOF",
    "delete": b"\x1b[3~",
    "pgup": b"\x1b[5~",
    "pgdn": b"\x1b[6~",
}

# CSI (with private markers), OSC (ended by BEL or ST), other two-byte ESC sequences, charset
# selection (ESC ( B), and the remaining C0 controls except newline.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    r"|\x1b[()*+][0-9A-Za-z]"
    r"|\x1b[@-_=>78]"
    r"|[\x00-\x09\x0b-\x1f\x7f]"
)
#: What curses sends to an xterm when it takes the screen over (smcup) and when it gives the
#: terminal back (rmcup, from endwin()).
ENTER_ALTERNATE_SCREEN = b"\x1b[?1049h"
LEAVE_ALTERNATE_SCREEN = b"\x1b[?1049l"


class _Screen(pyte.Screen):
    """pyte's screen with the scrolling that ncurses uses and pyte 0.8 lacks or gets wrong."""

    def scroll_up(self, count: int | None = None, private: bool = False) -> None:
        """SU (CSI n S): the scrolling region moves up ``count`` lines, blanks at the bottom."""
        if private:  # CSI ? ... S is XTSMGRAPHICS, not a scroll
            return
        top, bottom = self.margins or pyte.screens.Margins(0, self.lines - 1)
        self._move_lines(top, bottom, min(count or 1, bottom - top + 1))

    def scroll_down(self, count: int | None = None, private: bool = False) -> None:
        """SD (CSI n T): the scrolling region moves down ``count`` lines, blanks at the top."""
        if private:
            return
        top, bottom = self.margins or pyte.screens.Margins(0, self.lines - 1)
        self._move_lines(top, bottom, -min(count or 1, bottom - top + 1))

    def delete_lines(self, count: int | None = None) -> None:
        """DL (CSI n M). pyte 0.8.2 leaves old text where a blank line should move up."""
        top, bottom = self.margins or pyte.screens.Margins(0, self.lines - 1)
        if top <= self.cursor.y <= bottom:
            self._move_lines(self.cursor.y, bottom, min(count or 1, bottom - self.cursor.y + 1))
            self.carriage_return()

    def _move_lines(self, top: int, bottom: int, up: int) -> None:
        """Move rows ``top``..``bottom`` up by ``up`` (down if negative); blank what is left."""
        self.dirty.update(range(top, bottom + 1))
        old = {y: self.buffer.pop(y) for y in range(top, bottom + 1) if y in self.buffer}
        for y, line in old.items():
            if top <= y - up <= bottom:
                self.buffer[y - up] = line


class _ByteStream(pyte.ByteStream):
    """pyte's byte stream, also passing SU and SD (CSI S, CSI T) to the screen."""

    def __init__(self, screen: _Screen) -> None:
        self.csi = {**pyte.ByteStream.csi, "S": "scroll_up", "T": "scroll_down"}
        super().__init__(screen)


#: The longest path a UNIX socket address can hold: sun_path is 108 bytes with its final NUL.
SOCKET_PATH_MAX = 107
#: Where to make socket directories when TMPDIR is too long for socket paths (see socket_dir).
_SHORT_TEMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


def searchable_by_others(path: str | os.PathLike[str]) -> bool:
    """Any user may reach ``path``: it and every directory above it are searchable by others."""
    path = os.path.realpath(path)
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        if path == os.path.dirname(path):
            return True
        path = os.path.dirname(path)


def socket_dir(prefix: str = "talk-", room: int = 32, public: bool = False) -> str:
    """Make a fresh directory for sockets and return its path; the caller removes it.

    It is made with ``tempfile``, so under TMPDIR like any temporary file, and leaves at least
    ``room`` bytes for the names of the files put in it. A socket's path must fit in 107 bytes;
    a deep TMPDIR may not leave that room, and then (only then) the directory is made in the
    first of /tmp, /var/tmp and /dev/shm that is writable and short enough. ``public``: mode
    0755 and reachable by every user (a private TMPDIR is skipped the same way), for a test
    that runs talk.py as another user. OSError if there is no such place.
    """
    tried = []
    for parent in (None, *_SHORT_TEMP_DIRS):
        try:
            directory = tempfile.mkdtemp(prefix=prefix, dir=parent)
        except OSError as error:
            tried.append(f"{parent or tempfile.gettempdir()}: {error.strerror}")
            continue
        if len(os.fsencode(directory)) + 1 + room > SOCKET_PATH_MAX:
            tried.append(f"{directory}: too long for a socket path")
        elif public and not searchable_by_others(os.path.dirname(directory)):
            tried.append(f"{directory}: other users cannot reach it")
        else:
            if public:
                os.chmod(directory, 0o755)
            return directory
        os.rmdir(directory)
    raise OSError(f"no directory for test sockets ({'; '.join(tried)})")


def strip_escapes(text: str) -> str:
    """``text`` without terminal escape sequences and control characters other than newline."""
    return _ESCAPES.sub("", text)


def wait_until(
    predicate: Callable[[], object],
    timeout: float = DEADLINE,
    what: str = "condition",
    interval: float = 0.02,
) -> None:
    """Poll ``predicate()`` until it is true; AssertionError if ``timeout`` seconds pass first.

    Only for conditions outside a terminal (a file appears, a process ends). The short sleep
    is a poll interval under the deadline, not a guess at how long something takes.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


#: Environment variables that change how Python runs a program; a user does not usually set them.
_PYTHON_BEHAVIOUR = (
    "PYTHONUNBUFFERED",
    "PYTHONDEVMODE",
    "PYTHONWARNINGS",
    "PYTHONASYNCIODEBUG",
    "PYTHONIOENCODING",
    "PYTHONPATH",
    "PYTHONSTARTUP",
)


def _closed_udp_port() -> str:
    """``127.0.0.1:N``, a UDP port where nothing listens (one just let go of)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


#: Where talk.py looks for the talk daemon in tests that do not meet a real one: nowhere, as
#: on a machine without talkd, so that a talkd this machine runs (or one the talkd tests
#: started) does not change what they see. The talkd tests use the real one.
NO_TALK_DAEMON = _closed_udp_port()


def child_env(**overrides: str) -> dict[str, str]:
    """The environment the program runs in: ours, with a known terminal and a UTF-8 locale,
    and without the settings that make Python behave unlike it does for a user; without a
    talk daemon unless ``TALK_DAEMON`` says otherwise."""
    env = dict(os.environ)
    env.setdefault("TALK_DAEMON", NO_TALK_DAEMON)
    env.pop("LINES", None)  # would override the pty size in curses
    env.pop("COLUMNS", None)
    # E.g. PYTHONUNBUFFERED hides what a buffered stderr does when the terminal is gone.
    for name in _PYTHON_BEHAVIOUR:
        env.pop(name, None)
    env.update(TERM="xterm-256color", LANG="C.UTF-8", LC_ALL="C.UTF-8")
    env.update(overrides)
    return env


class Talk:
    """One running talk.py in a pseudo-terminal of ``rows`` x ``cols``, seen through pyte.

    ``program`` defaults to the repository's talk.py; it is there so the harness itself can be
    checked against any curses script. ``args`` replaces the whole command line after the
    Python interpreter; ``cwd`` is the directory it starts in (default: the repository).
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *extra: str,
        rows: int = 24,
        cols: int = 80,
        env: dict[str, str] | None = None,
        program: str | os.PathLike[str] = TALK_PY,
        args: Iterable[str] | None = None,
        cwd: str | os.PathLike[str] = REPO_ROOT,
        enter: Callable[[str], list[str]] | None = None,
    ) -> None:
        if args is None:
            args = [str(program), "--socket", os.fspath(socket_path), *extra]
        # ``enter(cwd)``: a command prefix that runs it somewhere else (world.World.enter).
        prefix = [] if enter is None else enter(os.fspath(cwd))
        self.args = [*prefix, sys.executable, *args]
        self.screen = _Screen(cols, rows)
        self.stream = _ByteStream(self.screen)
        self.raw = bytearray()  # everything the program wrote, in order
        self.eof = False
        self.status: int | None = None
        self.eof_at: float | None = None  # time.monotonic() when the output ended
        self.child: pexpect.spawn[bytes] = pexpect.spawn(
            self.args[0],
            self.args[1:],
            dimensions=(rows, cols),
            env=env if env is not None else child_env(),
            cwd=os.fspath(cwd),
            encoding=None,
            echo=False,
        )
        # pexpect sleeps 50 ms before every send() unless told not to: a test would measure
        # pexpect, and a paste of 2000 lines would take minutes.
        self.child.delaybeforesend = None

    # -- reading -------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.child.pid is not None
        return int(self.child.pid)

    def _feed(self, data: bytes) -> None:
        self.raw += data
        self.stream.feed(data)

    def pump(self, timeout: float = _READ_SLICE) -> bool:
        """Read what the program wrote within ``timeout`` seconds; False once it reached EOF."""
        if self.eof:
            return False
        while True:
            try:
                data = self.child.read_nonblocking(1 << 16, timeout=timeout)
            except pexpect.TIMEOUT:
                return True
            except pexpect.EOF:
                self.eof = True
                self.eof_at = time.monotonic()
                return False
            self._feed(data)
            # Then take whatever else is already waiting, so the screen is as current as possible.
            timeout = 0

    def wait_until(
        self,
        predicate: Callable[[Talk], object],
        timeout: float = DEADLINE,
        what: str = "condition",
    ) -> None:
        """Keep reading until ``predicate(self)`` holds; AssertionError with the screen if not."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    self._explain(f"timed out after {timeout:g}s waiting for {what}")
                )
            if not self.pump(min(_READ_SLICE, remaining)):
                if predicate(self):
                    return
                raise AssertionError(self._explain(f"program ended while waiting for {what}"))

    def wait_for_row(self, n: int, text: str, timeout: float = DEADLINE) -> None:
        """Wait until row ``n`` (negative counts from the bottom) contains ``text``."""
        self.wait_until(lambda t: text in t.row(n), timeout, f"{text!r} in row {n}")

    # -- the screen ----------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        return int(self.screen.lines)

    @property
    def cols(self) -> int:
        return int(self.screen.columns)

    @property
    def display(self) -> list[str]:
        """The screen as strings, one per row, trailing blanks removed.

        A wide character (CJK, emoji) is ONE character of the string but takes two columns.
        """
        return [line.rstrip() for line in self.screen.display]

    def row(self, n: int) -> str:
        return self.display[n]

    def text(self) -> str:
        return "\n".join(self.display)

    @property
    def cursor(self) -> tuple[int, int]:
        """(x, y) of the cursor: column and row."""
        return int(self.screen.cursor.x), int(self.screen.cursor.y)

    def _explain(self, message: str) -> str:
        numbered = "\n".join(f"{i:3}|{line}" for i, line in enumerate(self.display))
        parts = [message, f"screen {self.rows}x{self.cols}, cursor {self.cursor}:", numbered]
        if self.eof:
            parts.append(f"output after the screen was left: {self.after_exit!r}")
        return "\n".join(parts)

    # -- typing --------------------------------------------------------------------------------

    def type(self, data: str | bytes) -> None:
        """Send raw input, as if typed (text is sent as UTF-8), all of it.

        A pty takes only what fits in its input queue: under load one write may take part of
        a long paste (pexpect's send() writes once), and the rest would be lost. Between two
        writes the screen is read, so that a program busy writing its screen can go on to
        read its keys.
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(self.child.child_fd, view) :]
            if view:
                self.pump()

    def press(self, name: str, times: int = 1) -> None:
        """Press a key by name (see ``KEYS``), ``times`` times."""
        self.type(KEYS[name] * times)

    def send_line(self, text: str) -> None:
        """Type ``text`` and press Enter."""
        self.type(text)
        self.press("enter")

    def resize(self, rows: int, cols: int) -> None:
        """Change the terminal size: the pty's (which sends SIGWINCH) and pyte's."""
        self.pump(0)  # output drawn for the old size goes to the old-size screen
        self.screen.resize(rows, cols)
        self.child.setwinsize(rows, cols)

    def write_from_outside(self, data: bytes) -> None:
        """Write ``data`` to the program's terminal as another program can (a background job,
        ``wall``): it reaches the screen between the program's own updates, unknown to it.

        E.g. wipe the screen, then press Ctrl-L and wait for the repaint: once it shows, the
        program has read every key typed before the Ctrl-L.
        """
        fd = os.open(f"/proc/{self.pid}/fd/1", os.O_WRONLY | os.O_NOCTTY)  # the pty's slave
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    # -- the end -------------------------------------------------------------------------------

    def wait_exit(self, timeout: float = DEADLINE) -> int:
        """Read everything until the program ends; its exit status, or 128+N if killed by N."""
        deadline = time.monotonic() + timeout
        while self.pump(max(0.0, min(_READ_SLICE, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise AssertionError(self._explain(f"program still running after {timeout:g}s"))
        return self._reap(deadline)

    def _reap(self, deadline: float) -> int:
        if self.status is None:
            # The pty is closed; the process itself is at most a moment from being reapable.
            while self.child.isalive():
                if time.monotonic() >= deadline:
                    raise AssertionError(self._explain("output ended but the process did not"))
                time.sleep(0.01)
            if self.child.signalstatus is not None:
                self.status = 128 + self.child.signalstatus
            else:
                assert self.child.exitstatus is not None
                self.status = self.child.exitstatus
        return self.status

    @property
    def output(self) -> str:
        """All output so far as text, escape sequences removed."""
        return strip_escapes(self.raw.decode("utf-8", "replace"))

    @property
    def left_alternate_screen(self) -> bool:
        """True if the program switched back from the alternate screen (curses endwin)."""
        return LEAVE_ALTERNATE_SCREEN in self.raw

    @property
    def after_exit(self) -> str:
        """What was printed after curses gave the terminal back, escape sequences removed.

        That is the output after the last exit from the alternate screen, or all output if the
        program never entered it (e.g. ``--help``, or an error before curses started).
        """
        raw = bytes(self.raw)
        cut = raw.rfind(LEAVE_ALTERNATE_SCREEN)
        if cut >= 0:
            raw = raw[cut + len(LEAVE_ALTERNATE_SCREEN) :]
        text = strip_escapes(raw.decode("utf-8", "replace"))
        return "\n".join(line.strip() for line in text.splitlines() if line.strip())

    @property
    def last_line(self) -> str:
        """The last non-empty line printed after curses ended (the ``talk: ...`` reason)."""
        lines = self.after_exit.splitlines()
        return lines[-1] if lines else ""

    def kill(self, sig: int = signal.SIGTERM) -> None:
        self.child.kill(sig)

    def close_terminal(self) -> None:
        """Close the pty's master side, as closing a terminal window does: the kernel hangs
        up the terminal (SIGHUP) and the program's reads and writes on it fail."""
        self.child.ptyproc.fileobj.close()

    def close(self) -> None:
        """Kill the program if it is still running and release the pty. Safe to call twice."""
        if self.child.isalive():
            self.child.kill(signal.SIGKILL)
        self.child.close(force=True)


def wait_all_ended(*talks: Talk, timeout: float = DEADLINE) -> None:
    """Read from all of ``talks`` at once until the output of each has ended.

    Reading one program only after another has been waited for would set the second one's
    ``eof_at`` late by the time the first took, and an exit deadline measured from it could
    fail for a program that ended in time.
    """
    deadline = time.monotonic() + timeout
    while running := [talk for talk in talks if not talk.eof]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            message = f"program still running after {timeout:g}s"
            raise AssertionError("\n\n".join(talk._explain(message) for talk in running))
        fds = [talk.child.child_fd for talk in running]
        select.select(fds, [], [], min(_READ_SLICE, remaining))
        for talk in running:
            talk.pump(0)


class Peer:
    """A plain UNIX stream socket on the other end of a conversation: what ``nc -U`` would be."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""  # received and not yet returned by read_line
        self.received = b""  # everything ever received
        self.eof = False

    @classmethod
    def connect(cls, path: str | os.PathLike[str], timeout: float = DEADLINE) -> Peer:
        """Connect to ``path``, retrying until someone listens there or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(os.fspath(path))
            except (FileNotFoundError, ConnectionRefusedError) as error:
                sock.close()
                if time.monotonic() >= deadline:
                    message = f"nobody accepted on {path} within {timeout:g}s: {error}"
                    raise AssertionError(message) from None
                time.sleep(0.02)
                continue
            return cls(sock)

    @classmethod
    def listen(cls, path: str | os.PathLike[str]) -> Listener:
        """Listen on ``path`` (a server the test controls); ``.accept()`` gives the Peer."""
        return Listener(path)

    def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def send_line(self, text: str) -> None:
        self.send(text.encode("utf-8") + b"\n")

    def _recv(self, deadline: float) -> bool:
        """Receive once before ``deadline``; False if nothing came (timeout or EOF)."""
        if self.eof:
            return False
        self.sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        self.received += data
        return True

    def read_line(self, timeout: float = DEADLINE) -> bytes:
        """The next line received, with its b'\\n'; AssertionError if none is complete in time."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            if not self._recv(deadline) and (self.eof or time.monotonic() >= deadline):
                why = "connection closed" if self.eof else f"timed out after {timeout:g}s"
                raise AssertionError(f"no complete line: {why}; received so far {self.received!r}")
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line + b"\n"

    def wait_closed(self, timeout: float = DEADLINE) -> bool:
        """Read until the other side closes; True at EOF, False if still open after ``timeout``.

        What arrives meanwhile is kept in ``buffer`` and ``received``.
        """
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self._recv(deadline)
        return self.eof

    def close(self) -> None:
        self.sock.close()


class Listener:
    """A listening UNIX socket at ``path``; close() also closes the accepted Peers and removes
    the socket file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(5)
        self.accepted: list[Peer] = []

    def accept(self, timeout: float = DEADLINE) -> Peer:
        self.sock.settimeout(timeout)
        try:
            conn, _ = self.sock.accept()
        except socket.timeout:
            raise AssertionError(f"nobody connected to {self.path} within {timeout:g}s") from None
        conn.settimeout(None)
        self.accepted.append(Peer(conn))
        return self.accepted[-1]

    def close(self) -> None:
        for peer in self.accepted:
            peer.close()
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class Spawner:
    """The ``spawn`` fixture: ``spawn(path, *extra, **kwargs)`` starts a ``Talk`` (or the
    ``kind`` of Talk given, such as ScreenTalk); ``close()`` kills every one it started."""

    def __init__(self, kind: type[Talk] = Talk) -> None:
        self.kind = kind
        self.started: list[Talk] = []
        #: Where it starts them, if not here: a ``world.World``'s ``enter``.
        self.enter: Callable[[str], list[str]] | None = None

    def __call__(self, socket_path: str, *extra: str, **kwargs: Any) -> Talk:
        kwargs.setdefault("enter", self.enter)
        talk = self.kind(socket_path, *extra, **kwargs)
        self.started.append(talk)
        return talk

    def close(self) -> None:
        for talk in self.started:
            talk.close()


class Peers:
    """The ``peer`` fixture: ``peer(path)`` connects a ``Peer``, ``peer.listen(path)`` serves
    one; ``close()`` closes them all."""

    def __init__(self) -> None:
        self.opened: list[Peer | Listener] = []

    def __call__(self, path: str, timeout: float = DEADLINE) -> Peer:
        """Connect to ``path`` (retrying until it accepts)."""
        peer = Peer.connect(path, timeout)
        self.opened.append(peer)
        return peer

    def listen(self, path: str) -> Listener:
        """Listen on ``path``; the Peer comes from ``.accept(timeout)``."""
        listener = Peer.listen(path)
        self.opened.append(listener)
        return listener

    def close(self) -> None:
        for item in reversed(self.opened):
            item.close()


class ScreenTalk(Talk):
    """A Talk whose rows are read cell by cell: pyte 0.8 cannot render a row where a wide
    character it drew was partly overwritten, which width tests make happen on purpose."""

    @property
    def display(self) -> list[str]:
        screen = self.screen
        return [
            "".join(screen.buffer[y][x].data for x in range(screen.columns)).rstrip()
            for y in range(screen.lines)
        ]


def unread(peer: Peer) -> int:
    """Bytes the peer sent that the other end has not read yet (SIOCOUTQ)."""
    out = fcntl.ioctl(peer.sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    return int(struct.unpack("i", out)[0])


def wait_taken(peer: Peer) -> None:
    """Wait until talk.py has read everything the peer sent."""
    wait_until(lambda: unread(peer) == 0, DEADLINE, "talk.py to read everything the peer sent")


def libc_wcwidth() -> Callable[[int], int]:
    """The C library's ``wcwidth()``, asked through ctypes: the oracle of width tests, apart
    from talk.py's own way of asking it."""
    function = ctypes.CDLL(None).wcwidth
    function.argtypes = [ctypes.c_int32]
    function.restype = ctypes.c_int
    return function


# -- talk.py's screen (UI contract: row 0 status, rows 2..R-3 conversation, row R-1 input) ---------


def waiting(path: str) -> str:
    """The status line of a server that waits on ``path``."""
    return f"Waiting for someone to connect to {path}"


def talking_to(pid: int, login: str = LOGIN) -> str:
    """The start of the status line once talking to process ``pid`` of user ``login``."""
    return f"Talking to {login} (pid {pid})"


def conversation(talk: Talk) -> list[str]:
    """The rows of the conversation area: 2 .. R-3."""
    return talk.display[2 : talk.rows - 2]


def message_rows(talk: Talk) -> list[str]:
    """The rows of the conversation area that show something."""
    return [row for row in conversation(talk) if row]


def last_row(talk: Talk) -> str:
    """The newest row of the conversation: its last non-blank row."""
    shown = message_rows(talk)
    return shown[-1] if shown else ""


def wait_last_row(talk: Talk, text: str) -> None:
    """Wait until the newest row of the conversation is ``text`` and the update is whole.

    The update ends after that row (the cursor goes back to the input line), and the checks
    that follow look at the cursor and the rows below it.
    """
    talk.wait_until(
        lambda t: last_row(t) == text and drawn(t), DEADLINE, f"{text!r} as the newest row"
    )


def flowing(rows: list[str]) -> str:
    """Rows joined as running text: wrapping and indentation become single spaces."""
    return re.sub(" +", " ", " ".join(row.strip() for row in rows))


def squeezed(text: str) -> str:
    """``text`` without blanks: rows wrapped anywhere read the same."""
    return "".join(text.split())


def news_below(talk: Talk) -> str:
    """The conversation area, squeezed: where talk puts the whole news while it waits and
    the status line cannot hold all of it."""
    return squeezed("".join(talk.display[2:-2]))


def shows(text: str) -> Callable[[Talk], bool]:
    """For ``Talk.wait_until``: ``text`` is somewhere on the screen, within one row."""
    return lambda talk: any(text in row for row in talk.display)


def input_row(talk: Talk) -> str:
    """The input line: the bottom row."""
    return talk.row(talk.rows - 1)


def drawn(talk: Talk) -> bool:
    """The screen update in progress, if any, has arrived whole: the cursor is on the input line.

    Under load the pty hands an update over in pieces. talk.py ends every update with the
    cursor on the input line, and ncurses moves it there last: while a row above is being
    written, the cursor is on that row. An update may begin on the input line (clearing it),
    but text it writes above comes after that. So a wait for text that an update writes above
    the input line, together with this, sees that update whole. The input line itself is
    written with the cursor on it: wait for its text instead.
    """
    return talk.cursor[1] == talk.rows - 1


def wait_for_status(talk: Talk, text: str, timeout: float = DEADLINE) -> None:
    """Wait until the status line contains ``text`` and the update that wrote it is whole."""
    talk.wait_until(
        lambda t: text in t.row(0) and drawn(t), timeout, f"{text!r} in the whole status line"
    )


def assert_layout(talk: Talk, status: str | None = None) -> None:
    """talk.py's frame is intact: the status line is ``status`` (if given), the '-' rule is on
    row 1 and the '=' rule on row R-2, no other row is a rule, the cursor is on the input line.

    Call it once the screen is drawn whole (see ``drawn``).
    """
    rows, cols = talk.rows, talk.cols
    screen = talk.text()
    if status is not None:
        assert talk.row(0) == status, f"status line changed:\n{screen}"
    assert talk.row(1) == "-" * (cols - 1), f"top rule damaged:\n{screen}"
    assert talk.row(rows - 2) == "=" * (cols - 1), f"bottom rule damaged:\n{screen}"
    rules = [y for y, row in enumerate(talk.display) if row and set(row) in ({"-"}, {"="})]
    assert rules == [1, rows - 2], f"a rule where none should be:\n{screen}"
    assert talk.cursor[1] == rows - 1, f"cursor left the input line:\n{screen}"


def layout_at(talk: Talk, rows: int, cols: int) -> bool:
    """talk.py's frame is drawn for a ``rows`` x ``cols`` terminal, cursor on the input line."""
    return (
        talk.row(1) == "-" * (cols - 1)
        and talk.row(rows - 2) == "=" * (cols - 1)
        and talk.cursor[1] == rows - 1
    )


def exit_of(talk: Talk, timeout: float = DEADLINE) -> tuple[int, str]:
    """Wait for the program to end: (exit status, everything printed after curses ended)."""
    status = talk.wait_exit(timeout)
    return status, talk.after_exit


def exit_with_one_line(talk: Talk, start: str) -> str:
    """Wait for exit status 1 after one printed line that begins with ``start``; that line.

    A problem found before the conversation starts is reported without taking the screen
    over first: no flash of an empty talk screen before the message.
    """
    status, printed = exit_of(talk)
    assert status == 1, f"exit status {status}; printed {printed!r}"
    assert ENTER_ALTERNATE_SCREEN not in talk.raw, "the screen was taken over before the error"
    assert printed.startswith(start) and "\n" not in printed, (
        f"expected one line starting {start!r}, got {printed!r}"
    )
    return printed


def assert_closed_cleanly(talk: Talk, sock_path: str, status: int, line: str) -> None:
    """talk.py ended promptly with ``status`` and the one ``line``, the terminal given back
    and its socket file removed."""
    assert talk.wait_exit(PROMPTLY) == status, talk.output
    assert talk.left_alternate_screen, "curses did not give the terminal back"
    assert talk.after_exit == line, talk.after_exit
    assert not os.path.exists(sock_path), "the socket file was left behind"


def waiting_status(path: str, cols: int) -> str:
    """The whole status line of a talk.py that waits on ``path``, ``cols`` wide: the news
    with the longest way to quit that fits; else the news said shorter (without the path),
    with the longest that fits; else that cut, and the shortest."""
    for news in (waiting(path), "Waiting for someone"):
        for hint in QUIT_HINTS:
            if len(f"{news} - {hint}") <= cols:
                return f"{news} - {hint}"
    shortest = f" - {QUIT_HINTS[-1]}"
    return "Waiting for someone"[: cols - len(shortest)] + shortest


def talk_in_a_shell(spawn: Callable[..., Talk], sock_path: str) -> Talk:
    """bash with job control in a pty, as a user has it, running talk.py on ``sock_path`` as
    its foreground job, which waits there. (Ctrl-Z stops only a job of a shell with job
    control: the kernel ignores it for a program alone in its session.)"""
    shell_args = ["-c", "import os; os.execvp('bash', ['bash', '--norc', '--noprofile', '-i'])"]
    shell = spawn(sock_path, args=shell_args, env=child_env(PS1="$ ", HISTFILE="/dev/null"))
    shell.wait_until(shows("$"), what="the shell's prompt")
    shell.type(f"{sys.executable} {TALK_PY} --socket {sock_path}\r")
    wait_for_waiting(shell, sock_path)
    return shell


def wait_for_waiting(talk: Talk, path: str, timeout: float = DEADLINE) -> None:
    """Wait until the status line says talk.py waits on ``path``, and the update is whole."""
    status = waiting_status(path, talk.cols)
    talk.wait_until(
        lambda t: t.row(0) == status and drawn(t), timeout, f"{status!r} as the status line"
    )


def start_server(spawn: Callable[..., Talk], path: str, **kwargs: Any) -> Talk:
    """``spawn`` talk.py on ``path``; wait until it shows it is waiting and the socket exists.

    The whole screen is drawn by then (rules, cursor on the input line), not only the status.
    """
    talk = spawn(path, **kwargs)
    wait_for_waiting(talk, path)
    wait_until(lambda: os.path.exists(path), what=f"socket file {path}")
    return talk


def start_with_peer(
    spawn: Callable[..., Talk], peer: Callable[[str], Peer], path: str, **kwargs: Any
) -> tuple[Talk, Peer]:
    """talk.py serving on ``path`` with a plain socket (this process) connected to it.

    The status line is drawn whole by then, so a test may take it as the status to compare with.
    """
    talk = start_server(spawn, path, **kwargs)
    other = peer(path)
    wait_for_status(talk, talking_to(os.getpid()))
    return talk, other
