"""`kestrel-ground command` against a small flight on a socket: real TC packets up, real CADUs down.

The flight here is the real link on both sides of a toy command handler: it
takes TCs with the flight program's own uplink (CLTUs, TC frames, FARM-1:
flight.uplink.CommandReceiver, no thread), checks them with kestrel.services.parse_request
and answers with PusTm packets that flight.multiplexer and the configured
channel coder turn into CADUs. The ground is the program, run as a user runs it.
"""
import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from flight.multiplexer import MasterChannelMultiplexer
from flight.uplink import CommandReceiver, UplinkPath
from kestrel import services
from kestrel.link.config import LinkConfig, UplinkConfig, build_channel_coder, frame_layout
from kestrel.link.spacepacket import PusTm
from kestrel.link.telecommand import Ack
from kestrel.link.timecode import CucCodec
from kestrel.services import Reason, RequestId, ServiceError, Stage, VerificationReport

EXIT_NO_REPLY = 4


class Flight:
    """Answers each TC with its verification reports and replies, as CADUs; or stays silent."""

    def __init__(self, answer: bool = True, stray: bool = False):
        self.answer = answer
        self.stray = stray          # first send a report naming another command
        self.link = LinkConfig()
        self.cuc = CucCodec(self.link.time)
        self.mux = MasterChannelMultiplexer(self.link.spacecraft_id, frame_layout(self.link),
                                            tuple(self.link.vc_priority))
        self.coder = build_channel_coder(self.link)
        self.parameters = {p.id: p.low for p in services.PARAMETERS}
        self.received = []
        self._sequence = 0
        self._stop = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self):
        self._stop.set()
        self.thread.join(5)
        self.server.close()

    def _serve(self):
        self.server.settimeout(0.05)   # a blocked accept() would not see the stop
        while not self._stop.is_set():       # one ground command a connection
            try:
                connection, _ = self.server.accept()
            except TimeoutError:
                continue
            connection.settimeout(None)
            receiver = CommandReceiver(lambda: None, path_factory=lambda room: UplinkPath(
                self.link, UplinkConfig(), room=room))
            with connection:
                while data := connection.recv(4096):
                    receiver.feed(data)
                    for tc in receiver.take():
                        self.received.append(tc)
                        if self.answer:
                            connection.sendall(self._cadus(self._answer(tc)))

    def _tm(self, service: int, subtype: int, data: bytes) -> bytes:
        self._sequence += 1
        return PusTm(apid=services.COMMAND_APID, service=service, subtype=subtype, data=data,
                     time=self.cuc.encode(self.cuc.from_unix(time.time())), sequence_count=self._sequence).pack()

    def _report(self, report: VerificationReport) -> bytes:
        return self._tm(1, report.subtype, report.pack())

    def _answer(self, tc) -> list[bytes]:
        request_id = RequestId.of(tc)
        packets = []
        if self.stray:
            other = request_id._replace(sequence_count=(tc.sequence_count + 1) & 0x3FFF)
            packets.append(self._report(VerificationReport.failure(other, Stage.ACCEPTANCE,
                                                                   ServiceError(Reason.BUSY, "not you"))))
        try:
            request = services.parse_request(tc)
        except ServiceError as exc:
            return packets + [self._report(VerificationReport.failure(request_id, Stage.ACCEPTANCE, exc))]
        if tc.ack_flags & Ack.ACCEPTANCE:
            packets.append(self._report(VerificationReport(request_id, Stage.ACCEPTANCE)))
        if tc.ack_flags & Ack.START:
            packets.append(self._report(VerificationReport(request_id, Stage.START)))
        kind = (tc.service, tc.subtype)
        if kind == (17, 1):
            packets.append(self._tm(17, 2, b""))
        elif kind == (20, 1):
            packets.append(self._tm(20, 2, services.parameter_report({i: self.parameters[i] for i in request.ids})))
        elif kind == (20, 3):
            self.parameters.update((item.id, item.value) for item in request.parameters)
        if tc.ack_flags & Ack.COMPLETION:
            packets.append(self._report(VerificationReport(request_id, Stage.COMPLETION)))
        return packets

    def _cadus(self, packets: list[bytes]) -> bytes:
        for packet in packets:
            assert self.mux.push(self.link.vc_priority[0], packet)
        cadus = []
        while (frame := self.mux.next_frame(flush=True)) is not None:
            cadus.append(self.coder.encode(frame))
        return b"".join(cadus)


@pytest.fixture
def flight():
    made = []

    def make(**kwargs):
        made.append(Flight(**kwargs))
        return made[-1]
    yield make
    for f in made:
        f.close()


def ground(tmp_path, url, *args, timeout=5):
    return subprocess.run([sys.executable, "-m", "ground", "command", "--port", url, "--out", str(tmp_path),
                           "--timeout", str(timeout), *args], capture_output=True, text=True, timeout=60)


def no_traceback(result):
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    return result


def test_ping_completes(tmp_path, flight):
    f = flight()
    result = no_traceback(ground(tmp_path, f.url, "ping"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("kestrel-ground: sent TC(17,1)")
    assert lines[1:] == ["acceptance: success", "start: success", "reply TM(17,2): the payload is alive",
                         "completion: success"]
    assert [(tc.service, tc.subtype, tc.apid) for tc in f.received] == [(17, 1, services.COMMAND_APID)]


def test_an_unknown_parameter_fails_with_its_reason(tmp_path, flight):
    f = flight()
    result = no_traceback(ground(tmp_path, f.url, "get-parameter", "999", "--no-check"))
    assert result.returncode == 1
    code = f"PARAMETER_UNKNOWN ({Reason.PARAMETER_UNKNOWN.value})"
    assert f"acceptance: FAILED, {code}: parameter 999 unknown" in result.stdout
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and "failed at acceptance" in error[0] and code in error[0]


def test_the_ground_refuses_what_the_payload_would_refuse_without_sending(tmp_path, flight):
    f = flight()
    result = no_traceback(ground(tmp_path, f.url, "get-parameter", "999"))
    assert result.returncode == 2 and "parameter 999 unknown" in result.stderr and "--no-check" in result.stderr
    result = no_traceback(ground(tmp_path, f.url, "set-parameter", "detection.k_sigma", "1000"))
    assert result.returncode == 2 and "VALUE_OUT_OF_RANGE" in result.stderr
    assert f.received == []


def test_set_then_get_a_parameter(tmp_path, flight):
    f = flight()
    assert no_traceback(ground(tmp_path, f.url, "set-parameter", "detection.k_sigma", "6.5")).returncode == 0
    result = no_traceback(ground(tmp_path, f.url, "get-parameter", "detection.k_sigma", "11"))
    assert result.returncode == 0, result.stderr
    assert "detection.k_sigma = 6.5 sigma" in result.stdout and "imaging.chips_per_frame = 0" in result.stdout


def test_functions_mode_and_housekeeping_go_up_as_declared(tmp_path, flight):
    f = flight()
    for args in (["mode", "observe"], ["function", "replay_store", "sequence", "110", "10", "20"],
                 ["function", "take_quicklook"], ["hk", "disable", "flight"], ["hk-interval", "flight", "2.5"]):
        result = no_traceback(ground(tmp_path, f.url, *args))
        assert result.returncode == 0, (args, result.stderr)
    parsed = [services.parse_request(tc) for tc in f.received]
    assert parsed[0].arguments.mode == services.Mode.OBSERVE
    assert tuple(parsed[1].arguments[k] for k in ("by", "apid", "first", "last")) == (2, 110, 10, 20)
    assert parsed[2].function == services.FUNCTIONS_BY_NAME["take_quicklook"].id
    assert [(tc.service, tc.subtype) for tc in f.received[3:]] == [(3, 6), (3, 31)]
    assert list(parsed[3].structures) == [2] and parsed[4].intervals[0].interval_ms == 2500


def test_no_answer_is_a_timeout_not_a_traceback(tmp_path, flight):
    f = flight(answer=False)
    started = time.monotonic()
    result = no_traceback(ground(tmp_path, f.url, "ping", timeout=1))
    assert result.returncode == EXIT_NO_REPLY
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and "no completion report" in error[0] and "within 1 s" in error[0]
    assert time.monotonic() - started < 30 and len(f.received) == 1


def test_a_port_that_does_not_open_is_one_line(tmp_path):
    result = no_traceback(ground(tmp_path, str(tmp_path / "no-such-tty"), "ping"))
    assert result.returncode == 1 and "cannot open port" in result.stderr.strip().splitlines()[-1]


def test_sequence_counts_advance_and_reports_of_other_commands_are_ignored(tmp_path, flight):
    f = flight(stray=True)
    for _ in range(2):
        assert no_traceback(ground(tmp_path, f.url, "ping")).returncode == 0
    assert no_traceback(ground(tmp_path, f.url, "ping", "--sequence", "777")).returncode == 0
    assert [tc.sequence_count for tc in f.received] == [0, 1, 777]
    assert json.loads((tmp_path / "tc_sequence.json").read_text()) == {str(services.COMMAND_APID): 2}


def test_options_after_the_command_name(tmp_path, flight):
    f = flight()
    result = subprocess.run([sys.executable, "-m", "ground", "command", "ping", "--port", f.url,
                             "--out", str(tmp_path), "--sequence", "5", "--source-id", "7"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (f.received[0].sequence_count, f.received[0].source_id) == (5, 7)
