"""The three programs as a user runs them: help, bad arguments, bad configs, ports that do not open."""
import subprocess
import sys

import pytest

PROGRAMS = ["flight", "ground", "hil"]


def run(module, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("module", PROGRAMS)
def test_help(module):
    result = run(module, "--help")
    assert result.returncode == 0
    assert f"kestrel-{module}" in result.stdout and "--config" in result.stdout


@pytest.mark.parametrize("module", PROGRAMS)
def test_print_config_is_valid_toml(module):
    import tomllib

    result = run(module, "--print-config")
    assert result.returncode == 0
    assert tomllib.loads(result.stdout)["link"]["frame_length"] == 223


@pytest.mark.parametrize("module, args", [
    ("flight", ["--port", "loop://", "--max-frames", "x"]),
    ("ground", ["decode"]),
    ("ground", []),
    ("hil", []),
    ("hil", ["demo", "--duration", "-1"]),
])
def test_bad_arguments_exit_2_with_one_line(module, args):
    result = run(module, *args)
    assert result.returncode == 2
    assert "error:" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("module, extra", [("flight", ["--port", "loop://"]), ("ground", ["decode", "x", "--out", "y"]),
                                           ("hil", ["demo"])])
def test_bad_config_is_one_clear_line(tmp_path, module, extra):
    bad = tmp_path / "bad.toml"
    bad.write_text("[link]\nframe_length = 'long'\n")
    result = run(module, "--config", str(bad), *extra)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "link.frame_length must be an integer" in lines[0]


def test_flight_port_that_cannot_be_opened(tmp_path):
    result = run("flight", "--port", str(tmp_path / "no-such-tty"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot open port" in lines[0]


def test_ground_listen_port_that_cannot_be_opened(tmp_path):
    result = run("ground", "listen", "--port", "socket://127.0.0.1:1", "--out", str(tmp_path))
    assert result.returncode == 1 and "cannot open port" in result.stderr


def test_flight_over_loop_url(tmp_path):
    # loop:// is a real pyserial port whose buffer nobody drains here: without
    # imagery, 3 frames of output fit in it and the program ends cleanly.
    config = tmp_path / "k.toml"
    config.write_text("[imaging]\nchips_per_frame = 0\nquicklook_period_s = 0\n[link]\nbaud = 10000000\n")
    result = run("flight", "--config", str(config), "--port", "loop://", "--max-frames", "3")
    assert result.returncode == 0, result.stderr


def test_flight_with_unusable_classifier_weights_stops_at_start_with_one_line(tmp_path):
    weights = tmp_path / "w.kclf"
    weights.write_bytes(b"KCLF" + (9).to_bytes(2, "little") + bytes(40))
    config = tmp_path / "k.toml"
    config.write_text(f"[classifier]\nweights = {str(weights)!r}\n")
    result = run("flight", "--config", str(config), "--port", "loop://", "--max-frames", "3")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "weights format version 9, this program reads 1" in lines[0]


def test_flight_that_cannot_flush_says_so(tmp_path):
    import os

    config = tmp_path / "k.toml"
    config.write_text("[flight]\nflush_timeout_s = 1.0\n[link]\nbaud = 10000000\n")
    # A pty nobody reads: once its buffer is full, the writes do not return, so the flush cannot finish.
    master, slave = os.openpty()
    try:
        result = run("flight", "--config", str(config), "--port", os.ttyname(slave), "--max-frames", "2",
                     "--source", "sim://cloudy?width=512&height=512")
    finally:
        os.close(master)
        os.close(slave)
    assert result.returncode == 1
    assert "still queued" in result.stderr


def test_ground_decode_of_garbage_file(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 40 + b"\x1a\xcf\xfc\x1d" + bytes(300))
    result = run("ground", "decode", str(junk), "--out", str(tmp_path / "out"))
    assert result.returncode == 0
    assert "bytes read 10544" in result.stdout and "frames good 0" in result.stdout


def test_ground_decode_missing_file(tmp_path):
    result = run("ground", "decode", str(tmp_path / "none.bin"), "--out", str(tmp_path / "out"))
    assert result.returncode == 1 and "cannot read" in result.stderr


def test_hil_metrics_table_and_sweep():
    table = run("hil", "metrics", "table", "--frames", "20", "--size", "64")
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if line.startswith("| clear") or line.startswith("| cloudy")
            or line.startswith("| heavy")]
    assert len(rows) == 6
    sweep = run("hil", "metrics", "sweep", "--frames", "20", "--size", "64", "--kind", "heavy")
    assert sweep.returncode == 0, sweep.stderr
    assert sum(line.startswith("| ") and line[2].isdigit() for line in sweep.stdout.splitlines()) >= 5
    bad = run("hil", "metrics", "table", "--frames", "3")
    assert bad.returncode == 2 and "--frames must exceed" in bad.stderr


def test_an_internal_error_is_one_line_a_log_file_and_exit_70(tmp_path, monkeypatch, capsys):
    """run_program is the top of every program: a defect of ours never shows the user a traceback."""
    from kestrel.cli import EXIT_INTERNAL, run_program

    monkeypatch.setenv("KESTREL_CRASH_DIR", str(tmp_path))

    def broken(argv):
        raise RuntimeError("the sky fell")

    assert run_program("kestrel-test", broken, ["--x"]) == EXIT_INTERNAL == 70
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kestrel-test: internal error: RuntimeError: the sky fell (traceback in ")
    [log] = tmp_path.glob("kestrel-test-crash-*.log")
    text = log.read_text()
    assert "Traceback" in text and "the sky fell" in text and "--x" in text
    assert str(log) in err[0]


def test_an_interrupt_outside_a_pass_is_one_line_and_exit_130(capsys):
    from kestrel.cli import run_program

    def interrupted(argv):
        raise KeyboardInterrupt

    assert run_program("kestrel-test", interrupted, []) == 130
    assert capsys.readouterr().err.strip() == "kestrel-test: interrupted"


@pytest.mark.parametrize("program, args", [
    ("ground", ["listen", "--port", "loop://", "--out", "o", "--duration", "nan"]),
    ("ground", ["listen", "--port", "loop://", "--out", "o", "--duration", "-1"]),
    ("hil", ["demo", "--duration", "inf"]),
    ("hil", ["scene", "--count", "-3", "--out", "o"]),
    ("flight", ["--port", "loop://", "--max-frames", "ten"]),
])
def test_durations_and_counts_are_checked_on_the_command_line(tmp_path, program, args):
    result = subprocess.run([sys.executable, "-m", program, *args], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: argument" in result.stderr.strip().splitlines()[-1]
