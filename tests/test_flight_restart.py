"""kill -9 at random moments, over and over on one store: nothing lost, nothing duplicated, counts continue.

The flight program runs on one store file, with a socket:// radio port whose
peer is a TCP server in this test, at 200 frames/s of 64x64, and is killed
with SIGKILL at a random moment, RUNS times in a row, restarted each time
(three runs in four on a line faster than its products, so the writer takes
each product as soon as it may; the rest on a slower one, so that kills also
find committed products waiting). Every octet it wrote is
kept, connection after connection. A last run, the real `python -m flight`
in a subprocess, is sent ST[08] dump_store over the same radio port (the
uplink reads the port's receive direction) and stops by itself after
draining the store. Then the concatenated capture goes through
`python -m ground decode`, and the store file is read, and:

* none lost: every product the store ever committed (each APID's counts run
  0, 1, 2, ... with no gap, and the store's own accounting balances) is on
  the ground after the dump; before it, every committed product had either
  reached the ground or was still held in the store, and nothing reached the
  ground that the store does not hold (no product was offered before its
  commit);
* none duplicated: no two products on the ground carry the same APID and
  sequence count;
* counters continue: per APID, the sequence counts of products committed in
  a later run are all above those of an earlier run;
* the ground recognises what came again (the dump, and offers whose mark a
  kill lost) and counts it in summary.json `packets_duplicate`.

Reference: the store file (read with sqlite3 and ProductStore.audit) and the
ground decoder, both independent of the kill.

Why fork: a cold `python -m flight` takes 0.65-0.85 s here before its first
frame (the interpreter, numpy and the kernels), so 100+ restarts would take
well over the 90 s this test may take. A small "zygote" process (this
module run as `python -m tests.test_flight_restart`) imports the flight
program once, with no thread running, and forks a child per run that calls
`flight.cli.main(argv)`: the same entry point, arguments, configuration
file, store and port as the command line, only without the import cost.
The test process (not the zygote) kills each child with a real SIGKILL and
the zygote reaps it and reports how it ended. The last run is a real
subprocess.
"""
from __future__ import annotations

import bisect
import collections
import json
import os
import random
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("KESTREL_RESTART_RUNS", "110"))
SEED = int(os.environ.get("KESTREL_RESTART_SEED", "12"))
# A run is killed this long after its fork; the child reaches its first frame after about 20 ms,
# so some kills land in start-up (store open, first commit) and most in the running loop.
KILL_AFTER_S = (0.0, 0.35)
SOURCE = "sim://clear?width=64&height=64"
FINAL_FRAMES = 40
# Most runs on a line faster than the products come (the writer waits for each commit, so a product
# offered before its commit would reach the ground before a kill could roll it back); the rest on a
# slower one, so that kills also find committed products waiting.
FAST_BAUD, SLOW_BAUD = 4_000_000, 500_000


# --- the zygote: runs in its own process ---------------------------------------------------------

def zygote() -> None:
    """Fork a flight program per request line on stdin; reap on request. One JSON line out per request.

    {"argv": [...], "log": path} -> {"pid": pid}: a child runs flight.cli.main(argv), stdout and
    stderr to `log`. {"reap": pid} -> {"pid": pid, "signal": n or null, "exit": n or null}.
    """
    import flight.cli      # noqa: F401 - imported once, before any fork
    import hil.sim_source  # noqa: F401 - the sim:// plug-in the children open
    for line in sys.stdin:
        request = json.loads(line)
        if "argv" in request:
            # Opened before the fork: a child killed at once still leaves its (empty) log.
            log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            pid = os.fork()
            if pid == 0:
                status = 70
                try:
                    null = os.open(os.devnull, os.O_RDONLY)
                    os.dup2(null, 0)
                    os.dup2(log, 1)
                    os.dup2(log, 2)
                    status = flight.cli.main(request["argv"])
                finally:
                    os._exit(status)
            os.close(log)
            answer = {"pid": pid}
        else:
            pid, status = os.waitpid(request["reap"], 0)
            answer = {"pid": pid, "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                      "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


class Zygote:
    def __init__(self):
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        self.process = subprocess.Popen([sys.executable, "-m", "tests.test_flight_restart"], cwd=REPO_ROOT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def _ask(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"the zygote ended (status {self.process.poll()})"
        return json.loads(line)

    def fork(self, argv: list[str], log: Path) -> int:
        return self._ask({"argv": argv, "log": str(log)})["pid"]

    def reap(self, pid: int) -> dict:
        return self._ask({"reap": pid})

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(10)


# --- the radio: a TCP server taking one connection after another ---------------------------------

class Connection:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.data = bytearray()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while chunk := self.sock.recv(65536):
                self.data.extend(chunk)
        except OSError:
            pass
        finally:
            self.closed.set()

    def send(self, octets: bytes) -> None:
        self.sock.sendall(octets)


class RadioServer:
    """Keeps what each connection delivered, in the order the connections came."""

    def __init__(self):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self._listener.getsockname()[1]}"
        self.connections: list[Connection] = []
        self._accepting = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._done.is_set():
            readable, _, _ = select.select([self._listener], [], [], 0.02)
            if readable:
                with self._accepting:
                    sock, _ = self._listener.accept()
                    self.connections.append(Connection(sock))

    def settle(self, timeout: float = 10.0) -> None:
        """After the flight program died: every connection it made accepted and read to its end."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._accepting:
                pending = select.select([self._listener], [], [], 0)[0]
                if not pending and all(c.closed.is_set() for c in self.connections):
                    return
            time.sleep(0.005)
        raise AssertionError("a connection of a dead flight program did not end")

    def wait_for_connection(self, count: int, timeout: float = 30.0) -> Connection:
        deadline = time.monotonic() + timeout
        while len(self.connections) < count:
            assert time.monotonic() < deadline, "the flight program did not connect"
            time.sleep(0.01)
        return self.connections[count - 1]

    def close(self):
        self._done.set()
        self._thread.join(2)
        self._listener.close()
        for c in self.connections:
            c.sock.close()


# --- reading the store and the archive --------------------------------------------------------------

def store_rows(path: Path) -> list[tuple]:
    """(id, class, apid, sequence, created_at, sent, offers, packet) of every held product, read directly."""
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT id, class, apid, sequence, created_at, sent, offers, packet FROM products "
                          "ORDER BY id").fetchall()
    finally:
        db.close()


def store_counters(path: Path) -> dict[int, int]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT apid, next FROM sequences"))
    finally:
        db.close()


def identities(config, rows) -> dict[tuple, tuple[int, int]]:
    """The ground archive's identity of each stored packet -> (APID, unwrapped sequence)."""
    from flight.executive import class_channels
    from flight.store import ProductClass
    from kestrel.link.spacepacket import PusTm
    from kestrel.link.timecode import CucCodec

    channels = class_channels(config.link)
    time_length = CucCodec(config.link.time).length
    out = {}
    for _id, cls, apid, sequence, _created, _sent, _offers, packet in rows:
        tm = PusTm.unpack(packet, time_length)
        key = (config.link.spacecraft_id, channels[ProductClass(cls)], tm.apid, tm.sequence_count, bytes(tm.time),
               tm.message_type_counter)
        assert key not in out, f"two stored products with one ground identity: {key}"
        out[key] = (apid, sequence)
    return out


def archived(out: Path) -> list[tuple]:
    db = sqlite3.connect(out / "archive.sqlite")
    try:
        return [(r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in db.execute(
            "SELECT spacecraft_id, virtual_channel, apid, sequence_count, time_field, message_type_counter "
            "FROM packets ORDER BY id")]
    finally:
        db.close()


def ground_decode(config, stream: bytes, out: Path, handlers=None):
    from ground.archive import GroundArchive
    from ground.decoder import GroundDecoder

    archive = GroundArchive(out)
    decoder = GroundDecoder(config, archive, handlers=handlers)
    for i in range(0, len(stream), 4096):
        decoder.feed(stream[i:i + 4096])
    summary = decoder.finish()
    archive.close()
    return summary


# --- the test ----------------------------------------------------------------------------------------

def test_kill_9_at_random_moments_loses_nothing_duplicates_nothing_and_counts_continue(tmp_path):
    from flight.store import ProductStore, StoreConfig
    from ground.command import Follower
    from hil.config import KestrelConfig
    from kestrel import products, services
    from kestrel.link.cltu import encode_cltu
    from kestrel.link.config import LinkConfig, UplinkConfig, tc_frame_layout
    from kestrel.link.tcframe import FrameType, TcFrame
    from kestrel.config import load_config
    from kestrel.services import RequestId

    started = time.monotonic()
    store = tmp_path / "store.sqlite"
    config_files = {}
    for baud in (FAST_BAUD, SLOW_BAUD):
        config_files[baud] = tmp_path / f"kestrel-{baud}.toml"
        config_files[baud].write_text(
            f"[link]\nbaud = {baud}\n"
            "[sensor]\nframe_rate_hz = 200.0\n"
            f"[flight]\nparameters_path = \"{tmp_path / 'parameters.json'}\"\nhousekeeping_period_s = 0.05\n"
            "flush_timeout_s = 60.0\n")
    config_file = config_files[FAST_BAUD]
    config = load_config(config_file, KestrelConfig)
    server = RadioServer()
    rng = random.Random(SEED)

    def arguments(baud: int) -> list[str]:
        return ["--port", server.url, "--source", SOURCE, "--store", str(store), "--config", str(config_files[baud])]

    zygote = Zygote()
    runs = []          # (started, ended) wall-clock times of each run, for the products' created_at
    endings = collections.Counter()
    try:
        for run in range(RUNS):
            connections_before = len(server.connections)
            begin = time.time()
            baud = FAST_BAUD if rng.random() < 0.75 else SLOW_BAUD
            pid = zygote.fork(arguments(baud), tmp_path / f"run{run:03d}.log")
            time.sleep(rng.uniform(*KILL_AFTER_S))
            os.kill(pid, signal.SIGKILL)
            ended = zygote.reap(pid)
            runs.append((begin, time.time()))
            server.settle()
            log = (tmp_path / f"run{run:03d}.log").read_text()
            assert ended["signal"] == signal.SIGKILL, f"run {run} ended by itself, {ended}: {log}"
            # Warnings may come (a port closing under a kill); an error means the program was hurt.
            assert " ERROR " not in log and "Traceback" not in log and "internal error" not in log, log
            endings["connected" if len(server.connections) > connections_before else "killed before connecting"] += 1
    finally:
        zygote.close()
    kill_runs_connections = len(server.connections)
    before_dump = store_rows(store)

    # The last run: the real command line; ST[08] dump_store over the radio port, then it drains the store.
    tc = services.perform_function("dump_store").tc(services.COMMAND_APID, 0)
    final_begin = time.time()
    final = subprocess.Popen([sys.executable, "-m", "flight", *arguments(FAST_BAUD), "--max-frames", str(FINAL_FRAMES)],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # A BD frame in a CLTU, as kestrel-ground command sends it without the CLCW (the default link).
        layout = tc_frame_layout(LinkConfig(), UplinkConfig())
        cltu = encode_cltu(TcFrame(0, 0, tc.pack(), FrameType.BD).pack(layout), randomized=True)
        server.wait_for_connection(kill_runs_connections + 1).send(cltu)
        _, err = final.communicate(timeout=90)
    finally:
        if final.poll() is None:
            final.kill()
    runs.append((final_begin, time.time()))
    server.settle()
    server.close()
    assert final.returncode == 0, err
    assert " ERROR " not in err, err
    assert len(server.connections) == kill_runs_connections + 1

    before = b"".join(c.data for c in server.connections[:-1])
    capture = tmp_path / "capture.bin"
    capture.write_bytes(before + server.connections[-1].data)
    decoded = subprocess.run([sys.executable, "-m", "ground", "decode", str(capture), "--out", str(tmp_path / "ground"),
                              "--config", str(config_file)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert decoded.returncode == 0, decoded.stderr
    summary = json.loads((tmp_path / "ground" / "summary.json").read_text())
    ground = archived(tmp_path / "ground")
    # What the ground had before the dump, and the command's completion report in the last run's octets.
    resent_before = ground_decode(config, before, tmp_path / "before").packets["packets_duplicate"]
    ground_before = archived(tmp_path / "before")
    follower = Follower(RequestId.of(tc), out=lambda line: None)
    ground_decode(config, bytes(server.connections[-1].data), tmp_path / "last",
                  handlers={services.COMMAND_APID: follower.take})
    assert follower.outcome == (0, ""), follower.seen

    # The store: its own accounting balances after all the kills; nothing was dropped by rule.
    audit_store = ProductStore(StoreConfig(path=str(store)), time.monotonic, lambda *event: None)
    try:
        audit_store.audit()
        assert audit_store.total("dropped") == 0
        assert audit_store.total("acknowledged") == 0
    finally:
        audit_store.close()
    rows = store_rows(store)
    counters = store_counters(store)

    # None lost (in the store): each APID's counts are 0..next-1, every one a held product.
    by_apid = collections.defaultdict(list)
    for row in rows:
        by_apid[row[2]].append(row)
    assert set(by_apid) == set(counters)
    for apid, held in by_apid.items():
        assert sorted(r[3] for r in held) == list(range(counters[apid])), f"APID {apid}: counts with a gap"
    # The last run offered everything (the dump, then the drain).
    assert all(r[5] == 1 and r[6] >= 1 for r in rows)

    stored = identities(config, rows)
    # Before the dump: what reached the ground is what the store holds (nothing offered before its
    # commit, no count reused on another packet); the rest was still held.
    stored_before = identities(config, before_dump)
    phantoms = set(ground_before) - set(stored_before)
    assert not phantoms, f"{len(phantoms)} packets reached the ground that the store does not hold (offered " \
                         f"before their commit, their count then reused): {sorted(phantoms)[:5]}"
    missing_before = set(stored_before) - set(ground_before)
    offers_before = {(r[2], r[3]): r[6] for r in before_dump}
    offered_missing = sum(1 for key in missing_before if offers_before[stored_before[key]] > 0)
    # After it: none lost, nothing foreign.
    lost, foreign = set(stored) - set(ground), set(ground) - set(stored)
    assert not lost and not foreign, f"{len(lost)} stored products never reached the ground, {len(foreign)} " \
                                     f"archived packets the store does not hold"
    # None duplicated: one archived packet per identity, and no two with one APID and (unwrapped) count.
    assert len(ground) == len(set(ground))
    assert max(counters.values()) <= 16384, "counts wrapped: compare unwrapped sequences instead"
    keys = collections.Counter((apid, count) for _, _, apid, count, _, _ in ground)
    assert keys.most_common(1)[0][1] == 1
    # The ground recognised every packet that came again.
    p = summary["packets"]
    assert p["packet_crc_errors"] == 0 and p["packets_malformed"] == 0, p
    good = p["packets"] - p["idle_packets"]
    assert p["packets_duplicate"] == good - len(ground)
    assert p["packets_duplicate"] >= len(ground_before)   # the dump sent each of them again

    # Counters continue: per APID, a later run's products have higher counts than an earlier run's.
    starts = [begin for begin, _ in runs]
    for apid, held in by_apid.items():
        run_of = [bisect.bisect_right(starts, r[4]) - 1 for r in sorted(held, key=lambda r: r[3])]
        assert min(run_of) >= 0
        assert run_of == sorted(run_of), f"APID {apid}: a count went back across a restart"
    started_events = [r for r in rows if r[2] == products.APID_EVENTS and b"kestrel-flight started" in r[7]]
    kill_runs_with_products = len({bisect.bisect_right(starts, r[4]) - 1 for r in rows} - {len(runs) - 1})
    # The kills landed in running programs: most runs stored products (a restart that cannot store
    # anything would pass every check above).
    assert kill_runs_with_products >= RUNS // 2, kill_runs_with_products
    assert len(started_events) == kill_runs_with_products + 1

    print(f"\n{RUNS} kills (seed {SEED}): {dict(endings)}; runs that committed products {kill_runs_with_products}; "
          f"'started' events committed {len(started_events)}")
    print(f"store: {len(rows)} products, counts per APID {dict(sorted(counters.items()))}")
    print(f"before the dump: {len(ground_before)} on the ground, {len(missing_before)} held only in the store "
          f"({offered_missing} of them offered before a kill, {len(missing_before) - offered_missing} never "
          f"offered); {resent_before} packets sent again after a kill (offer mark lost), recognised")
    print(f"ground: {len(ground)} archived, packets_duplicate {p['packets_duplicate']}, sync {summary['sync']}")
    print(f"took {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    zygote()
