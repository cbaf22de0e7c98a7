"""A C-FIND identifier turned into a store query plus a post-filter.

Matching keys with an indexed column (``bridge.store.query.Column``) become
``Match`` objects that the store evaluates in SQL; this is where every broad
console query (station, modality, date) is answered, so no query ever scans
all items in Python.

Any other key that carries a value becomes a ``Condition`` checked in Python
on the candidate rows (the *post-filter*), which is the exact rule. Where the
key is single-valued text, a date, or UIDs, at the top level or in the
Scheduled Procedure Step item, the same match is also handed to the store on
the stored item itself (``ItemPath``: SQLite ``json_extract``, PostgreSQL
``jsonb``), so only candidate rows leave the database even for a query made
of non-indexed keys alone; names (PN) other than the patient's go through
their normalised copy (``NamePath``). Times, numbers, multi-valued keys and
deeper sequences are left to the post-filter. While a post-filter is active
the store cannot apply the answer cap (``WorklistQuery.limit``) because it
would cut before filtering.

Matching rules (PS3.4 C.2.2.2):
- empty value, or a value made only of ``*``: universal matching;
- ``*``/``?`` wildcards on AE, CS, LO, LT, PN, SH, ST, UC, UR, UT; never on UI, DA, TM;
- person names (PN) are matched case- and accent-insensitively (``normalise_name``
  on both sides) unless ``worklist.patient_name_matching`` is "exact", and by
  component group (``NameGroupsCondition``): a query name of one group matches
  any group of the stored name (``山田*`` finds ``Yamada^Tarou=山田^太郎``), one
  with groups (``Yamada*=山田^太郎``) matches group by group; the store
  pre-filters on the normalised name (a superset), the post-filter decides;
  other strings are matched exactly;
- DA and TM take single values and ranges (``a-``, ``-b``, ``a-b``); a time with
  reduced precision covers its whole span (``10`` is 10:00:00 to 10:59:59);
  when both SPS Start Date and Time are given they form one date-time range
  (C.2.2.2.5.1);
- UI takes a backslash-separated list of UIDs;
- a sequence key with one item matches when one stored item matches all its keys.

The calling AE's profile (``QueryScope``) adds its own matches: its AE title
as the station when the query leaves the station empty or ``*``, and the
stations, modalities and worklist labels it may see.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from enum import Enum, auto
from types import MappingProxyType
from typing import Any, Protocol

from pydicom import Dataset
from pydicom.datadict import dictionary_VM, dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from bridge.store.names import normalise_name
from bridge.store.query import (
    AnyOf,
    Column,
    Exact,
    ItemPath,
    Match,
    NamePath,
    NoneOf,
    Range,
    Target,
    Wildcard,
    WorklistQuery,
)
from bridge.worklist.settings import WorklistSettings

# C-FIND failure statuses (PS3.4 C.4.1.1.4, PS3.7 C).
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
UNABLE_TO_PROCESS = 0xC000

SPS_SEQUENCE = Tag(0x0040, 0x0100)
SPS_START_DATE = Tag(0x0040, 0x0002)
SPS_START_TIME = Tag(0x0040, 0x0003)
SPS_STATUS = Tag(0x0040, 0x0020)
PATIENT_NAME = Tag(0x0010, 0x0010)
WORKLIST_LABEL = Tag(0x0074, 0x1202)
SPECIFIC_CHARACTER_SET = Tag(0x0008, 0x0005)
QUERY_RETRIEVE_LEVEL = Tag(0x0008, 0x0052)

WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_TIME_RE = re.compile(r"(\d\d)(\d\d)?(\d\d)?(?:\.(\d{1,6}))?")
_UID_RE = re.compile(r"(0|[1-9]\d*)(\.(0|[1-9]\d*))*")
_DS_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_IS_RE = re.compile(r"[+-]?\d+")


class QueryError(Exception):
    """The identifier cannot be answered; carries the C-FIND failure to send."""

    def __init__(self, status: int, comment: str, tag: BaseTag | None = None) -> None:
        # Error Comment is LO (64 characters) and goes to the peer: it names
        # attributes, never values, so no patient data leaves in it.
        self.status = status
        self.comment = comment[:64]
        self.tag = tag
        super().__init__(self.comment)


class KeyUse(Enum):
    KEY = auto()          # a matching and return key
    NOT_A_KEY = auto()    # group length, Specific Character Set, Query/Retrieve Level
    UNSUPPORTED = auto()  # private or unknown attributes: neither matched nor returned


def key_use(elem: DataElement) -> KeyUse:
    """How an identifier element takes part in matching and in the answer."""
    tag = elem.tag
    if tag.group in (0x0000, 0x0002) or tag.element == 0:
        return KeyUse.NOT_A_KEY
    if tag in (SPECIFIC_CHARACTER_SET, QUERY_RETRIEVE_LEVEL):
        return KeyUse.NOT_A_KEY
    if tag.is_private:
        return KeyUse.UNSUPPORTED
    if elem.VR == "UN":
        # Not in pydicom's dictionary, so its VR, and thus how to match it, is unknown.
        return KeyUse.UNSUPPORTED
    return KeyUse.KEY


class _Kind(Enum):
    TEXT = auto()   # single value or wildcard, case-sensitive
    NAME = auto()   # like TEXT, on the normalised Patient's Name
    UID = auto()    # single UID or list of UIDs
    DATE = auto()
    TIME = auto()


# Keys with an indexed column, at the identifier's top level ...
_TOP_KEYS = MappingProxyType({
    Tag(0x0010, 0x0010): (Column.PATIENT_NAME_NORM, _Kind.NAME),
    Tag(0x0010, 0x0020): (Column.PATIENT_ID, _Kind.TEXT),
    Tag(0x0010, 0x0021): (Column.ISSUER_OF_PATIENT_ID, _Kind.TEXT),
    Tag(0x0008, 0x0050): (Column.ACCESSION_NUMBER, _Kind.TEXT),
    Tag(0x0040, 0x1001): (Column.REQUESTED_PROCEDURE_ID, _Kind.TEXT),
    Tag(0x0020, 0x000D): (Column.STUDY_INSTANCE_UID, _Kind.UID),
})
# ... and inside the Scheduled Procedure Step Sequence item.
_SPS_KEYS = MappingProxyType({
    Tag(0x0040, 0x0001): (Column.STATION_AET, _Kind.TEXT),
    Tag(0x0008, 0x0060): (Column.MODALITY, _Kind.TEXT),
    SPS_START_DATE: (Column.SPS_START_DATE, _Kind.DATE),
    SPS_START_TIME: (Column.SPS_START_TIME, _Kind.TIME),
    Tag(0x0040, 0x0009): (Column.SPS_ID, _Kind.TEXT),
    SPS_STATUS: (Column.SPS_STATUS, _Kind.TEXT),
})


@dataclass(frozen=True, slots=True)
class QueryScope:
    """What the calling AE's profile adds to each of its queries."""

    calling_ae: str = ""
    station_from_calling_ae: bool = False
    stations: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    worklist_labels: tuple[str, ...] = ()
    max_answers: int | None = None  # this AE's cap; None: worklist.max_answers
    # The called AE title's view (dicom.called_aes), applied on top of the above.
    view_stations: tuple[str, ...] = ()
    view_modalities: tuple[str, ...] = ()
    view_labels: tuple[str, ...] = ()


class Condition(Protocol):
    """One non-indexed matching key, checked on a candidate dataset."""

    def accepts(self, ds: Dataset) -> bool: ...


@dataclass(frozen=True, slots=True)
class PlannedQuery:
    """What the store evaluates, and what is left to check on its rows."""

    query: WorklistQuery
    post_filter: tuple[Condition, ...] = ()
    max_answers: int = 0
    # Private and unknown (UN) keys are not supported: they are neither matched
    # nor returned, and the SCP says so with the pending status 0xFF01.
    ignored_keys: tuple[BaseTag, ...] = ()

    def accepts(self, item: Dataset) -> bool:
        return all(condition.accepts(item) for condition in self.post_filter)


def build_query(identifier: Dataset, worklist: WorklistSettings,
                scope: QueryScope | None = None) -> PlannedQuery:
    """Translate a Modality Worklist C-FIND identifier.

    Raises QueryError when the identifier is malformed (0xC000) or does not
    belong to the Modality Worklist information model (0xA900).
    """
    try:
        return _Planner(worklist, scope or QueryScope()).plan(identifier)
    except QueryError:
        raise
    except Exception as exc:
        # pydicom decodes lazily and raises many exception types on bad bytes.
        raise QueryError(UNABLE_TO_PROCESS, "the identifier cannot be decoded") from exc


class _Planner:
    def __init__(self, worklist: WorklistSettings, scope: QueryScope) -> None:
        self._worklist = worklist
        self._scope = scope
        self._station_asked = False
        self._matches: list[Match] = []
        self._conditions: list[Condition] = []
        self._ignored: list[BaseTag] = []
        self._date: tuple[str | None, str | None] | None = None
        self._time: tuple[str | None, str | None] | None = None
        self._status_asked = False

    def plan(self, identifier: Dataset) -> PlannedQuery:
        for elem in identifier:
            tag = elem.tag
            if tag == QUERY_RETRIEVE_LEVEL:
                if not elem.is_empty:
                    raise QueryError(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                                     "Query/Retrieve Level is not a worklist key", tag)
            elif tag == SPS_SEQUENCE:
                self._sps(elem)
            elif tag in _TOP_KEYS:
                self._indexed(elem, *_TOP_KEYS[tag])
            else:
                condition = self._condition(elem, ())
                if condition is not None:
                    self._conditions.append(condition)
        self._date_time()
        self._apply_scope()
        hidden = tuple(self._worklist.hidden_statuses)
        if hidden and not self._status_asked:
            self._matches.append(NoneOf(Column.SPS_STATUS, hidden))
        cap = self._scope.max_answers
        if cap is None:
            cap = self._worklist.max_answers
        # One row more than the cap tells the SCP that the cap cut the answer.
        limit = cap + 1 if cap and not self._conditions else None
        return PlannedQuery(
            query=WorklistQuery(matches=tuple(self._matches), limit=limit),
            post_filter=tuple(self._conditions),
            max_answers=cap,
            ignored_keys=tuple(self._ignored),
        )

    def _apply_scope(self) -> None:
        scope = self._scope
        if scope.station_from_calling_ae and scope.calling_ae and not self._station_asked:
            self._matches.append(Exact(Column.STATION_AET, scope.calling_ae))
        if scope.stations:
            self._matches.append(AnyOf(Column.STATION_AET, scope.stations))
        if scope.modalities:
            self._matches.append(AnyOf(Column.MODALITY, scope.modalities))
        if scope.worklist_labels:
            self._conditions.append(OneOfCondition(WORKLIST_LABEL,
                                                   frozenset(scope.worklist_labels)))
        if scope.view_stations:
            self._matches.append(AnyOf(Column.STATION_AET, scope.view_stations))
        if scope.view_modalities:
            self._matches.append(AnyOf(Column.MODALITY, scope.view_modalities))
        if scope.view_labels:
            self._conditions.append(OneOfCondition(WORKLIST_LABEL,
                                                   frozenset(scope.view_labels)))

    def _skipped(self, elem: DataElement) -> bool:
        use = key_use(elem)
        if use is KeyUse.UNSUPPORTED:
            self._ignored.append(elem.tag)
        return use is not KeyUse.KEY

    def _sps(self, elem: DataElement) -> None:
        item = _single_item(elem)
        if item is None:
            return
        conditions = []
        for sub in item:
            if sub.tag in _SPS_KEYS:
                self._indexed(sub, *_SPS_KEYS[sub.tag])
            else:
                condition = self._condition(sub, (int(SPS_SEQUENCE),))
                if condition is not None:
                    conditions.append(condition)
        if conditions:
            self._conditions.append(SequenceCondition(elem.tag, tuple(conditions)))

    def _indexed(self, elem: DataElement, column: Column, kind: _Kind) -> None:
        if kind is _Kind.UID:
            uids = _uids(elem)
            if len(uids) == 1:
                self._matches.append(Exact(column, uids[0]))
            elif uids:
                self._matches.append(AnyOf(column, uids))
            return
        text = _single_text(elem)
        if text is None:
            return
        if kind is _Kind.DATE:
            self._date = _range_or_universal(text, elem.tag, kind)
            return
        if kind is _Kind.TIME:
            # A reversed time range is valid with a date range ("20261127-20261128"
            # with "2200-0600" is one night), so the order is checked in _date_time.
            self._time = _range_or_universal(text, elem.tag, kind, ordered=False)
            return
        if kind is _Kind.NAME:
            condition = self._name_match(elem.tag, text, column)
            if condition is not None:
                self._conditions.append(condition)
            return
        if _is_universal(text):
            return
        if column is Column.SPS_STATUS:
            self._status_asked = True
        if column is Column.STATION_AET:
            self._station_asked = True
        if "*" in text or "?" in text:
            self._matches.append(Wildcard(column, text))
        else:
            self._matches.append(Exact(column, text))

    def _name_match(self, tag: BaseTag, text: str, on: Target | None) -> Condition | None:
        """Person name matching by component group (``NameGroupsCondition``); the
        store pre-filters on the normalised name ``on`` (a superset)."""
        folded = self._worklist.patient_name_matching == "insensitive"
        groups = text.split("=")
        if len(groups) > 3:
            raise QueryError(UNABLE_TO_PROCESS,
                             f"{_name(tag)} has more than three component groups", tag)
        patterns = tuple(None if _is_universal(g) else wildcard(normalise_name(g) if folded else g)
                         for g in groups)
        if all(p is None for p in patterns):
            return None
        if on is not None:
            # The stored name is "A=I=P": the alphabetic group starts it, any group
            # lies somewhere in it. A one-group query in ASCII (after folding) is
            # taken as alphabetic: ideographic and phonetic groups are kanji, hanja,
            # hanzi, kana or hangul, never ASCII. That keeps the common "DOE*" query
            # on the name index (a prefix); "*x*" would scan every row.
            at, group = next((i, g) for i, g in enumerate(groups) if not _is_universal(g))
            core = normalise_name(group)
            alphabetic = at == 0 and (len(groups) > 1 or core.isascii())
            pre = f"{core.rstrip('*')}*" if alphabetic else f"*{core.strip('*')}*"
            self._matches.append(Wildcard(on, pre))
        return NameGroupsCondition(tag, patterns, folded)

    def _date_time(self) -> None:
        dates, times = self._date, self._time
        if dates is not None and times is not None:
            low = dates[0] + (times[0] or "000000") if dates[0] else None
            # The last date's end includes its leap second (see _time).
            high = dates[1] + (times[1] or "235960") if dates[1] else None
            self._matches.append(_range(Column.SPS_START, low, high))
        elif dates is not None:
            self._matches.append(_range(Column.SPS_START_DATE, *dates))
        elif times is not None:
            if times[0] and times[1] and times[0] > times[1]:
                raise QueryError(UNABLE_TO_PROCESS,
                                 f"{_name(SPS_START_TIME)} is a reversed range", SPS_START_TIME)
            self._matches.append(_range(Column.SPS_START_TIME, *times))

    def _condition(self, elem: DataElement, at: tuple[int, ...] | None) -> Condition | None:
        """The exact Python check for a key without a column; ``at`` is the tag path
        of the item holding it, for the store-side pre-filter (None: too deep)."""
        if self._skipped(elem):
            return None
        vr = _vr(elem)
        if vr == "SQ":
            item = _single_item(elem)
            if item is None:
                return None
            conditions = tuple(c for c in (self._condition(e, None) for e in item)
                               if c is not None)
            return SequenceCondition(elem.tag, conditions) if conditions else None
        target = _item_path(at, elem.tag)
        if vr == "UI":
            uids = _uids(elem)
            if uids and target is not None:
                self._matches.append(AnyOf(target, uids))
            return UidCondition(elem.tag, frozenset(uids)) if uids else None
        if vr in ("SS", "US", "SL", "UL", "SV", "UV", "FL", "FD", "AT") or vr.startswith("O"):
            return None if elem.is_empty else EqualCondition(elem.tag, _plain(elem.value))
        text = _single_text(elem)
        if text is None:
            return None
        if vr in ("DA", "TM"):
            kind = _Kind.DATE if vr == "DA" else _Kind.TIME
            bounds = _range_or_universal(text, elem.tag, kind)
            if bounds is None:
                return None
            low, high = bounds
            if kind is _Kind.DATE and target is not None:
                self._matches.append(Range(target, low, high))
            return RangeCondition(elem.tag, low, high, kind)
        if vr in ("DS", "IS"):
            return EqualCondition(elem.tag, _number_key(text, vr, elem.tag))
        if vr == "PN":
            # Names are matched on their normalised copy in the store (a superset,
            # which the post-filter then narrows).
            return self._name_match(elem.tag, text,
                                    NamePath(target.tags) if target is not None else None)
        if _is_universal(text) and vr in WILDCARD_VRS:
            return None
        if target is not None:
            wild = vr in WILDCARD_VRS and ("*" in text or "?" in text)
            self._matches.append(Wildcard(target, text) if wild else Exact(target, text))
        if vr in WILDCARD_VRS:
            return TextCondition(elem.tag, wildcard(text))
        return EqualCondition(elem.tag, text)


def _item_path(at: tuple[int, ...] | None, tag: BaseTag) -> ItemPath | None:
    """Where the store can pre-filter on the stored item: a standard, single-valued
    attribute in the top level or the SPS item (its first value is the value)."""
    if at is None:
        return None
    try:
        single = dictionary_VM(tag) == "1"
    except KeyError:  # private or unknown
        return None
    return ItemPath((*at, int(tag))) if single else None


def _range(column: Column, low: str | None, high: str | None) -> Match:
    if low is not None and low == high:
        return Exact(column, low)
    return Range(column, low, high)


def _vr(elem: DataElement) -> str:
    # An SCU's explicit VR (or UN from implicit VR) may differ from the
    # dictionary; the dictionary decides how a standard key is matched.
    try:
        return str(dictionary_VR(elem.tag))
    except KeyError:
        return str(elem.VR)


def _single_item(elem: DataElement) -> Dataset | None:
    """The one item of a sequence matching key; None for universal matching."""
    if _vr(elem) != "SQ" or elem.VR != "SQ":
        raise QueryError(UNABLE_TO_PROCESS, f"{_name(elem.tag)} is not a sequence", elem.tag)
    items: Sequence[Dataset] = elem.value
    if len(items) > 1:
        raise QueryError(UNABLE_TO_PROCESS, f"{_name(elem.tag)} has more than one item",
                         elem.tag)
    if not items or len(items[0]) == 0:
        return None
    return items[0]


def _single_text(elem: DataElement) -> str | None:
    """The key's one value as text (None when empty); several values are an error."""
    value = elem.value
    if isinstance(value, MultiValue | list | tuple):
        if len(value) > 1:
            raise QueryError(UNABLE_TO_PROCESS, f"{_name(elem.tag)} has more than one value",
                             elem.tag)
        value = value[0] if value else None
    if value is None:
        return None
    if isinstance(value, bytes):
        raise QueryError(UNABLE_TO_PROCESS, f"{_name(elem.tag)} cannot be decoded", elem.tag)
    text = str(value).strip()
    return text or None


def _uids(elem: DataElement) -> tuple[str, ...]:
    value = elem.value
    values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    uids = tuple(str(v).strip().rstrip("\0") for v in values if v is not None)
    if uids == ("",):
        return ()
    for uid in uids:
        if len(uid) > 64 or not _UID_RE.fullmatch(uid):
            raise QueryError(UNABLE_TO_PROCESS, f"{_name(elem.tag)} is not a UID list",
                             elem.tag)
    return uids


def _is_universal(text: str) -> bool:
    return set(text) <= {"*"}


def _range_or_universal(text: str, tag: BaseTag, kind: _Kind,
                        ordered: bool = True) -> tuple[str | None, str | None] | None:
    """A DA (``kind`` DATE) or TM key's ``(low, high)``; None for universal matching.

    A lone "-", open on both sides, is universal (docs/conformance-statement.md), so
    every caller treats it as no key at all. Kept as a range it would need a value to
    compare (a RangeCondition fails an item without the attribute), and on the SPS
    start date it would swallow a start time range (_date_time would combine the two
    into a date-and-time range open on both sides). ``ordered`` as for _time_range.
    """
    if kind is _Kind.DATE:
        bounds = _date_range(text, tag)
    else:
        bounds = _time_range(text, tag, ordered=ordered)
    return None if bounds == (None, None) else bounds


def _date_range(text: str, tag: BaseTag) -> tuple[str | None, str | None]:
    """``(low, high)`` as YYYYMMDD, None for an open side."""
    low, sep, high = text.partition("-")
    if not sep:
        high = low
    try:
        bounds = (_date(low), _date(high))
    except ValueError:
        raise QueryError(UNABLE_TO_PROCESS, f"{_name(tag)} is not a date or date range",
                         tag) from None
    if bounds[0] and bounds[1] and bounds[0] > bounds[1]:
        raise QueryError(UNABLE_TO_PROCESS, f"{_name(tag)} is a reversed range", tag)
    return bounds


def _date(text: str) -> str | None:
    text = text.strip()
    if not text:
        return None
    # "YYYY.MM.DD" is the ACR-NEMA form PS3.5 asks SCPs to accept.
    digits = text.replace(".", "") if len(text) == 10 else text
    if len(digits) != 8 or not digits.isdigit():
        raise ValueError(text)
    date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    return digits


def _time_range(text: str, tag: BaseTag,
                ordered: bool = True) -> tuple[str | None, str | None]:
    """``(low, high)`` as HHMMSS, None for an open side; reduced precision widens."""
    low, sep, high = text.partition("-")
    if not sep:
        high = low
    try:
        bounds = (_time(low), _time(high, upper=True))
    except ValueError:
        raise QueryError(UNABLE_TO_PROCESS, f"{_name(tag)} is not a time or time range",
                         tag) from None
    if ordered and bounds[0] and bounds[1] and bounds[0] > bounds[1]:
        raise QueryError(UNABLE_TO_PROCESS, f"{_name(tag)} is a reversed range", tag)
    return bounds


def _time(text: str, *, upper: bool = False) -> str | None:
    """``text`` as HHMMSS; what reduced precision leaves out is filled with the first
    (``upper``: the last) minute and second of the span, so ``2359`` as an upper bound
    is 235960: TM's seconds go to 60 for a leap second (PS3.5 table 6.2-1), and the minute
    ``2359`` holds the stored ``235960``. A stored value is read with ``upper`` off."""
    text = text.strip().replace(":", "")  # "HH:MM:SS" is the ACR-NEMA form
    if not text:
        return None
    found = _TIME_RE.fullmatch(text)
    if found is None:
        raise ValueError(text)
    hours, minutes, seconds, _fraction = found.groups()
    if int(hours) > 23 or int(minutes or 0) > 59 or int(seconds or 0) > 60:
        raise ValueError(text)
    # Fractions are dropped: the stored column has whole seconds, and a
    # truncated bound still includes the second it falls in.
    return hours + (minutes or ("59" if upper else "00")) + (
        seconds or ("60" if upper else "00"))


def _number_key(text: str, vr: str, tag: BaseTag) -> float:
    """A DS or IS matching key as a number; QueryError (0xC000) when it is none
    (``70,5``: a decimal comma), rather than "the identifier cannot be decoded"."""
    if (_IS_RE if vr == "IS" else _DS_RE).fullmatch(text):
        value = float(text)
        if math.isfinite(value):
            return value
    kind = "an integer string (IS)" if vr == "IS" else "a decimal string (DS)"
    raise QueryError(UNABLE_TO_PROCESS, f"{_name(tag)} is not {kind}", tag)


@dataclass(frozen=True, slots=True)
class _Piece:
    """A stretch of a wildcard pattern without "*": literal characters and "?"."""

    size: int  # characters: "?" is one
    regex: re.Pattern[str]  # no quantifier, so nothing to backtrack into


@dataclass(frozen=True, slots=True)
class WildcardPattern:
    """A PS3.4 C.2.2.2.4 wildcard value, matched against a whole value: "*" is any
    run of characters (none included), "?" exactly one; case-sensitive.

    At most (value length x pattern length) steps, whatever the pattern: it is
    split at its runs of "*" into fixed-length pieces; the first must match at the
    start, the last at the end, and each one between is taken at its leftmost place
    after the one before. Leftmost is never the wrong choice for a fixed-length
    piece (it leaves the most room for the rest), so nothing is tried twice. The
    regex this replaces (".*" per "*") backtracked exponentially on a run of "*"
    followed by a character the value lacks: 14 stars took 71 s on one item.
    """

    pieces: tuple[_Piece, ...]  # one more than the runs of "*"

    def fullmatch(self, text: str) -> bool:
        first, last = self.pieces[0], self.pieces[-1]
        if len(self.pieces) == 1:
            return len(text) == first.size and first.regex.match(text) is not None
        end = len(text) - last.size
        if end < first.size or first.regex.match(text) is None \
                or last.regex.match(text, end) is None:
            return False
        at = first.size
        for piece in self.pieces[1:-1]:
            found = piece.regex.search(text, at, end)
            if found is None:
                return False
            at = found.end()
        return True


def wildcard(pattern: str) -> WildcardPattern:
    """The matcher of a wildcard matching key (``*`` and ``?``; every other
    character stands for itself)."""
    parts = pattern.split("*")
    # A run of "*" leaves empty pieces between its stars: the run is one "*".
    pieces = [parts[0], *(p for p in parts[1:-1] if p), parts[-1]] if len(parts) > 1 \
        else parts
    return WildcardPattern(tuple(
        _Piece(len(p), re.compile("".join("." if c == "?" else re.escape(c) for c in p),
                                  re.DOTALL))
        for p in pieces))


def _name(tag: BaseTag) -> str:
    return f"({tag.group:04X},{tag.element:04X})"


def _plain(value: Any) -> Any:
    if isinstance(value, MultiValue | list | tuple):
        return tuple(_plain(v) for v in value)
    return value


def _values(ds: Dataset, tag: BaseTag) -> Iterable[Any]:
    """The stored values of ``tag`` in ``ds``; nothing when absent or empty."""
    if tag not in ds:
        return ()
    value = ds[tag].value
    if value is None or value == "":
        return ()
    if isinstance(value, MultiValue | list | tuple):
        return [v for v in value if v is not None and v != ""]
    return (value,)


@dataclass(frozen=True, slots=True)
class TextCondition:
    """Single value or wildcard matching on a string (names: ``NameGroupsCondition``)."""

    tag: BaseTag
    pattern: WildcardPattern

    def accepts(self, ds: Dataset) -> bool:
        for value in _values(ds, self.tag):
            text = str(value).strip()
            if self.pattern.fullmatch(text):
                return True
        return False


@dataclass(frozen=True, slots=True)
class RangeCondition:
    """Single value or range matching on a DA or TM value."""

    tag: BaseTag
    low: str | None
    high: str | None
    kind: _Kind

    def accepts(self, ds: Dataset) -> bool:
        for value in _values(ds, self.tag):
            try:
                if self.kind is _Kind.DATE:
                    stored = _date(str(value))
                else:
                    stored = _time(str(value))
            except ValueError:
                continue  # an invalid stored value matches no range
            if stored is None:
                continue
            if (self.low is None or stored >= self.low) and (
                    self.high is None or stored <= self.high):
                return True
        return False


@dataclass(frozen=True, slots=True)
class UidCondition:
    """List of UID matching."""

    tag: BaseTag
    uids: frozenset[str]

    def accepts(self, ds: Dataset) -> bool:
        return any(str(v) in self.uids for v in _values(ds, self.tag))


@dataclass(frozen=True, slots=True)
class EqualCondition:
    """Single value matching for VRs without wildcards (numbers, AS, DT, ...)."""

    tag: BaseTag
    value: Any

    def accepts(self, ds: Dataset) -> bool:
        if self.tag not in ds:
            return False
        if not isinstance(self.value, str | float):
            return bool(_plain(ds[self.tag].value) == self.value)
        for stored in _values(ds, self.tag):
            if isinstance(self.value, str) and str(stored).strip() == self.value:
                return True
            if isinstance(self.value, float) and _number(stored) == self.value:
                return True
        return False


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class SequenceCondition:
    """Sequence matching: one stored item satisfies every sub-condition."""

    tag: BaseTag
    conditions: tuple[Condition, ...]

    def accepts(self, ds: Dataset) -> bool:
        if self.tag not in ds or ds[self.tag].VR != "SQ":
            return False
        return any(all(c.accepts(item) for c in self.conditions)
                   for item in ds[self.tag].value)


@dataclass(frozen=True, slots=True)
class OneOfCondition:
    """The stored value is one of ``values`` (a profile's worklist labels)."""

    tag: BaseTag
    values: frozenset[str]

    def accepts(self, ds: Dataset) -> bool:
        return any(str(v).strip() in self.values for v in _values(ds, self.tag))


@dataclass(frozen=True, slots=True)
class NameGroupsCondition:
    """Person name matching by component group (Alphabetic=Ideographic=Phonetic).

    A query of one group (no "=") matches a name when it matches any of the
    name's groups, so ``山田*`` and ``YAMADA*`` both find ``Yamada^Tarou=山田^太郎``.
    A query with groups matches when each of its groups that is not universal
    (empty or ``*``) matches the stored group at the same place:
    ``Yamada*=山田^太郎`` needs both. ``folded``: both sides normalised
    (``normalise_name``: case and Latin accents; kana and ideographs unchanged).
    """

    tag: BaseTag
    patterns: tuple[WildcardPattern | None, ...]  # by group; None: universal
    folded: bool

    def accepts(self, ds: Dataset) -> bool:
        for value in _values(ds, self.tag):
            text = normalise_name(str(value)) if self.folded else str(value)
            groups = text.split("=")
            if len(self.patterns) == 1:
                pattern = self.patterns[0]
                if pattern is not None and any(pattern.fullmatch(g) for g in groups):
                    return True
                continue
            groups += [""] * (len(self.patterns) - len(groups))
            if all(p is None or p.fullmatch(g) for p, g in zip(self.patterns, groups,
                                                                strict=False)):
                return True
        return False


def matching_kinds(vr: str) -> tuple[str, ...]:
    """The PS3.4 C.2.2.2 matching types a key of this VR gets (for the conformance
    statement, whose key table is tested against it); mirrors ``_Planner._condition``."""
    if vr == "SQ":
        return ("sequence", "universal")
    if vr == "UI":
        return ("single value", "list of UIDs", "universal")
    if vr in ("DA", "TM"):
        return ("single value", "range", "universal")
    if vr in WILDCARD_VRS:
        return ("single value", "wildcard", "universal")
    return ("single value", "universal")


def indexed_keys() -> dict[tuple[BaseTag, ...], str]:
    """Keys matched in the store's SQL, by path ((sequence tag,) + tag), to their column."""
    keys: dict[tuple[BaseTag, ...], str] = {(tag,): col.value
                                            for tag, (col, _) in _TOP_KEYS.items()}
    keys.update({(SPS_SEQUENCE, tag): col.value for tag, (col, _) in _SPS_KEYS.items()})
    return keys
