"""A plugin author's path outside the repository: `runtime new-plugin` writes a crate in a
temporary directory, against a copy of the SDK alone, which is unit-tested, built for
wasm32-wasip2 with its own `plugin` profile, checked and replayed against the embedded fraud
model, as the generated README says.

The crate uses the repository's lockfile and shares its target directory, so that what the
workspace compiled already is not compiled again; it resolves and builds on its own without
either (they only save time)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from streamtools import paths

BUILD_TIMEOUT = 900


def run(args: list, cwd: Path, env: dict | None = None, timeout: float = BUILD_TIMEOUT) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_a_plugin_generated_outside_the_repository_tests_builds_checks_and_replays(tmp_path):
    runtime = paths.runtime_binary()
    crate = tmp_path / "my-scorer"
    assert paths.REPO not in crate.parents, "the test must run outside the repository"
    # The SDK alone, without the rest of the checkout, as a plugin elsewhere would have it.
    sdk = shutil.copytree(paths.REPO / "guest-sdk", tmp_path / "sdk")
    said = run([runtime, "new-plugin", "my-scorer", "--dir", crate, "--sdk", sdk], cwd=tmp_path)
    assert "cargo test" in said, said
    manifest = (crate / "Cargo.toml").read_text()
    assert ".workspace" not in manifest and "[workspace]" in manifest, manifest

    shutil.copy(paths.REPO / "Cargo.lock", crate / "Cargo.lock")
    env = {**os.environ, "CARGO_TARGET_DIR": str(paths.REPO / "target")}
    tested = run(["cargo", "test"], cwd=crate, env=env)
    assert "test result: ok" in tested, tested
    component = paths.REPO / "target" / "wasm32-wasip2" / "plugin" / "my_scorer.wasm"
    component.unlink(missing_ok=True)  # an earlier run's must not pass for this one's
    run(["cargo", "build", "--target", "wasm32-wasip2", "--profile", "plugin"], cwd=crate, env=env)
    assert component.is_file(), f"{component} was not built"

    records = tmp_path / "records.jsonl"
    lines = [{"id": f"t{i}", "features": [round((i + j) / 100.0, 2) for j in range(30)]} for i in range(5)]
    records.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"id": "short", "features": [1]}\n')

    checked = run([runtime, "check", "--plugin", component, "--input", records], cwd=tmp_path)
    assert "dead letter: invalid-record" in checked, checked

    config = tmp_path / "config.toml"
    config.write_text(
        f'[model]\npath = "{paths.REPO / "models" / "fraud" / "fraud.onnx"}"\nname = "fraud"\nversion = 1\n'
        '[plugin.settings]\nfeatures = "30"\ninput = "features"\noutput = "fraud_probability"\n'
    )
    out, dead = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    run([runtime, "replay", "--plugin", component, config, "--input", records, "--output", out,
         "--dead-letters", dead], cwd=tmp_path)
    # A JSON value is embedded in its line as JSON.
    scored = [json.loads(line)["value"] for line in out.read_text().splitlines()]
    assert [s["id"] for s in scored] == [f"t{i}" for i in range(5)], scored
    assert all(0.0 <= s["score"] <= 1.0 and isinstance(s["flagged"], bool) for s in scored), scored
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [d["reason"] for d in letters] == ["invalid-record"], letters
