"""Every committed fuzz input, replayed through its harness; and a short fuzzing run.

``tests/fuzz/corpus/<name>/`` holds the seeds and ``tests/fuzz/regressions/<name>/``
every crasher the fuzzers ever found; each must now pass its harness (success
or the parser's own error, as the harness checks). The short run gives every
harness an equal share of ``TOPHOSTS_FUZZ_SECONDS`` (20 s by default; 0 skips
it); ``make fuzz`` runs them for minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import fuzz

ROOT = Path(__file__).resolve().parent.parent
SHORT_RUN = int(os.environ.get("TOPHOSTS_FUZZ_SECONDS", "20"))

CASES = [(name, path) for name in fuzz.names() for path in fuzz.inputs(name)]


def test_every_harness_has_seeds() -> None:
    assert fuzz.names(), "no tests/fuzz/fuzz_*.py"
    for name in fuzz.names():
        assert (fuzz.CORPUS / name).is_dir(), f"no seeds in tests/fuzz/corpus/{name}/"


@pytest.mark.parametrize(
    ("name", "path"), CASES, ids=[f"{name}/{path.parent.name}/{path.name}" for name, path in CASES]
)
def test_committed_input_passes_its_harness(name: str, path: Path) -> None:
    fuzz.target(name)(path.read_bytes())


@pytest.mark.skipif(SHORT_RUN == 0, reason="TOPHOSTS_FUZZ_SECONDS=0")
@pytest.mark.slow
def test_a_short_fuzzing_run_finds_nothing(tmp_path: Path) -> None:
    # Any crasher found is written into tests/fuzz/regressions/<name>/: commit it.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz",
            "all",
            "--total",
            str(SHORT_RUN),
            "--work",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SHORT_RUN + 30 * len(fuzz.names()),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    for name in fuzz.names():
        assert f"{name}: ok" in proc.stdout
