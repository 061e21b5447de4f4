"""End-to-end tests of ``talk.py USER``: private calls between real users.

alice, bob and mallory are real accounts (created with useradd; these tests need root and skip
otherwise), each running the real talk.py in a pty of their own. The kernel tells each side who
the other is (SO_PEERCRED), so only real users can show that intruders are turned away.

They meet on ``--socket DIR/pair.sock`` in a sticky, world-writable directory like /var/tmp (the
default meeting path lives in /var/tmp itself, where tests must not put sockets). Telling bob
goes through a ``write`` on PATH that records what it was given, installed setgid tty as write(1)
was before the fix for CVE-2024-28085 (Debian 12's own write(1), the talk daemon and real logins
are in test_e2e_talkd.py).
"""

from __future__ import annotations

import grp
import os
import pty
import pwd
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import TypedDict

import pytest
from as_user import (
    account,
    ensure_user,
    free_uid,
    python_for_others,
    readable_copy,
    shared_dir,
    spawn_as,
)
from login_records import utmp_record, write_utmp
from terminal import (
    DEADLINE,
    LOGIN,
    TALK_PY,
    Spawner,
    Talk,
    child_env,
    conversation,
    drawn,
    last_row,
    news_below,
    squeezed,
    wait_until,
)

ALICE, BOB, MALLORY = (account(role) for role in ("alice", "bob", "mallory"))


People = dict[str, pwd.struct_passwd]  # the people fixture: login -> account


Squat = Callable[[str], None]  # the squatter fixture: listen at a path as mallory


Terminal = tuple[int, str]  # the bobs_terminal fixture: a pty's master fd and its pts/N


@pytest.fixture
def people() -> People:
    """alice, bob and mallory: real accounts of this run's, made if missing."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create users and run talk.py as them")
    return {name: ensure_user(name) for name in (ALICE, BOB, MALLORY)}


@pytest.fixture
def records() -> Iterator[str]:
    """A directory anyone may write to: what the fake write(1) records, the login records."""
    directory = shared_dir("talk-records-", 0o777)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


# A write(1) that records its arguments and what it reads, and makes noise on its own output.
_FAKE_WRITE = """#!/bin/sh
printf '%s\\n' "$@" > {records}/write.args
cat > {records}/write.stdin
echo "WRITE-NOISE on standard output"
echo "WRITE-NOISE on standard error" >&2
"""


def fake_write(records: str) -> str:
    """A directory holding a recording ``write``; put it first on PATH."""
    bin_dir = os.path.join(records, "bin")
    os.mkdir(bin_dir, 0o755)
    script = os.path.join(bin_dir, "write")
    with open(script, "w") as file:
        file.write(_FAKE_WRITE.format(records=records))
    # Installed as write(1) was before the fix for CVE-2024-28085, and still is on some
    # systems: setgid tty. (Debian 12's own, which is not, is in test_e2e_talkd.py.)
    os.chown(script, 0, _tty_group())
    os.chmod(script, 0o2755)
    return bin_dir


class SwitchTo(TypedDict):
    user: int
    group: int
    extra_groups: list[int]
    cwd: str


def switch_to(user: pwd.struct_passwd) -> SwitchTo:
    """subprocess arguments that run a program as ``user``, with only that user's group, in a
    directory that every user may enter (the checkout may be private)."""
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "cwd": "/"}


def env_for(utmp: str, path: str = "/usr/bin:/bin") -> dict[str, str]:
    return child_env(TALK_UTMP=utmp, PATH=path)


def call(
    spawn: Spawner,
    code_dir: str,
    caller: pwd.struct_passwd,
    callee: pwd.struct_passwd,
    path: str,
    env: dict[str, str],
) -> Talk:
    """``caller`` runs ``talk.py CALLEE --socket path``."""
    return spawn_as(spawn, code_dir, caller, callee.pw_name, "--socket", path, env=env)


def status_of(talk: Talk, text: str) -> None:
    talk.wait_until(lambda t: text in t.row(0) and drawn(t), DEADLINE, f"{text!r} on row 0")


def talking(talk: Talk, login: str, pid: int) -> None:
    status_of(talk, f"Talking to {login} (pid {pid})")


def meet(
    spawn: Spawner,
    code_dir: str,
    people: People,
    path: str,
    env: dict[str, str],
    alice_waits: str | None = None,
) -> tuple[Talk, Talk]:
    """alice calls bob on ``path`` and, once she shows ``alice_waits`` (on the status line,
    or in the whole news below it), bob answers; both status lines then name the other."""
    alice = call(spawn, code_dir, people[ALICE], people[BOB], path, env)
    status_of(alice, f"Waiting for {BOB}")
    if alice_waits is not None:
        news = squeezed(alice_waits)
        alice.wait_until(
            lambda t: news in squeezed("".join(t.display[:-2])), DEADLINE, repr(alice_waits)
        )
    bob = call(spawn, code_dir, people[BOB], people[ALICE], path, env)
    talking(alice, BOB, bob.pid)
    talking(bob, ALICE, alice.pid)
    return alice, bob


def alice_waits_for_bob(
    spawn: Spawner, code_dir: str, sticky_dir: str, people: People, records: str
) -> tuple[Talk, str, dict[str, str]]:
    """alice calls bob on ``pair.sock`` and waits: her talk, the path, the environment."""
    path = os.path.join(sticky_dir, "pair.sock")
    env = env_for(write_utmp(os.path.join(records, "utmp")))
    alice = call(spawn, code_dir, people[ALICE], people[BOB], path, env)
    status_of(alice, f"Waiting for {BOB}")
    return alice, path, env


def says(talk: Talk, text: str) -> None:
    talk.wait_until(lambda t: last_row(t) == text and drawn(t), DEADLINE, repr(text))


def test_alice_calls_bob_bob_answers_and_both_see_who_the_other_is(
    spawn: Spawner, code_dir: str, sticky_dir: str, people: People, records: str
) -> None:
    path = os.path.join(sticky_dir, "pair.sock")
    env = env_for(write_utmp(os.path.join(records, "utmp")))
    alice, bob = meet(spawn, code_dir, people, path, env)
    alice.send_line("hello bob")
    says(bob, "<you> hello bob")
    bob.send_line("hello alice")
    says(alice, "<you> hello alice")


def test_an_intruder_is_turned_away_and_alice_keeps_waiting(
    spawn: Spawner, code_dir: str, sticky_dir: str, people: People, records: str
) -> None:
    alice, path, env = alice_waits_for_bob(spawn, code_dir, sticky_dir, people, records)

    # mallory calls alice on the same path: from her side, alice is who she wants.
    mallory = call(spawn, code_dir, people[MALLORY], people[ALICE], path, env)
    assert mallory.wait_exit(DEADLINE) == 1, mallory.after_exit
    assert mallory.last_line == (
        f"talk: the program at {path} ({ALICE}'s) says it is private: "
        f"this conversation is between {ALICE} and {BOB}"
    ), mallory.after_exit
    status_of(alice, f"Turned away {MALLORY} (pid {mallory.pid}); still waiting for {BOB}")
    # and with a plain socket, what nc -U would be
    intruder = subprocess.run(
        [python_for_others(), "-c", _CONNECT_AND_READ, path],
        **switch_to(people[MALLORY]),
        capture_output=True,
        timeout=DEADLINE,
    )
    assert (
        intruder.stdout
        == f"talk: private: this conversation is between {ALICE} and {BOB}\n".encode()
    )
    assert conversation(alice) == [""] * len(conversation(alice)), alice.text()
    assert alice.child.isalive(), "alice's talk ended"

    bob = call(spawn, code_dir, people[BOB], people[ALICE], path, env)
    talking(alice, BOB, bob.pid)
    talking(bob, ALICE, alice.pid)
    bob.send_line("it is me")
    says(alice, "<you> it is me")


# Connects to argv[1] and prints everything received until the other side hangs up.
_CONNECT_AND_READ = """\
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.settimeout(10)
while data := s.recv(4096):
    sys.stdout.buffer.write(data)
"""


# Listens on argv[1] forever, taking no call: a squatter.
_SQUAT = """\
import os, signal, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
os.umask(0)
s.bind(sys.argv[1])
s.listen(8)
print("listening", flush=True)
signal.pause()
"""


@pytest.fixture
def squatter(people: People) -> Iterator[Squat]:
    started: list[subprocess.Popen[bytes]] = []

    def squat(path: str) -> None:
        process = subprocess.Popen(
            [python_for_others(), "-c", _SQUAT, path],
            **switch_to(people[MALLORY]),
            stdout=subprocess.PIPE,
        )
        started.append(process)
        assert process.stdout is not None and process.stdout.readline() == b"listening\n"

    yield squat
    for process in started:
        process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()


@pytest.mark.parametrize("how", ["listening", "file"])
def test_a_path_squatted_by_mallory_does_not_stop_alice_and_bob(
    spawn: Spawner,
    code_dir: str,
    sticky_dir: str,
    people: People,
    records: str,
    squatter: Squat,
    how: str,
) -> None:
    path = os.path.join(sticky_dir, "pair.sock")
    if how == "listening":
        squatter(path)
    else:
        with open(path, "w") as file:
            file.write("mine\n")
        os.chown(path, people[MALLORY].pw_uid, people[MALLORY].pw_gid)
    env = env_for(write_utmp(os.path.join(records, "utmp")))

    held = f"held by {MALLORY}" if how == "listening" else f"a file of {MALLORY}'s"
    alice, bob = meet(spawn, code_dir, people, path, env, f"(pair.sock is {held}")
    alice.send_line("around mallory")
    says(bob, "<you> around mallory")
    assert os.lstat(path).st_uid == people[MALLORY].pw_uid, "mallory's file was touched"


def test_a_stale_socket_of_bobs_does_not_stop_alice_and_bob(
    spawn: Spawner, code_dir: str, sticky_dir: str, people: People, records: str
) -> None:
    path = os.path.join(sticky_dir, "pair.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # left behind by a talk of bob's that was killed
    os.chmod(path, 0o666)
    os.chown(path, people[BOB].pw_uid, people[BOB].pw_gid)  # alice may not remove it
    env = env_for(write_utmp(os.path.join(records, "utmp")))

    alice, _bob = meet(spawn, code_dir, people, path, env)
    _bob.send_line("past my old socket")
    says(alice, "<you> past my old socket")


def test_the_caller_will_not_talk_to_whoever_holds_the_path(
    spawn: Spawner, code_dir: str, sticky_dir: str, people: People, records: str, squatter: Squat
) -> None:
    # mallory listens on every place where alice and bob could meet: alice must not end up
    # talking to her, and says who holds them.
    path = os.path.join(sticky_dir, "pair.sock")
    for place in [path] + [f"{path}.{n}" for n in range(1, 4)]:
        squatter(place)
    env = env_for(write_utmp(os.path.join(records, "utmp")))
    alice = call(spawn, code_dir, people[ALICE], people[BOB], path, env)
    assert alice.wait_exit(DEADLINE) == 1, alice.after_exit
    assert alice.last_line.startswith(f"talk: no free place to meet {BOB}: "), alice.after_exit
    assert f"pair.sock is held by {MALLORY}" in alice.last_line, alice.after_exit
    assert "--socket PATH" in alice.last_line, alice.after_exit
    assert b"\x1b[?1049h" not in alice.raw, "a conversation screen was shown"


def test_calling_yourself_from_two_terminals_works(spawn: Spawner, sock_path: str) -> None:
    env = child_env(TALK_UTMP="/nonexistent")
    first = spawn(sock_path, args=[str(TALK_PY), LOGIN, "--socket", sock_path], env=env)
    status_of(first, f"Waiting for {LOGIN}")
    # the other terminal names you by uid, which works as well as the login name
    second = spawn(sock_path, args=[str(TALK_PY), str(os.getuid()), "--socket", sock_path], env=env)
    talking(first, LOGIN, second.pid)
    talking(second, LOGIN, first.pid)
    second.send_line("hello me")
    says(first, "<you> hello me")


def test_an_unknown_user_is_a_clear_error(spawn: Spawner, sock_path: str) -> None:
    talk = spawn(sock_path, args=[str(TALK_PY), "no-such-user-here", "--socket", sock_path])
    assert talk.wait_exit(DEADLINE) == 1, talk.after_exit
    assert talk.after_exit == "talk: no such user: no-such-user-here", talk.after_exit
    assert not os.path.exists(sock_path)


def test_help_lists_the_new_forms(sock_path: str) -> None:
    result = subprocess.run(
        [sys.executable, str(TALK_PY), "--help"], capture_output=True, text=True, timeout=DEADLINE
    )
    assert result.returncode == 0
    assert "[USER [TTY]]" in result.stdout and "--list" in result.stdout, result.stdout


@pytest.fixture
def bobs_terminal(people: People) -> Iterator[Terminal]:
    """A pty of bob's: (master fd, ``pts/N``), with messages allowed (``mesg y``)."""
    master, slave = pty.openpty()
    name = os.ttyname(slave)
    tty_gid = _tty_group()
    os.chown(name, people[BOB].pw_uid, tty_gid)
    os.chmod(name, 0o620)
    yield master, name.removeprefix("/dev/")
    os.close(slave)
    os.close(master)


def logged_in_there(records: str, terminal: Terminal) -> tuple[str, str]:
    """bob's terminal line, and login records (for TALK_UTMP) that have him logged in there."""
    _master, line = terminal
    return line, write_utmp(os.path.join(records, "utmp"), utmp_record(BOB, line))


def _tty_group() -> int:
    try:
        return grp.getgrnam("tty").gr_gid
    except KeyError:
        pytest.skip("no tty group")


def test_the_notice_reaches_bob_and_nothing_write_prints_reaches_alice(
    spawn: Spawner,
    code_dir: str,
    sticky_dir: str,
    people: People,
    records: str,
    bobs_terminal: Terminal,
) -> None:
    path = os.path.join(sticky_dir, "pair.sock")
    line, utmp = logged_in_there(records, bobs_terminal)
    env = env_for(utmp, f"{fake_write(records)}:/usr/bin:/bin")

    alice = call(spawn, code_dir, people[ALICE], people[BOB], path, env)
    status_of(alice, f"Waiting for {BOB}: told {BOB} on {line}")
    with open(os.path.join(records, "write.args")) as args:
        assert args.read().split() == [BOB, line]
    with open(os.path.join(records, "write.stdin")) as notice:
        assert notice.read() == (
            f"{ALICE} wants to talk. Answer with: "
            f"python3 {code_dir}/talk.py {ALICE} --socket {path}\n"
        )
    # write(1) had ended before talk.py said it had told bob: whatever it wrote to alice's
    # terminal would be on the screen before that status line.
    assert b"WRITE-NOISE" not in alice.raw, "write(1)'s output reached talk's screen"
    assert alice.row(1).startswith("---") and drawn(alice), alice.text()


def test_the_notice_never_names_a_talk_py_the_caller_could_change(
    spawn: Spawner,
    sticky_dir: str,
    people: People,
    records: str,
    bobs_terminal: Terminal,
) -> None:
    """alice runs a talk.py of her own (in her home, say): bob is not told to run that file,
    which alice could change under him; and the path he is given is quoted for his shell."""
    own = readable_copy(owner=people[ALICE])
    path = os.path.join(sticky_dir, "our pair; of.sock")
    line, utmp = logged_in_there(records, bobs_terminal)
    env = env_for(utmp, f"{fake_write(records)}:/usr/bin:/bin")

    try:
        alice = call(spawn, own, people[ALICE], people[BOB], path, env)
        status_of(alice, f"Waiting for {BOB}: told {BOB} on {line}")
        with open(os.path.join(records, "write.stdin")) as notice:
            assert notice.read() == (
                f"{ALICE} wants to talk. Answer with: talk.py {ALICE} --socket '{path}'\n"
            )
    finally:
        shutil.rmtree(own, ignore_errors=True)


# A write(1) that hangs, as one writing to a stopped terminal does, with a child of its own;
# if it is ever let go, it delivers.
_HANGING_WRITE = """#!/bin/sh
echo $$ > {records}/write.pid
/bin/cat > /dev/null
/bin/sleep 600
echo delivered > {records}/delivered
"""


@pytest.mark.parametrize("how", ["dot", "sigterm", "answered"])
def test_a_hanging_write_does_not_outlive_the_call(
    spawn: Spawner,
    code_dir: str,
    sticky_dir: str,
    people: People,
    records: str,
    bobs_terminal: Terminal,
    how: str,
) -> None:
    path = os.path.join(sticky_dir, "pair.sock")
    _line, utmp = logged_in_there(records, bobs_terminal)
    bin_dir = fake_write(records)
    with open(os.path.join(bin_dir, "write"), "w") as script:
        script.write(_HANGING_WRITE.format(records=records))
    pid_file = os.path.join(records, "write.pid")

    alice = call(spawn, code_dir, people[ALICE], people[BOB], path, env_for(utmp, bin_dir))
    wait_until(lambda: os.path.exists(pid_file), DEADLINE, "write(1) to start")
    with open(pid_file) as file:
        session = int(file.read())
    if how == "dot":
        alice.type(".\r")
        alice.wait_exit()
    elif how == "sigterm":
        alice.kill(signal.SIGTERM)
        alice.wait_exit()
    else:
        bob = call(spawn, code_dir, people[BOB], people[ALICE], path, env_for(utmp, bin_dir))
        talking(alice, BOB, bob.pid)

    def session_gone() -> bool:
        ps = subprocess.run(["ps", "-o", "pid=", "-s", str(session)], capture_output=True)
        return not ps.stdout.strip()

    wait_until(session_gone, DEADLINE, "write(1) and its child to be killed")
    assert not os.path.exists(os.path.join(records, "delivered"))


@pytest.mark.parametrize("case", ["not logged in", "refusing messages", "no write"])
def test_the_status_line_says_why_bob_was_not_told(
    spawn: Spawner,
    code_dir: str,
    sticky_dir: str,
    people: People,
    records: str,
    bobs_terminal: Terminal,
    case: str,
) -> None:
    _master, line = bobs_terminal
    path = os.path.join(sticky_dir, "pair.sock")
    entries = [] if case == "not logged in" else [utmp_record(BOB, line)]
    if case == "refusing messages":
        os.chmod(f"/dev/{line}", 0o600)  # mesg n
    utmp = write_utmp(os.path.join(records, "utmp"), *entries)
    search = "/nonexistent" if case == "no write" else f"{fake_write(records)}:/usr/bin:/bin"
    expected = {
        "not logged in": f"{BOB} is not logged in",
        "refusing messages": f"{BOB} is refusing messages",
        "no write": "no talk daemon answers and write(1) is not installed",
    }[case]

    alice = call(spawn, code_dir, people[ALICE], people[BOB], path, env_for(utmp, search))
    alice.resize(24, 200)
    status_of(alice, f"Waiting for {BOB}: ")
    said = squeezed(f"Waiting for {BOB}: {expected}")  # on the status line, or below it whole
    alice.wait_until(lambda t: said in squeezed("".join(t.display[:-2])), DEADLINE, expected)
    assert not os.path.exists(os.path.join(records, "write.args")), "write(1) was run"
    bob = call(spawn, code_dir, people[BOB], people[ALICE], path, env_for(utmp, search))
    talking(alice, BOB, bob.pid)  # and talk kept waiting


def list_as(user: pwd.struct_passwd, talk_py: str, shared: str) -> str:
    """What ``talk.py --list --socket shared`` prints, run as ``user``."""
    result = subprocess.run(
        [python_for_others(), talk_py, "--list", "--socket", shared],
        **switch_to(user),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_list_shows_who_is_waiting_and_how_to_answer(
    spawn: Spawner, code_dir: str, sticky_dir: str, people: People, records: str
) -> None:
    alice_uid, bob_uid = people[ALICE].pw_uid, people[BOB].pw_uid
    pair = os.path.join(
        sticky_dir, f"talk-{min(alice_uid, bob_uid)}-{max(alice_uid, bob_uid)}.sock"
    )
    shared = os.path.join(sticky_dir, "talk.sock")
    env = env_for(write_utmp(os.path.join(records, "utmp")))
    talk_py = os.path.join(code_dir, "talk.py")

    def listing(user: pwd.struct_passwd) -> str:
        return list_as(user, talk_py, shared)

    assert listing(people[BOB]) == "Nobody is waiting to talk to you.\n"

    alice = call(spawn, code_dir, people[ALICE], people[BOB], pair, env)
    status_of(alice, f"Waiting for {BOB}")
    mallory = spawn_as(spawn, code_dir, people[MALLORY], "--socket", shared, env=env)
    status_of(mallory, "Waiting for someone")
    # a stale call from mallory to bob: not listed
    mallory_pair = os.path.join(
        sticky_dir,
        f"talk-{min(people[MALLORY].pw_uid, bob_uid)}-{max(people[MALLORY].pw_uid, bob_uid)}.sock",
    )
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(mallory_pair)
    stale.close()
    os.chown(mallory_pair, people[MALLORY].pw_uid, people[MALLORY].pw_gid)

    assert listing(people[BOB]).splitlines() == [
        f"{ALICE} is waiting to talk to you: python3 {talk_py} {ALICE} --socket {pair}",
        f"{MALLORY} is waiting for anyone on {shared}: python3 {talk_py} --socket {shared}",
    ]
    # alice does not see her own call; she does see mallory on the shared socket
    assert listing(people[ALICE]).splitlines() == [
        f"{MALLORY} is waiting for anyone on {shared}: python3 {talk_py} --socket {shared}",
    ]
    assert alice.child.isalive() and "Waiting" in alice.row(0), "listing disturbed alice"


# -- identity for every uid -----------------------------------------------------------------------

WIDE = account("wide")  # an account whose uid does not fit in a signed 32-bit int


@pytest.fixture
def wide() -> pwd.struct_passwd:
    """The account wide, with a free uid from 3000000000 on, made if missing."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create users and run talk.py as them")
    return ensure_user(WIDE, free_uid(3_000_000_000))


def test_a_uid_above_two_billion_is_named_and_let_in_like_any_other(
    spawn: Spawner, code_dir: str, sticky_dir: str, people: People, wide: pwd.struct_passwd
) -> None:
    assert wide.pw_uid >= 3_000_000_000 > 2**31
    env = env_for("/nonexistent")
    # The shared socket names them rightly ...
    shared = os.path.join(sticky_dir, "talk.sock")
    waiting_talk = spawn_as(spawn, code_dir, people[ALICE], "--socket", shared, env=env)
    status_of(waiting_talk, "Waiting for someone")
    joining = spawn_as(spawn, code_dir, wide, "--socket", shared, env=env)
    talking(waiting_talk, WIDE, joining.pid)
    talking(joining, ALICE, waiting_talk.pid)
    # ... and a call meant for them lets them in.
    pair = os.path.join(sticky_dir, "pair.sock")
    alice = call(spawn, code_dir, people[ALICE], wide, pair, env)
    status_of(alice, f"Waiting for {WIDE}")
    answer = call(spawn, code_dir, wide, people[ALICE], pair, env)
    talking(alice, WIDE, answer.pid)
    talking(answer, ALICE, alice.pid)


# -- nobody can split a pair ----------------------------------------------------------------------

# Connects to argv[1] and hangs up, from 100 threads, over and over, until killed.
_FLOOD = """\
import socket, sys, threading
def flood():
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(sys.argv[1])
        except OSError:
            pass
        s.close()
for _ in range(100):
    threading.Thread(target=flood, daemon=True).start()
print("flooding", flush=True)
threading.Event().wait()
"""


def test_a_flood_of_calls_does_not_split_a_pair(
    spawn: Spawner, code_dir: str, sticky_dir: str, people: People, records: str
) -> None:
    alice, path, env = alice_waits_for_bob(spawn, code_dir, sticky_dir, people, records)
    flood = subprocess.Popen(
        [python_for_others(), "-c", _FLOOD, path],
        **switch_to(people[MALLORY]),
        stdout=subprocess.PIPE,
    )
    try:
        assert flood.stdout is not None and flood.stdout.readline() == b"flooding\n"
        status_of(alice, f"Turned away {MALLORY}")  # the flood reaches her
        bob = call(spawn, code_dir, people[BOB], people[ALICE], path, env)
        bob.wait_until(lambda t: "Talking to" in t.row(0) or "Waiting" in t.row(0) or t.eof)
        assert f"held by {ALICE}" not in bob.row(0), bob.row(0)
        talking(bob, ALICE, alice.pid)
        talking(alice, BOB, bob.pid)
    finally:
        flood.kill()
        flood.wait()
        assert flood.stdout is not None
        flood.stdout.close()


# -- --list at a --socket path and its alternate places --------------------------------------------


def test_list_with_a_socket_path_looks_at_every_place_and_tells_private_from_shared(
    spawn: Spawner, code_dir: str, sticky_dir: str, people: People
) -> None:
    shared = os.path.join(sticky_dir, "meet.sock")
    with open(shared, "w"):
        pass  # something of root's is at the path itself
    env = env_for("/nonexistent")
    talk_py = os.path.join(code_dir, "talk.py")
    mallory = spawn_as(spawn, code_dir, people[MALLORY], "--socket", shared, env=env)
    status_of(mallory, f"Waiting for someone to connect to {shared}.1")
    alice = call(spawn, code_dir, people[ALICE], people[BOB], shared, env)
    status_of(alice, f"Waiting for {BOB}")  # .1 is mallory's, who is not bob: at .2
    held = squeezed(f"Waiting for {BOB} (")  # the places held, in the whole news below
    alice.wait_until(lambda t: held in news_below(t), DEADLINE, "the places held")
    assert list_as(people[BOB], talk_py, shared).splitlines() == [
        f"{MALLORY} is waiting for anyone on {shared}.1: python3 {talk_py} --socket {shared}",
        f"{ALICE} is waiting on {shared}.2 for a private call, only for the person called: "
        f"python3 {talk_py} {ALICE} --socket {shared}",
    ]
