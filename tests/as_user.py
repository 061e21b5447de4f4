"""Run talk.py as another local user, for the end-to-end tests that need one.

Not a test file: the end-to-end tests import it (and conftest.py makes fixtures of it).

The checkout may be private (root's 0700 home, a clone in a ``mktemp -d``): other users can
neither read talk.py there nor start in it. So ``readable_copy()`` copies talk.py and
pubmarine.py into a fresh directory that every user can reach, ``python_for_others()`` finds an
interpreter that every user may run, and ``spawn_as`` starts the copy, in that directory, through
``AS_USER``: a few lines of Python, run as root, that drop to the user's uid, gid and groups and
then exec the interpreter, so the pid that pexpect sees is the pid of talk.py itself.

Switching users needs root: ``needs_root`` skips a test, with the reason, otherwise.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import stat
import string
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from terminal import REPO_ROOT, Talk, child_env, searchable_by_others, socket_dir

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to run talk.py as other users"
)

#: ``python -c AS_USER UID GID LOGIN PROGRAM ARGS...`` runs PROGRAM ARGS... as uid UID and gid
#: GID, with the supplementary groups of LOGIN, or none if LOGIN is "-" (a uid with no account).
AS_USER = (
    "import os, sys\n"
    "uid, gid, login = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]\n"
    "os.setgroups([])\n"
    "if login != '-':\n"
    "    os.initgroups(login, gid)\n"
    "os.setgid(gid)\n"
    "os.setuid(uid)\n"
    "os.execv(sys.argv[4], sys.argv[4:])\n"
)


def python_for_others() -> str:
    """A Python that another user can run (ours may live under root's 0700 home)."""
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if not candidate or not os.path.exists(candidate):
            continue
        real = os.path.realpath(candidate)  # a venv's python is a link to the real one
        if os.stat(real).st_mode & stat.S_IXOTH and searchable_by_others(os.path.dirname(real)):
            return candidate
    pytest.skip("no Python interpreter that other users may run")


def readable_copy(owner: pwd.struct_passwd | None = None) -> str:
    """A fresh directory that every user can reach, holding copies of talk.py and pubmarine.py
    that every user can read (the directory and the copies ``owner``'s, if given, else
    root's); skips the test if there is no such place. The caller removes it.
    """
    try:
        directory = socket_dir(prefix="talk-prog-", public=True)
    except OSError as error:
        pytest.skip(f"no directory that other users can read: {error}")
    for module in ("talk.py", "pubmarine.py"):
        copy = os.path.join(directory, module)
        shutil.copyfile(REPO_ROOT / module, copy)
        os.chmod(copy, 0o644)
        if owner is not None:
            os.chown(copy, owner.pw_uid, owner.pw_gid)
    if owner is not None:
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    return directory


def shared_dir(prefix: str, mode: int) -> str:
    """A fresh directory of root's with ``mode`` (0o1777: like /var/tmp) that every user can
    reach; skips the test if there is no such place. The caller removes it."""
    try:
        directory = socket_dir(prefix=prefix, public=True)
    except OSError as error:
        pytest.skip(f"no directory that other users can reach: {error}")
    os.chmod(directory, mode)
    return directory


def _free_mark() -> str:
    """Three letters and digits that no account name of ours carries yet."""
    while True:
        mark = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(3))
        if not any(entry.pw_name.endswith(f"-{mark}") for entry in pwd.getpwall()):
            return mark


#: This run's mark on the accounts it makes (``alice-k3z``): two runs of the suite side by side
#: never share an account, so neither changes what the other sees (its mesg, its logins), and
#: each removes its own when it ends. Names stay within the 11 characters that talk(1) and its
#: daemon keep of a login.
RUN_MARK = _free_mark()
#: The accounts this run made, removed when it ends (conftest.py).
MADE: list[str] = []
#: How long to keep trying when another run's useradd holds the account files' lock.
LOCKED_FOR = 30.0


def account(role: str) -> str:
    """The login this run gives ``role`` (``alice``): ``alice-k3z``."""
    return f"{role}-{RUN_MARK}"


def ensure_user(login: str, uid: int | None = None) -> pwd.struct_passwd:
    """The account ``login`` (with ``uid``, if given), made if missing, as people have one:
    a home and a login shell (/bin/sh). Made accounts are removed when the run ends."""
    try:
        return pwd.getpwnam(login)
    except KeyError:
        pass
    chosen = [] if uid is None else ["-u", str(uid)]
    made = _account_files(["useradd", "--create-home", "--shell", "/bin/sh", *chosen, login])
    if made.returncode == 0:
        MADE.append(login)
    try:
        return pwd.getpwnam(login)
    except KeyError:
        pytest.skip(f"could not create the user {login} with useradd: {made.stderr.strip()}")


#: What useradd and userdel exit with when another one holds the lock on the account files
#: ("cannot lock /etc/passwd; try again later"): 1 for passwd, 10 for group.
LOCKED = (1, 10)


def _account_files(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run useradd or userdel; while another run's holds the lock, again, for a while."""
    deadline = time.monotonic() + LOCKED_FOR
    while True:
        done = subprocess.run(command, check=False, capture_output=True, text=True)
        if done.returncode not in LOCKED or time.monotonic() > deadline:
            return done
        time.sleep(0.1)  # a poll interval while the other one finishes


def free_uid(low: int) -> int:
    """A uid from ``low`` on that no account has (for an account that needs a large one)."""
    taken = {entry.pw_uid for entry in pwd.getpwall()}
    uid = low + secrets.randbelow(1_000_000)
    while uid in taken:
        uid += 1
    return uid


def remove_made_users() -> None:
    """Remove the accounts this run made, with their homes (``userdel -f -r``)."""
    while MADE:
        _account_files(["userdel", "-f", "-r", MADE.pop()])


def as_user(user: pwd.struct_passwd | int, program: str, *args: str) -> list[str]:
    """The arguments after ``python`` that run ``program *args`` as ``user`` (an account or a
    bare uid, which gets the same number as its gid and no supplementary groups)."""
    if isinstance(user, int):
        uid, gid, login = user, user, "-"
    else:
        uid, gid, login = user.pw_uid, user.pw_gid, user.pw_name
    return ["-c", AS_USER, str(uid), str(gid), login, python_for_others(), program, *args]


def spawn_as(
    spawn: Callable[..., Talk],
    code_dir: str,
    user: pwd.struct_passwd | int,
    *args: str,
    env: dict[str, str] | None = None,
    **kwargs: Any,
) -> Talk:
    """``talk.py *args`` from ``code_dir`` (see ``readable_copy``), in a pty, as ``user``.

    ``args`` are talk.py's arguments (``--socket PATH``, a login, ...). It starts in
    ``code_dir``: the user may not be allowed into the checkout.
    """
    environment = env if env is not None else child_env()
    environment.setdefault("HOME", "/")
    if not isinstance(user, int):
        environment.update(USER=user.pw_name, LOGNAME=user.pw_name)
    wrapper = as_user(user, os.path.join(code_dir, "talk.py"), *args)
    return spawn("", args=wrapper, env=environment, cwd=code_dir, **kwargs)
