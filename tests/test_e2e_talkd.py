"""End-to-end tests of ``talk.py USER`` on a stock Debian 12 box: the talk daemon, BSD talk,
real logins and write(1) as Debian ships it (not setgid tty).

alice, bob, carol and mallory are real accounts with a shell; alice and bob log in with
``login -f`` on terminals of their own (so the login records are written by a login), and
run talk.py or BSD talk (``talk``) at their shell prompt, as people do. The talk daemon is the
test's own: Debian's in.ntalkd started by openbsd-inetd in a world of the test's own (see
talkd.py and world.py). Everything here needs root (to make the accounts, the namespaces and
the logins) and those packages, and skips saying so otherwise.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
from collections.abc import Iterator

import pytest
from as_user import as_user, ensure_user, python_for_others, readable_copy
from talkd import (
    ALICE,
    BOB,
    BSD_TALK,
    CAROL,
    MALLORY,
    SUCCESS,
    exit_status,
    log_in,
    look_up,
    talk_daemon,
    then_status,
)
from terminal import (
    DEADLINE,
    NO_TALK_DAEMON,
    Spawner,
    Talk,
    child_env,
    news_below,
    squeezed,
    wait_until,
)
from world import World

People = dict[str, pwd.struct_passwd]


@pytest.fixture
def daemon(test_world: World) -> Iterator[World]:
    """The test's world, with a talk daemon on its 127.0.0.1:518."""
    with talk_daemon(test_world):
        yield test_world


@pytest.fixture
def people(daemon: World) -> People:
    return {name: ensure_user(name) for name in (ALICE, BOB, CAROL, MALLORY)}


@pytest.fixture
def bsd_talk() -> str:
    if not os.path.exists(BSD_TALK):
        pytest.skip(f"{BSD_TALK} missing: install Debian's talk (.ci/run does, as root)")
    return BSD_TALK


@pytest.fixture
def meeting(sticky_dir: str) -> str:
    """Where alice's and bob's talk.py meet: a path in a sticky directory like /var/tmp (the
    default place, in /var/tmp itself, is not the tests' to use)."""
    return os.path.join(sticky_dir, "pair.sock")


def run_talk_py(shell: Talk, code_dir: str, meeting: str, *args: str, env: str = "") -> None:
    """At ``shell``'s prompt, run talk.py (then the shell says its exit status)."""
    talk_py = os.path.join(code_dir, "talk.py")
    command = shlex.join([python_for_others(), talk_py, *args, "--socket", meeting])
    shell.type(then_status(f"{env}{command}") + "\r")


def status(talk: Talk, text: str) -> None:
    talk.wait_for_row(0, text)


def message_rows(talk: Talk) -> list[str]:
    """The conversation area of a talk.py screen: rows 2 to R-3, blanks left out."""
    return [row for row in talk.display[2:-2] if row]


def invitation_of(world: World, caller: str, callee: str) -> int | None:
    """The answer the talk daemon gives ``callee`` looking for ``caller``'s invitation."""
    found = look_up(world, caller, callee)
    return None if found is None else found[0]


def alice_calls_bob(spawn: Spawner, code_dir: str, meeting: str) -> tuple[Talk, Talk]:
    """bob logs in; alice logs in and runs ``talk.py tk-bob``, which has talkd tell him."""
    bob = log_in(spawn, BOB)
    alice = log_in(spawn, ALICE)
    run_talk_py(alice, code_dir, meeting, BOB)
    status(alice, f"Waiting for {BOB}: the talk daemon told {BOB}")
    return alice, bob


def test_talk_py_calls_and_bob_answers_with_bsd_talk(
    spawn_in_world: Spawner,
    code_dir: str,
    people: People,
    daemon: World,
    bsd_talk: str,
    meeting: str,
) -> None:
    alice, bob = alice_calls_bob(spawn_in_world, code_dir, meeting)
    bob.wait_until(lambda t: "Message from Talk_Daemon@" in t.text(), DEADLINE, "talkd's notice")
    assert f"talk: connection requested by {ALICE}@" in bob.text()
    assert f"respond with:  talk {ALICE}@" in bob.text()
    assert invitation_of(daemon, ALICE, BOB) == SUCCESS  # what bob's talk will find
    alice.type("typed while waiting\r")

    bob.type(f"talk {ALICE}\r")
    status(alice, f"Talking to {BOB} (via talkd)")
    bob.wait_until(lambda t: "[Connection established]" in t.text(), DEADLINE, "connected")
    bob.wait_until(lambda t: "typed while waiting" in t.text(), DEADLINE, "the early line")

    alice.type("hello bob\r")
    bob.wait_until(lambda t: "hello bob" in t.text(), DEADLINE, "alice's line on bob's talk")
    # bob's talk sends each key as he types it: alice sees the line grow, on a row of its own.
    bob.type("hi alicx")
    alice.wait_for_row(-3, "<you> hi alicx")
    bob.type("\x7f")  # his erase character (the terminal's, DEL), as talk(1) sent it first
    alice.wait_until(lambda t: t.row(-3) == "<you> hi alic", DEADLINE, "the erase")
    bob.type("e\r")
    alice.wait_until(lambda t: "<you> hi alice" in message_rows(t), DEADLINE, "bob's line")
    assert message_rows(alice) == [
        "<myself> typed while waiting",
        "<myself> hello bob",
        "<you> hi alice",
    ], alice.text()
    # The call was answered: nobody else may answer the invitation any more.
    assert invitation_of(daemon, ALICE, BOB) != SUCCESS

    bob.type("\x03")  # Ctrl-C ends BSD talk
    status(alice, f"{BOB} (via talkd) left")
    alice.type("\x1b")
    assert exit_status(alice) == 0


def test_bob_calls_with_bsd_talk_and_alice_answers_with_talk_py(
    spawn_in_world: Spawner, code_dir: str, people: People, bsd_talk: str, meeting: str
) -> None:
    alice = log_in(spawn_in_world, ALICE)
    bob = log_in(spawn_in_world, BOB)
    bob.type(f"talk {ALICE}\r")
    alice.wait_until(
        lambda t: f"connection requested by {BOB}@" in t.text(), DEADLINE, "talkd's notice"
    )
    run_talk_py(
        alice, code_dir, meeting, BOB
    )  # the shell still waits for a command under the notice
    status(alice, f"Talking to {BOB} (via talkd)")
    bob.wait_until(lambda t: "[Connection established]" in t.text(), DEADLINE, "connected")
    bob.type("hello alice\r")
    alice.wait_until(lambda t: "<you> hello alice" in message_rows(t), DEADLINE, "bob's line")
    alice.type("hi bob\r")
    bob.wait_until(lambda t: "hi bob" in t.text(), DEADLINE, "alice's line on bob's talk")
    alice.type(".\r")
    assert exit_status(alice) == 0


_MALLORY_CALLS = """
import os, socket, struct, sys
def addr(host, port):
    return struct.pack("!HH4s8x", socket.AF_INET, port, socket.inet_aton(host))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.settimeout(5)
udp.connect(("127.0.0.1", 518))
# LOOK_UP, claiming to be bob: talkd believes any name.
udp.send(struct.pack("!BBBBI16s16si12s12s16s", 1, 1, 0, 0, 0, addr("0.0.0.0", 0),
         addr(*udp.getsockname()), os.getpid(), sys.argv[1].encode(), sys.argv[2].encode(), b""))
answer = udp.recv(1024)
port = struct.unpack_from("!H", answer, 10)[0]
tcp = socket.create_connection(("127.0.0.1", port), timeout=5)
tcp.sendall(b"\\x7f\\x15\\x17I am bob\\n")
got = b""
while True:
    data = tcp.recv(4096)
    if not data:
        break
    got += data
sys.stdout.write(repr(got))
"""


def test_mallory_at_alices_port_is_turned_away_and_bob_still_answers(
    spawn_in_world: Spawner,
    code_dir: str,
    people: People,
    daemon: World,
    bsd_talk: str,
    meeting: str,
) -> None:
    alice, bob = alice_calls_bob(spawn_in_world, code_dir, meeting)
    mallory = daemon.run(
        [python_for_others(), *as_user(people[MALLORY], "-c", _MALLORY_CALLS, BOB, ALICE)]
    )
    refusal = f"talk: private: this conversation is between {ALICE} and {BOB}\n"
    assert mallory.stdout == repr(b"\x7f\x15\x17" + refusal.encode()), mallory.stderr
    status(alice, f"Turned away {MALLORY} (via talkd); still waiting for {BOB}")
    assert "I am bob" not in alice.text()
    bob.type(f"talk {ALICE}\r")
    status(alice, f"Talking to {BOB} (via talkd)")


def test_bob_answers_with_talk_py_after_talkds_notice(
    spawn_in_world: Spawner, code_dir: str, people: People, daemon: World, meeting: str
) -> None:
    alice, bob = alice_calls_bob(spawn_in_world, code_dir, meeting)
    bob.wait_until(lambda t: "Message from Talk_Daemon@" in t.text(), DEADLINE, "talkd's notice")
    run_talk_py(bob, code_dir, meeting, ALICE)
    status(bob, f"Talking to {ALICE} (pid ")  # on the UNIX meeting path: the pid is known
    status(alice, f"Talking to {BOB} (pid ")
    wait_until(
        lambda: invitation_of(daemon, ALICE, BOB) != SUCCESS, DEADLINE, "the invitation to go"
    )
    bob.type("hello\r")
    alice.wait_until(lambda t: "<you> hello" in message_rows(t), DEADLINE, "bob's line")


@pytest.mark.parametrize("how", ["dot", "ctrl-c", "sigterm"])
def test_the_invitation_is_withdrawn_however_talk_ends(
    spawn_in_world: Spawner, code_dir: str, people: People, daemon: World, how: str, meeting: str
) -> None:
    alice, _bob = alice_calls_bob(spawn_in_world, code_dir, meeting)
    assert invitation_of(daemon, ALICE, BOB) == SUCCESS
    if how == "dot":
        alice.type(".\r")
    elif how == "ctrl-c":
        alice.type("\x03")
    else:
        (talk_pid,) = daemon.pids(people[ALICE].pw_uid, "talk.py")
        os.kill(talk_pid, signal.SIGTERM)
    exit_status(alice)
    assert invitation_of(daemon, ALICE, BOB) != SUCCESS, "the invitation outlived talk"


@pytest.mark.parametrize("case", ["not logged in", "refusing messages"])
def test_the_daemons_answer_is_the_status_line(
    spawn_in_world: Spawner, code_dir: str, people: People, case: str, meeting: str
) -> None:
    callee = CAROL if case == "not logged in" else BOB  # carol never logs in
    if case == "refusing messages":
        log_in(spawn_in_world, BOB, mesg=False)
    alice = log_in(spawn_in_world, ALICE)
    run_talk_py(alice, code_dir, meeting, callee)
    status(alice, f"Waiting for {callee}: {callee} is {case}")
    if case == "refusing messages":  # and what bob can do, in the whole news below
        lister = f"python3 {code_dir}/talk.py --list --socket {meeting}"
        whole = f"{BOB} is refusing messages (mesg n): mesg y lets them be told; "
        whole += f"{BOB} finds the call with {lister}"
        alice.wait_until(lambda t: squeezed(whole) in news_below(t), DEADLINE, "what bob can do")


@pytest.mark.parametrize("cols", [80, 40])
def test_a_narrow_status_line_says_who_was_told_before_which_places_are_held(
    spawn_in_world: Spawner, code_dir: str, people: People, meeting: str, cols: int
) -> None:
    """A socket of root's at the meeting place, which alice may not use: a note, after
    what matters."""
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(meeting)
    left.close()  # a socket file that nobody listens on, which alice may not remove
    log_in(spawn_in_world, BOB)
    alice = log_in(spawn_in_world, ALICE)
    alice.resize(24, cols)
    run_talk_py(alice, code_dir, meeting, BOB)
    told = f"the talk daemon told {BOB}" if cols == 80 else "told"
    status(alice, f"Waiting for {BOB}: {told} - ")
    note = squeezed("(pair.sock is a socket of root's")
    alice.wait_until(lambda t: note in news_below(t), DEADLINE, "the held place, below")


@pytest.mark.parametrize("whose", ["root's", "alice's own"])
def test_without_a_daemon_debians_write_cannot_tell_bob_and_the_status_says_so(
    spawn_in_world: Spawner, code_dir: str, people: People, meeting: str, whose: str
) -> None:
    """The command the status line gives bob names a talk.py only root can change; a copy
    of alice's own (she could change it under him) is not named by its path."""
    write = "/usr/bin/write"
    if not os.path.exists(write):
        pytest.skip("write(1) is not installed (Debian: bsdextrautils)")
    if os.stat(write).st_mode & stat.S_ISGID:
        pytest.skip("this write(1) is setgid, as before the fix for CVE-2024-28085")
    program = code_dir if whose == "root's" else readable_copy(owner=people[ALICE])
    lister = f"python3 {code_dir}/talk.py" if whose == "root's" else "talk.py"
    try:
        bob = log_in(spawn_in_world, BOB)
        before = bob.text()
        alice = log_in(spawn_in_world, ALICE)
        run_talk_py(alice, program, meeting, BOB, env=f"env TALK_DAEMON={NO_TALK_DAEMON} ")
        status(alice, f"Waiting for {BOB}: {BOB} was not told")  # at 80 columns
        finds = squeezed(f"{BOB} finds the call with {lister} --list --socket {meeting}")
        alice.wait_until(lambda t: finds in news_below(t), DEADLINE, "how bob finds it, below")
        alice.resize(24, 250)  # the whole status line
        alice.wait_until(
            lambda t: (
                "write(1) may not write to other terminals here;" in t.row(0)
                and f"{BOB} finds the call with {lister} --list --socket {meeting} -" in t.row(0)
            ),
            DEADLINE,
            "why nobody was told",
        )
        assert bob.text() == before, "something reached bob's terminal"
    finally:
        if program != code_dir:
            shutil.rmtree(program, ignore_errors=True)


def test_root_reaches_bob_through_debians_write(
    spawn_in_world: Spawner, code_dir: str, people: People, sock_path: str
) -> None:
    """root may write to any terminal: there write(1) works as Debian ships it."""
    bob = log_in(spawn_in_world, BOB)
    root = spawn_in_world(
        "",
        args=[os.path.join(code_dir, "talk.py"), BOB, "--socket", sock_path],
        env={**os.environ, "TALK_DAEMON": NO_TALK_DAEMON, "TERM": "xterm"},
        cwd=code_dir,
    )
    status(root, f"Waiting for {BOB}: told {BOB} on pts/")
    bob.wait_until(lambda t: "root wants to talk. Answer with:" in t.text(), DEADLINE, "notice")
    assert f"Answer with: python3 {code_dir}/talk.py root --socket {sock_path}" in "".join(
        bob.display
    )


#: A little of talkd's wire for mallory's scripts: a request, as talk(1) makes one.
_TALKD = """
import os, socket, struct, sys
def addr(host, port):
    return struct.pack("!HH4s8x", socket.AF_INET, port, socket.inet_aton(host))
def ask(kind, me, other, at=("0.0.0.0", 0)):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(5)
    udp.connect(("127.0.0.1", 518))
    udp.send(struct.pack("!BBBBI16s16si12s12s16s", 1, kind, 0, 0, 0, addr(*at),
             addr(*udp.getsockname()), os.getpid(), me.encode(), other.encode(), b""))
    answer = udp.recv(1024)
    return answer[2], struct.unpack_from("!H", answer, 10)[0]
"""

# mallory answers argv[2]'s call as if she were argv[1] (talkd believes any name), and at the
# port it names connects, says a line and hangs up at once, argv[3] times.
_HANGS_UP = (
    _TALKD
    + """
_answer, port = ask(1, sys.argv[1], sys.argv[2])
for _ in range(int(sys.argv[3])):
    tcp = socket.create_connection(("127.0.0.1", port), timeout=5)
    tcp.sendall(b"\\x7f\\x15\\x17I am root\\n")
    tcp.close()
print("done")
"""
)


@pytest.mark.parametrize("callee", ["bob", "root"])
def test_a_caller_who_hangs_up_at_once_is_nobody_and_alice_waits_on(
    spawn_in_world: Spawner, code_dir: str, people: People, daemon: World, meeting: str, callee: str
) -> None:
    """What the kernel's table holds for a caller that has already closed names root: talk
    takes a name only from a live connection, and a caller gone before talk answers is a
    caller who left, not a crash."""
    login = BOB if callee == "bob" else "root"
    alice = log_in(spawn_in_world, ALICE)
    run_talk_py(alice, code_dir, meeting, login)
    status(alice, f"Waiting for {login}")
    mallory = daemon.run(
        [python_for_others(), *as_user(people[MALLORY], "-c", _HANGS_UP, login, ALICE, "30")]
    )
    assert mallory.stdout == "done\n", mallory.stderr
    # The real callee answers: alice's talk is still there, and lets in only them.
    if callee == "bob":
        bob = log_in(spawn_in_world, BOB)
        run_talk_py(bob, code_dir, meeting, ALICE)
    else:
        env = child_env(TALK_DAEMON="127.0.0.1:518")
        args = [os.path.join(code_dir, "talk.py"), ALICE, "--socket", meeting]
        spawn_in_world("", args=args, env=env, cwd=code_dir)
    status(alice, f"Talking to {login} (pid ")
    assert "I am root" not in alice.text()


# mallory (argv[3]) leaves an invitation "from argv[1] to argv[2]" that points at the port of
# argv[1]'s own invitation to her: a talk of theirs, busy calling someone else.
_FORGES = (
    _TALKD
    + """
answer, port = ask(1, sys.argv[3], sys.argv[1])
assert answer == 0, answer
answer, _ = ask(0, sys.argv[1], sys.argv[2], ("127.0.0.1", port))
print("left", answer)
"""
)


def test_a_forged_invitation_to_a_talk_of_bobs_that_is_busy_is_skipped(
    spawn_in_world: Spawner, code_dir: str, people: People, daemon: World, sticky_dir: str
) -> None:
    bob = log_in(spawn_in_world, BOB)
    run_talk_py(bob, code_dir, os.path.join(sticky_dir, "bob.sock"), MALLORY)
    status(bob, f"Waiting for {MALLORY}")
    wait_until(lambda: invitation_of(daemon, BOB, MALLORY) == SUCCESS, DEADLINE, "bob's invitation")
    mallory = daemon.run(
        [python_for_others(), *as_user(people[MALLORY], "-c", _FORGES, BOB, ALICE, MALLORY)]
    )
    assert mallory.stdout == "left 0\n", mallory.stderr
    alice = log_in(spawn_in_world, ALICE)
    run_talk_py(alice, code_dir, os.path.join(sticky_dir, "alice.sock"), BOB)
    alice.resize(24, 200)
    status(alice, f"Waiting for {BOB} (127.0.0.1:")
    alice.wait_until(
        lambda t: (
            "an invitation in their name, to a talk of theirs that turned us away" in t.row(0)
            and f"the talk daemon told {BOB}" in t.row(0)
        ),
        DEADLINE,
        "alice waiting on, having skipped the forged invitation",
    )
    assert f"Waiting for {MALLORY}" in bob.row(0), "bob's call was disturbed"


def terminal_of(shell: Talk) -> str:
    """The terminal a login shell is on (``pts/3``), as tty(1) says it."""
    shell.type("tty\r")
    shell.wait_until(lambda t: re.search(r"/dev/(pts/\d+)", t.text()), DEADLINE, "tty's answer")
    found = re.search(r"/dev/(pts/\d+)", shell.text())
    assert found is not None
    return found[1]


@pytest.mark.parametrize("which", [0, 1])
def test_a_terminal_named_after_the_user_is_the_only_one_told(
    spawn_in_world: Spawner, code_dir: str, people: People, meeting: str, which: int
) -> None:
    """talk(1)'s ``talk user ttyname``: bob is logged in twice; the daemon tells him on the
    terminal alice names, whichever it is."""
    bobs = [log_in(spawn_in_world, BOB) for _ in range(2)]
    ttys = [terminal_of(bob) for bob in bobs]
    alice = log_in(spawn_in_world, ALICE)
    run_talk_py(alice, code_dir, meeting, BOB, ttys[which])
    status(alice, f"Waiting for {BOB}: the talk daemon told {BOB}")
    told = bobs[which]
    told.wait_until(lambda t: "Message from Talk_Daemon@" in t.text(), DEADLINE, "the notice")


def test_root_tells_bob_through_write_on_the_terminal_named_only(
    spawn_in_world: Spawner, code_dir: str, people: People, sock_path: str
) -> None:
    bobs = [log_in(spawn_in_world, BOB) for _ in range(2)]
    ttys = [terminal_of(bob) for bob in bobs]
    before = bobs[0].text()
    root = spawn_in_world(
        "",
        args=[os.path.join(code_dir, "talk.py"), BOB, ttys[1], "--socket", sock_path],
        env=child_env(),  # no talk daemon: write(1)
        cwd=code_dir,
    )
    root.wait_until(
        lambda t: t.row(0).startswith(f"Waiting for {BOB}: told {BOB} on {ttys[1]} - "),
        DEADLINE,
        "told on that terminal only",
    )
    bobs[1].wait_until(lambda t: "root wants to talk." in t.text(), DEADLINE, "the notice")
    assert bobs[0].text() == before, "bob's other terminal was written to"


def test_list_shows_a_talk1_caller_and_the_command_that_answers(
    spawn_in_world: Spawner, code_dir: str, people: People, bsd_talk: str, meeting: str
) -> None:
    alice = log_in(spawn_in_world, ALICE)
    bob = log_in(spawn_in_world, BOB)
    bob.type(f"talk {ALICE}\r")
    alice.wait_until(lambda t: f"requested by {BOB}@" in t.text(), DEADLINE, "talkd's notice")
    alice.type(then_status(shlex.join([python_for_others(), f"{code_dir}/talk.py", "--list"])))
    alice.type("\r")
    assert exit_status(alice) == 0
    answer = f"python3 {code_dir}/talk.py {BOB}"
    said = f"{BOB} is waiting to talk to you, says the talk daemon (talk(1) or ytalk): {answer}"
    assert squeezed(said) in squeezed(alice.text()), alice.text()
