"""The classify CLI asks glibc's malloc to keep freed memory for reuse (fewer page faults),
unless the user tuned malloc; off glibc it does nothing."""

from __future__ import annotations

import platform

import pytest

import cryoclass.cli as cli

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    for k in [k for k in __import__("os").environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(k)
    return monkeypatch


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_settings_are_taken_on_glibc(clean_env):
    assert cli.keep_freed_memory() is True


@pytest.mark.parametrize(
    "var, value",
    [("MALLOC_ARENA_MAX", "2"), ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=100000")],
)
def test_the_users_malloc_settings_win(clean_env, var, value):
    clean_env.setenv(var, value)
    assert cli.keep_freed_memory() is False


def test_classify_applies_it_first(clean_env):
    calls = []
    clean_env.setattr(cli, "keep_freed_memory", lambda: calls.append("malloc") or True)
    clean_env.setattr(cli, "_classify", lambda a, argv, gc_: calls.append("classify") or 0)
    assert cli.cmd_classify(None, []) == 0
    assert calls == ["malloc", "classify"]
