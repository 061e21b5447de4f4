"""The talk daemon, real logins and BSD talk, as Debian 12 ships them, for the end-to-end
tests of talk.py's talkd route. Not a test file.

Nothing here makes the machine kinder than a stock Debian box: talkd runs under
openbsd-inetd as ``nobody.tty`` (as the talkd package configures it), logins are made by
``login -f`` (which writes the login record, as any login does), terminals are opened with
``mesg y`` by their owner, and write(1) is whatever the system installed. All of it happens
in the test's own world (world.py): its inetd and talkd on its own 127.0.0.1, its own login
records (empty at first, root:utmp 0664, as systemd-tmpfiles makes them at every boot), never
the machine's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
from as_user import account
from terminal import DEADLINE, ScreenTalk, Spawner, Talk, child_env
from world import World

INETD = "/usr/sbin/inetd"
NTALKD = "/usr/sbin/in.ntalkd"
BSD_TALK = "/usr/bin/talk"
DAEMON = ("127.0.0.1", 518)
#: The line inetd.conf gets for talkd, as the talkd package writes it, but only on loopback.
INETD_LINE = "127.0.0.1:ntalk dgram udp wait nobody.tty /usr/sbin/in.ntalkd in.ntalkd\n"

#: The logins of the talkd tests: real accounts with a shell and a home, as people have.
ALICE, BOB, MALLORY, CAROL = (account(role) for role in ("alice", "bob", "mallory", "carol"))

#: The tests' own copy of talkd's message layout (protocols/talkd.h), to ask the daemon
#: what it holds, as talk(1) would.
CTL_MSG = struct.Struct("!BBBBI16s16si12s12s16s")
CTL_RESPONSE = struct.Struct("!BBBBI16s")
LOOK_UP = 1
SUCCESS = 0

_EXEC = "import os, sys; os.execvp(sys.argv[1], sys.argv[1:])"


def _sockaddr(address: tuple[str, int]) -> bytes:
    return struct.pack("!HH4s8x", socket.AF_INET, address[1], socket.inet_aton(address[0]))


def look_up(world: World, caller: str, callee: str, timeout: float = 1.0) -> tuple[int, int] | None:
    """Ask the world's talk daemon, as ``callee`` running ``talk caller`` would, whether
    ``caller`` left an invitation: (answer, port of the invitation), or None if no daemon
    answers."""
    with world.socket() as sock:
        sock.settimeout(timeout)
        sock.connect(DAEMON)
        me = _sockaddr(sock.getsockname())
        request = CTL_MSG.pack(
            1, LOOK_UP, 0, 0, 0, _sockaddr(("0.0.0.0", 0)), me, os.getpid(),
            callee.encode(), caller.encode(), b"",
        )  # fmt: skip
        try:
            sock.send(request)
            data = sock.recv(1024)
        except OSError:
            return None
    _version, _kind, answer, _pad, _id, address = CTL_RESPONSE.unpack_from(data)
    return answer, struct.unpack_from("!H", address, 2)[0]


@contextlib.contextmanager
def talk_daemon(world: World) -> Iterator[None]:
    """Debian's in.ntalkd under openbsd-inetd, with talkd's line, on the world's 127.0.0.1:518
    (needs the Debian packages talkd and openbsd-inetd)."""
    missing = [path for path in (INETD, NTALKD) if not os.path.exists(path)]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} missing: install Debian's talkd and openbsd-inetd "
            "(.ci/run does, as root)"
        )
    directory = tempfile.mkdtemp(prefix="talk-inetd-")
    conf = os.path.join(directory, "inetd.conf")
    with open(conf, "w") as file:
        file.write(INETD_LINE)
    inetd = world.start([INETD, "-i", conf])
    try:
        deadline = time.monotonic() + DEADLINE
        while look_up(world, "nobody-at-all", "nobody-else", 0.2) is None:
            if inetd.poll() is not None or time.monotonic() > deadline:
                pytest.skip("inetd could not start talkd on 127.0.0.1:518")
        yield
    finally:
        inetd.terminate()
        inetd.wait()
        shutil.rmtree(directory, ignore_errors=True)


#: The prompt the tests' login shells are given, to tell when a command has finished.
PROMPT = "ready> "


class Login(ScreenTalk):
    """A login session in a pty, that logs out when the test is over: killed, login(1)
    could not take its login record back, and talkd would go on finding the person on a
    terminal that is someone else's by the next test."""

    def close(self) -> None:
        if self.child.isalive():
            # Hang up the shell (and what it runs), not login itself: a login(1) that gets
            # the SIGHUP dies of it without logging out. Once its shell is gone it does.
            subprocess.run(["pkill", "-HUP", "-P", str(self.pid)], check=False)
            deadline = time.monotonic() + DEADLINE
            while self.child.isalive() and time.monotonic() < deadline:
                time.sleep(0.01)  # a poll interval: login logs out, then ends
        super().close()


def log_in(spawn: Spawner, login: str, *, mesg: bool = True) -> Talk:
    """A real login of ``login`` on a new terminal (``login -f``, so it has a login record),
    at a shell prompt, with messages allowed (``mesg y``) unless ``mesg`` is False; in the
    world that ``spawn`` starts programs in."""
    args = ["-c", _EXEC, "login", "-f", login]
    shell = Login("", args=args, env=child_env(), enter=spawn.enter)
    spawn.started.append(shell)  # closed (logged out) with the test's other programs
    shell.type(f"PS1='{PROMPT}'; mesg {'y' if mesg else 'n'}\r")
    at_prompt(shell)
    return shell


def at_prompt(shell: Talk, timeout: float = DEADLINE) -> None:
    """Wait until the shell's cursor is at its prompt."""

    def waiting(s: Talk) -> bool:
        x, y = s.cursor
        row = s.row(y)  # blanks after the prompt are cut off
        return row.endswith(PROMPT.rstrip()) and x == len(row) + 1

    shell.wait_until(waiting, timeout, "the shell's prompt")


#: What the shell says once a program run with ``then_status()`` ends.
_ENDED = re.compile(r"program exited with (\d+)")


def then_status(command: str) -> str:
    """``command`` for a shell prompt, then a line with its exit status (login(1), whose
    exit status a pty gives, does not pass its shell's on)."""
    return f'{command}; echo "program exited with $?"'


def exit_status(shell: Talk, timeout: float = DEADLINE) -> int:
    """The exit status of the program run with ``then_status()``, once it has ended."""
    shell.wait_until(lambda s: _ENDED.search(s.text()), timeout, "the program to end")
    found = _ENDED.search(shell.text())
    assert found is not None
    return int(found[1])


def after_exit(shell: Talk) -> str:
    """What the program and the shell wrote once the program had left its screen."""
    text = bytes(shell.raw).decode("utf-8", "replace")
    return text.rsplit("\x1b[?1049l", 1)[-1].replace("\r", "")
