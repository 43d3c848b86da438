"""The compiled-plugin cache: a start (here `runtime check`) compiles a plugin once and keeps the
result; the next start of the unchanged plugin loads it instead of compiling. For the Rust,
Python and JavaScript fraud plugins, each case prints a `CACHE` line with the cold and the warm
start's wall time (figures, not assertions: the machine is shared); what is asserted is that the
first start fills the cache, and the second writes no entry again (a miss would rewrite it) and
reports the same."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from streamtools import paths

PLUGINS = {
    "rust": paths.fraud_plugin,
    "python": paths.python_plugin,
    "javascript": paths.js_plugin,
}


def compiled(cache: Path) -> dict[Path, int]:
    """The compiled plugins in the cache, with their modification times (the cache's own usage
    statistics, `*.stats`, and its housekeeping files left out)."""
    return {
        p: p.stat().st_mtime_ns
        for p in cache.rglob("*")
        if p.is_file() and p.suffix != ".stats" and not p.name.startswith(".")
    }


def check(plugin: Path, cache: Path) -> tuple[str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [paths.runtime_binary(), "check", "--plugin", plugin, paths.FRAUD_CONFIG, f'plugin.cache-dir="{cache}"'],
        capture_output=True, text=True, timeout=900,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, elapsed


@pytest.mark.parametrize("language", list(PLUGINS))
def test_an_unchanged_plugin_is_compiled_once(language, tmp_path):
    plugin = PLUGINS[language]()
    if not plugin.is_file():
        pytest.fail(f"{plugin} is missing: scripts/test.sh builds it", pytrace=False)
    cache = tmp_path / "cache"
    cold_report, cold = check(plugin, cache)
    filled = compiled(cache)
    warm_report, warm = check(plugin, cache)
    print(f"\nCACHE plugin={language} size_bytes={plugin.stat().st_size} cold_s={cold:.2f} warm_s={warm:.2f}",
          flush=True)
    assert filled, "the first start kept the compiled plugin"
    assert compiled(cache) == filled, "the second start compiled nothing: no entry was written again"
    assert warm_report == cold_report
