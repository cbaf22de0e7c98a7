"""What the harnesses share: atheris as an optional import, the script entry point,
how a finding is raised and named, and turning fuzz bytes into harness inputs.

Nothing here imports ``bridge``: a harness imports the code under test inside
``instrumented(__name__)`` so that atheris, when it runs the harness as a
script, instruments those modules for coverage. Imported by the replay test
(tests/fuzz/test_corpus_replay.py), the same block is a plain import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterable
from io import BytesIO
from pathlib import Path
from types import TracebackType
from typing import Any

try:  # optional: the replay test runs the harnesses without it
    import atheris
except ImportError:
    atheris = None

REPO = Path(__file__).resolve().parents[1]
BRIDGE = REPO / "bridge"
CORPUS = REPO / "fuzz" / "corpus"
CRASHES_OPEN = REPO / "fuzz" / "crashes-open"


class Finding(AssertionError):
    """An input broke a harness's contract: a wrong answer rather than an exception.

    ``key`` names the broken rule (e.g. ``ack-unparseable``), for ``FUZZ_KNOWN``.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"[{key}] {message}")
        self.key = key


def instrumented(module_name: str,
                 extra: Iterable[str] = ()) -> contextlib.AbstractContextManager[Any]:
    """Instrument ``bridge`` (and ``extra`` packages) imported in the block, when the
    harness runs as a fuzzing script; a no-op otherwise."""
    if module_name == "__main__" and atheris is not None:
        return atheris.instrument_imports(include=["bridge", *extra])
    return contextlib.nullcontext()


def main(one_input: Callable[[bytes], None], dictionary: str = "") -> None:
    """``python fuzz/<target>.py [libFuzzer options] [corpus dirs]``; ``dictionary``
    names a fuzz/dicts/<name>.dict used unless the command line gives ``-dict=``."""
    argv = list(sys.argv)
    if dictionary and not any(a.startswith("-dict=") for a in argv):
        argv.insert(1, f"-dict={REPO / 'fuzz' / 'dicts' / f'{dictionary}.dict'}")
    if atheris is None:
        sys.exit("atheris is not installed: pip install -e '.[fuzz]'")
    # pydicom warns (and logs) about every odd value it reads: noise at fuzzing speed.
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    target = one_input
    if KNOWN:
        def target(data: bytes) -> None:
            try:
                one_input(data)
            except Exception as exc:
                if not is_known(exc):
                    raise
                note("known, stepped over", exc)
    atheris.Setup(argv, target)
    atheris.Fuzz()


# -- naming findings --------------------------------------------------------------

def _frames(tb: TracebackType | None) -> list[traceback.FrameSummary]:
    return list(traceback.extract_tb(tb)) if tb is not None else []


def origin(exc: BaseException) -> str:
    """``bridge/x.py:123 ExcType``: the innermost frame of the repository's own code
    in ``exc``'s traceback (following ``raise ... from`` causes), else the innermost frame."""
    chain = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    root = chain[-1]
    frames = _frames(root.__traceback__)
    for frame in reversed(frames):
        path = Path(frame.filename)
        if path.is_relative_to(BRIDGE):
            return f"{path.relative_to(REPO)}:{frame.lineno} {type(root).__name__}"
    if frames:
        return f"{frames[-1].filename}:{frames[-1].lineno} {type(root).__name__}"
    return type(root).__name__


def raised_in_bridge(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by the repository's own code (its innermost frame is
    in bridge/), rather than inside pydicom, pynetdicom or the standard library."""
    frames = _frames(exc.__traceback__)
    return bool(frames) and Path(frames[-1].filename).is_relative_to(BRIDGE)


def _known() -> frozenset[str]:
    """Findings to step over while fuzzing on, so that one open bug does not hide the
    next: origins (``bridge/x.py:12``) or Finding keys, comma-separated in
    ``FUZZ_KNOWN``. Never set in CI; the replay test does not read it."""
    return frozenset(s.strip() for s in os.environ.get("FUZZ_KNOWN", "").split(",") if s.strip())


KNOWN = _known()


def is_known(exc: BaseException) -> bool:
    key = exc.key if isinstance(exc, Finding) else origin(exc).split(" ")[0]
    return key in KNOWN


_NOTED: set[str] = set()


def note(kind: str, exc: BaseException) -> None:
    """Print a tolerated but suspicious exception once per origin (stderr), with its
    traceback: e.g. a planner bug that a catch-all turns into a defined failure."""
    key = f"{kind} {origin(exc)}"
    if key in _NOTED:
        return
    _NOTED.add(key)
    if os.environ.get("FUZZ_QUIET"):
        return
    text = "".join(traceback.format_exception(exc))
    print(f"\n=== {kind}: {origin(exc)}\n{text}", file=sys.stderr, flush=True)


# -- inputs -------------------------------------------------------------------------

def hl7_text(data: bytes) -> str:
    """The input as text: UTF-8 when it is valid UTF-8, else Latin-1 (every byte a
    character), so the fuzzer reaches both non-ASCII text and arbitrary bytes."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# pydicom's reading and value conversion, instrumented too for the DICOM targets:
# its branches tell the fuzzer which bytes make which elements.
PYDICOM_DECODING = ("pydicom.filereader", "pydicom.values", "pydicom.dataelem",
                    "pydicom.charset", "pydicom.valuerep", "pydicom.sequence")

# The transfer syntaxes a DIMSE data set arrives in: (implicit VR, little endian).
SYNTAXES = ((True, True), (False, True), (False, False))
SYNTAX_NAMES = ("implicit VR little endian", "explicit VR little endian",
                "explicit VR big endian")


def decode_dataset(selector: int, data: bytes) -> Any:
    """A DIMSE data set from ``data`` as pynetdicom decodes it for a handler
    (``Event.identifier`` / ``attribute_list``): pydicom reads it lazily, so this
    may succeed and the first access of an element fail."""
    from pynetdicom.dsutils import decode

    implicit, little = SYNTAXES[selector % len(SYNTAXES)]
    return decode(BytesIO(data), implicit, little)


def encode_dataset(selector: int, ds: Any) -> bytes:
    """The seed-side inverse of ``decode_dataset``: the selector byte, then the data set."""
    from pynetdicom.dsutils import encode

    implicit, little = SYNTAXES[selector % len(SYNTAXES)]
    encoded = encode(ds, implicit, little)
    if encoded is None:
        raise ValueError("pynetdicom could not encode the seed data set")
    return bytes([selector]) + encoded
