"""A cache of compiled rule sets (rules bound to their tables, with the prefilter's
literals), so a run with thousands of rules does not parse, compile and bind them again
(docs/performance.md has the figures).

Key: a SHA-256 over everything the compiled set depends on: the cache format, rpcwatch's
code and log-source mappings, pySigma's version, the configuration
that reaches the rules (networks, placeholders), and each rule file's path and content in
load order. A changed byte anywhere is another key: invalidation is exact, and nothing
is ever updated in place.

Format: the compiled objects, pickled. Loading 2,400 compiled rules from a pickle takes a
small part of a second; a text format (JSON of the expression trees) would have to rebuild
the same objects in Python and costs several times that. Pickle runs code named in the
data, so a cache file is trusted only when an HMAC over it, with a key only this user can
read, verifies: the key and the files live in the user's cache directory
(``platformdirs``), created private (0700 directory, 0600 files), and are not used when
they are owned by someone else or writable by others. Anything unreadable, unverifiable or
undecodable is a miss, never an error.

Concurrent runs: a file is written under a temporary name and renamed into place (atomic
on POSIX), so a reader sees a whole file or none; two runs writing the same key write the
same content.
"""
from __future__ import annotations

import gc
import hashlib
import hmac
import os
import pickle
import secrets
import stat
import tempfile
from collections.abc import Iterable
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path

import platformdirs

#: bump when the cached objects change shape in a way the source hash cannot see
CACHE_FORMAT = 1
#: compiled rule sets kept (the oldest are removed): one per rule directory and configuration in use
MAX_ENTRIES = 8
#: overrides the directory (tests; a shared machine's scratch disk)
CACHE_DIR_VARIABLE = "RPCWATCH_CACHE_DIR"
#: set to 0 to load rules without the cache
CACHE_SWITCH_VARIABLE = "RPCWATCH_RULE_CACHE"
_MAGIC = b"RPCWRUL1"
_SUFFIX = ".ruleset"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_VARIABLE) or platformdirs.user_cache_dir("rpcwatch")) / "rules"


def enabled() -> bool:
    return os.environ.get(CACHE_SWITCH_VARIABLE, "1") != "0"


def cache_key(files: Iterable[Path], settings: object) -> str | None:
    """The key of a rule set loaded from ``files`` (in load order) under ``settings`` (any
    value whose ``repr`` is stable, such as a frozen dataclass); None when a file cannot be
    read (the load reports it; nothing is cached)."""
    digest = hashlib.sha256()
    for part in (str(CACHE_FORMAT), metadata.version("pysigma"), _compiler_digest(), repr(settings)):
        _update(digest, part.encode())
    for file in files:
        try:
            content = file.read_bytes()
        except OSError:
            return None
        _update(digest, str(file).encode())
        _update(digest, content)
    return digest.hexdigest()


def content_key(kind: str, *parts: str) -> str:
    """The key of something derived from a rule set (a matcher compiled for it): a digest
    of its kind and every input it was derived from, in the same store as rule sets."""
    digest = hashlib.sha256()
    for part in (str(CACHE_FORMAT), kind, *parts):
        _update(digest, part.encode())
    return digest.hexdigest()


def load(key: str) -> object | None:
    """The object stored under ``key``, or None (a miss)."""
    folder = _private_dir(create=False)
    if folder is None:
        return None
    secret = _secret(folder, create=False)
    try:
        data = (folder / (key + _SUFFIX)).read_bytes()
    except OSError:
        return None
    if secret is None or not data.startswith(_MAGIC):
        return None
    tag, payload = data[len(_MAGIC):len(_MAGIC) + 32], data[len(_MAGIC) + 32:]
    if not hmac.compare_digest(tag, hmac.new(secret, key.encode() + payload, hashlib.sha256).digest()):
        return None
    # Unpickling allocates hundreds of thousands of small objects that live as long as the
    # run: the cyclic collector would walk them again and again for nothing (8x slower
    # unpickling, and as long again in collections afterwards). They are made exempt from
    # it (gc.freeze); reference counting still frees them.
    collecting = gc.isenabled()
    gc.disable()
    try:
        value = pickle.loads(payload)
        gc.freeze()
    except Exception:  # a file from another version of the classes: a miss
        return None
    finally:
        if collecting:
            gc.enable()
    return value


def store(key: str, value: object) -> None:
    """Store ``value`` under ``key``; a cache that cannot be written is skipped silently
    (the run has its rules either way)."""
    folder = _private_dir(create=True)
    secret = _secret(folder, create=True) if folder is not None else None
    if folder is None or secret is None:
        return
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    tag = hmac.new(secret, key.encode() + payload, hashlib.sha256).digest()
    try:
        _write_atomically(folder / (key + _SUFFIX), _MAGIC + tag + payload)
        _prune(folder)
    except OSError:
        return


def _update(digest, part: bytes) -> None:
    digest.update(len(part).to_bytes(8, "big"))
    digest.update(part)


@lru_cache(maxsize=1)
def _compiler_digest() -> str:
    """A digest of rpcwatch's code and log-source mappings (compiling, binding and the
    prefilter's literals depend on them): a changed rpcwatch never reads old entries."""
    digest = hashlib.sha256()
    package = Path(str(resources.files("rpcwatch")))
    for path in sorted([*package.rglob("*.py"), *(package / "sigma" / "mappings").glob("*.yml")]):
        _update(digest, str(path.relative_to(package)).encode())
        _update(digest, path.read_bytes())
    return digest.hexdigest()


def _private_dir(create: bool) -> Path | None:
    """The cache directory when it is this user's and no one else's, else None."""
    folder = cache_dir()
    try:
        if create:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
    except OSError:
        return None
    return folder if _private(info) and stat.S_ISDIR(info.st_mode) else None


def _private(info: os.stat_result) -> bool:
    return info.st_uid == os.getuid() and not info.st_mode & 0o077


def _secret(folder: Path, create: bool) -> bytes | None:
    path = folder / "key"
    if create and not path.exists():
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass  # another run made it first
        except OSError:
            return None
        else:
            with os.fdopen(descriptor, "wb") as file:
                file.write(secrets.token_bytes(32))
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as file:
        if not _private(os.fstat(file.fileno())):
            return None
        secret = file.read()
    return secret if len(secret) == 32 else None


def _write_atomically(path: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=_SUFFIX)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _prune(folder: Path) -> None:
    entries = sorted(folder.glob("*" + _SUFFIX), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in entries[MAX_ENTRIES:]:
        stale.unlink(missing_ok=True)
