"""SDLS (CCSDS 355.0-B-2) on TC frames: the YAMCS layout rebuilt here from PEERS.md with the
`cryptography` primitive directly, every refusal before decryption, tampering of every bit, anti-replay
across a reboot, counter files missing/truncated/corrupt, kill -9 during a counter write, and key files."""
import os
import signal
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kestrel.link.errors import FrameRejected, Rejection
from kestrel.link.sdls import (KeyFileError, Mode, SecurityAssociation, SecurityAssociations, counter_path,
                               load_key, read_counter, write_counter)

KEY = bytes(range(32))
HEADER = bytes.fromhex("002A040C07")      # SCID 42, VCID 1


def provisioned(tmp_path, spi=5, vcid=1, mode=Mode.AUTHENTICATED_ENCRYPTION, sequence=0, **kw):
    write_counter(tmp_path, spi, sequence)
    return SecurityAssociation(spi, vcid, KEY, mode, counter_dir=tmp_path, **kw)


def yamcs_field(spi: int, sequence: int, data: bytes, header=HEADER, key=KEY) -> bytes:
    """PEERS.md: SPI (2) + IV (12, the sequence counter), ciphertext, MAC (16); AAD = the primary header AND
    00 00 FC 00 00, then the SPI, then 12 zero octets."""
    iv = sequence.to_bytes(12, "big")
    aad = bytes(h & m for h, m in zip(header, bytes.fromhex("0000FC0000"))) + spi.to_bytes(2, "big") + bytes(12)
    return spi.to_bytes(2, "big") + iv + AESGCM(key).encrypt(iv, data, aad)


def reason(call) -> Rejection:
    with pytest.raises(FrameRejected) as info:
        call()
    return info.value.reason


def test_opens_the_yamcs_layout_and_protect_builds_it(tmp_path):
    sa = provisioned(tmp_path)
    assert sa.open(HEADER, b"", yamcs_field(5, 1, b"command")) == b"command"
    assert read_counter(tmp_path, 5) == 1
    ground = SecurityAssociation(5, 1, KEY, counter_dir=tmp_path / "ground")
    (tmp_path / "ground").mkdir()
    write_counter(tmp_path / "ground", 5, 1)
    ground = SecurityAssociation(5, 1, KEY, counter_dir=tmp_path / "ground")
    assert ground.protect(HEADER, b"", b"next") == yamcs_field(5, 2, b"next")
    assert sa.open(HEADER, b"", yamcs_field(5, 2, b"next")) == b"next"


def test_only_the_vcid_of_the_header_is_authenticated(tmp_path):
    sa = provisioned(tmp_path)
    field = yamcs_field(5, 1, b"command")
    # N(S), length, SCID bits differ: still the same AAD (YAMCS's mask)
    assert sa.open(bytes.fromhex("302A040CFF"), b"", field) == b"command"
    for bit in range(16, 22):        # the VCID's six bits (after 2+1+1+2+10)
        header = (int.from_bytes(HEADER, "big") ^ (1 << (39 - bit))).to_bytes(5, "big")
        assert reason(lambda: sa.open(header, b"", yamcs_field(5, 2, b"x"))) == Rejection.MAC
        assert sa.sequence == 1


@pytest.mark.parametrize("mode", list(Mode))
def test_every_flipped_bit_is_rejected_and_the_window_unchanged(tmp_path, mode):
    sa = provisioned(tmp_path, mode=mode)
    ground = SecurityAssociation(5, 1, KEY, mode)
    field = ground.protect(HEADER, b"", b"set-parameter x 1")
    for bit in range(16, 8 * len(field)):           # IV, data, MAC (the SPI: below)
        broken = bytearray(field)
        broken[bit >> 3] ^= 0x80 >> (bit & 7)
        assert reason(lambda: sa.open(HEADER, b"", bytes(broken))) in (Rejection.MAC, Rejection.REPLAY)
        assert sa.sequence == 0 and read_counter(tmp_path, 5) == 0
    assert sa.open(HEADER, b"", field) == b"set-parameter x 1"
    if mode == Mode.AUTHENTICATION:
        assert b"set-parameter x 1" in field


def test_spi_checks_come_before_decryption(tmp_path):
    sas = SecurityAssociations([provisioned(tmp_path, spi=5, vcid=1)])
    write_counter(tmp_path, 6, 0)
    sas = SecurityAssociations([SecurityAssociation(5, 1, KEY, counter_dir=tmp_path),
                                SecurityAssociation(6, 2, KEY, counter_dir=tmp_path),
                                SecurityAssociation(7, 1, KEY, counter_dir=tmp_path)])   # no counter file
    assert reason(lambda: sas.open(1, HEADER, b"", yamcs_field(9, 1, b"x"))) == Rejection.SPI_UNKNOWN
    assert reason(lambda: sas.open(1, HEADER, b"", yamcs_field(0, 1, b"x"))) == Rejection.SPI_UNKNOWN
    assert reason(lambda: sas.open(1, HEADER, b"", yamcs_field(0xFFFF, 1, b"x"))) == Rejection.SPI_UNKNOWN
    assert reason(lambda: sas.open(1, HEADER, b"", yamcs_field(6, 1, b"x"))) == Rejection.SPI_OTHER_VC
    assert reason(lambda: sas.open(1, HEADER, b"", yamcs_field(7, 1, b"x"))) == Rejection.SA_NOT_OPERATIONAL
    assert reason(lambda: sas.open(1, HEADER, b"", b"\x00\x05" + bytes(20))) == Rejection.SDLS_TRUNCATED
    assert reason(lambda: sas.open(1, HEADER, b"", b"clear command")) == Rejection.SDLS_TRUNCATED
    # A clear frame long enough: its first octets read as an SPI no SA has.
    assert reason(lambda: sas.open(1, HEADER, b"", b"\x18\x32" + bytes(40))) == Rejection.SPI_UNKNOWN
    assert sas.open(3, HEADER, b"", b"clear on an unprotected VC") == b"clear on an unprotected VC"


def test_forged_far_future_then_genuine_next(tmp_path):
    sa = provisioned(tmp_path)
    forged = yamcs_field(5, 1 << 90, b"evil", key=bytes(32))
    assert reason(lambda: sa.open(HEADER, b"", forged)) == Rejection.REPLAY       # beyond the window
    forged = yamcs_field(5, 1000, b"evil", key=bytes(32))
    assert reason(lambda: sa.open(HEADER, b"", forged)) == Rejection.MAC
    assert sa.open(HEADER, b"", yamcs_field(5, 1, b"genuine")) == b"genuine"


def test_replay_rejected_also_after_a_reboot(tmp_path):
    sa = provisioned(tmp_path)
    first, second = yamcs_field(5, 1, b"a"), yamcs_field(5, 2, b"b")
    sa.open(HEADER, b"", first)
    sa.open(HEADER, b"", second)
    assert reason(lambda: sa.open(HEADER, b"", first)) == Rejection.REPLAY
    rebooted = SecurityAssociation(5, 1, KEY, counter_dir=tmp_path)
    assert rebooted.operational and rebooted.sequence == 2
    for old in (first, second):
        assert reason(lambda: rebooted.open(HEADER, b"", old)) == Rejection.REPLAY
    assert rebooted.open(HEADER, b"", yamcs_field(5, 7, b"c")) == b"c"


@pytest.mark.parametrize("damage", ["missing", "truncated", "empty", "crc", "other_spi", "extra"])
def test_counter_file_damage_leaves_the_sa_non_operational(tmp_path, damage):
    write_counter(tmp_path, 5, 3)
    path = counter_path(tmp_path, 5)
    raw = path.read_bytes()
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(raw[:-3])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "crc":
        path.write_bytes(raw[:10] + bytes([raw[10] ^ 1]) + raw[11:])
    elif damage == "other_spi":
        write_counter(tmp_path, 6, 3)
        counter_path(tmp_path, 6).replace(path)
    elif damage == "extra":
        path.write_bytes(raw + b"\n")
    sa = SecurityAssociation(5, 1, KEY, counter_dir=tmp_path)
    assert not sa.operational and sa.problem
    assert reason(lambda: sa.open(HEADER, b"", yamcs_field(5, 4, b"x"))) == Rejection.SA_NOT_OPERATIONAL
    with pytest.raises(ValueError):
        sa.next_sequence()


def test_kill_during_counter_writes_leaves_old_or_new(tmp_path):
    """A child process writes rising counters as fast as it can; kill -9 it at random moments: the file
    always reads as a valid counter no older than the last one it had finished before."""
    write_counter(tmp_path, 5, 0)
    script = ("import sys\nfrom kestrel.link.sdls import write_counter\n"
              "n = 0\nwhile True:\n    n += 1\n    write_counter(sys.argv[1], 5, n)\n")
    seen = 0
    for attempt in range(8):
        child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)])
        deadline = time.monotonic() + 60           # a loaded machine may take seconds to start Python
        while read_counter(tmp_path, 5) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05 * attempt)                 # then mid-stream, at a different moment each time
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        value = read_counter(tmp_path, 5)        # raises if torn
        assert value >= 1
        seen = max(seen, value)
        write_counter(tmp_path, 5, 0)
    assert seen > 0


def test_key_files(tmp_path):
    path = tmp_path / "sa5.key"
    path.write_bytes(KEY)
    path.chmod(0o600)
    assert load_key(path) == KEY
    path.write_text(KEY.hex() + "\n")
    assert load_key(path) == KEY
    for mode in (0o640, 0o604, 0o644, 0o660):
        path.chmod(mode)
        with pytest.raises(KeyFileError, match="chmod 600"):
            load_key(path)
    path.chmod(0o600)
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(KeyFileError):
        load_key(link)
    for bad in (b"short", KEY + b"x", b"zz" * 32):
        path.write_bytes(bad)
        with pytest.raises(KeyFileError):
            load_key(path)
    with pytest.raises(KeyFileError):
        load_key(tmp_path / "absent.key")


def test_rekey(tmp_path):
    sa = provisioned(tmp_path)
    new = bytes(range(100, 132))
    sa.rekey(new)
    assert reason(lambda: sa.open(HEADER, b"", yamcs_field(5, 1, b"x"))) == Rejection.MAC
    assert sa.open(HEADER, b"", yamcs_field(5, 1, b"x", key=new)) == b"x"


def test_spi_and_key_ranges():
    for spi in (0, 0xFFFF, -1, 1 << 16):
        with pytest.raises(ValueError):
            SecurityAssociation(spi, 0, KEY)
    with pytest.raises(ValueError):
        SecurityAssociation(1, 0, KEY[:16])
    with pytest.raises(ValueError):
        SecurityAssociations([SecurityAssociation(1, 0, KEY), SecurityAssociation(1, 1, KEY)])
