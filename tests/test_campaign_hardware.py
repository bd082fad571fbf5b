"""Real-hardware mode: `kestrel-hil run --flight-port URL --ground-port URL` with the flight program at the far
end of a line the bench does not simulate.

Stand-ins for the real line: two ptys joined at the baud by hil.radio.PacedLink (each end a real serial port
to pyserial), and a TCP relay joining two socket:// clients. The test starts the flight program itself, with
the command line the bench printed for the board. References: the ground's archive (through the bench's
result.json) and the stand-in's own octet counts.
"""
import json
import shlex
import socket
import subprocess
import sys
import threading

import pytest

from hil.radio import PacedLink

SCENARIO = """
description = "hardware: a ping, and faults the board cannot take"
duration_s = 5.0
drain_s = 1.5
[scene]
width = 96
height = 96
[link]
baud = 0
ber = 1e-4
[[faults]]
kind = "kill_flight"
at_s = 2.0
[[faults]]
kind = "cut_link"
at_s = 3.0
for_s = 1.0
[[commands]]
at_s = 2.5
tc = ["ping"]
[bars]
latency_worst_max_s = 5.0
pd_min = 0.5
"""


def _fly_board(tmp_path, flight_port: str, ground_port: str):
    """The bench in hardware mode; the board's flight program started from the line the bench printed."""
    (tmp_path / "hw.toml").write_text(SCENARIO)
    out = tmp_path / "out"
    bench = subprocess.Popen([sys.executable, "-m", "hil", "run", str(tmp_path / "hw.toml"), "--flight-port",
                              flight_port, "--ground-port", ground_port, "--out", str(out), "--board-timeout", "60"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in bench.stdout:
        lines.append(line)
        if line.startswith("board: "):
            break
    command = shlex.split(lines[-1][len("board: "):])
    assert command[0] == "kestrel-flight" and command[command.index("--port") + 1] == flight_port
    flight = subprocess.Popen([sys.executable, "-m", "flight", *command[1:], "--store", str(tmp_path / "store.sqlite")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rest, errors = bench.communicate(timeout=180)
    assert flight.wait(30) == 0, flight.stderr.read()
    return bench.returncode, "".join(lines) + rest + errors, out / "hw"


def _check(code, text, folder, octets_down):
    assert code == 0, text
    data = json.loads((folder / "result.json").read_text())
    assert data["mode"] == "hardware" and data["passed"]
    skipped = {s["fault"]: s["reason"] for s in data["skipped"]}
    assert "board" in skipped["kill_flight"] and "real" in skipped["cut_link"] and "real" in skipped["link impairments"]
    assert "[SKIPPED] kill_flight" in text and "**Skipped:** cut_link" in (folder / "report.md").read_text()
    bars = {b["name"]: b["passed"] for b in data["bars"]}
    # Judged from what came over the real line: the ping's reports, every frame's report, Pd, latency.
    assert bars["every command completed"] and bars["every processed frame's report reached the ground"]
    assert "flight program ends cleanly" not in bars and "products lost <= 0" not in bars
    assert data["link"]["down"]["octets_passed"] == octets_down() > 10000        # every octet the line carried
    assert data["link"]["up"]["octets_passed"] > 0 and data["link"]["down"]["bits_flipped"] == 0
    assert max(data["series"]["link"]["down_octets_per_s"]) > 1000 and data["series"]["flight"]["t"] == []
    assert (folder / "board-command.txt").read_text().startswith("kestrel-flight ")


def test_a_board_behind_a_serial_line(tmp_path):
    with PacedLink(115200) as line:
        code, text, folder = _fly_board(tmp_path, line.flight_port, line.ground_port)
        _check(code, text, folder, lambda: line.counters.bytes_down)


class _TcpLine:
    """Two TCP listeners joined both ways, as a terminal server joins two serial lines."""

    def __init__(self):
        self.listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
        self.ports = [s.getsockname()[1] for s in self.listeners]
        self.down = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        flight, _ = self.listeners[0].accept()
        ground, _ = self.listeners[1].accept()

        def pump(src, dst, count):
            while data := src.recv(4096):
                if count:
                    self.down += len(data)
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)

        threading.Thread(target=pump, args=(ground, flight, False), daemon=True).start()
        pump(flight, ground, True)


@pytest.mark.slow
def test_a_board_behind_a_terminal_server(tmp_path):
    """socket:// ports on both ends: the bench connects before the board does; its connection waits in the
    relay's backlog until the board's is accepted, as a terminal server's second port would."""
    line = _TcpLine()
    code, text, folder = _fly_board(tmp_path, f"socket://127.0.0.1:{line.ports[0]}",
                                    f"socket://127.0.0.1:{line.ports[1]}")
    _check(code, text, folder, lambda: line.down)


def test_hardware_mode_refuses_half_a_setup_and_names_a_port_it_cannot_open(tmp_path):
    half = subprocess.run([sys.executable, "-m", "hil", "run", "nominal", "--flight-port", "/dev/ttyAMA0",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert half.returncode == 2 and "needs both --flight-port and --ground-port" in half.stderr
    missing = tmp_path / "no-such-port"
    bad = subprocess.run([sys.executable, "-m", "hil", "run", "nominal", "--flight-port", "/dev/ttyAMA0",
                          "--ground-port", str(missing), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and f"cannot open port '{missing}'" in bad.stdout and "Traceback" not in bad.stderr
