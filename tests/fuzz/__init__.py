"""Coverage-guided fuzzing with atheris: one harness per parser entry (see README.md).

A harness is a module ``tests/fuzz/fuzz_<name>.py`` with ``TestOneInput(data:
bytes)``; its seeds are in ``corpus/<name>/`` and the crashers ever found in
``regressions/<name>/``. Everything here finds harnesses by that file name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
REGRESSIONS = HERE / "regressions"


def names() -> list[str]:
    """Every harness, by the ``fuzz_<name>.py`` files present."""
    return sorted(path.stem.removeprefix("fuzz_") for path in HERE.glob("fuzz_*.py"))


def load(name: str) -> ModuleType:
    return importlib.import_module(f"tests.fuzz.fuzz_{name}")


def target(name: str) -> Callable[[bytes], None]:
    test_one_input: Callable[[bytes], None] = load(name).TestOneInput
    return test_one_input


def inputs(name: str) -> list[Path]:
    """The committed inputs of a harness: its seeds, then its regressions."""
    return [
        path
        for folder in (CORPUS / name, REGRESSIONS / name)
        if folder.is_dir()
        for path in sorted(folder.iterdir())
        if path.is_file() and not path.name.startswith(".")
    ]
