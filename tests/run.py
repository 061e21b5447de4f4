#!/usr/bin/env python3
"""Run the test suite with nothing but a Python 3.9+: ``python3 tests/run.py [PYTEST ARGS]``.

It makes a virtual environment in the checkout (``.venv``, ignored by git) the first time,
installs the ``test`` and ``dev`` extras named in setup.cfg into it, and runs pytest there the
way CI does: ``python -X dev -W error -m pytest``, so a leaked file or a deprecation fails.
Later runs reuse the environment; it is refreshed when setup.cfg asks for other packages.

This works where ``pip install`` does not: Debian's system Python refuses to install outside a
virtual environment (externally-managed-environment), may lack ensurepip (no python3-venv) and
may lack pip. Without ensurepip the environment is made without pip and pip is fetched from
PyPI as a wheel (its SHA-256 checked against PyPI's), then run from the wheel to install itself.

``--other-pythons`` runs the unit tests (every ``tests/test_*.py`` but the end-to-end
``test_e2e_*.py``) on each other CPython version that setup.cfg's classifiers name and that can
be found (``python3.N`` on PATH, pyenv's versions), each in a ``.venv-3.N`` of its own, as many
at once as the machine has cores; absent versions are skipped with a note. The exit status is
pytest's (5, no tests collected, is an error here too), or 1 if the environment could not be
made.
"""

from __future__ import annotations

import argparse
import configparser
import glob
import hashlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request
import venv
from pathlib import Path
from urllib.parse import urljoin

ROOT = Path(__file__).resolve().parent.parent
SETUP_CFG = ROOT / "setup.cfg"
PIP_JSON = "https://pypi.org/pypi/pip/json"
NO_TESTS_COLLECTED = 5  # pytest's exit status when nothing matched
PIP_QUIET = ("--quiet", "--disable-pip-version-check")


def say(message: str) -> None:
    print(f"tests/run.py: {message}", file=sys.stderr, flush=True)


class SetupError(Exception):
    """The environment to run the tests in could not be made."""


# -- what setup.cfg asks for --------------------------------------------------------------------


def read_setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(SETUP_CFG, encoding="utf-8")
    return config


def requirements(extras: list[str]) -> list[str]:
    """The packages of the given extras of setup.cfg, one requirement string each."""
    section = read_setup_cfg()["options.extras_require"]
    wanted: list[str] = []
    for extra in extras:
        for line in section[extra].splitlines():
            line = line.split("#", 1)[0].strip()
            if line and line not in wanted:
                wanted.append(line)
    return wanted


def supported_versions() -> list[tuple[int, int]]:
    """The Python versions named in setup.cfg's classifiers ("Python :: 3.N")."""
    classifiers = read_setup_cfg()["metadata"]["classifiers"]
    found = re.findall(r"Programming Language :: Python :: (\d+)\.(\d+)\s*$", classifiers, re.M)
    return sorted((int(major), int(minor)) for major, minor in found)


# -- the virtual environment --------------------------------------------------------------------


def venv_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def has_pip(python: Path) -> bool:
    check = [str(python), "-c", "import pip"]
    return (
        subprocess.run(check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    )


def make_venv(env_dir: Path) -> None:
    """A virtual environment with pip at ``env_dir``, made by this Python."""
    if venv_python(env_dir).exists() and has_pip(venv_python(env_dir)):
        return
    say(f"making a virtual environment in {env_dir}")
    shutil.rmtree(env_dir, ignore_errors=True)
    if importlib.util.find_spec("ensurepip") is not None:
        try:
            venv.EnvBuilder(with_pip=True).create(env_dir)
            return
        except (subprocess.CalledProcessError, OSError) as error:
            say(f"ensurepip failed ({error}); fetching pip from PyPI instead")
            shutil.rmtree(env_dir, ignore_errors=True)
    else:
        say("this Python has no ensurepip (on Debian: no python3-venv); fetching pip from PyPI")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    bootstrap_pip(venv_python(env_dir))


def bootstrap_pip(python: Path) -> None:
    """Install pip into the environment of ``python`` from the newest pip wheel on PyPI."""
    try:
        with urllib.request.urlopen(PIP_JSON, timeout=60) as response:
            release = json.load(response)
        wheel = next(
            url
            for url in release["urls"]
            if url["packagetype"] == "bdist_wheel" and url["filename"].endswith("-none-any.whl")
        )
        # PyPI gives absolute URLs; a mirror standing in for it may give relative ones.
        with urllib.request.urlopen(urljoin(PIP_JSON, wheel["url"]), timeout=60) as response:
            data = response.read()
    except (OSError, ValueError, KeyError, StopIteration) as error:
        raise SetupError(f"could not fetch pip from PyPI: {error}") from None
    if hashlib.sha256(data).hexdigest() != wheel["digests"]["sha256"]:
        raise SetupError(f"{wheel['filename']} from PyPI does not match its SHA-256")
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch, wheel["filename"])
        path.write_bytes(data)
        # A wheel is a zip file Python can run from: pip installs itself from its own wheel.
        install = [str(python), f"{path}/pip", "install", *PIP_QUIET, str(path)]
        if subprocess.run(install).returncode != 0:
            raise SetupError(f"could not install {wheel['filename']}")


def install(env_dir: Path, extras: list[str]) -> None:
    """Install the packages of ``extras`` unless the environment already has exactly them."""
    wanted = requirements(extras)
    stamp = env_dir / "talk-requirements.txt"
    if stamp.exists() and stamp.read_text(encoding="utf-8").splitlines() == wanted:
        return
    say(f"installing into {env_dir}: {' '.join(wanted)}")
    command = [str(venv_python(env_dir)), "-m", "pip", "install", *PIP_QUIET, *wanted]
    if subprocess.run(command).returncode != 0:
        raise SetupError(f"pip could not install {' '.join(wanted)}")
    stamp.write_text("\n".join(wanted) + "\n", encoding="utf-8")


def run_pytest(env_dir: Path, args: list[str]) -> int:
    """pytest in ``env_dir``, from the checkout, as CI runs it; its exit status."""
    command = [str(venv_python(env_dir)), "-X", "dev", "-W", "error", "-m", "pytest", *args]
    status = subprocess.run(command, cwd=ROOT).returncode
    if status == NO_TESTS_COLLECTED:
        say(f"pytest collected no tests (exit status {status}); check the arguments")
    return status


# -- other Python versions ----------------------------------------------------------------------


def home() -> Path:
    return Path(os.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir)


def find_python(version: tuple[int, int]) -> str | None:
    """A CPython of ``version`` (3.N): python3.N on PATH, or one that pyenv installed."""
    name = "python{}.{}".format(*version)
    pyenv = Path(os.environ.get("PYENV_ROOT") or home() / ".pyenv")
    candidates = [shutil.which(name)]
    candidates += sorted(
        glob.glob(str(pyenv / "versions" / "{}.{}.*".format(*version) / "bin" / name))
    )
    for candidate in candidates:
        if not candidate:
            continue
        probe = [
            candidate,
            "-c",
            "import sys; print(sys.implementation.name, *sys.version_info[:2])",
        ]
        try:
            result = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0 and result.stdout.split() == ["cpython", *map(str, version)]:
            return candidate
    return None


def unit_test_files() -> list[str]:
    tests = sorted(Path(ROOT, "tests").glob("test_*.py"))
    return [str(path.relative_to(ROOT)) for path in tests if not path.name.startswith("test_e2e_")]


def other_pythons(args: list[str]) -> int:
    """The unit tests on every other supported CPython found; the worst exit status.

    As many run at once as the machine has cores (CI's has two): each is a process of its
    own, in a virtual environment of its own, and says what it printed once it is done.
    """
    from concurrent.futures import ThreadPoolExecutor

    runs: list[tuple[str, list[str]]] = []
    for version in supported_versions():
        label = "Python {}.{}".format(*version)
        if version == sys.version_info[:2]:
            continue  # this one runs the whole suite
        python = find_python(version)
        if python is None:
            say(f"{label}: not found, skipped")
            continue
        env_dir = ROOT / ".venv-{}.{}".format(*version)
        command = [python, __file__, "--venv", str(env_dir), "--extras", "test", "--"]
        runs.append(
            (f"{label}: unit tests with {python}", [*command, "-q", *unit_test_files(), *args])
        )

    reporting = threading.Lock()  # one run's report at a time, whole

    def run(label: str, command: list[str]) -> int:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        with reporting:
            say(label)
            sys.stdout.buffer.write(done.stdout)
            sys.stdout.flush()
            if done.returncode:
                say(f"{label.partition(':')[0]}: failed (exit status {done.returncode})")
        return done.returncode

    with ThreadPoolExecutor(max_workers=max(1, min(len(runs), os.cpu_count() or 1))) as pool:
        statuses = list(pool.map(lambda each: run(*each), runs))
    return next((status for status in statuses if status), 0)


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tests/run.py",
        description="Run the tests in a virtual environment of the checkout, as CI does.",
        epilog="Everything after the options (or after --) is passed to pytest.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--other-pythons",
        action="store_true",
        help="run the unit tests on each other Python version in setup.cfg that is installed",
    )
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv", help=argparse.SUPPRESS)
    parser.add_argument("--extras", default="test,dev", help=argparse.SUPPRESS)
    options, pytest_args = parser.parse_known_args(argv)
    if pytest_args[:1] == ["--"]:
        pytest_args = pytest_args[1:]
    if options.other_pythons:
        return other_pythons(pytest_args)
    try:
        make_venv(options.venv)
        install(options.venv, options.extras.split(","))
    except (SetupError, subprocess.CalledProcessError, OSError) as error:
        say(f"cannot set up the tests: {error}")
        return 1
    return run_pytest(options.venv, pytest_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
