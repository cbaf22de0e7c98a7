"""Bulk loading of worklist files (bridge/orders/bulk.py, wlfile.py, dicomfile.py) on
real stores (SQLite and PostgreSQL): the order checks apply, rejects carry their
reason and land in the dead-letter file, the lean reader stores what pydicom would."""

from __future__ import annotations

import copy
import json
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence

from bridge.orders import bulk, wlfile
from bridge.orders.bulk import DeadLetters, ImportReport
from bridge.orders.settings import OrdersSettings
from bridge.store import StepFilter, Store, StoreTx
from bridge.store.orders_tx import OrdersTx, PatientRecord
from tests.e2e.wldump import DUMP2DCM, dump2dcm, wl_dump
from tests.orders.wlfiles import wl_item, write_wl
from tests.store.conftest import pg_dsn, pg_pair  # noqa: F401 - two instances

RULES = wlfile.ItemRules()


def _import(store: Store, paths: list[Path], tmp: Path, settings: OrdersSettings | None = None
            ) -> ImportReport:
    report = ImportReport(DeadLetters(tmp / "rejects.jsonl"))
    bulk.import_wl(store, paths, settings or OrdersSettings(), report)
    report.dead_letters.close()
    return report


def _dead(tmp: Path) -> list[dict[str, object]]:
    path = tmp / "rejects.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _rows(store: Store, **where: str) -> list[Dataset]:
    return [r.item for r in store.iter_steps(StepFilter(**where), limit=1000)]


# --- the lean reader against pydicom -----------------------------------------------

def _variants(tmp: Path) -> list[Path]:
    latin = wl_item(2, PatientName="Müller^Jürgen", SpecificCharacterSet="ISO_IR 100")
    utf8 = wl_item(3, PatientName="山田^太郎=やまだ^たろう", SpecificCharacterSet="ISO_IR 192",
                   sps_ScheduledPerformingPhysicianName="Ødegaard^Bjørn")
    multi = wl_item(4, sps_ScheduledStationAETitle=["CT01", "CT02"], OtherPatientIDs=None,
                    PatientSize="1.80", PregnancyStatus=4, PatientWeight=None)
    empty = wl_item(5, AdmissionID="", sps_ScheduledProcedureStepStatus=None,
                    ImagingServiceRequestComments="  spaces kept inside  ")
    # A multi-valued key: its index values are left to pydicom (bulk_tx.Unusual).
    odd = wl_item(8, sps_Modality=["CT", "PT"], PlacerOrderNumberImagingServiceRequest=" P1 ",
                  ReferringPhysicianName="Grey^Meredith=グレイ^メレディス",
                  NamesOfIntendedRecipientsOfResults=["A^B", "C^D"],
                  SpecificCharacterSet="ISO_IR 192")
    return [write_wl(tmp / "odd.wl", odd), write_wl(tmp / "a.wl", wl_item(1)),
            write_wl(tmp / "b.wl", latin),
            write_wl(tmp / "c.wl", utf8), write_wl(tmp / "d.wl", multi),
            write_wl(tmp / "e.wl", empty), write_wl(tmp / "f.wl", wl_item(6), implicit=True)]


def test_lean_reader_stores_what_pydicom_would(tmp_path: Path) -> None:
    for path in _variants(tmp_path):
        lean = wlfile.read_wl(path, RULES)
        slow = wlfile.read_wl(path, RULES, lean_first=False)
        assert lean == slow, path
        assert lean[0].row is not None, lean[0].reason


def test_index_values_from_json_are_the_stores(tmp_path: Path) -> None:
    from bridge.store.bulk_tx import Unusual, index_from_json
    from bridge.store.items import index_values, loads_item

    for path in _variants(tmp_path):
        for tree, text in wlfile._read_lean(path):
            try:
                got = index_from_json(tree)
            except Unusual:
                assert path.name == "odd.wl"
                continue
            assert got == index_values(loads_item(text)), path


def test_lean_reader_leaves_iso_2022_to_pydicom(tmp_path: Path) -> None:
    ds = wl_item(7, SpecificCharacterSet=["", "ISO 2022 IR 87"], PatientName="ヤマダ^タロウ")
    path = write_wl(tmp_path / "j.wl", ds)
    from bridge.orders.dicomfile import NotLean, read_item_json

    with pytest.raises(NotLean):
        read_item_json(path.read_bytes())
    (cand,) = wlfile.read_wl(path, RULES)
    assert cand.row is not None and "ヤマダ^タロウ" in cand.row.item


def test_missing_status_becomes_scheduled(tmp_path: Path) -> None:
    path = write_wl(tmp_path / "s.wl", wl_item(1, sps_ScheduledProcedureStepStatus=None))
    (cand,) = wlfile.read_wl(path, RULES)
    assert cand.row is not None and cand.row.values[-4] == "SCHEDULED"


# --- loading ------------------------------------------------------------------------

def test_folder_loads_and_a_second_import_changes_nothing(store: Store, tmp_path: Path
                                                          ) -> None:
    folder = tmp_path / "wl" / "MWLSCP"
    paths = [write_wl(folder / f"wl_{n}.wl", wl_item(n)) for n in range(1, 31)]
    report = _import(store, bulk.wl_files(tmp_path / "wl"), tmp_path)
    assert (report.loaded, report.unchanged, report.rejected_total) == (30, 0, 0)
    assert store.count_steps() == 30
    item = _rows(store, accession="ACC000007")[0]
    assert str(item.PatientName) == "DOE^JOHN7"
    assert item.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "CT01"
    assert _rows(store, station="CT01", date="20261128") != []  # the station index too
    (patient,) = store.write([lambda tx: OrdersTx(tx).patient("PID000007", "HOSP")])
    assert isinstance(patient, PatientRecord) and patient.name == "DOE^JOHN7"

    again = _import(store, paths, tmp_path)
    assert (again.loaded, again.unchanged, again.rejected_total) == (0, 30, 0)
    assert store.count_steps() == 30


def test_several_sps_items_make_several_steps(store: Store, tmp_path: Path) -> None:
    ds = wl_item(1)
    second = copy.deepcopy(ds.ScheduledProcedureStepSequence[0])
    second.ScheduledProcedureStepID = "SPS-B"
    ds.ScheduledProcedureStepSequence = Sequence([ds.ScheduledProcedureStepSequence[0],
                                                  second])
    report = _import(store, [write_wl(tmp_path / "two.wl", ds)], tmp_path)
    assert report.loaded == 2
    assert sorted(str(i.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID)
                  for i in _rows(store)) == ["SPS-B", "SPS000001"]


def test_duplicate_order_with_other_content_is_rejected(store: Store, tmp_path: Path) -> None:
    _import(store, [write_wl(tmp_path / "one.wl", wl_item(1))], tmp_path)
    changed = write_wl(tmp_path / "changed.wl", wl_item(1, RequestedProcedureDescription="X"))
    twice = [write_wl(tmp_path / "t1.wl", wl_item(2)),
             write_wl(tmp_path / "t2.wl", wl_item(2, PatientWeight="80"))]
    report = _import(store, [changed, *twice], tmp_path)
    assert report.loaded == 1
    assert report.rejected == {"duplicate order": 2}
    reasons = {d["source"]: str(d["reason"]) for d in _dead(tmp_path)}
    assert "the store already holds this procedure step" in reasons[str(changed)]
    assert "step #" in reasons[str(changed)]
    assert str(twice[0]) in reasons[str(twice[1])]  # the earlier file of this import
    assert str(_rows(store, accession="ACC000001")[0].RequestedProcedureDescription) == \
        "CT HEAD"


def test_accession_of_another_patient(store: Store, tmp_path: Path) -> None:
    a = write_wl(tmp_path / "a.wl", wl_item(1))
    b = write_wl(tmp_path / "b.wl", wl_item(2, AccessionNumber="ACC000001"))
    report = _import(store, [a, b], tmp_path)
    assert report.rejected == {"accession of another patient": 1}
    allow = OrdersSettings(accession_other_patient="allow_with_warning")
    c = write_wl(tmp_path / "c.wl", wl_item(3, AccessionNumber="ACC000001"))
    report = _import(store, [c], tmp_path, allow)
    assert report.loaded == 1 and report.flagged == {"accession_other_patient": 1}


def test_demographics_conflict_follows_the_policy(store: Store, tmp_path: Path) -> None:
    _import(store, [write_wl(tmp_path / "a.wl", wl_item(1))], tmp_path)
    other = wl_item(2, PatientID="PID000001", PatientName="ROE^RICHARD",
                    PatientBirthDate="19800505")
    path = write_wl(tmp_path / "b.wl", other)
    strict = OrdersSettings.model_validate({"patients": {"demographics_conflict": "reject"}})
    report = _import(store, [path], tmp_path, strict)
    assert report.rejected == {"demographics conflict": 1}
    report = _import(store, [path], tmp_path)  # default: accept_flag
    assert report.loaded == 1 and report.flagged == {"demographics_conflict": 1}
    (patient,) = store.write([lambda tx: OrdersTx(tx).patient("PID000001", "HOSP")])
    assert isinstance(patient, PatientRecord) and "demographics_conflict" in patient.flags


def test_merged_patient_id_is_rejected(store: Store, tmp_path: Path) -> None:
    def merged(tx: object) -> None:
        OrdersTx(tx).save_patient(PatientRecord(  # type: ignore[arg-type]
            "OLD1", "HOSP", merged_into_id="NEW1", merged_into_issuer="HOSP",
            merge_event="A40"), None)

    store.write([merged])
    report = _import(store, [write_wl(tmp_path / "m.wl", wl_item(1, PatientID="OLD1"))],
                     tmp_path)
    assert report.rejected == {"merged Patient ID": 1}
    assert "was merged into 'NEW1' (A40)" in str(_dead(tmp_path)[0]["reason"])


@pytest.mark.parametrize(("change", "kind", "says"), [
    ({"PatientID": None}, "Patient ID missing", "Patient ID missing"),
    ({"PatientName": "^JOHN"}, "no family name", "no family name"),
    ({"PatientBirthDate": "29990101"}, "birth date in the future", "in the future"),
    ({"PatientBirthDate": "19701301"}, "birth date not a date", "is not a date"),
    ({"PatientSex": "X"}, "sex not M, F or O", "'X' is not one of M, F, O"),
    ({"StudyInstanceUID": None}, "Study Instance UID missing", "StudyInstanceUID"),
])
def test_invalid_patient_data_is_rejected_with_its_reason(
        store: Store, tmp_path: Path, change: dict[str, str | None], kind: str, says: str
) -> None:
    bad = write_wl(tmp_path / "bad.wl", wl_item(1, **change))
    good = write_wl(tmp_path / "good.wl", wl_item(2))
    report = _import(store, [bad, good], tmp_path)
    assert report.loaded == 1 and report.rejected == {kind: 1}
    (dead,) = _dead(tmp_path)
    assert dead["source"] == str(bad) and dead["kind"] == kind
    assert str(dead["reason"]).startswith(f"{bad}: ") and says in str(dead["reason"])


def test_untrusted_issuer(store: Store, tmp_path: Path) -> None:
    strict = OrdersSettings.model_validate({"patients": {"trusted_issuers": ["OTHER"]}})
    report = _import(store, [write_wl(tmp_path / "i.wl", wl_item(1))], tmp_path, strict)
    assert report.rejected == {"issuer not trusted": 1}


def test_item_over_the_size_limit(store: Store, tmp_path: Path) -> None:
    small = OrdersSettings(max_item_bytes=16 * 1024)
    big = write_wl(tmp_path / "big.wl", wl_item(1, ImagingServiceRequestComments="x" * 10240,
                                                PatientComments="y" * 10240))
    report = _import(store, [big], tmp_path, small)
    assert report.rejected == {"item too large": 1}


def test_corrupt_files_are_named_and_do_not_stop_the_rest(store: Store, tmp_path: Path
                                                         ) -> None:
    good = write_wl(tmp_path / "good.wl", wl_item(1))
    cut = tmp_path / "cut.wl"
    cut.write_bytes(write_wl(tmp_path / "whole.wl", wl_item(2)).read_bytes()[:-20])
    junk = tmp_path / "junk.wl"
    junk.write_bytes(b"this is a text file, not DICOM\n" * 10)
    no_sps = write_wl(tmp_path / "nosps.wl", wl_item(3))
    ds = wl_item(3)
    del ds.ScheduledProcedureStepSequence
    write_wl(no_sps, ds)
    report = _import(store, [good, cut, junk, no_sps], tmp_path)
    assert report.loaded == 1
    assert report.rejected == {"corrupt DICOM file": 1, "not a DICOM file": 1,
                               "no Scheduled Procedure Step Sequence": 1}
    reasons = {d["source"]: str(d["reason"]) for d in _dead(tmp_path)}
    assert reasons[str(cut)].startswith(f"{cut}: cannot read the DICOM file (cut short or")
    assert reasons[str(junk)].startswith(f"{junk}: not a DICOM file")
    assert "no Scheduled Procedure Step Sequence" in reasons[str(no_sps)]


def test_dead_letter_file_is_private(tmp_path: Path) -> None:
    dead = DeadLetters(tmp_path / "rejects.jsonl")
    dead.add(bulk.Rejected("x.wl", "kind", "x.wl: reason"))
    dead.close()
    assert stat.S_IMODE((tmp_path / "rejects.jsonl").stat().st_mode) == 0o600


def test_pool_reads_in_file_order(store: Store, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    paths = [write_wl(tmp_path / f"wl_{n:03d}.wl", wl_item(n)) for n in range(1, 11)]
    # The same accession twice: the earlier file wins, whichever worker read it.
    paths.append(write_wl(tmp_path / "wl_999.wl", wl_item(99, AccessionNumber="ACC000001",
                                                          PatientID="PID000001")))
    report = ImportReport(DeadLetters(tmp_path / "rejects.jsonl"))
    old = bulk.FILES_PER_TASK
    bulk.FILES_PER_TASK = 2
    try:
        with ThreadPoolExecutor(3) as pool:
            bulk.import_wl(store, paths, OrdersSettings(), report, pool=pool)
    finally:
        bulk.FILES_PER_TASK = old
    assert report.loaded == 11  # another RP/SPS ID under the same accession and patient
    assert store.count_steps() == 11


@pytest.mark.skipif(not DUMP2DCM.exists(), reason="DCMTK not installed")
@pytest.mark.parametrize("options", [(), ("+ti",), ("-e",), ("+g",), ("-F",), ("+tb",)],
                         ids=["explicit", "implicit", "undefined-lengths", "group-lengths",
                              "bare-dataset", "big-endian"])
def test_files_made_by_dump2dcm_read_alike(tmp_path: Path, options: tuple[str, ...]) -> None:
    path = dump2dcm(wl_dump(1, name="Øvergård^Åse=オーバーゴード^アセ", status=""),
                    tmp_path / "wl.wl", *options)
    lean = wlfile.read_wl(path, RULES)
    assert lean == wlfile.read_wl(path, RULES, lean_first=False)
    (cand,) = lean
    assert cand.row is not None, cand.reason
    assert json.loads(cand.row.item)["00100010"]["Value"] == [
        {"Alphabetic": "Øvergård^Åse", "Ideographic": "オーバーゴード^アセ"}]
    assert cand.row.values[-4] == "SCHEDULED"  # an empty status: as a new order's


def test_two_instances_importing_the_same_files_at_once(
        pg_pair: tuple[Store, Store], tmp_path: Path) -> None:  # noqa: F811
    """Several instances on one PostgreSQL database: the unique keys decide, the loser's
    batch runs again and finds the winner's rows, nothing is stored twice."""
    import threading

    paths = [write_wl(tmp_path / f"wl_{n}.wl", wl_item(n)) for n in range(1, 41)]
    batch = bulk.read_wl_files(paths, RULES)
    start = threading.Barrier(2)
    results: list[bulk.BatchResult] = []

    def run(store: Store) -> None:
        start.wait()
        results.append(bulk.load_batch(store, batch, OrdersSettings()))

    threads = [threading.Thread(target=run, args=(s,)) for s in pg_pair]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted((r.loaded, r.unchanged) for r in results) == [(0, 40), (40, 0)]
    assert pg_pair[0].count_steps() == 40


class _CountingPool(ThreadPoolExecutor):
    """A real thread pool that records how many read tasks were submitted and not yet
    taken by the writer (the import's read-ahead)."""

    def __init__(self) -> None:
        super().__init__(2)
        self.submitted = 0
        self.most_ahead = 0
        self.taken = 0

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.submitted += 1
        self.most_ahead = max(self.most_ahead, self.submitted - self.taken)
        return super().submit(fn, *args, **kwargs)


def test_pool_reads_a_bounded_window_ahead_and_keeps_file_order_across_batches(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [write_wl(tmp_path / f"wl_{n:03d}.wl", wl_item(n)) for n in range(1, 21)]
    # The step of file 3 again, other content, in a later batch: the earlier file wins.
    paths.append(write_wl(tmp_path / "wl_999.wl", wl_item(3, PatientWeight="80")))
    monkeypatch.setattr(bulk, "FILES_PER_TASK", 1)
    pool = _CountingPool()
    parts = bulk._wl_tasks(paths, RULES, pool, batch=3)
    report = ImportReport(DeadLetters(tmp_path / "rejects.jsonl"))

    def taken(parts: Iterator[list[wlfile.Candidate]]) -> Iterator[list[wlfile.Candidate]]:
        for part in parts:
            pool.taken += 1
            yield part

    with pool:
        bulk.load_candidates(store, bulk.rebatch(taken(parts), 3), OrdersSettings(), report)
    report.dead_letters.close()
    assert pool.submitted == 21
    assert pool.most_ahead == bulk.AHEAD * 3  # two batches of tasks, never all 21
    assert report.loaded == 20
    assert report.rejected == {"duplicate order": 1}
    assert [d["source"] for d in _dead(tmp_path)] == [str(paths[-1])]


def test_import_cache_is_the_connections_and_commits_stay_fsynced(tmp_path: Path) -> None:
    from bridge.store import SqliteStore

    def pragmas(store: Store) -> tuple[int, int]:
        def job(tx: StoreTx) -> tuple[int, int]:
            tx.cur.execute("PRAGMA cache_size")
            cache = int(tx.cur.fetchone()[0])
            tx.cur.execute("PRAGMA synchronous")
            return cache, int(tx.cur.fetchone()[0])

        (got,) = store.write([job])
        assert not isinstance(got, BaseException)
        return got

    paths = [write_wl(tmp_path / f"wl_{n}.wl", wl_item(n)) for n in range(1, 4)]
    for tuning, cache in ((bulk.WlTuning(batch=2, sqlite_cache_kib=4096), -4096),
                          (bulk.BEFORE, -2000)):
        store = SqliteStore(tmp_path / f"{cache}.db")
        store.migrate()
        try:
            report = ImportReport(DeadLetters(tmp_path / f"{cache}.jsonl"))
            bulk.import_wl(store, paths, OrdersSettings(), report, tuning=tuning)
            assert report.loaded == 3 and store.count_steps() == 3
            assert pragmas(store) == (cache, 2)  # 2: FULL, the WAL fsynced at each commit
        finally:
            store.close()
