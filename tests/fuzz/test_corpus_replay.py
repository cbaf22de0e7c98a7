"""Every fuzz corpus file, seeds and fixed crashes alike, through its harness, without atheris.

The harnesses in fuzz/ (one per target, see fuzz/README.md) raise on a crash
or a broken contract; here their ``one_input`` runs as plain Python, so a
fixed crash stays fixed. Reproducers of crashes not fixed yet wait in
fuzz/crashes-open/, which this test does not read.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "fuzz" / "corpus"
TARGETS = ("mllp_framer", "er7_tokenizer", "msh18_charset", "mapping_engine", "cfind_query",
           "mpps_validate")
MAX_FILE_BYTES = 64 * 1024

CASES = [pytest.param(target, path, id=f"{target}/{path.name}")
         for target in TARGETS for path in sorted((CORPUS / target).glob("*"))
         if path.is_file()]


@pytest.fixture(scope="module")
def harnesses() -> Iterator[dict[str, ModuleType]]:
    """The harness modules, imported as if atheris were not installed."""
    fuzz_modules = {n: m for n, m in sys.modules.items() if n == "fuzz" or n.startswith("fuzz.")}
    saved_atheris = sys.modules.get("atheris")
    for name in fuzz_modules:
        del sys.modules[name]
    sys.modules["atheris"] = None  # type: ignore[assignment]  # "import atheris" fails
    try:
        loaded = {t: importlib.import_module(f"fuzz.{t}") for t in TARGETS}
        assert importlib.import_module("fuzz._common").atheris is None
    finally:
        del sys.modules["atheris"]
        if saved_atheris is not None:
            sys.modules["atheris"] = saved_atheris
    yield loaded
    for name in [n for n in sys.modules if n == "fuzz" or n.startswith("fuzz.")]:
        del sys.modules[name]
    sys.modules.update(fuzz_modules)


def test_every_target_has_a_harness_and_a_corpus() -> None:
    folders = {p.name for p in CORPUS.iterdir() if p.is_dir()}
    assert folders == set(TARGETS)
    for target in TARGETS:
        assert (REPO / "fuzz" / f"{target}.py").is_file()
        assert any((CORPUS / target).iterdir()), f"fuzz/corpus/{target} is empty"


@pytest.mark.parametrize(("target", "path"), CASES)
def test_corpus_file(harnesses: dict[str, ModuleType], target: str, path: Path) -> None:
    data = path.read_bytes()
    assert len(data) <= MAX_FILE_BYTES, f"{path.name}: corpus files stay under 64 KB"
    harnesses[target].one_input(data)
