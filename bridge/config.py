"""Typed settings: one YAML file, overridden by environment variables.

Environment overrides use the prefix ``MWL_BRIDGE_`` and ``__`` between nested
keys, e.g. ``MWL_BRIDGE_MLLP__PORT=2576`` or ``MWL_BRIDGE_DICOM__AE_TITLE=MWL1``.
Values are parsed as YAML scalars/flow collections, so ``[CT01, CT02]`` is a list.

Every error names the file (or the variable), the line and the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bridge.mpps.settings import HousekeepingSettings, MppsSettings
from bridge.orders.settings import OrdersSettings
from bridge.outbound.settings import OutboundSettings
from bridge.tls import TlsSettings  # defined there so outbound destinations can use it too
from bridge.yamlsrc import SourceError, YamlDoc, load_yaml, validation_errors

ENV_PREFIX = "MWL_BRIDGE_"
DEFAULT_CONFIG_NAME = "mwl-bridge.yaml"

Port = Annotated[int, Field(ge=0, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ae_title(value: str) -> str:
    if not value or len(value) > 16 or not value.isascii() or "\\" in value:
        raise ValueError("an AE title is 1-16 ASCII characters without backslash")
    if value != value.strip():
        raise ValueError("an AE title has no leading or trailing spaces")
    return value


class StoreSettings(_Section):
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    sqlite_path: Path | None = Field(
        default=None, description="SQLite file; default <data_dir>/bridge.sqlite3")
    postgresql_dsn: str = Field(default="", description="libpq DSN, for backend: postgresql")
    # Messages from several MLLP connections are committed together (group
    # commit): one fsync serves many ACKs, while each message keeps its own
    # savepoint so one failure never takes another message with it.
    max_batch: int = Field(default=64, ge=1, le=10000)


def _networks(values: list[str]) -> list[str]:
    """IP addresses or CIDR networks (host names would need DNS on every connection)."""
    import ipaddress
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR network") from None
    return values


def _dicom_charset(value: str) -> str:
    from pydicom.charset import python_encoding
    for term in (t.strip() for t in value.split("\\")):
        if term not in python_encoding:
            raise ValueError(f"unknown Specific Character Set term {term!r}")
    return value


class MllpSender(_Section):
    """One allowed HL7 sender: MSH-3.1 (and MSH-4.1 unless empty), optionally by address."""

    application: str = Field(min_length=1)
    facility: str = ""
    hosts: list[str] = Field(default_factory=list)

    _check_hosts = field_validator("hosts")(classmethod(lambda cls, v: _networks(v)))


class MllpAllowSettings(_Section):
    # Empty lists allow everyone; a refused message is answered AR (bridge/hl7/access.py).
    hosts: list[str] = Field(default_factory=list)
    senders: list[MllpSender] = Field(default_factory=list)

    _check_hosts = field_validator("hosts")(classmethod(lambda cls, v: _networks(v)))


class DicomPeer(_Section):
    """One known modality AE (dicom.known_aes, keyed by its AE title)."""

    hosts: list[str] = Field(default_factory=list)  # empty: from any allowed host
    character_set: str | None = None  # default: dicom.character_set
    unencodable: Literal["utf8", "transliterate"] | None = None  # default: dicom.unencodable
    # Use the calling AE title as Scheduled Station AE Title when the query leaves it
    # empty or "*".
    station_from_calling_ae: bool = False
    # What this AE may see; empty lists restrict nothing.
    stations: list[str] = Field(default_factory=list)
    modalities: list[str] = Field(default_factory=list)
    worklist_labels: list[str] = Field(default_factory=list)  # (0074,1202)
    max_associations: int | None = Field(default=None, ge=1)

    _check_hosts = field_validator("hosts")(classmethod(lambda cls, v: _networks(v)))
    _check_cs = field_validator("character_set")(
        classmethod(lambda cls, v: v if v is None else _dicom_charset(v)))


class MllpSettings(_Section):
    host: str = "127.0.0.1"
    port: Port = 2575
    max_frame_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    idle_timeout_s: float = Field(default=600.0, gt=0)
    # MSH-18 empty means ASCII in the standard; many senders mean Latin-1.
    default_charset: str = "ascii"
    # Non-standard MSH-18 values seen in the field, mapped to Python codecs.
    charset_aliases: dict[str, str] = Field(default_factory=lambda: {
        "UTF-8": "utf-8", "UTF8": "utf-8", "WINDOWS-1252": "cp1252", "CP1252": "cp1252",
        "LATIN1": "iso8859-1", "LATIN-1": "iso8859-1", "ISO-8859-1": "iso8859-1",
    })
    tls: TlsSettings = TlsSettings()
    allow: MllpAllowSettings = MllpAllowSettings()

    @field_validator("default_charset")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        import codecs
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown character set codec {value!r}") from None
        return value


class DicomSettings(_Section):
    host: str = "127.0.0.1"
    port: Port = 11112
    ae_title: str = "MWLBRIDGE"
    # pynetdicom's default of 10 turns away the 11th console.
    max_associations: int = Field(default=200, ge=1)
    # Answers are encoded in this Specific Character Set (0008,0005).
    character_set: str = "ISO_IR 192"
    max_pdu: int = Field(default=0, ge=0, description="0 means unlimited")
    acse_timeout_s: float = Field(default=30.0, gt=0)
    dimse_timeout_s: float = Field(default=30.0, gt=0)
    network_timeout_s: float = Field(default=60.0, gt=0)
    # Access control and per-AE behaviour (bridge/worklist/access.py, docs/conformance).
    require_called_ae: bool = True
    require_known_ae: bool = False
    allowed_hosts: list[str] = Field(default_factory=list)  # empty: any host
    max_associations_per_ae: int = Field(default=0, ge=0)  # 0: only the total limit
    unencodable: Literal["utf8", "transliterate"] = "utf8"
    known_aes: dict[str, DicomPeer] = Field(default_factory=dict)
    tls: TlsSettings = TlsSettings()

    _check_aet = field_validator("ae_title")(classmethod(lambda cls, v: _ae_title(v)))
    _check_cs = field_validator("character_set")(classmethod(lambda cls, v: _dicom_charset(v)))
    _check_hosts = field_validator("allowed_hosts")(classmethod(lambda cls, v: _networks(v)))

    @field_validator("known_aes")
    @classmethod
    def _known_ae_titles(cls, value: dict[str, DicomPeer]) -> dict[str, DicomPeer]:
        for title in value:
            _ae_title(title)
        return value


class WorklistSettings(_Section):
    # Statuses never returned by C-FIND (kept in the store).
    hidden_statuses: list[str] = Field(
        default_factory=lambda: ["COMPLETED", "DISCONTINUED", "CANCELED", "HELD"])
    # 0 = no cap. A cap stops broad queries from flooding a console.
    max_answers: int = Field(default=0, ge=0)
    # Patient's Name: "insensitive" ignores case and accents (what consoles expect),
    # "exact" compares as stored (DCMTK's behaviour).
    patient_name_matching: Literal["insensitive", "exact"] = "insensitive"


class MappingSettings(_Section):
    # Files or folders (every *.yaml inside, in name order); first routing match wins.
    paths: list[Path] = Field(default_factory=lambda: [Path("mappings")])
    default_station_aet: str = "UNASSIGNED"
    # Hot reload: check the mapping files (and their lookup tables and hooks) for
    # changes every this many seconds; 0 turns the check off (SIGHUP still reloads).
    reload_poll_s: float = Field(default=2.0, ge=0)
    # Mapping files may name Python hook functions (hooks:), which run inside the
    # daemon with its rights: off unless the operator allows it.
    python_hooks: bool = False

    _check_aet = field_validator("default_station_aet")(
        classmethod(lambda cls, v: _ae_title(v)))


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Patient data (names, IDs, message text) is only logged when this is on,
    # and then only at DEBUG.
    log_phi: bool = False


class Settings(_Section):
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

    @property
    def sqlite_path(self) -> Path:
        return self.store.sqlite_path or self.data_dir / "bridge.sqlite3"


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
    if store.sqlite_path is not None:
        store = store.model_copy(update={"sqlite_path": resolve(store.sqlite_path)})
    mapping = settings.mapping.model_copy(
        update={"paths": [resolve(p) for p in settings.mapping.paths]})

    def tls_files(tls: TlsSettings) -> TlsSettings:
        return tls.model_copy(update={k: resolve(v) for k in ("cert_file", "key_file", "ca_file")
                                      if (v := getattr(tls, k)) is not None})

    mllp = settings.mllp.model_copy(update={"tls": tls_files(settings.mllp.tls)})
    dicom = settings.dicom.model_copy(update={"tls": tls_files(settings.dicom.tls)})
    outbound = settings.outbound.model_copy(
        update={"profiles": [resolve(p) for p in settings.outbound.profiles],
                "destinations": [d.model_copy(update={"tls": tls_files(d.tls)})
                                 for d in settings.outbound.destinations]})
    return settings.model_copy(update={
        "data_dir": resolve(settings.data_dir), "store": store, "mapping": mapping,
        "mllp": mllp, "dicom": dicom, "outbound": outbound})
