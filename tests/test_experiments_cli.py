"""``python -m experiments`` as a user runs it (a real process, real balancers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "experiments", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--backend",
        "--requests",
        "--concurrency",
        "--experiments",
        "--out",
        "--seed",
        "process,docker",
    ):
        assert option in out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--requests", "0"], "--requests must be at least 1"),
        (["--concurrency", "-1"], "--concurrency must be at least 1"),
        (["--experiments", "7"], "invalid choice: '7'"),
        (["--backend", "static"], "invalid choice: 'static'"),
        (["-e", "bounded", "--backend", "docker"], "runs on the process backend only"),
    ],
)
def test_bad_options_are_refused(capsys, args, says):
    with pytest.raises(SystemExit) as exit:
        main(args)
    assert exit.value.code == 2 and says in capsys.readouterr().err


def test_a_small_run_writes_results_and_summary(tmp_path: Path):
    out = run(
        "-e",
        "1",
        "--hashes",
        "default",
        "-n",
        "150",
        "-c",
        "8",
        "--no-progress",
        "-o",
        str(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["selected"] == ["1"] and meta["settings"]["requests"] == 150
    counts = meta["headline"]["exp1"]["default"]
    assert sorted(counts) == ["server-1", "server-2", "server-3"]
    assert sum(counts.values()) == 150
    assert "exp1.png" in meta["files"] and (tmp_path / "exp1.png").exists()
    assert "## Experiment 1" in (tmp_path / "summary.md").read_text()
