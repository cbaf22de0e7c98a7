"""The package layers, checked on the source (docs/architecture.md, "Layers").

Every module under bridge/ is parsed, and every import counts: at the top, inside
functions, and under ``if TYPE_CHECKING:`` (a type is a dependency too). Checked:

- each package imports only what its layer may (MAY_IMPORT below, which is the
  layers table of docs/architecture.md);
- nothing below bridge.app imports it (only bridge.app itself and bridge/__main__.py);
- no import cycle between packages, and none between modules;
- the daemon's services are constructed in bridge/app/services.py only.

A "package" here is bridge.X for every sub-package and top-level module X.
Every failure names the file, the line and the offending import or call.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

from tests.doctables import markdown_table

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"

# The ground floor's top-level modules: the base of every settings section, TLS
# contexts, IP allow-lists, located YAML errors, peer text made safe for a log
# line, the structural check of encoded DICOM data sets. They import nothing of
# the bridge.
BASE_MODULES = frozenset({"section", "tls", "addresses", "yamlsrc", "logsafe", "dicomwire",
                          "periodic"})
DOMAIN = frozenset({"orders", "worklist", "mpps", "outbound", "maintenance", "console",
                    "reconcile"})
# bridge.telemetry (metrics, readiness) stands beside the base modules: it imports
# only them, and every other package may import it to be instrumented.
TELEMETRY = frozenset({"telemetry"})
BELOW_DOMAIN = BASE_MODULES | TELEMETRY | {"store", "hl7", "mapping", "steps", "audit"}

# What each package may import besides itself. The domain packages never import
# one another: what they share is in steps (the status rules, change_status, the
# Reporter protocol), and the rest is a protocol that bridge.app satisfies when it
# wires them (worklist.DicomService, implemented by mpps.MppsService).
MAY_IMPORT: dict[str, frozenset[str]] = {
    **{name: frozenset() for name in BASE_MODULES},
    "telemetry": BASE_MODULES,
    "store": BASE_MODULES | TELEMETRY,
    "hl7": BASE_MODULES | TELEMETRY,
    "mapping": BASE_MODULES | TELEMETRY | {"hl7"},
    "steps": BASE_MODULES | TELEMETRY | {"store"},
    # bridge.audit (issue 15): the ATNA audit trail every domain package records to.
    "audit": BASE_MODULES | TELEMETRY | {"store"},
    **{name: BELOW_DOMAIN for name in DOMAIN},
    "app": BELOW_DOMAIN | DOMAIN,
    "__main__": frozenset({"app"}),
    "__init__": frozenset(),  # bridge/__init__.py
}

# Module cycles that only an import under TYPE_CHECKING closes: no cycle at run
# time, and each one listed by name (importer, imported), so a new one fails.
TYPE_ONLY_BACK_EDGES: frozenset[tuple[str, str]] = frozenset()

SERVICES = "bridge/app/services.py"
# Calls that make one of the daemon's services, or the one instance of a part
# they share; each is made in bridge/app/services.py only (`messages replay`
# gets its writer and intake from there too: replay_intake).
CONSTRUCTORS = (
    "CommitQueue",
    "ConsoleServer",  # the operator console's HTTP server (admin.enabled)
    "MllpServer.start",
    "WorklistSCP",
    "MppsService",
    "OutboxSender",
    "MppsForwarder",  # forwards accepted MPPS to other MPPS SCPs (the mpps-forward service)
    "Housekeeping",
    "Reconciler",  # the PACS reconciliation loop (the reconcile service)
    "IanService",  # Instance Availability Notification SCP on the worklist's AE
    "StudyPush",  # Orthanc's stable-study push, handed to the console
    "Retention",
    "Leadership",  # heartbeat row and maintenance leader election (the instance service)
    "Ingest",  # the MLLP intake: build_intake
    "DecidePool",  # the worker processes that decide HL7 frames: build_intake
    "status_messages",  # the one Reporter for every source of status changes
    "MappingReloader",  # the mapping set and its watch() task (mapping-reload)
    "Metrics",  # the one metrics registry (bridge.telemetry): no second one anywhere
    "Readiness",  # the daemon's readiness checks, served as /readyz
    "AuditService",  # the ATNA audit trail's spool and delivery threads (bridge/audit/)
)


@dataclass(frozen=True)
class Module:
    path: str  # bridge/steps/change.py
    name: str  # bridge.steps.change
    tree: ast.Module
    source: str

    @property
    def package(self) -> str:
        """The package that relative imports start from."""
        if self.path.endswith("/__init__.py"):
            return self.name
        return self.name.rpartition(".")[0]


@dataclass(frozen=True)
class Import:
    path: str  # the importing module's file
    importer: str  # and its name
    line: int
    target: str  # the bridge module imported: bridge.store.base, bridge.store, ...
    code: str
    type_only: bool  # under ``if TYPE_CHECKING:``

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: `{self.code}`"


def load_modules(root: Path = REPO) -> list[Module]:
    modules = []
    for file in sorted((root / "bridge").rglob("*.py")):
        parts = list(file.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        source = file.read_text(encoding="utf-8")
        path = file.relative_to(root).as_posix()
        modules.append(Module(path, ".".join(parts), ast.parse(source, path), source))
    return modules


def package_of(module_name: str) -> str:
    """bridge.steps.change -> steps; bridge.tls -> tls; bridge -> __init__."""
    parts = module_name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _ours(name: str) -> bool:
    return name == "bridge" or name.startswith("bridge.")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _code(module: Module, node: ast.AST) -> str:
    code = " ".join((ast.get_source_segment(module.source, node) or "").split())
    return re.sub(r",? \)", ")", code.replace("( ", "("))


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self, module: Module, names: set[str]) -> None:
        self.module = module
        self.names = names
        self.type_only = False
        self.found: list[Import] = []

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        outer, self.type_only = self.type_only, True
        for stmt in node.body:
            self.visit(stmt)
        self.type_only = outer
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if _ours(alias.name):
                self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.module.package.split(".")
            package = package[:len(package) - (node.level - 1)]
            base = ".".join([*package, *([node.module] if node.module else [])])
        if not _ours(base):
            return
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(node, submodule if submodule in self.names else base)

    def _add(self, node: ast.stmt, target: str) -> None:
        self.found.append(Import(self.module.path, self.module.name, node.lineno, target,
                                 _code(self.module, node), self.type_only))


def imports(modules: list[Module]) -> list[Import]:
    names = {m.name for m in modules}
    found = []
    for module in modules:
        visitor = _ImportVisitor(module, names)
        visitor.visit(module.tree)
        found.extend(visitor.found)
    return found


def find_cycle(graph: dict[str, dict[str, Import]]) -> list[str]:
    """One cycle of ``graph`` as [a, b, ..., a]; [] when there is none."""
    on_path: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str]:
        on_path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt in on_path:
                return [*on_path[on_path.index(nxt):], nxt]
            if nxt not in done:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        on_path.pop()
        done.add(node)
        return []

    for node in sorted(graph):
        if node not in done:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def _cycle_text(graph: dict[str, dict[str, Import]], cycle: list[str]) -> str:
    return "\n".join(f"  {a} -> {b}: {graph[a][b]}" for a, b in pairwise(cycle))


@pytest.fixture(scope="module")
def modules() -> list[Module]:
    return load_modules()


def test_every_package_has_a_layer(modules: list[Module]) -> None:
    missing = sorted({package_of(m.name) for m in modules} - MAY_IMPORT.keys())
    assert not missing, (f"packages without a layer: {missing}: add each to MAY_IMPORT in "
                         f"tests/test_layers.py and to the layers table of docs/architecture.md")


def test_packages_import_only_what_their_layer_may(modules: list[Module]) -> None:
    bad = []
    for imp in imports(modules):
        importer, imported = package_of(imp.importer), package_of(imp.target)
        allowed = MAY_IMPORT.get(importer, frozenset())
        if imported != importer and imported not in allowed:
            bad.append(f"{imp}: {importer} must not import {imported} (it may import: "
                       f"{', '.join(sorted(allowed)) or 'nothing of the bridge'})")
    assert not bad, "imports across the layers (docs/architecture.md):\n" + "\n".join(bad)


def test_only_the_application_imports_bridge_app(modules: list[Module]) -> None:
    bad = [f"{imp}: only bridge.app and bridge/__main__.py import bridge.app"
           for imp in imports(modules)
           if package_of(imp.target) == "app"
           and package_of(imp.importer) not in ("app", "__main__")]
    assert not bad, "\n".join(bad)


def test_no_import_cycle_between_packages(modules: list[Module]) -> None:
    graph: dict[str, dict[str, Import]] = {}
    for imp in imports(modules):
        importer, imported = package_of(imp.importer), package_of(imp.target)
        if importer != imported:
            graph.setdefault(importer, {}).setdefault(imported, imp)
    cycle = find_cycle(graph)
    assert not cycle, f"import cycle between packages:\n{_cycle_text(graph, cycle)}"


def test_no_import_cycle_between_modules(modules: list[Module]) -> None:
    # An edge is the module an import names. Importing bridge.store.base also runs
    # bridge/store/__init__.py first, but that is not an edge: a package file that
    # re-exports its modules would otherwise close a cycle with each of them.
    graph: dict[str, dict[str, Import]] = {}
    for imp in imports(modules):
        if imp.target == imp.importer:
            continue
        if imp.type_only and (imp.importer, imp.target) in TYPE_ONLY_BACK_EDGES:
            continue
        graph.setdefault(imp.importer, {}).setdefault(imp.target, imp)
    cycle = find_cycle(graph)
    assert not cycle, f"import cycle between modules:\n{_cycle_text(graph, cycle)}"


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str:
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        value = _dotted(node.value, aliases)
        return f"{value}.{node.attr}" if value else ""
    return ""


def calls(module: Module) -> Iterator[tuple[int, str, str]]:
    """(line, dotted name, code) of every call; names resolved through the imports."""
    aliases: dict[str, str] = {}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module or ''}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func, aliases)
            if name:
                yield node.lineno, name, _code(module, node.func)


def test_services_are_constructed_in_app_services_only(modules: list[Module]) -> None:
    bad = []
    for module in modules:
        if module.path == SERVICES:
            continue
        for line, name, code in calls(module):
            for constructor in CONSTRUCTORS:
                wanted = constructor.split(".")
                if name.split(".")[-len(wanted):] == wanted:
                    bad.append(f"{module.path}:{line}: `{code}(...)`: {constructor} is "
                               f"called in {SERVICES} only")
    assert not bad, "\n".join(bad)


def test_the_rules_have_something_to_check(modules: list[Module]) -> None:
    """Guards against a parser that silently finds nothing."""
    found = imports(modules)
    assert any(i.importer == "bridge.app.services" and i.target == "bridge.store"
               for i in found)
    assert any(i.type_only for i in found)
    # replay's import inside a function
    assert any(i.importer == "bridge.app.cli.messages" and i.target == "bridge.app.services"
               for i in found)
    made = {name for m in modules if m.path == SERVICES for _, name, _ in calls(m)}
    assert {"bridge.store.CommitQueue", "bridge.worklist.WorklistSCP",
            "bridge.hl7.MllpServer.start"} <= made


def _names(cell: str) -> set[str]:
    names = set(re.findall(r"`([\w.]+)`", cell))
    if "base modules" in cell:
        names |= BASE_MODULES
    return names


def test_layers_table_in_the_docs_is_this_one() -> None:
    rows = markdown_table(DOC, "| package | may import")
    documented: dict[str, set[str]] = {}
    for packages, may_import in (row[:2] for row in rows):
        allowed = (set(MAY_IMPORT) - {"__main__", "__init__"} if "every package" in may_import
                   else _names(may_import))
        for package in _names(packages):
            documented[package] = allowed - {package}
    expected = {k: set(v) for k, v in MAY_IMPORT.items() if k != "__init__"}
    differ = [f"{k}: the doc says {sorted(documented.get(k, ['(no row)']))}, "
              f"MAY_IMPORT {sorted(expected.get(k, ['(no entry)']))}"
              for k in sorted(documented.keys() | expected.keys())
              if documented.get(k) != expected.get(k)]
    assert not differ, "docs/architecture.md, Layers table:\n" + "\n".join(differ)


def test_readme_layout_covers_every_package(modules: list[Module]) -> None:
    rows = markdown_table(REPO / "README.md", "| path | what |")
    listed = {p for row in rows for p in re.findall(r"`([^`]+)`", row[0])}
    for path in listed:
        assert (REPO / path).exists(), f"README.md, Layout: {path} does not exist"
    wanted = {f"bridge/{package_of(m.name)}/" if m.path.count("/") > 1 else m.path
              for m in modules if package_of(m.name) not in ("__init__", "__main__")}
    assert "tests/" in listed
    assert not wanted - listed, f"README.md, Layout: not listed: {sorted(wanted - listed)}"
