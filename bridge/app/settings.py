"""The daemon's settings: every package's section, composed; one YAML file,
overridden by environment variables.

Each section is defined beside the code it configures (``bridge/<package>/settings.py``);
this module only composes them, resolves relative paths, and locates errors.
No package below ``bridge.app`` imports it.

Environment overrides use the prefix ``MWL_BRIDGE_`` and ``__`` between nested
keys, e.g. ``MWL_BRIDGE_MLLP__PORT=2576`` or ``MWL_BRIDGE_DICOM__AE_TITLE=MWL1``.
Values are parsed as YAML scalars/flow collections, so ``[CT01, CT02]`` is a list.

Every error names the file (or the variable), the line and the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from bridge.audit.settings import AuditSettings
from bridge.console.settings import AdminSettings
from bridge.hl7.settings import MllpSettings
from bridge.maintenance.settings import HousekeepingSettings
from bridge.mapping.settings import MappingSettings
from bridge.mpps.settings import MppsSettings
from bridge.orders.settings import OrdersSettings
from bridge.outbound.settings import OutboundSettings
from bridge.reconcile.settings import ReconcileSettings
from bridge.section import Section
from bridge.store.settings import StoreSettings
from bridge.tls import TlsSettings
from bridge.worklist.settings import DicomSettings, WorklistSettings
from bridge.yamlsrc import SourceError, YamlDoc, load_yaml, validation_errors

ENV_PREFIX = "MWL_BRIDGE_"
DEFAULT_CONFIG_NAME = "mwl-bridge.yaml"


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # text: one line per record for people; json: one JSON object per line with
    # stable field names (ts, level, logger, msg, ...) for log collectors.
    format: Literal["text", "json"] = "text"
    # Patient data (names, IDs, message text) is only logged when this is on,
    # and then only at DEBUG.
    log_phi: bool = False


class Settings(Section):
    data_dir: Path = Path("data")
    store: StoreSettings = StoreSettings()
    mllp: MllpSettings = MllpSettings()
    dicom: DicomSettings = DicomSettings()
    worklist: WorklistSettings = WorklistSettings()
    mapping: MappingSettings = MappingSettings()
    logging: LoggingSettings = LoggingSettings()
    orders: OrdersSettings = OrdersSettings()  # lifecycle, checks, policies: docs/orders.md
    # MPPS, status messages out, housekeeping: docs/mpps-outbound.md
    mpps: MppsSettings = MppsSettings()
    outbound: OutboundSettings = OutboundSettings()
    housekeeping: HousekeepingSettings = HousekeepingSettings()
    admin: AdminSettings = AdminSettings()  # the operator console: docs/console.md
    audit: AuditSettings = AuditSettings()  # the ATNA audit trail: docs/audit.md
    # Completion when the study reaches the PACS (query, IAN, push): docs/completion.md
    reconcile: ReconcileSettings = ReconcileSettings()

    @property
    def sqlite_path(self) -> Path:
        return self.store.sqlite_file(self.data_dir)


class ConfigError(Exception):
    """The configuration is invalid; ``errors`` are located SourceErrors."""

    def __init__(self, errors: list[SourceError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


def find_config(explicit: Path | None) -> Path | None:
    """The config file to use: the explicit one, else ./mwl-bridge.yaml if present."""
    if explicit is not None:
        return explicit
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.is_file() else None


def load_settings(path: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load and validate settings. Relative paths resolve against the config's folder.

    Raises ConfigError naming the file, line and key of every problem.
    """
    environ = os.environ if environ is None else environ
    if path is not None:
        try:
            doc = load_yaml(path)
        except SourceError as exc:
            raise ConfigError([exc]) from None
        if doc.data is None:
            doc.data = {}
        if not isinstance(doc.data, dict):
            raise ConfigError([doc.error((), "the config file must be a mapping of sections")])
        base = path.parent
    else:
        doc = YamlDoc(path=Path("<defaults>"), data={}, lines={})
        base = Path.cwd()
    data, env_errors, env_keys = _apply_env(doc.data, environ)
    if env_errors:
        raise ConfigError(env_errors)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in validation_errors(doc, exc):
            var = env_keys.get(err.key)
            if var:
                err = SourceError(f"environment variable {var}", None, err.key, err.problem)
            errors.append(err)
        raise ConfigError(errors) from None
    return _resolve_paths(settings, base)


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]
               ) -> tuple[dict[str, Any], list[SourceError], dict[str, str]]:
    merged = _deep_copy(data)
    errors: list[SourceError] = []
    keys: dict[str, str] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX):].split("__") if p]
        if not parts:
            continue
        try:
            value = yaml.safe_load(environ[var]) if environ[var] else ""
        except yaml.YAMLError as exc:
            errors.append(SourceError(f"environment variable {var}", None, ".".join(parts),
                                      f"cannot parse value: {exc}"))
            continue
        target = merged
        for part in parts[:-1]:
            node = target.get(part)
            if not isinstance(node, dict):
                node = {}
                target[part] = node
            target = node
        target[parts[-1]] = value
        keys[".".join(parts)] = var
    return merged, errors, keys


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    def resolve(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    store = settings.store
    for key in ("sqlite_path", "postgresql_password_file", "sqlcipher_key_file"):
        if (value := getattr(store, key)) is not None:
            store = store.model_copy(update={key: resolve(value)})
    mapping = settings.mapping.model_copy(
        update={"paths": [resolve(p) for p in settings.mapping.paths]})

    def tls_files(tls: TlsSettings) -> TlsSettings:
        return tls.model_copy(update={k: resolve(v) for k in ("cert_file", "key_file", "ca_file")
                                      if (v := getattr(tls, k)) is not None})

    mllp = settings.mllp.model_copy(update={"tls": tls_files(settings.mllp.tls)})
    dicom = settings.dicom.model_copy(update={"tls": tls_files(settings.dicom.tls)})
    admin = settings.admin.model_copy(update={"tls": tls_files(settings.admin.tls)})
    outbound = settings.outbound.model_copy(
        update={"profiles": [resolve(p) for p in settings.outbound.profiles],
                "destinations": [d.model_copy(update={"tls": tls_files(d.tls)})
                                 for d in settings.outbound.destinations]})
    reconcile = settings.reconcile.model_copy(
        update={"pacs": [p.model_copy(update={"tls": tls_files(p.tls)})
                         for p in settings.reconcile.pacs]})
    forward = settings.mpps.forward.model_copy(
        update={"destinations": [d.model_copy(update={"tls": tls_files(d.tls)})
                                 for d in settings.mpps.forward.destinations]})
    settings = settings.model_copy(update={
        "mpps": settings.mpps.model_copy(update={"forward": forward})})
    settings = settings.model_copy(update={"audit": settings.audit.model_copy(update={
        "repositories": [r.model_copy(update={"tls": tls_files(r.tls)})
                         for r in settings.audit.repositories]})})
    return settings.model_copy(update={
        "data_dir": resolve(settings.data_dir), "store": store, "mapping": mapping,
        "mllp": mllp, "dicom": dicom, "outbound": outbound, "admin": admin,
        "reconcile": reconcile})
