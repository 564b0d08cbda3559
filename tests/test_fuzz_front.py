"""A short run of the front's fuzz harness (tests/fuzz_front.py; ``make fuzz`` runs a long
one): atheris mutates client byte streams, coverage-guided, from the seed corpus
(tests/fuzz_corpus: smuggling, trailers, codings, malformed bodies...), and every input must
keep the invariant the harness checks against a real balancer and a raw-logging replica."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECONDS = 25


def test_fuzzing_the_front_keeps_the_framing_invariant(tmp_path: Path) -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:  # it builds for Linux CPython <= 3.12 only: the same invariant, seeded
        argv = ["--random"]
    else:
        # libFuzzer writes what it finds to the first corpus directory: a scratch one.
        argv = [
            f"-max_total_time={SECONDS}",
            "-timeout=10",
            # What breaks the invariant is written here (and shown in the failure), not
            # into the working directory.
            f"-artifact_prefix={tmp_path}/",
            str(tmp_path),
            str(HERE / "fuzz_corpus"),
        ]
    done = subprocess.run(
        [sys.executable, str(HERE / "fuzz_front.py"), *argv],
        capture_output=True,
        text=True,
        timeout=SECONDS + 90,
        env={**os.environ, "FUZZ_SECONDS": str(SECONDS)},
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "Done " in out or "the invariant held" in out, out[-2000:]
