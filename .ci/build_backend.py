"""The package's build backend: setuptools, run on a copy of the source tree.

setuptools writes ``build/`` and ``*.egg-info/`` into the directory it builds from: building
fails in a checkout the user may not write (a clone that root shares), and litters one they
may. Each hook here copies the tree into a fresh temporary directory and runs setuptools' hook
there; what it builds goes where the frontend (pip, build) asked, and the source tree is left
as it was. Editable installs point into the tree by nature: they go to setuptools as they are.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from setuptools import build_meta

#: What a copy of the tree leaves out: version control, environments, earlier builds, caches.
_JUNK = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)


@contextlib.contextmanager
def _in_a_copy() -> Iterator[None]:
    """Run the block in a temporary copy of the current directory (the source tree)."""
    source = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="talk-pubmarine-build-") as scratch:
        tree = os.path.join(scratch, "source")
        shutil.copytree(source, tree, ignore=_JUNK, symlinks=True)
        os.chdir(tree)
        try:
            yield
        finally:
            os.chdir(source)


def get_requires_for_build_wheel(config_settings: Any = None) -> list[str]:
    with _in_a_copy():
        return build_meta.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_sdist(config_settings: Any = None) -> list[str]:
    with _in_a_copy():
        return build_meta.get_requires_for_build_sdist(config_settings)


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: Any = None) -> str:
    target = os.path.abspath(metadata_directory)
    with _in_a_copy():
        return build_meta.prepare_metadata_for_build_wheel(target, config_settings)


def build_wheel(
    wheel_directory: str, config_settings: Any = None, metadata_directory: str | None = None
) -> str:
    target = os.path.abspath(wheel_directory)
    metadata = metadata_directory and os.path.abspath(metadata_directory)
    with _in_a_copy():
        return build_meta.build_wheel(target, config_settings, metadata)


def build_sdist(sdist_directory: str, config_settings: Any = None) -> str:
    target = os.path.abspath(sdist_directory)
    with _in_a_copy():
        return build_meta.build_sdist(target, config_settings)


get_requires_for_build_editable = build_meta.get_requires_for_build_editable
prepare_metadata_for_build_editable = build_meta.prepare_metadata_for_build_editable
build_editable = build_meta.build_editable
