"""The compose stack for real: the images built offline (deploy/build-images.sh: a
debootstrap base, a wheelhouse), docker-compose.yml with docker-compose.ci.yml over it
(host networking, free loopback ports chosen here), then what a site does with it:
an order over MLLP to replica 1, found with DCMTK's findscu through replica 2, an MPPS
cycle (pynetdicom) whose status messages reach a receiver run here, Orthanc taking
C-STORE and C-FIND from the bridge's AE only, a study stored in Orthanc by a modality
without MPPS completing its item (the replicas' PACS reconciliation), one replica
stopped while the other keeps answering, and `docker-compose down -v` leaving nothing
behind.

Needs a container engine (docker, docker-compose, a running dockerd): skipped with
the reason when there is none, except under CI=true, where .ci/run starts one and
its absence is a failure."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from tests.e2e.conftest import DCMTK, FIXTURES, REPO, RunningDaemon, dcmtk_env, write_config
from tests.e2e.test_ha import order
from tests.e2e.test_mpps_roundtrip import (
    KEYS,
    MPPS_UID,
    assert_ip_then_cm,
    n_create,
    n_set_completed,
)
from tests.findstatus import check_status
from tests.outbound.mllp_receiver import MllpReceiver
from tests.reconcile.orthanc import ct_study

pytestmark = pytest.mark.timeout(1500)

REPLICAS = ("mwl-bridge-1", "mwl-bridge-2")
SERVICES = ("postgres", *REPLICAS, "orthanc")
HEALTH_WAIT_S = 240.0
PASSWORD = "ci-secret-4b1d9e"  # what the test writes into the secret file
BRIDGE_UID = 10001  # the image's mwl user: the secret file must be its own, 0600


def _engine_missing() -> str:
    """Why no container engine can run the stack here ('' when one can)."""
    for tool in ("docker", "docker-compose", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install docker.io docker-compose debootstrap)"
    res = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                         capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        return f"no Docker engine answers (start dockerd): {res.stderr.strip()[-300:]}"
    return ""


@pytest.fixture(scope="module", autouse=True)
def engine() -> None:
    reason = _engine_missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must provide a container engine (.ci/run starts dockerd): {reason}")
        pytest.skip(f"no container engine: {reason}")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    tmp: Path
    receiver: MllpReceiver
    timings: dict[str, float] = field(default_factory=dict)
    down_done: bool = False

    def command(self, *args: str) -> list[str]:
        return ["docker-compose", "-p", self.project, "-f", str(REPO / "docker-compose.yml"),
                "-f", str(REPO / "docker-compose.ci.yml"), *args]

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), capture_output=True, text=True,
                              timeout=timeout, cwd=REPO, env=self.env)

    def container(self, service: str) -> str:
        res = self.compose("ps", "-q", service)
        assert res.returncode == 0 and res.stdout.strip(), res.stderr
        return res.stdout.strip()

    def inspect(self, service: str) -> dict[str, Any]:
        res = docker("inspect", self.container(service))
        return cast(dict[str, Any], json.loads(res.stdout)[0])

    def health(self, service: str) -> str:
        return str(self.inspect(service)["State"].get("Health", {}).get("Status", "none"))

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40").stdout[-8000:]

    def replica(self, n: int) -> RunningDaemon:
        """Replica n (1 or 2) as the e2e helpers' daemon handle: its ports on loopback,
        the CLI's config only tells `send` where to go."""
        folder = self.tmp / f"cli-{n}"
        folder.mkdir(exist_ok=True)
        cli_config = write_config(folder)
        return RunningDaemon(proc=cast(Any, None), config=cli_config, data_dir=self.tmp,
                             mllp_port=int(self.env[f"CI_MLLP_{n}"]),
                             dicom_port=int(self.env[f"CI_DICOM_{n}"]), ae_title="MWLBRIDGE")

    def down(self) -> subprocess.CompletedProcess[str]:
        self.down_done = True
        return self.compose("down", "-v", "--remove-orphans", timeout=300)

    def leftovers(self) -> tuple[list[str], list[str]]:
        label = f"label=com.docker.compose.project={self.project}"
        containers = docker("ps", "-a", "-q", "--filter", label).stdout.split()
        volumes = docker("volume", "ls", "-q", "--filter", label).stdout.split()
        return containers, volumes


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"docker {' '.join(args)}: {res.stderr}"
    return res


def _write_site_files(tmp: Path, receiver_port: int) -> tuple[Path, Path]:
    """The mounted config (the image's own plus a status destination: the receiver)
    and the secrets folder, as an operator would lay them out."""
    config = tmp / "mwl-bridge.yaml"
    config.write_text(
        (REPO / "deploy" / "bridge" / "mwl-bridge.yaml").read_text(encoding="utf-8")
        + "outbound:\n"
        "  profiles: [/app/mappings/outbound]\n"
        "  sending_application: MWLBRIDGE\n"
        "  sending_facility: RADIOLOGY\n"
        "  poll_interval_s: 0.5\n"
        "  destinations:\n"
        f"    - {{name: ris, host: 127.0.0.1, port: {receiver_port}, message_type: ORM^O01,\n"
        "       receiving_application: RIS, receiving_facility: HOSP,\n"
        "       ack_timeout_s: 5, backoff_initial_s: 0.2, backoff_max_s: 1}\n",
        encoding="utf-8")
    config.chmod(0o644)  # read by the container's mwl user
    secrets = tmp / "secrets"
    secrets.mkdir(mode=0o700)
    password = secrets / "db_password"
    password.write_text(PASSWORD + "\n", encoding="utf-8")
    password.chmod(0o600)
    try:
        os.chown(password, BRIDGE_UID, BRIDGE_UID)
    except PermissionError:  # not root: root in a throwaway container does it
        docker("run", "--rm", "-v", f"{secrets}:/s", "mwl-bridge-base:bookworm",
               "chown", f"{BRIDGE_UID}:{BRIDGE_UID}", "/s/db_password")
    return config, secrets


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tag = os.environ.get("MWL_IMAGE_TAG", "local")
    started = time.monotonic()
    build = subprocess.run(["bash", str(REPO / "deploy" / "build-images.sh")],
                           capture_output=True, text=True, timeout=1200, cwd=REPO,
                           env={**os.environ, "TAG": tag})
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    build_s = time.monotonic() - started

    tmp = tmp_path_factory.mktemp("stack")
    tmp.chmod(0o755)
    receiver = MllpReceiver()
    receiver.start()
    config, secrets = _write_site_files(tmp, receiver.port)
    names = ["CI_PG_PORT", "CI_MLLP_1", "CI_DICOM_1", "CI_ADMIN_1", "CI_MLLP_2", "CI_DICOM_2",
             "CI_ADMIN_2", "CI_ORTHANC_DICOM", "CI_ORTHANC_HTTP"]
    env = {**os.environ, "MWL_BRIDGE_CONFIG": str(config), "MWL_SECRETS_DIR": str(secrets),
           "MWL_IMAGE_TAG": tag,
           **{k: str(p) for k, p in zip(names, _free_ports(len(names)), strict=True)}}
    stack = Stack(f"mwlci{os.getpid()}", env, tmp, receiver, {"build_s": build_s})
    try:
        up = stack.compose("up", "-d")
        assert up.returncode == 0, up.stderr
        _wait_healthy(stack)
        stack.timings["up_s"] = time.monotonic() - started - stack.timings["build_s"]
        yield stack
    finally:
        if not stack.down_done:
            stack.down()
        receiver.stop()
        print(f"stack timings: {stack.timings}")


def _wait_healthy(stack: Stack) -> None:
    deadline = time.monotonic() + HEALTH_WAIT_S
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = {s: stack.health(s) for s in SERVICES}
        if "unhealthy" in states.values():
            break
        if all(v == "healthy" for v in states.values()):
            return
        time.sleep(2)
    pytest.fail(f"the stack is not healthy: {states}\n{stack.logs()}")


def test_the_images_run_unprivileged_read_only_and_without_the_secret(stack: Stack) -> None:
    for name in REPLICAS:
        info = stack.inspect(name)
        assert info["Config"]["User"] == "mwl"
        assert info["HostConfig"]["ReadonlyRootfs"] is True
        assert info["Config"]["Healthcheck"]["Test"][0] == "CMD"
        assert "/readyz" in info["Config"]["Healthcheck"]["Test"][-1]
        # The password reaches the replica only as a file: not in its environment.
        assert not any(PASSWORD in e for e in info["Config"]["Env"])
        top = docker("exec", info["Id"], "id", "-u").stdout.strip()
        assert top == str(BRIDGE_UID)
        # Nothing in the root filesystem is writable, the data volume is.
        denied = subprocess.run(["docker", "exec", info["Id"], "touch", "/opt/mwl-bridge/x"],
                                capture_output=True, text=True, timeout=60)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr
        docker("exec", info["Id"], "touch", "/var/lib/mwl-bridge/probe")
    for image in ("mwl-bridge", "mwl-bridge-postgres", "mwl-bridge-orthanc"):
        ref = f"{image}:{stack.env['MWL_IMAGE_TAG']}"
        history = docker("history", "--no-trunc", ref).stdout
        config = docker("image", "inspect", ref).stdout
        assert PASSWORD not in history and PASSWORD not in config, image


def test_postgres_without_its_password_file_refuses_to_initialise(stack: Stack) -> None:
    res = subprocess.run(
        ["docker", "run", "--rm", "--network", "none",
         f"mwl-bridge-postgres:{stack.env['MWL_IMAGE_TAG']}"],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert "no password in /run/secrets/db_password (POSTGRES_PASSWORD_FILE)" in res.stderr


def test_an_order_to_replica_1_is_found_through_replica_2_and_mpps_reports_back(
        stack: Stack) -> None:
    one, two = stack.replica(1), stack.replica(2)
    res = one.send(FIXTURES / "orm-o01-ihe-ct.hl7")
    assert res.returncode == 0 and ": AA" in res.stdout, res.stdout + res.stderr
    (item,) = two.findscu(stack.tmp, *KEYS)
    assert item.AccessionNumber == "ACC20261128001"

    # A modality starts the procedure on replica 2 and completes it on replica 1:
    # one MPPS instance, kept in the shared database.
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    for replica, send in ((two, "create"), (one, "set")):
        assoc = ae.associate("127.0.0.1", replica.dicom_port, ae_title=replica.ae_title)
        assert assoc.is_established
        try:
            if send == "create":
                status, _ = assoc.send_n_create(n_create(item), ModalityPerformedProcedureStep,
                                                MPPS_UID)
            else:
                status, _ = assoc.send_n_set(n_set_completed(),
                                             ModalityPerformedProcedureStep, MPPS_UID)
            assert status.Status == 0x0000, send
        finally:
            assoc.release()
    got = stack.receiver.wait_for(2)
    assert_ip_then_cm(got, item)
    # The completed step is no longer offered, by either replica.
    assert one.findscu(stack.tmp, *KEYS) == [] and two.findscu(stack.tmp, *KEYS) == []


def test_the_database_backs_up_and_restores_as_docs_deployment_says(stack: Stack) -> None:
    """pg_dump from the postgres container, pg_restore into a fresh database: the
    worklist rows come back (docs/deployment.md, "Backup and restore")."""
    dump = stack.tmp / "mwl.dump"
    with dump.open("wb") as out:
        res = subprocess.run(
            stack.command("exec", "-T", "postgres", "pg_dump", "-U", "mwl", "-Fc", "mwl"),
            stdout=out, stderr=subprocess.PIPE, timeout=120, cwd=REPO, env=stack.env)
    assert res.returncode == 0, res.stderr.decode()
    assert dump.stat().st_size > 0

    def psql(sql: str, db: str = "mwl") -> str:
        got = stack.compose("exec", "-T", "postgres", "psql", "-U", "mwl", "-d", db, "-tAc", sql)
        assert got.returncode == 0, got.stderr
        return got.stdout.strip()

    assert stack.compose("exec", "-T", "postgres", "createdb", "-U", "mwl",
                         "mwl_restored").returncode == 0
    with dump.open("rb") as src:
        res = subprocess.run(
            stack.command("exec", "-T", "postgres", "pg_restore", "-U", "mwl", "-d",
                          "mwl_restored", "--no-owner"),
            stdin=src, capture_output=True, timeout=120, cwd=REPO, env=stack.env)
    assert res.returncode == 0, res.stderr.decode()
    count = "SELECT count(*) FROM procedure_step"
    assert psql(count) == psql(count, "mwl_restored") != "0"


def _secondary_capture(path: Path) -> str:
    """A small DICOM image for the PACS; returns its StudyInstanceUID."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.66001.1.1"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.66001"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.66001.1"
    ds.PatientID, ds.PatientName, ds.Modality = "PACS0001", "TEST^PACS", "OT"
    ds.AccessionNumber, ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = \
        "ACCPACS1", "20261130", 1, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = bytes(range(16))
    ds.save_as(path, enforce_file_format=True)
    return str(ds.StudyInstanceUID)


def _find_study(stack: Stack, calling_ae: str, study_uid: str) -> str:
    res = subprocess.run(
        [str(DCMTK / "findscu"), "-v", "-S", "-aet", calling_ae, "-aec", "ORTHANC",
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
         "-k", "AccessionNumber", "127.0.0.1", stack.env["CI_ORTHANC_DICOM"]],
        capture_output=True, timeout=60, env=dcmtk_env())
    return (res.stdout + res.stderr).decode("utf-8", "replace")


def _store(stack: Stack, calling_ae: str, image: Path) -> bool:
    res = subprocess.run(
        [str(DCMTK / "storescu"), "-v", "-aet", calling_ae, "-aec", "ORTHANC", "127.0.0.1",
         stack.env["CI_ORTHANC_DICOM"], str(image)],
        capture_output=True, text=True, timeout=60, env=dcmtk_env())
    return "Received Store Response (Success)" in res.stdout + res.stderr


def test_orthanc_lets_in_the_bridges_ae_and_the_listed_modalities_only(stack: Stack) -> None:
    image = stack.tmp / "sc.dcm"
    study = _secondary_capture(image)
    assert not _store(stack, "STRANGER", image)
    assert _store(stack, "MWLBRIDGE", image)
    assert _store(stack, "CT01", image), "ORTHANC_STORE_AETS lets the modality store"

    log = _find_study(stack, "MWLBRIDGE", study)
    check_status(log)
    assert "ACCPACS1" in log
    # Neither an AE that Orthanc's config does not list nor a store-only modality
    # may query.
    for calling in ("STRANGER", "CT01"):
        assert "Received Final Find Response (Success)" not in _find_study(
            stack, calling, study), calling


def _psql(stack: Stack, sql: str) -> str:
    got = stack.compose("exec", "-T", "postgres", "psql", "-U", "mwl", "-d", "mwl", "-tAc", sql)
    assert got.returncode == 0, got.stderr
    return got.stdout.strip()


def test_a_study_stored_in_orthanc_completes_its_item_without_mpps(stack: Stack) -> None:
    """Issue 13's completion without MPPS in the stack: an order over MLLP; the modality
    (CT01, listed in ORTHANC_STORE_AETS) sends no MPPS but stores a small CT study with
    the item's Study Instance UID and accession in Orthanc (DCMTK storescu); the
    maintenance leader's reconciliation finds it by C-FIND, the step becomes COMPLETED
    (source "pacs query"), neither replica offers it any more and the RIS gets one CM."""
    one, two = stack.replica(1), stack.replica(2)
    hl7 = stack.tmp / "study-arrival.hl7"
    hl7.write_bytes(order(8))
    res = one.send(hl7)
    assert res.returncode == 0 and ": AA" in res.stdout, res.stdout + res.stderr
    keys = (*KEYS[:4], "AccessionNumber=ACCHA00008")
    (item,) = two.findscu(stack.tmp, *keys)
    step = "(SELECT id FROM procedure_step WHERE accession_number = 'ACCHA00008')"
    assert _psql(stack, f"SELECT sps_status FROM procedure_step WHERE id = {step}") \
        == "SCHEDULED"
    sent_before = len(stack.receiver.messages)

    files = ct_study(stack.tmp / "study8", study_uid=str(item.StudyInstanceUID),
                     accession=str(item.AccessionNumber), patient_id=str(item.PatientID))
    store = subprocess.run(
        [str(DCMTK / "storescu"), "-v", "-aet", "CT01", "-aec", "ORTHANC", "127.0.0.1",
         stack.env["CI_ORTHANC_DICOM"], *map(str, files)],
        capture_output=True, text=True, timeout=60, env=dcmtk_env())
    assert (store.stdout + store.stderr).count("Received Store Response (Success)") \
        == len(files), store.stdout + store.stderr

    got = stack.receiver.wait_for(sent_before + 1)[sent_before:]
    assert [m.field("ORC", 5) for m in got] == ["CM"]
    assert got[0].field("OBR", 18) == "ACCHA00008"
    assert got[0].field("ZDS", 1) == str(item.StudyInstanceUID)
    history = _psql(stack, f"SELECT to_status, source FROM step_history "
                           f"WHERE step_id = {step} ORDER BY id").splitlines()
    assert history[-1] == "COMPLETED|pacs query", history
    assert one.findscu(stack.tmp, *keys) == [] and two.findscu(stack.tmp, *keys) == []
    # Exactly one message for it: nothing else queued or in flight, none received.
    assert _psql(stack, "SELECT count(*) FROM outbox WHERE state <> 'sent'") == "0"
    assert [m.field("ORC", 5) for m in stack.receiver.messages
            if m.field("OBR", 18) == "ACCHA00008"] == ["CM"]


def test_orthanc_takes_the_push_token_from_a_secret_file(stack: Stack) -> None:
    """The switch to the stable-study push (docs/deployment.md, "The stack's PACS"):
    with the Lua script and deploy/orthanc/push.json mounted as the doc says, Orthanc
    starts with them, and the console token, a file like the compose secret, reaches
    its process as MWL_BRIDGE_TOKEN (what docs/orthanc/on-stable-study.lua reads) while
    being neither in the image nor in the container's configuration."""
    image = f"mwl-bridge-orthanc:{stack.env['MWL_IMAGE_TAG']}"
    uid = int(docker("run", "--rm", "--entrypoint", "id", image, "-u").stdout)
    secrets = stack.tmp / "orthanc-secrets"
    secrets.mkdir()
    secrets.chmod(0o755)  # Orthanc's user reaches the file, which is its own, 0600
    token = "push-token-7c0e2a"
    (secrets / "orthanc_token").write_text(token + "\n", encoding="utf-8")
    (secrets / "orthanc_token").chmod(0o600)
    try:
        os.chown(secrets / "orthanc_token", uid, uid)
    except PermissionError:  # not root: root in a throwaway container does it
        docker("run", "--rm", "-v", f"{secrets}:/s", "mwl-bridge-base:bookworm",
               "chown", f"{uid}:{uid}", "/s/orthanc_token")
    lua = REPO / "docs" / "orthanc" / "on-stable-study.lua"
    push = REPO / "deploy" / "orthanc" / "push.json"
    cid = docker("run", "-d", "--network", "none", "-v", f"{secrets}:/run/secrets:ro",
                 "-v", f"{lua}:/etc/orthanc-mwl/on-stable-study.lua:ro",
                 "-v", f"{push}:/etc/orthanc-mwl/push.json:ro",
                 "-e", "MWL_BRIDGE_TOKEN_FILE=/run/secrets/orthanc_token", image).stdout.strip()
    try:
        deadline = time.monotonic() + 60
        while "Orthanc has started" not in (log := docker("logs", cid).stderr):
            assert docker("inspect", "-f", "{{.State.Running}}", cid).stdout.strip() == "true", \
                log[-2000:]
            assert time.monotonic() < deadline, log[-2000:]
            time.sleep(0.2)
        assert "push.json" in log
        assert json.loads(push.read_text(encoding="utf-8"))["LuaScripts"] == [
            "/etc/orthanc-mwl/on-stable-study.lua"]
        environ = docker("exec", cid, "cat", "/proc/1/environ").stdout.split("\0")
        assert f"MWL_BRIDGE_TOKEN={token}" in environ
        assert token not in docker("inspect", cid).stdout
        assert token not in docker("history", "--no-trunc", image).stdout
    finally:
        docker("rm", "-f", "-v", cid)  # with the image's anonymous data volume


def test_stopping_one_replica_leaves_the_other_answering(stack: Stack) -> None:
    stop = stack.compose("stop", "mwl-bridge-1")
    assert stop.returncode == 0, stop.stderr
    assert stack.inspect("mwl-bridge-1")["State"]["Running"] is False
    one, two = stack.replica(1), stack.replica(2)
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", one.dicom_port)) != 0, "replica 1 is down"

    hl7 = stack.tmp / "after-stop.hl7"
    hl7.write_bytes(order(7))
    res = two.send(hl7)
    assert res.returncode == 0 and ": AA" in res.stdout, res.stdout + res.stderr
    found = two.findscu(stack.tmp, "AccessionNumber", "PatientID",
                        "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT01")
    assert [str(d.AccessionNumber) for d in found] == ["ACCHA00007"]
    assert two.echoscu() == 0
    assert stack.health("mwl-bridge-2") == "healthy"


def test_a_replica_recreated_as_in_an_upgrade_comes_back_with_what_it_missed(
        stack: Stack) -> None:
    """docs/deployment.md's upgrade step for one replica (`up -d --no-deps`, here with
    the same image): a new container, healthy again, sharing what the other took."""
    old = stack.container("mwl-bridge-1")
    up = stack.compose("up", "-d", "--no-deps", "--force-recreate", "mwl-bridge-1")
    assert up.returncode == 0, up.stderr
    assert stack.container("mwl-bridge-1") != old
    assert stack.inspect("mwl-bridge-2")["State"]["Running"] is True
    _wait_healthy(stack)
    found = stack.replica(1).findscu(
        stack.tmp, "AccessionNumber",
        "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT01")
    assert [str(d.AccessionNumber) for d in found] == ["ACCHA00007"]


def test_down_leaves_nothing_running(stack: Stack) -> None:
    down = stack.down()
    assert down.returncode == 0, down.stderr
    containers, volumes = stack.leftovers()
    assert containers == [] and volumes == []
    for port in ("CI_PG_PORT", "CI_MLLP_2", "CI_DICOM_2", "CI_ORTHANC_DICOM"):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", int(stack.env[port]))) != 0, port
