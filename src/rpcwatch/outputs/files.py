"""Where output goes: checked before a run starts, opened without following a link.

A hunt's output must never destroy its evidence or write somewhere the user did not
mean: an output path that is one of the inputs (``-o conn.log``), a symbolic link (its
target would be overwritten) or a path in a missing directory is refused before any
input is read (exit code 2); ``--force`` allows a link."""
from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO


class OutputError(Exception):
    """An output path that cannot be used (exit code 2)."""


def check_output(path: str, inputs: Iterable[str], force: bool = False, directory: bool = False) -> None:
    """Raise :class:`OutputError` when ``path`` cannot be written safely."""
    target = Path(path)
    if target.is_symlink() and not force:
        raise OutputError(f"-o {path}: is a symbolic link (to {os.readlink(target)}); its target would be "
                          "overwritten (use --force to write there anyway)")
    parent = target.parent
    if not parent.is_dir():
        raise OutputError(f"-o {path}: no such directory: {parent}")
    if target.exists() and not directory and target.is_dir():
        raise OutputError(f"-o {path}: is a directory")
    if not target.exists():
        return
    for given in inputs:
        if given != "-" and _same(target, Path(given)):
            raise OutputError(f"-o {path}: is an input of this run; writing it would destroy the evidence")


def _same(output: Path, given: Path) -> bool:
    try:
        if output.samefile(given):
            return True
    except OSError:
        return False
    try:  # an input directory holding the output: the output may be one of its files
        output.resolve().relative_to(given.resolve())
        return given.is_dir() and output.is_file()
    except ValueError:
        return False


def open_output(path: str, force: bool = False, binary: bool = False) -> IO:
    """Open ``path`` for writing (truncating it), refusing a symbolic link unless ``force``
    (checked again at open, ``O_NOFOLLOW``, so a link made after the check is refused too)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if force else getattr(os, "O_NOFOLLOW", 0))
    try:
        descriptor = os.open(path, flags, 0o666)
    except OSError as exc:
        raise OutputError(f"-o {path}: {exc.strerror or exc}") from None
    raw = os.fdopen(descriptor, "wb")
    return raw if binary else io.TextIOWrapper(raw, encoding="utf-8", newline="")
