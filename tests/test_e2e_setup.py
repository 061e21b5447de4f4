"""End-to-end tests of talk.py's set-up on a box shared with other local users: the socket
path and what can be found there.

Another user can create files next to the socket, plant symbolic links, hold locks on the
directory and leave sockets that take no calls. None of it may block talk, redirect it to a
socket it did not choose, get a file's mode changed through it, or keep it from ending on
Ctrl-C. Each test runs the real talk.py in a pseudo-terminal (see terminal.py).

An attacker who wins a race by microseconds is simulated by a small wrapper around talk.main()
that acts at the exact moment (right after talk first looks at the path, right after it binds a
socket): the only way to make such a race happen every time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import socket
import stat
import struct
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from as_user import needs_root, shared_dir, spawn_as
from terminal import (
    DEADLINE,
    ENTER_ALTERNATE_SCREEN,
    EXIT_WITHIN,
    LEAVE_ALTERNATE_SCREEN,
    LOGIN,
    NOBODY,
    REPO_ROOT,
    Peers,
    Spawner,
    Talk,
    exit_of,
    exit_with_one_line,
    start_server,
    start_with_peer,
    talking_to,
    wait_for_status,
    wait_for_waiting,
    wait_last_row,
    wait_until,
    waiting,
)

from talk import WAY_OUT, Refusal

OTHER_UID = 65533  # neither root nor nobody: may not remove nobody's file in a sticky directory


@pytest.fixture
def public_dir() -> Iterator[str]:
    """A fresh directory owned by root, mode 0755: other users can enter it, not write it."""
    directory = shared_dir("talk-pub-", 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_nothing_at_the_path_makes_talk_the_server(spawn: Spawner, sock_path: str) -> None:
    talk = spawn(sock_path)
    wait_for_waiting(talk, sock_path)
    wait_until(lambda: os.path.exists(sock_path), what="the socket file")
    assert stat.S_ISSOCK(os.lstat(sock_path).st_mode), "the file at the path is not a socket"


def test_stale_socket_is_taken_over(spawn: Spawner, peer: Peers, sock_path: str) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)
    stale.close()  # left behind without unlink(), as by a talk that was killed

    talk = spawn(sock_path)
    wait_for_waiting(talk, sock_path)
    other = peer(sock_path)
    talk.wait_for_row(0, talking_to(os.getpid()))
    other.send_line("hello over the old path")
    wait_last_row(talk, "<you> hello over the old path")


def _snapshot(path: str) -> tuple[object, ...]:
    """Everything about ``path`` that touching it could change (not following symlinks)."""
    st = os.lstat(path)
    shot: tuple[object, ...] = (
        st.st_mode,
        st.st_ino,
        st.st_dev,
        st.st_size,
        st.st_nlink,
        st.st_uid,
        st.st_mtime_ns,
        st.st_ctime_ns,
    )
    if stat.S_ISLNK(st.st_mode):
        shot += (os.readlink(path),)
    elif stat.S_ISREG(st.st_mode):
        with open(path, "rb") as file:
            shot += (file.read(),)
    elif stat.S_ISDIR(st.st_mode):
        shot += (sorted(os.listdir(path)),)
    return shot


def _make_file(path: str, peer: Peers) -> list[str]:
    with open(path, "w") as file:
        file.write("precious notes\n")
    return [path]


def _make_directory(path: str, peer: Peers) -> list[str]:
    os.mkdir(path)
    _make_file(os.path.join(path, "inside"), peer)
    return [path, os.path.join(path, "inside")]


def _make_symlink_to_file(path: str, peer: Peers) -> list[str]:
    target = path + ".target"
    _make_file(target, peer)
    os.symlink(target, path)
    return [path, target]


def _make_dangling_symlink(path: str, peer: Peers) -> list[str]:
    os.symlink(path + ".nowhere", path)
    return [path]


def _make_symlink_to_live_socket(path: str, peer: Peers) -> list[str]:
    target = path + ".live"
    peer.listen(target)
    os.symlink(target, path)
    return [path, target]


def _make_fifo(path: str, peer: Peers) -> list[str]:
    os.mkfifo(path)
    return [path]


NOT_SOCKETS = {
    "regular_file": _make_file,
    "directory": _make_directory,
    "symlink_to_file": _make_symlink_to_file,
    "dangling_symlink": _make_dangling_symlink,
    "symlink_to_live_socket": _make_symlink_to_live_socket,
    "fifo": _make_fifo,
}


#: What the status line says of each thing that is not a socket, when talk skips it.
NOT_SOCKET_NOTES = {
    "regular_file": "a file",
    "directory": "a directory",
    "symlink_to_file": "a symbolic link",
    "dangling_symlink": "a symbolic link",
    "symlink_to_live_socket": "a symbolic link",
    "fifo": "a FIFO",
}


def waits_at_the_next_place(
    start: Callable[..., Talk], path: str, note: str, login: str = LOGIN
) -> Talk:
    """``start()`` starts talk.py on ``path``: it skips ``path`` (its status line says why:
    ``note``) and waits at ``path.1``, where another talk.py, started the same way, then meets
    it (both are ``login``'s): what was at ``path`` blocks no one."""
    talk = start(cols=200)
    status = f"Waiting for someone to connect to {path}.1 ({os.path.basename(path)} is {note})"
    wait_for_status(talk, f"{status} - type . alone on a line to quit")
    other = start()
    wait_for_status(talk, talking_to(other.pid, login))
    wait_for_status(other, talking_to(talk.pid, login))
    return talk


@pytest.mark.parametrize("kind", NOT_SOCKETS)
def test_path_that_is_not_a_socket_is_left_alone_and_talk_meets_at_the_next(
    spawn: Spawner, peer: Peers, sock_path: str, kind: str
) -> None:
    watched = NOT_SOCKETS[kind](sock_path, peer)
    before = {path: _snapshot(path) for path in watched}

    note = f"{NOT_SOCKET_NOTES[kind]} of {LOGIN}'s, not a socket"
    waits_at_the_next_place(partial(spawn, sock_path), sock_path, note)
    after = {path: _snapshot(path) for path in watched}
    assert after == before, f"the {kind} at the socket path was touched"


def test_when_every_place_is_taken_talk_says_what_is_at_each(
    spawn: Spawner, sock_path: str
) -> None:
    for place in (sock_path, *(f"{sock_path}.{n}" for n in (1, 2, 3))):
        with open(place, "w"):
            pass
    talk = spawn(sock_path)
    printed = exit_with_one_line(talk, f"talk: no free place at {sock_path}: ")
    name = os.path.basename(sock_path)
    taken = [f"{name}{n} is a file of {LOGIN}'s, not a socket" for n in ("", ".1", ".2", ".3")]
    assert printed == f"talk: no free place at {sock_path}: {'; '.join(taken)}; {WAY_OUT}"


def test_missing_directory_is_a_clear_error(spawn: Spawner, sock_path: str) -> None:
    directory = os.path.join(os.path.dirname(sock_path), "missing")
    path = os.path.join(directory, "talk.sock")
    talk = spawn(path)
    exit_with_one_line(talk, f"talk: cannot create socket {path}: ")
    assert not os.path.exists(directory), "talk.py created the missing directory"


@needs_root
def test_unwritable_directory_is_a_clear_error(
    spawn: Spawner, public_dir: str, code_dir: str
) -> None:
    path = os.path.join(public_dir, "talk.sock")
    talk = spawn_as(spawn, code_dir, NOBODY, "--socket", path)
    exit_with_one_line(talk, f"talk: cannot create socket {path}: ")
    assert os.listdir(public_dir) == [], "something was created in the directory"


@needs_root
def test_stale_socket_of_another_user_in_sticky_directory_does_not_block_the_path(
    spawn: Spawner, public_dir: str, code_dir: str
) -> None:
    sticky = os.path.join(public_dir, "shared")
    os.mkdir(sticky)
    os.chmod(sticky, 0o1777)  # like /tmp: only a file's owner may remove it
    path = os.path.join(sticky, "talk.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    os.chmod(path, 0o666)  # as talk.py leaves its own socket: anyone may connect
    os.chown(path, NOBODY, NOBODY)
    before = _snapshot(path)

    # A crashed talk of nobody's: everyone else's talk on that path still meets.
    note = "a stale socket of nobody's that you may not remove"
    start = partial(spawn_as, spawn, code_dir, OTHER_UID, "--socket", path)
    waits_at_the_next_place(start, path, note, login=f"uid {OTHER_UID}")
    assert _snapshot(path) == before, "the other user's socket was touched"


# talk.py held back just before it looks at the socket path. Its connect_or_wait() first marks
# that it is ready (a file named argv[2] + pid), then reads from the FIFO argv[1] the instant (a
# time.monotonic() value, the same clock in every process) at which to go on, and waits for it.
# Two of these set up the same socket within microseconds of each other, which two talks simply
# started back to back (milliseconds apart) almost never do.
_AT_THE_SIGNAL = """\
import os
import pwd
import struct
import sys
import time
sys.path.insert(0, {repo!r})
import talk

gate, ready = sys.argv[1], sys.argv[2]
original = talk.connect_or_wait


async def connect_or_wait(*args):
    fd = os.open(gate, os.O_RDONLY)
    open(ready + str(os.getpid()), "w").close()
    (start,) = struct.unpack("d", os.read(fd, 8))
    os.close(fd)
    while time.monotonic() < start:
        pass
    return await original(*args)


talk.connect_or_wait = connect_or_wait
sys.exit(talk.main(sys.argv[3:]))
"""


def _start_together(spawn: Spawner, path: str, starter: str, gate_path: str) -> tuple[Talk, Talk]:
    """Two talk.py on ``path`` that look at it at the same instant."""
    os.mkfifo(gate_path)
    gate = os.open(gate_path, os.O_RDWR)  # so that neither blocks opening it
    try:
        ready = gate_path + "-ready-"
        args = [starter, gate_path, ready, "--socket", path]
        first, second = spawn(path, args=args), spawn(path, args=args)
        for pid in (first.pid, second.pid):
            wait_until(partial(os.path.exists, f"{ready}{pid}"), what=f"pid {pid} to be ready")
        os.write(gate, struct.pack("d", time.monotonic() + 0.05) * 2)
    finally:
        os.close(gate)
    return first, second


def test_two_started_at_once_connect_to_each_other(
    spawn: Spawner, peer: Peers, sock_path: str, tmp_path: Path
) -> None:
    starter = tmp_path / "talk_at_the_signal.py"
    starter.write_text(_AT_THE_SIGNAL.format(repo=str(REPO_ROOT)))
    directory = os.path.dirname(sock_path)
    for round_ in range(6):
        path = os.path.join(directory, f"race{round_}.sock")
        if round_ % 2:
            stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            stale.bind(path)
            stale.close()
        first, second = _start_together(spawn, path, str(starter), str(tmp_path / f"go{round_}"))

        first.wait_for_row(0, talking_to(second.pid))
        second.wait_for_row(0, talking_to(first.pid))
        assert stat.S_ISSOCK(os.lstat(path).st_mode), f"round {round_}: socket file gone"
        third = peer(path)
        line = third.read_line()
        assert line.startswith(b"talk: busy"), f"round {round_}: a third caller got {line!r}"
        assert os.path.exists(path), f"round {round_}: the live socket file was removed"
        first.close()
        second.close()


def test_hang_up_leaves_alone_a_socket_file_that_replaced_its_own(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    talk, _other = start_with_peer(spawn, peer, sock_path)
    # Someone removes talk's socket file and serves on the same path (a cleanup script, another
    # program): when talk hangs up, the file there is not its own to remove.
    os.unlink(sock_path)
    peer.listen(sock_path)
    before = _snapshot(sock_path)

    talk.send_line(".")
    status, printed = exit_of(talk)
    assert status == 0, f"exit status {status}; printed {printed!r}"
    assert os.path.exists(sock_path), "talk.py removed a socket file it did not create"
    assert _snapshot(sock_path) == before, "talk.py touched a socket file it did not create"


def ended_with_one_line(talk: Talk) -> str:
    """Wait for exit status 1 after exactly one printed line, drawn without taking the screen."""
    status = talk.wait_exit(DEADLINE)
    printed = talk.after_exit
    assert status == 1, f"exit status {status}; printed {printed!r}"
    assert "\n" not in printed and printed.startswith("talk: "), printed
    assert ENTER_ALTERNATE_SCREEN not in talk.raw, "the screen was taken over before the error"
    return printed


def leftovers(directory: str, *expected: str) -> list[str]:
    """Files in ``directory`` other than ``expected`` (talk's private names included)."""
    return sorted(set(os.listdir(directory)) - set(expected))


@pytest.fixture
def directory_locked(sock_path: str) -> Iterator[None]:
    """What anyone who can read the directory can do: ``flock DIR sleep infinity``."""
    fd = os.open(os.path.dirname(sock_path), os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
    os.close(fd)


def test_a_lock_held_on_the_directory_does_not_hold_talk_up(
    spawn: Spawner, sock_path: str, directory_locked: None
) -> None:
    started = time.monotonic()
    first = start_server(spawn, sock_path)
    second = spawn(sock_path)
    wait_for_status(second, talking_to(first.pid))
    wait_for_status(first, talking_to(second.pid))
    took = time.monotonic() - started
    assert took < EXIT_WITHIN, f"two talks took {took:.1f}s to meet"


def test_ctrl_c_ends_talk_at_once_while_someone_holds_a_lock(
    spawn: Spawner, sock_path: str, directory_locked: None
) -> None:
    talk = spawn(sock_path)
    # Once talk.py is in set-up or past it: it has its own socket or has the directory open.
    directory = os.path.dirname(sock_path)

    def in_set_up(t: Talk) -> bool:
        return directory in open_files(t.pid) or waiting(sock_path) in t.row(0)

    talk.wait_until(in_set_up, DEADLINE, "talk.py to set up")
    pressed = time.monotonic()
    talk.press("ctrl_c")
    assert talk.wait_exit(DEADLINE) == 128 + signal.SIGINT, talk.output
    assert talk.eof_at is not None
    took = talk.eof_at - pressed
    assert took < EXIT_WITHIN, f"Ctrl-C took {took:.1f}s to end talk.py"
    assert talk.last_line == "talk: interrupted", talk.after_exit
    assert not os.path.exists(sock_path), "the socket file was left behind"


def open_files(pid: int) -> set[str]:
    """What process ``pid`` has open now, as paths; it opens and closes files meanwhile."""
    fds = f"/proc/{pid}/fd"
    paths = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(fds):
            with contextlib.suppress(OSError):  # closed since the listing
                paths.add(os.readlink(f"{fds}/{fd}"))
    return paths


SIGNALS = {
    "sigint": (signal.SIGINT, "talk: interrupted"),
    "sigterm": (signal.SIGTERM, "talk: terminated"),
    "sighup": (signal.SIGHUP, "talk: hung up"),
}


#: Moments after talk.py starts to run, in seconds, spread over what start-up takes (about
#: 0.1 s: imports, terminal checks, socket set-up, the first screen) and a little after.
MOMENTS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.07, 0.09, 0.12, 0.15, 0.2, 0.3)


# Runs talk.py (argv[2]) as ``python3 talk.py ARGS...`` typed in a shell would, but creates the
# file argv[1] once the interpreter is up and talk.py compiled: what comes before is Python's
# business, not talk's. Ctrl-C is set as Python sets it for a command started from a terminal
# (pytest may run in the background, where a shell starts programs with SIGINT ignored), and a
# Ctrl-C that lands before talk.py's first line ends the program as Python's own start-up does.
_MARKS_THE_START = """\
import os
import pwd
import signal
import sys

signal.signal(signal.SIGINT, signal.default_int_handler)
marker, path = sys.argv[1], sys.argv[2]
with open(path) as source:
    code = compile(source.read(), path, "exec")
sys.argv = sys.argv[2:]
try:
    open(marker, "w").close()
    exec(code, {"__name__": "__main__", "__file__": path})
except KeyboardInterrupt:
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        raise  # talk.py had taken Ctrl-C over: this one is talk's
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
"""


@pytest.mark.parametrize("name", SIGNALS)
def test_a_signal_at_any_moment_of_start_up_ends_talk_cleanly(
    spawn: Spawner, sock_path: str, tmp_path: Path, name: str
) -> None:
    signum, line = SIGNALS[name]
    directory = os.path.dirname(sock_path)
    starter = tmp_path / "marks_the_start.py"
    starter.write_text(_MARKS_THE_START)
    for i, moment in enumerate(MOMENTS):
        started = tmp_path / f"started{i}"
        talk = spawn(
            sock_path,
            args=[str(starter), str(started), str(REPO_ROOT / "talk.py"), "--socket", sock_path],
        )
        wait_until(started.exists, DEADLINE, "talk.py to start", interval=0.001)
        # Not synchronisation: the moment itself is what the test varies.
        time.sleep(moment)
        sent = time.monotonic()
        talk.kill(signum)
        at = f"{name} {moment:.2f}s after the start"
        status = talk.wait_exit(DEADLINE)
        assert status == 128 + signum, f"{at}: exit status {status}; {talk.after_exit!r}"
        assert talk.eof_at is not None and talk.eof_at - sent < EXIT_WITHIN, f"{at}: slow"
        assert "Traceback" not in talk.output, f"{at}: {talk.output}"
        if ENTER_ALTERNATE_SCREEN in talk.raw:
            assert talk.raw.rfind(LEAVE_ALTERNATE_SCREEN) > talk.raw.rfind(
                ENTER_ALTERNATE_SCREEN
            ), f"{at}: the terminal was not given back"
        assert talk.after_exit in ("", line), f"{at}: printed {talk.after_exit!r}"
        assert leftovers(directory) == [], f"{at}: left behind {leftovers(directory)}"
        talk.close()


# The starter above, with a Ctrl-C that lands while the interpreter runs a garbage collector's
# callback, once talk.py's imports are under way. A real one may land in any such callback, or
# a finalizer, or a weak reference's callback (the import system has those): there Python
# prints what a signal handler raises and drops it.
_INTERRUPTED_IN_A_CALLBACK = (
    """\
import gc
import os
import pwd
import signal
import sys

fired = []


def interrupt(phase, info):
    if phase == "start" and "asyncio" in sys.modules and not fired:
        fired.append(True)
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # a handler written in Python would run by now, in here
            pass


gc.callbacks.append(interrupt)
"""
    + _MARKS_THE_START
)


def test_a_ctrl_c_that_lands_in_a_callback_whose_errors_are_dropped_still_ends_talk(
    spawn: Spawner, sock_path: str, tmp_path: Path
) -> None:
    starter = tmp_path / "interrupted_in_a_callback.py"
    starter.write_text(_INTERRUPTED_IN_A_CALLBACK)
    started = tmp_path / "started"
    talk = spawn(
        sock_path,
        args=[str(starter), str(started), str(REPO_ROOT / "talk.py"), "--socket", sock_path],
    )
    status = talk.wait_exit(DEADLINE)
    assert started.exists()
    assert status == 128 + signal.SIGINT, f"exit status {status}; {talk.output!r}"
    assert "Traceback" not in talk.output and "Exception ignored" not in talk.output
    assert ENTER_ALTERNATE_SCREEN not in talk.raw, "talk went on to draw its screen"
    assert leftovers(os.path.dirname(sock_path)) == []
    talk.close()


# talk.main() with an attacker who plants a symbolic link at the socket path (argv[1], pointing
# to argv[2]) right after talk.py first looks at the path, by any means.
_PLANTS_A_LINK = """\
import os
import pwd
import sys
sys.path.insert(0, {repo!r})
import talk

path, target = sys.argv[1], sys.argv[2]
planted = []


def planting(look):
    def looked(name, *args, **kwargs):
        try:
            return look(name, *args, **kwargs)
        finally:
            if name == path and not planted:
                planted.append(True)
                os.symlink(target, path)
    return looked


os.lstat, os.stat, os.open = planting(os.lstat), planting(os.stat), planting(os.open)
sys.exit(talk.main(sys.argv[3:]))
"""


def test_a_link_planted_after_the_first_look_is_not_followed(
    spawn: Spawner, peer: Peers, sock_path: str, tmp_path: Path
) -> None:
    # The link points to a socket of ours that the attacker could not connect to themselves.
    private = os.path.join(os.path.dirname(sock_path), "private.sock")
    listener = peer.listen(private)
    starter = tmp_path / "plants_a_link.py"
    starter.write_text(_PLANTS_A_LINK.format(repo=str(REPO_ROOT)))

    args = [str(starter), sock_path, private, "--socket", sock_path]
    talk = spawn(sock_path, args=args, cols=200)
    note = f"a symbolic link of {LOGIN}'s, not a socket"
    status = f"Waiting for someone to connect to {sock_path}.1 (talk.sock is {note})"
    wait_for_status(talk, status)
    listener.sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        listener.sock.accept()  # nobody called through the link
    assert os.readlink(sock_path) == private, "the planted link was touched"


# talk.main() with an attacker who replaces every socket file talk.py binds with a symbolic
# link to the file argv[1], right after bind().
_LINKS_THE_NEW_SOCKET = """\
import os
import pwd
import socket
import sys
sys.path.insert(0, {repo!r})
import talk

victim = sys.argv[1]
bind = socket.socket.bind


def bind_and_replace(self, address):
    bind(self, address)
    if isinstance(address, str) and address:
        os.unlink(address)
        os.symlink(victim, address)


socket.socket.bind = bind_and_replace
sys.exit(talk.main(sys.argv[2:]))
"""


def test_the_socket_mode_is_never_set_through_a_link(
    spawn: Spawner, sock_path: str, tmp_path: Path
) -> None:
    victim = tmp_path / "secret"
    victim.write_text("private notes\n")
    victim.chmod(0o600)
    starter = tmp_path / "links_the_new_socket.py"
    starter.write_text(_LINKS_THE_NEW_SOCKET.format(repo=str(REPO_ROOT)))

    talk = spawn(sock_path, args=[str(starter), str(victim), "--socket", sock_path])
    talk.wait_until(
        lambda t: t.eof or "Waiting for" in t.row(0), DEADLINE, "talk.py to set up or give up"
    )
    talk.close()

    assert stat.S_IMODE(victim.stat().st_mode) == 0o600, "the victim's mode was changed"
    assert victim.read_text() == "private notes\n"


def test_a_listener_with_a_full_backlog_is_not_a_place_that_blocks(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    listener = peer.listen(sock_path)
    listener.sock.listen(0)  # one call may wait to be accepted ...
    queued = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    queued.connect(sock_path)  # ... and now one does, for good
    try:
        # A full queue may be a flood that passes: talk looks again for a few seconds (see
        # test_setup.py), then meets elsewhere, without blaming whoever listens there.
        waits_at_the_next_place(
            partial(spawn, sock_path), sock_path, "not taking calls (its queue is full)"
        )
    finally:
        queued.close()


def test_a_path_with_control_characters_is_reported_inert(spawn: Spawner, sock_path: str) -> None:
    # A path can hold any byte but NUL: one that sets the terminal's title must not do so
    # when talk reports that it cannot use it.
    path = os.path.join(os.path.dirname(sock_path), "missing\x1b]0;owned\x07", "talk.sock")
    talk = spawn(path)
    printed = ended_with_one_line(talk)
    assert b"\x1b]0;owned" not in talk.raw, "the path's escape sequence reached the terminal"
    assert "missing^[]0;owned^G" in printed, printed


def test_a_missing_directory_names_the_socket_option(spawn: Spawner, sock_path: str) -> None:
    path = os.path.join(os.path.dirname(sock_path), "missing", "talk.sock")
    printed = ended_with_one_line(spawn(path))
    assert printed.startswith(f"talk: cannot create socket {path}: "), printed
    assert WAY_OUT in printed, printed


def test_a_path_through_a_file_names_the_socket_option(spawn: Spawner, sock_path: str) -> None:
    afile = os.path.join(os.path.dirname(sock_path), "afile")
    open(afile, "w").close()
    printed = ended_with_one_line(spawn(os.path.join(afile, "talk.sock")))
    assert WAY_OUT in printed, printed


def test_a_path_longer_than_a_socket_address_works(spawn: Spawner, sock_path: str) -> None:
    # AF_UNIX addresses hold 107 bytes; talk binds under a short name and links it into place.
    path = os.path.join(os.path.dirname(sock_path), "x" * 120)
    first = start_server(spawn, path)
    second = spawn(path)
    wait_for_status(second, talking_to(first.pid))
    wait_for_status(first, talking_to(second.pid))


@needs_root
def test_a_foreign_socket_you_may_not_use_is_named_and_skipped(
    spawn: Spawner, sticky_dir: str, code_dir: str
) -> None:
    path = os.path.join(sticky_dir, "talk.sock")
    private = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    private.bind(path)
    private.listen(1)
    os.chmod(path, 0o600)  # root's, and only root may connect
    try:
        start = partial(spawn_as, spawn, code_dir, NOBODY, "--socket", path)
        note = "a socket of root's that you may not connect to"
        waits_at_the_next_place(start, path, note, login="nobody")
    finally:
        private.close()


@needs_root
def test_an_unwritable_directory_names_the_socket_option(
    spawn: Spawner, code_dir: str, sticky_dir: str
) -> None:
    directory = os.path.join(sticky_dir, "closed")
    os.mkdir(directory, 0o755)  # root's: others may look, not create
    path = os.path.join(directory, "talk.sock")
    talk = spawn_as(spawn, code_dir, NOBODY, "--socket", path)
    printed = ended_with_one_line(talk)
    assert printed.startswith(f"talk: cannot create socket {path}: "), printed
    assert WAY_OUT in printed, printed
    assert leftovers(directory) == []


def test_help_explains_the_program_and_the_socket_option(spawn: Spawner, sock_path: str) -> None:
    talk = spawn(sock_path, "--help")
    assert talk.wait_exit() == 0
    text = talk.output
    assert "usage" in text.lower()
    assert "--socket" in text
    assert len(text.split()) > 15, "--help should explain the program, not just name options"
    assert not os.path.exists(sock_path)


def test_socket_file_is_read_write_for_everyone(spawn: Spawner, sock_path: str) -> None:
    old_umask = os.umask(0o077)  # the child inherits it: talk.py has to set the mode itself
    try:
        talk = spawn(sock_path)
    finally:
        os.umask(old_umask)
    # Not just "the file exists": bind() creates it with the umask's mode and talk.py sets the
    # mode a moment later; it says it is waiting once the socket is set up.
    wait_for_waiting(talk, sock_path)
    wait_until(lambda: os.path.exists(sock_path), what="the socket file")
    mode = stat.S_IMODE(os.stat(sock_path).st_mode)
    assert mode & 0o666 == 0o666, oct(mode)


def test_a_refusal_from_whatever_listens_at_the_path_is_reported_as_its_own(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    # A squatter (here: this test) that answers every call with talk's own busy line.
    listener = peer.listen(sock_path)
    talk = spawn(sock_path)
    squatter = listener.accept()
    squatter.send_line(Refusal.BUSY)
    squatter.close()
    assert talk.wait_exit(DEADLINE) == 1, talk.output
    assert talk.last_line == (
        f"talk: the program at {sock_path} ({LOGIN}'s) says it is busy: someone is already "
        "talking on this socket; use --socket PATH to start another conversation"
    ), talk.after_exit


def test_a_refused_caller_may_still_say_something_and_reads_why(
    spawn: Spawner, peer: Peers, sock_path: str
) -> None:
    """A caller that a private call turns away may send a line as the refusal comes (a talk
    sends what was typed while it connected): talk reads it (and drops it) before it
    closes. Closing first would reset the connection: the caller's write fails, and a caller
    like talk.py then never reads why. Over and over, as the race came one time in six."""
    callee = pwd.getpwuid(NOBODY).pw_name
    talk = spawn(sock_path, callee)
    wait_for_status(talk, f"Waiting for {callee}")
    refusal = f"talk: private: this conversation is between {LOGIN} and {callee}\n".encode()
    for n in range(40):
        caller = peer(sock_path)
        assert caller.read_line() == refusal, n
        caller.send_line(f"but let me in, {n}")  # a reset connection raises here
        assert caller.wait_closed(), "the refused line stayed open"
        caller.close()
    assert talk.child.isalive()
