"""Python hooks: the last resort, for a value no declarative rule can express.

A mapping names a hook under ``hooks:`` (``name: file.py:function``, the file
relative to the mapping file) and uses it as a value source (``{hook: name}``).
The function gets a :class:`HookContext` (read-only access to the message by
path) plus the value spec's ``args:`` as keyword arguments, and returns the
value: a string or number, a list of them for a multi-valued attribute, or
None for no value. Raising :class:`bridge.mapping.MappingError` rejects the
message with that error; any other exception rejects it with 207 (AR), and the
traceback goes to the log.

Hooks are off unless the configuration says ``mapping.python_hooks: true``:
the code runs inside the daemon with its rights. Each load runs the hook
file afresh, so a hot reload picks up an edited hook.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.hl7.message import Message
from bridge.mapping import errors as codes
from bridge.mapping.errors import MappingError
from bridge.mapping.paths import Anchor, Chain, PathSyntax, PathSyntaxError
from bridge.mapping.scope import Context, Hit

HookFunction = Callable[..., Any]
# Names for the module objects of hook files; never reused, so two loads never meet.
_module_numbers = itertools.count(1)


class HookLoadError(ValueError):
    """A hook that cannot be loaded; ``path``/``line`` point into the hook file when known."""

    def __init__(self, problem: str, path: Path | None = None, line: int | None = None) -> None:
        self.problem = problem
        self.path = path
        self.line = line
        super().__init__(problem)


def load_hook(spec: str, base: Path) -> tuple[HookFunction, Path]:
    """Load ``file.py:function`` (file relative to ``base``); return it and the file's path."""
    file_text, _, function = spec.rpartition(":")
    path = Path(file_text)
    if not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise HookLoadError(f"hook file not found: {path}")
    name = f"mwl_bridge_hook_{next(_module_numbers)}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise HookLoadError(f"cannot load {path} as Python")
    module = importlib.util.module_from_spec(module_spec)
    # Only while the file runs: dataclasses and the like look their module up there.
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise HookLoadError(f"syntax error in hook file: {exc.msg}", path, exc.lineno) from None
    except Exception as exc:  # noqa: BLE001 - any error while importing the hook is reported
        raise HookLoadError(f"hook file failed to load: {type(exc).__name__}: {exc}", path,
                            _line_in(exc, path)) from None
    finally:
        sys.modules.pop(name, None)
    fn = getattr(module, function, None)
    if fn is None:
        raise HookLoadError(f"{path.name} has no function {function!r}")
    if not callable(fn):
        raise HookLoadError(f"{path.name}:{function} is not a function")
    return fn, path


def _line_in(exc: BaseException, path: Path) -> int | None:
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno
    return line


@dataclass(frozen=True, slots=True)
class HookContext:
    """What a hook sees: the message by path, in the scope of the item being built."""

    message: Message | None
    ctx: Context
    anchor: Anchor
    syntax: PathSyntax
    _chains: dict[str, Chain] = field(repr=False)

    def _chain(self, path: str) -> Chain:
        chain = self._chains.get(path)
        if chain is None:
            try:
                chain, _ = self.syntax.chain(path)
            except PathSyntaxError as exc:
                raise ValueError(f"bad path in hook: {exc}") from None
            self._chains[path] = chain
        return chain

    def get(self, path: str) -> str:
        """The first value of a path (chains allowed: ``OBR-18 | ORC-3.1``); '' if none."""
        hit = self._chain(path).first_hit(self.ctx, self.anchor, structured=False)
        return hit.text() if hit is not None else ""

    def all(self, path: str) -> list[str]:
        """Every non-empty value of a path such as ``PID-3[*].1`` or ``NTE(*)-3``."""
        return [h.text() for h in self._chain(path).all_hits(self.ctx, self.anchor, False)]

    def hits(self, path: str) -> list[Hit]:
        """The hits themselves, with ``location()`` (ERL) for a precise MappingError."""
        return self._chain(path).all_hits(self.ctx, self.anchor, False)


@dataclass(frozen=True, slots=True)
class HookSource:
    """A value source that calls a site's Python function."""

    name: str
    function: HookFunction
    args: tuple[tuple[str, Any], ...]
    keyword: str
    syntax: PathSyntax
    # Paths a hook asks for are parsed once; a dict write is atomic, races are harmless.
    _chains: dict[str, Chain] = field(default_factory=dict, repr=False, compare=False)

    def fetch(self, ctx: Context, anchor: Anchor, multi: bool) -> list[tuple[Any, Hit | None]]:
        hook_ctx = HookContext(ctx.message, ctx, anchor, self.syntax, self._chains)
        try:
            result = self.function(hook_ctx, **dict(self.args))
        except MappingError:
            raise
        except Exception as exc:  # a hook bug rejects the message, it never stops the listener
            raise MappingError(codes.APPLICATION_INTERNAL_ERROR,
                               f"{self.keyword}: hook {self.name} failed: "
                               f"{type(exc).__name__}", attribute=self.keyword,
                               ack_code="AR") from exc
        if result is None or result == "":
            return []
        values = list(result) if isinstance(result, list | tuple) else [result]
        return [(v, None) for v in values if v is not None and v != ""]

    @property
    def text(self) -> str:
        return f"hook {self.name}"
