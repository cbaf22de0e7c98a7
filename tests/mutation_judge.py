"""Judge the mutants of an earlier `make mutation` run again, against tests written since.

`tests/mutation.py` leaves each module's scratch copy (with mutmut's ``mutants/`` folder)
under /tmp/mwl-bridge-mutation/. Re-running mutmut there re-collects its statistics over
the whole test selection; this runs only the given test files, once per mutant, with
mutmut's own switch (``MUTANT_UNDER_TEST``), after copying the files from this tree:

    python tests/mutation_judge.py /tmp/mwl-bridge-mutation/bridge_worklist_query \\
        --which survived -- tests/worklist/test_query_planner_edges.py tests/worklist/...

A mutant is killed when the tests fail (``-x``; a hang is stopped by pytest-timeout,
``PYTEST_ADDOPTS=--timeout 30`` for a shorter one). ``--which timeout`` judges the ones
mutmut stopped on its CPU limit, which under load can be survivors. Before judging it
checks that the tests pass on the unmutated code, so a broken test cannot count as kills.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MUTMUT = Path(sys.executable).with_name("mutmut")


def listed(folder: Path, which: tuple[str, ...]) -> list[str]:
    out = subprocess.run([str(MUTMUT), "results"], cwd=folder, capture_output=True,
                         text=True, check=False).stdout
    return [line.split(":")[0].strip() for line in out.splitlines()
            if line.strip().endswith(which)]


def fails(folder: Path, tests: list[str], mutant: str) -> bool:
    env = {**os.environ, "MUTANT_UNDER_TEST": mutant, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                           *tests], cwd=folder / "mutants", env=env, capture_output=True,
                          check=False)
    return done.returncode != 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a module's scratch copy")
    parser.add_argument("--which", choices=["survived", "timeout"], default="survived")
    parser.add_argument("--names", nargs="*", default=[], help="these mutants only")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("tests", nargs="+", help="test files or folders, from this tree")
    args = parser.parse_args(argv)
    for test in args.tests:
        src, dst = REPO / test, args.folder / "mutants" / test
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    if fails(args.folder, args.tests, "none"):
        print("the tests fail on the unmutated code: nothing judged", file=sys.stderr)
        return 2
    which = ("survived", "no tests") if args.which == "survived" else ("timeout",)
    names = args.names or listed(args.folder, which)
    killed = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        for name, dead in zip(names, pool.map(lambda n: fails(args.folder, args.tests, n),
                                              names), strict=True):
            killed += dead
            print(f"{'killed  ' if dead else 'SURVIVED'} {name}", flush=True)
    print(f"{killed} of {len(names)} killed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
