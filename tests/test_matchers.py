"""Hyperscan databases kept in the rule cache: the second compile of the same patterns is a
load, and a loaded database matches as the compiled one does."""
from __future__ import annotations

from rpcwatch import matchers
from rpcwatch.sources.prefilter import LineMatcher

PATTERN = b"(?i:\\\\whoami\\.exe)\n(?i:k\xc3\xa9lvin)\n135"
BLOCK = "a\nC:\\WINDOWS\\WHOAMI.EXE /all\nport 135\nKÉLVIN\nnothing\n".encode()


def test_a_matcher_loaded_from_the_cache_keeps_the_same_lines(monkeypatch, tmp_path):
    monkeypatch.setenv("RPCWATCH_CACHE_DIR", str(tmp_path))
    compiled = LineMatcher(PATTERN)
    assert compiled.native
    compiles = []
    real_compile = matchers.cached_databases

    def counting(kind, key, compile_all):
        return real_compile(kind, key, lambda: compiles.append(kind) or compile_all())

    monkeypatch.setattr(matchers, "cached_databases", counting)
    loaded = LineMatcher(PATTERN)
    assert compiles == []  # loaded, not compiled
    assert loaded.kept(BLOCK) == compiled.kept(BLOCK) == "C:\\WINDOWS\\WHOAMI.EXE /all\nport 135\nKÉLVIN\n".encode()


def test_an_unreadable_entry_is_compiled_again(monkeypatch, tmp_path):
    monkeypatch.setenv("RPCWATCH_CACHE_DIR", str(tmp_path))
    compiled = []

    def compile_all():
        compiled.append(1)
        return {"lines": LineMatcher(b"135")._database}

    first = matchers.cached_databases("test", ("135",), compile_all)
    name = matchers.rulecache.content_key("test", matchers._VERSION, repr(("135",)))
    matchers.rulecache.store(name, {"lines": b"not a database"})
    second = matchers.cached_databases("test", ("135",), compile_all)
    assert len(compiled) == 2 and set(first) == set(second) == {"lines"}
    found = []
    second["lines"].scan(b"x 135", match_event_handler=lambda *args: found.append(args[2]))
    assert found == [5]


def test_with_the_cache_off_every_run_compiles(monkeypatch, tmp_path):
    monkeypatch.setenv("RPCWATCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("RPCWATCH_RULE_CACHE", "0")
    calls = []
    for _ in range(2):
        matchers.cached_databases("test", ("x",), lambda: calls.append(1) or {})
    assert len(calls) == 2 and not list(tmp_path.iterdir())
