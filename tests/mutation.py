"""Mutation testing of the decision-making modules (`make mutation`; not in CI: slow).

mutmut (https://mutmut.readthedocs.io) mutates one module at a time and runs only the
test folder(s) that exercise it. Each module runs in a scratch copy of the repository
(MUTATION_DIR, default /tmp/mwl-bridge-mutation/<module>), so the working tree is never
mutated and a daemon or benchmark running from it is not disturbed.

    python tests/mutation.py                         # every module below
    python tests/mutation.py bridge/steps/rules.py   # some of them

Prints killed / survived / timeout / no tests / score / minutes per module, and the
survivors' names (``mutmut show NAME`` in the module's scratch folder shows the diff).
Score = killed (timeouts count as killed) / (all mutants - skipped).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MUTMUT = Path(sys.executable).with_name("mutmut")

# module -> the test folders (or files) that exercise it (issue 17's list). query.py gets
# its unit-level files only: the rest of tests/worklist (PDU guard, TLS, every answer
# encoding) covers it too but made each surviving mutant cost minutes.
MODULES: dict[str, list[str]] = {
    "bridge/orders/lifecycle.py": ["tests/orders"],
    "bridge/orders/checks.py": ["tests/orders"],
    "bridge/worklist/query.py": ["tests/worklist/test_worklist_query.py",
                                 "tests/worklist/test_wildcard_and_number_keys.py",
                                 "tests/worklist/test_called_ae_views.py",
                                 "tests/worklist/test_worklist_findscu.py",
                                 "tests/worklist/test_worklist_profiles.py",
                                 "tests/worklist/test_conformance_doc.py",
                                 "tests/worklist/test_query_planner_edges.py",
                                 "tests/worklist/test_query_matching_edges.py"],
    "bridge/hl7/mllp.py": ["tests/hl7"],
    # The tokenizer's refusals are tested through the bridge (orders) and by the mapping
    # tests, not in tests/hl7 alone (which scored 68.9 % by itself).
    "bridge/hl7/message.py": ["tests/hl7", "tests/mapping",
                              "tests/orders/test_hostile_messages.py",
                              "tests/orders/test_broken_delimiters.py",
                              "tests/orders/test_ack_strict_peers.py"],
    "bridge/steps/rules.py": ["tests/steps"],
    "bridge/mpps/validate.py": ["tests/mpps"],
    "bridge/outbound/sender.py": ["tests/outbound"],
}
# What the tests read besides the code (fixtures, shipped mappings, docs they check).
COPY = ["bridge", "tests", "mappings", "fixtures", "docs", "bench", "fuzz", "pyproject.toml",
        "README.md", "Makefile", "Dockerfile", "docker-compose.yml", "mwl-bridge.example.yaml"]
DATA = ["mappings", "fixtures", "docs", "bench", "fuzz", "README.md", "Makefile", "Dockerfile",
        "docker-compose.yml", "mwl-bridge.example.yaml"]


def setup_cfg(module: str, tests: list[str]) -> str:
    lines = ["[mutmut]", "source_paths = bridge", f"only_mutate = {module}",
             "pytest_add_cli_args_test_selection =", *(f"    {t}" for t in tests),
             "pytest_add_cli_args =", "    -p", "    no:cacheprovider",
             "also_copy =", *(f"    {d}" for d in DATA),
             "use_git_change_detection = false", ""]
    return "\n".join(lines)


def scratch(module: str) -> Path:
    base = Path(os.environ.get("MUTATION_DIR", "/tmp/mwl-bridge-mutation"))
    folder = base / module.replace("/", "_").removesuffix(".py")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "artifacts", ".work")
    for name in COPY:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, folder / name, ignore=ignore)
        elif src.is_file():
            shutil.copy2(src, folder / name)
    return folder


def run(module: str, tests: list[str], children: int) -> dict[str, object]:
    folder = scratch(module)
    (folder / "setup.cfg").write_text(setup_cfg(module, tests), encoding="utf-8")
    # A mutant that hangs (a stop that never returns, a loop that never wakes) fails its
    # test after 30 s of wall clock, instead of waiting for mutmut's CPU limit, which an
    # idle hang never reaches; the default multiplier then only catches busy loops.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1",
           "PYTEST_ADDOPTS": os.environ.get("PYTEST_ADDOPTS", "--timeout 30")}
    start = time.monotonic()
    subprocess.run([str(MUTMUT), "run", "--max-children", str(children)], cwd=folder,
                   env=env, check=False)
    minutes = (time.monotonic() - start) / 60
    subprocess.run([str(MUTMUT), "export-cicd-stats"], cwd=folder, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    stats = json.loads((folder / "mutants" / "mutmut-cicd-stats.json").read_text())
    results = subprocess.run([str(MUTMUT), "results"], cwd=folder, env=env, check=False,
                             capture_output=True, text=True).stdout
    survivors = [line.split(":")[0].strip() for line in results.splitlines()
                 if line.strip().endswith(": survived")]
    judged = int(stats["total"]) - int(stats["skipped"])
    killed = int(stats["killed"]) + int(stats["timeout"])
    return {"module": module, "tests": " ".join(tests), "minutes": round(minutes, 1),
            "score": round(100 * killed / judged, 1) if judged else None,
            "survivors": survivors, "folder": str(folder), **stats}


def main(argv: list[str]) -> int:
    chosen = argv or list(MODULES)
    unknown = [m for m in chosen if m not in MODULES]
    if unknown:
        print(f"not a module of the list: {', '.join(unknown)}", file=sys.stderr)
        return 2
    children = int(os.environ.get("MUTATION_CHILDREN", "2"))
    rows = [run(m, MODULES[m], children) for m in chosen]
    print(f"\n{'module':32} {'killed':>6} {'survived':>8} {'timeout':>7} {'no tests':>8} "
          f"{'score':>6} {'min':>5}")
    for r in rows:
        print(f"{r['module']:32} {r['killed']:>6} {r['survived']:>8} {r['timeout']:>7} "
              f"{r['no_tests']:>8} {r['score']!s:>6} {r['minutes']:>5}")
    for r in rows:
        if r["survivors"]:
            print(f"\nsurvivors of {r['module']} (mutmut show NAME in {r['folder']}):")
            for name in r["survivors"]:
                print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
