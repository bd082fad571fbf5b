"""The flight program's health: a sensor that stalls is seen from the health thread, reported, and the
program stops cleanly with EXIT_RESTART (75) for its service manager; sd_notify tells systemd (a real
unix datagram socket stands in for it) READY, WATCHDOG while all move, then STOPPING with the reason."""
import os
import socket
import subprocess
import sys
import time

import numpy as np

from kestrel.cli import EXIT_RESTART


def test_a_stalled_sensor_restarts_the_program_cleanly(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    np.save(frames / "frame_000000.npy", np.full((32, 32), 100, np.uint16))
    np.save(frames / "frame_000001.npy", np.full((32, 32), 100, np.uint16))
    os.mkfifo(frames / "frame_000002.npy")     # opening it for reading waits for a writer that never comes
    config = tmp_path / "k.toml"
    config.write_text("[health]\nperiod_s = 0.3\ngrace_s = 1.5\n[sensor]\nframe_rate_hz = 20\n")
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(str(tmp_path / "notify"))
    systemd.settimeout(10)
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "flight", "--config", str(config), "--port", "loop://",
                             "--frames", str(frames)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == EXIT_RESTART, result.stderr
    assert time.monotonic() - started < 20
    assert "Traceback" not in result.stderr
    assert "executive has shown no progress" in result.stderr and "stopping to be restarted" in result.stderr
    said = []
    systemd.settimeout(0.2)
    try:
        while True:
            said.append(systemd.recv(4096).decode())
    except socket.timeout:
        pass
    text = "\n".join(said)
    assert said[0].startswith("READY=1") and "WATCHDOG=1" in text
    assert "STOPPING=1" in said[-1] and "restarting: " in said[-1]
    # No watchdog once the stall was seen: systemd's backstop would fire if the clean restart failed.
    stalled = next(i for i, s in enumerate(said) if "STATUS=stalled: executive" in s)
    assert not any("WATCHDOG=1" in s for s in said[stalled:])
    assert any("STATUS=restarting: executive stalled" in s for s in said[stalled:])
