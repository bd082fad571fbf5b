"""The uplink path end to end: the ground's TcSender (FOP-1, SDLS, TC frames, CLTUs) into the flight's
CommandReceiver (CLTU, frame, SDLS, FARM-1, packets), adversarial inputs each refused with its reason,
hypothesis fuzzing that only FrameRejected leaves UplinkPath, and the real programs over the bench's
paced serial link with the CLCW in the TM OCF and SDLS on."""
import dataclasses
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flight.farm import FarmState
from flight.uplink import CommandReceiver, UplinkPath
from ground.uplink import TcSender, UplinkSetupError
from kestrel.link.cltu import encode_cltu
from kestrel.link.config import LinkConfig, SecurityAssociationConfig, UplinkConfig, tc_frame_layout
from kestrel.link.crc import crc16_ccitt
from kestrel.link.errors import FrameRejected, Rejection
from kestrel.link.sdls import associations_from_config, write_counter
from kestrel.link.tcframe import FrameType, TcFrame
from kestrel.link.telecommand import PusTc

LINK = LinkConfig()
KEY = bytes(range(32))
TC = PusTc(50, 17, 1, b"", 1)


def key_file(tmp_path, name="k.key", key=KEY):
    path = tmp_path / name
    path.write_bytes(key)
    path.chmod(0o600)
    return str(path)


def secured(tmp_path, vcid=0, mode="authenticated_encryption", **kw) -> UplinkConfig:
    (tmp_path / "flight").mkdir(exist_ok=True)
    (tmp_path / "ground").mkdir(exist_ok=True)
    for side in ("flight", "ground"):
        if not (tmp_path / side / "sa-5.seq").exists():
            write_counter(tmp_path / side, 5, 0)
    return UplinkConfig(virtual_channels=(0, 1), counter_dir=str(tmp_path / "flight"), security_associations=(
        SecurityAssociationConfig(spi=5, vcid=vcid, mode=mode, key_file=key_file(tmp_path)),), **kw)


class Bench:
    """A ground TcSender writing straight into a flight CommandReceiver; CLCWs fed back by hand."""

    def __init__(self, uplink: UplinkConfig, tmp_path=None, ground_uplink=None, depth=64):
        from kestrel.link.sdls import associations_from_config
        self.now = 0.0
        self.wire: list[bytes] = []
        associations, self.problems = associations_from_config(uplink)
        self.receiver = CommandReceiver(lambda: None, lambda: self.now, depth, path_factory=lambda room: UplinkPath(
            LINK, uplink, associations, room, lambda: self.now))
        self.sender = TcSender(LINK, ground_uplink or uplink, self.wire.append,
                               (tmp_path / "ground") if tmp_path else None, lambda: self.now)

    @property
    def farm(self):
        return self.receiver.path.farms[0]

    def deliver(self, *extra: bytes) -> list[PusTc]:
        for cltu in self.wire + list(extra):
            self.receiver.feed(cltu)
        self.wire.clear()
        self.sender.clcw(self.farm.clcw())
        return self.receiver.take()

    def rejections(self):
        return dict(self.receiver.counters.rejections)


def test_clear_bd_and_ad_frames_accepted_without_keys():
    bench = Bench(UplinkConfig())
    assert not bench.receiver.path.authenticated
    bench.sender.fop.transmit_bd(TC.pack())
    assert bench.deliver() == [TC]
    bench.sender.start_ad()
    bench.deliver()
    for n in range(3):
        tc = dataclasses.replace(TC, sequence_count=n)
        assert bench.sender.fop.transmit_ad(tc.pack()) == n
        assert bench.deliver() == [tc]
    assert bench.farm.vr == 3 and bench.rejections() == {}


@pytest.mark.parametrize("mode", ["authenticated_encryption", "authentication"])
def test_sdls_protected_vc_accepts_protected_and_rejects_clear(tmp_path, mode):
    uplink = secured(tmp_path, mode=mode)
    bench = Bench(uplink, tmp_path)
    assert bench.receiver.path.authenticated and bench.problems == []
    bench.sender.fop.transmit_bd(TC.pack())
    assert bench.deliver() == [TC]
    # The same frame in the clear, as a bench without keys would send it: refused.
    clear = Bench(UplinkConfig(virtual_channels=(0, 1)))
    clear.sender.fop.transmit_bd(TC.pack())
    assert bench.deliver(*clear.wire) == []
    assert set(bench.rejections()) <= {Rejection.SPI_UNKNOWN, Rejection.SDLS_TRUNCATED}
    # A replay of the protected CLTU: refused, the window unchanged.
    bench.sender.fop.transmit_bd(TC.pack())
    protected = list(bench.wire)
    assert bench.deliver() == [TC]
    assert bench.deliver(*protected) == [] and bench.rejections()[Rejection.REPLAY] == 1
    # VC 1 is not protected: clear frames pass there.
    frame = TcFrame(1, 0, TC.pack(), FrameType.BD).pack(tc_frame_layout(LINK, uplink))
    assert bench.deliver(encode_cltu(frame, True)) == [TC]


def test_missing_key_or_counter_keeps_the_sa_non_operational(tmp_path):
    uplink = secured(tmp_path)
    (tmp_path / "flight" / "sa-5.seq").unlink()
    bench = Bench(uplink, tmp_path)
    assert bench.problems and "missing" in bench.problems[0]
    bench.sender.fop.transmit_bd(TC.pack())
    assert bench.deliver() == [] and bench.rejections() == {Rejection.SA_NOT_OPERATIONAL: 1}
    key = tmp_path / "k.key"
    key.chmod(0o644)
    _, problems = associations_from_config(uplink)
    assert "chmod 600" in problems[0]
    with pytest.raises(UplinkSetupError, match="chmod 600"):        # nor will the ground send with it
        TcSender(LINK, uplink, print, tmp_path / "ground", time.monotonic)


def frame_cltu(uplink, raw_frame: bytes) -> bytes:
    return encode_cltu(raw_frame, uplink.randomize)


def hand_frame(uplink, data, version=0, spare=0, scid=42, vcid=0, bypass=1, control=0, seq=0, length=None,
               crc_ok=True) -> bytes:
    length = length if length is not None else 5 + len(data) + 2
    word = (version << 38 | bypass << 37 | control << 36 | spare << 34 | scid << 24 | vcid << 18
            | ((length - 1) & 0x3FF) << 8 | seq)
    body = word.to_bytes(5, "big") + data
    return body + (crc16_ccitt(body) ^ (0 if crc_ok else 1)).to_bytes(2, "big")


@pytest.mark.parametrize("fields, reason", [
    (dict(version=1), Rejection.VERSION), (dict(spare=3), Rejection.SPARE), (dict(scid=41), Rejection.SPACECRAFT_ID),
    (dict(vcid=5), Rejection.VIRTUAL_CHANNEL), (dict(crc_ok=False), Rejection.FECF),
    (dict(bypass=0, control=1), Rejection.FRAME_TYPE), (dict(length=5), Rejection.FRAME_LENGTH),
    (dict(length=5 + 13 + 2 + 1), Rejection.FECF),           # a fill octet is read as the frame's last
    (dict(length=5 + 13 + 2 + 2), Rejection.FRAME_TRUNCATED),
    (dict(length=5 + 13 + 2 - 1), Rejection.FRAME_FILL),     # the CRC's last octet is read as fill
    (dict(length=1024), Rejection.FRAME_TRUNCATED), (dict(length=1), Rejection.FRAME_LENGTH),
])
def test_frame_checks_through_the_whole_path(fields, reason):
    uplink = UplinkConfig()
    bench = Bench(uplink)
    assert len(TC.pack()) == 13
    raw = hand_frame(uplink, TC.pack(), **fields)
    assert bench.deliver(frame_cltu(uplink, raw)) == []
    assert bench.rejections() == {reason: 1}


def test_bch_errors_one_corrected_two_rejected():
    uplink = UplinkConfig()
    bench = Bench(uplink)
    cltu = bytearray(frame_cltu(uplink, hand_frame(uplink, TC.pack())))
    cltu[2] ^= 0x01
    assert bench.deliver(bytes(cltu)) == [TC]
    assert bench.receiver.counters.bits_corrected == 1
    cltu[3] ^= 0x40
    assert bench.deliver(bytes(cltu)) == []
    assert bench.rejections() == {Rejection.BCH_UNCORRECTABLE: 1}


def test_fill_other_than_0x55_and_too_much_of_it():
    uplink = UplinkConfig(randomize=False)
    bench = Bench(uplink)
    raw = hand_frame(uplink, TC.pack() + b"")
    cltu = encode_cltu(raw + b"\x00")     # an octet after the frame that is not fill
    assert bench.deliver(cltu) == [] and bench.rejections() == {Rejection.FRAME_FILL: 1}
    cltu = encode_cltu(raw + b"\x55" * 7)
    assert bench.deliver(cltu) == [] and bench.rejections()[Rejection.FRAME_LENGTH] == 1


def test_packet_checks_after_the_farm():
    uplink = UplinkConfig()
    bench = Bench(uplink)
    bad = bytearray(TC.pack())
    bad[-1] ^= 1
    for data in (bytes(bad), TC.pack() + b"\x01\x02", TC.pack()[:-1] + b"", b"\x1f" * 12):
        assert bench.deliver(frame_cltu(uplink, hand_frame(uplink, data))) == []
    assert bench.rejections() == {Rejection.PACKET: 4}
    two = dataclasses.replace(TC, sequence_count=2)
    assert bench.deliver(frame_cltu(uplink, hand_frame(uplink, TC.pack() + two.pack()))) == [TC, two]


def test_farm_lockout_then_unlock_over_the_path():
    uplink = UplinkConfig()
    bench = Bench(uplink)
    assert bench.deliver(frame_cltu(uplink, hand_frame(uplink, TC.pack(), bypass=0, seq=100))) == []
    assert bench.farm.state == FarmState.LOCKOUT
    assert bench.rejections() == {Rejection.FARM_OUT_OF_WINDOW: 1}
    assert bench.deliver(frame_cltu(uplink, hand_frame(uplink, TC.pack(), bypass=0, seq=0))) == []
    assert bench.rejections()[Rejection.FARM_LOCKOUT] == 1
    # BD still passes in lockout; Unlock (a BC frame) opens the FARM again.
    assert bench.deliver(frame_cltu(uplink, hand_frame(uplink, TC.pack()))) == [TC]
    assert bench.deliver(frame_cltu(uplink, hand_frame(uplink, b"\x00", control=1))) == []
    assert bench.farm.state == FarmState.OPEN
    assert bench.deliver(frame_cltu(uplink, hand_frame(uplink, TC.pack(), bypass=0, seq=0))) == [TC]


def test_a_flood_of_clear_control_frames_is_rate_limited():
    uplink = UplinkConfig(control_frames_per_s=5)
    bench = Bench(uplink)
    unlock = frame_cltu(uplink, hand_frame(uplink, b"\x00", control=1))
    bench.deliver(*[unlock] * 50)
    assert bench.farm.farm_b_counter == 5 % 4 and bench.rejections() == {Rejection.CONTROL_RATE: 45}
    bench.now += 1.0
    bench.deliver(unlock)
    assert bench.rejections() == {Rejection.CONTROL_RATE: 45}


def test_a_full_queue_puts_the_farm_in_wait_and_fop_retransmits():
    bench = Bench(UplinkConfig(), depth=1)
    bench.deliver()                                   # the first CLCW
    bench.sender.start_ad()
    bench.deliver()                                   # FOP-1 active
    assert bench.sender.fop.transmit_ad(TC.pack()) == 0
    bench.receiver.feed(bench.wire.pop())
    assert bench.sender.fop.transmit_ad(TC.pack()) == 1
    bench.receiver.feed(bench.wire.pop())             # the queue holds one: FARM-1 waits
    assert bench.farm.state == FarmState.WAIT
    bench.sender.clcw(bench.farm.clcw())
    assert len(bench.receiver.take()) == 1           # the executive takes it: the buffer is released
    bench.sender.clcw(bench.farm.clcw())             # FOP-1 sees the wait gone and sends frame 1 again
    assert [tc.sequence_count for tc in bench.deliver()] == [1]
    assert bench.farm.vr == 2


def test_ground_and_flight_after_a_ground_restart_keep_sdls_sequence(tmp_path):
    uplink = secured(tmp_path)
    bench = Bench(uplink, tmp_path)
    bench.sender.fop.transmit_bd(TC.pack())
    assert bench.deliver() == [TC]
    # A new ground process (a new TcSender): its IV counter continues from its own file.
    again = TcSender(LINK, uplink, bench.wire.append, tmp_path / "ground", lambda: 0.0)
    again.fop.transmit_bd(TC.pack())
    assert bench.deliver() == [TC]


# --- fuzzing: only FrameRejected leaves the path ------------------------------------------------

def _fuzz_path(tmp_path, protected: bool) -> UplinkPath:
    from kestrel.link.sdls import associations_from_config
    uplink = secured(tmp_path, vcid=1) if protected else UplinkConfig(virtual_channels=(0, 1))
    associations, _ = associations_from_config(uplink)
    return UplinkPath(LINK, uplink, associations)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=80), st.booleans(), st.booleans(), st.integers(0, 2), st.booleans())
def test_fuzz_only_frame_rejected_escapes(tmp_path, body, fix_header, protected, frame_kind, randomized_input):
    """Structured inputs: a plausible header (our SCID, a VC in use, the length made right) and the CRC fixed
    up, so the fuzzing reaches SDLS, FARM-1 and the packet parser; or raw octets."""
    path = _fuzz_path(tmp_path, protected)
    raw = bytearray(body)
    if fix_header and len(raw) >= 5:
        bypass, control = [(0, 0), (1, 0), (1, 1)][frame_kind]
        total = len(raw) + 2
        word = bypass << 37 | control << 36 | 42 << 24 | (raw[2] & 1) << 18 | (total - 1) << 8 | raw[4]
        raw[:5] = word.to_bytes(5, "big")
    raw += crc16_ccitt(bytes(raw)).to_bytes(2, "big")
    data = encode_cltu(bytes(raw), True)[2:-8] if randomized_input and raw else bytes(raw)
    # The CLTU decoder's output: information octets only.
    data = b"".join(data[i:i + 7] for i in range(0, len(data), 8)) if randomized_input and raw else data
    try:
        path.cltu(data)
    except FrameRejected as exc:
        assert isinstance(exc.reason, Rejection)


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=60), max_size=6), st.data())
def test_fuzz_the_receiver_accounts_for_every_octet(tmp_path, pieces, data):
    uplink = UplinkConfig()
    receiver = CommandReceiver(lambda: None, path_factory=lambda room: UplinkPath(LINK, uplink, room=room))
    good = frame_cltu(uplink, hand_frame(uplink, TC.pack()))
    line = b"".join(p + (good if data.draw(st.booleans()) else b"") for p in pieces)
    at = 0
    while at < len(line):
        n = data.draw(st.integers(1, 50))
        receiver.feed(line[at:at + n])
        at += n
        c = receiver.cltus.counters
        assert c.octets_read == c.octets_in_cltus + c.octets_skipped + receiver.cltus.buffered
    receiver.flush()
    assert receiver.cltus.buffered == 0


# --- the real programs -----------------------------------------------------------------------------

def test_the_programs_command_through_fop_farm_and_sdls_over_the_paced_link(tmp_path):
    """kestrel-flight and kestrel-ground command as processes: CLTUs up, the CLCW in every TM frame's OCF,
    AD frames through FOP-1 and FARM-1, AES-256-GCM on VC 0; a ground with the wrong key is refused."""
    from hil.radio import PacedLink

    key = key_file(tmp_path)
    (tmp_path / "flight").mkdir()
    write_counter(tmp_path / "flight", 5, 0)
    (tmp_path / "state" / "sdls").mkdir(parents=True)
    write_counter(tmp_path / "state" / "sdls", 5, 0)        # the ground's own counter (the last IV it sent)
    config = tmp_path / "k.toml"
    config.write_text(f"""[link]\nocf = true\n[flight]\nhousekeeping_period_s = 0.5\n
[uplink]\ncounter_dir = '{tmp_path / "flight"}'\n
[[uplink.security_associations]]\nspi = 5\nvcid = 0\nkey_file = '{key}'\n""")
    with PacedLink(115200) as link:
        flight = subprocess.Popen([sys.executable, "-m", "flight", "--config", str(config), "--port",
                                   link.flight_port, "--source", "sim://clear?width=64&height=64&seed=2"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        try:
            def command(*args, state=tmp_path / "state", cfg=config, timeout="10"):
                return subprocess.run([sys.executable, "-m", "ground", "command", "--config", str(cfg), "--port",
                                       link.ground_port, "--out", str(state), "--timeout", timeout, *args],
                                      capture_output=True, text=True, timeout=60)
            for _ in range(3):
                ping = command("ping")
                assert ping.returncode == 0, ping.stdout + ping.stderr
                assert "AD frame on VC 0, SDLS SPI 5" in ping.stdout
            got = command("get-parameter", "detection.k_sigma")
            assert got.returncode == 0, got.stdout + got.stderr
            # The wrong key: the flight refuses every frame (MAC), so no report comes.
            wrong = tmp_path / "wrong"
            (wrong / "sdls").mkdir(parents=True)
            write_counter(wrong / "sdls", 5, 100)
            other = key_file(tmp_path, "other.key", bytes(32))
            cfg = tmp_path / "wrong.toml"
            cfg.write_text(config.read_text().replace(key, other))
            bad = command("ping", state=wrong, cfg=cfg, timeout="4")
            assert bad.returncode != 0
        finally:
            flight.terminate()
            out, err = flight.communicate(timeout=20)
    assert flight.returncode == 0, err
    assert "Traceback" not in err
    assert (tmp_path / "flight" / "sa-5.seq").exists()


def test_key_rotation_by_command_and_across_a_restart(tmp_path):
    """ST[08] rekey_sa through the executive's command handler: the SA takes key-3 from uplink.key_dir, the
    next protected frame verifies only with it, and a restarted executive keeps it."""
    from tests.test_commanding import handled
    from tests.test_flight_to_ground import small_config
    from kestrel import services

    keys = tmp_path / "keys"
    keys.mkdir()
    new_key = bytes(range(64, 96))
    key_file(keys, "key-3", new_key)
    uplink = dataclasses.replace(secured(tmp_path), key_dir=str(keys))
    config = dataclasses.replace(small_config(), uplink=uplink)
    rekey = services.perform_function("rekey_sa", spi=5, key=3).tc(50, 1)
    missing = services.perform_function("rekey_sa", spi=5, key=4).tc(50, 2)
    unknown = services.perform_function("rekey_sa", spi=6, key=3).tc(50, 3)
    executive, results, _ = handled(config, rekey, missing, unknown)
    assert results == [True, False, False]
    sa = executive.uplink.path.associations.by_spi[5]
    new_ground = dataclasses.replace(uplink, security_associations=(dataclasses.replace(
        uplink.security_associations[0], key_file=str(keys / "key-3")),))
    old_sender = TcSender(LINK, uplink, executive.uplink.feed, tmp_path / "ground", time.monotonic)
    old_sender.fop.transmit_bd(TC.pack())
    assert executive.uplink.take() == [] and executive.uplink.counters.rejections == {Rejection.MAC: 1}
    sender = TcSender(LINK, new_ground, executive.uplink.feed, tmp_path / "ground", time.monotonic)
    sender.fop.transmit_bd(TC.pack())
    assert executive.uplink.take() == [TC]
    executive.close()
    again, _, _ = handled(config)
    assert again.uplink.path.associations.by_spi[5].operational
    TcSender(LINK, new_ground, again.uplink.feed, tmp_path / "ground", time.monotonic).fop.transmit_bd(TC.pack())
    assert again.uplink.take() == [TC] and sa is not again.uplink.path.associations.by_spi[5]
    again.close()


def test_rejections_by_reason_and_the_clcw_reach_the_ground():
    """The executive's uplink housekeeping (structure 3) and the CLCW in the OCF, through the real downlink and
    the ground decoder: each rejection under its reason, FARM-1's V(R) in both."""
    import threading

    from flight.downlink import Downlink
    from flight.executive import Executive
    from ground.decoder import GroundDecoder
    from kestrel import products
    from tests.support import NullArchive
    from tests.test_flight_to_ground import CapturePort, small_config

    config = small_config(ocf=True)
    port = CapturePort()
    downlink = Downlink(config.link, port)
    executive = Executive(config, downlink, threading.Event())
    downlink.start()
    uplink = config.uplink
    good = [frame_cltu(uplink, hand_frame(uplink, TC.pack(), bypass=0, seq=n)) for n in range(3)]
    executive.uplink.feed(b"".join(good))
    executive.uplink.feed(frame_cltu(uplink, hand_frame(uplink, TC.pack(), scid=7)))
    executive.uplink.feed(frame_cltu(uplink, hand_frame(uplink, TC.pack(), crc_ok=False)))
    executive.uplink.feed(frame_cltu(uplink, hand_frame(uplink, TC.pack(), bypass=0, seq=1)))   # negative window
    executive.commanding()
    values = executive.uplink_housekeeping()
    assert downlink.stop(10)
    executive.close()
    assert values["spacecraft_id"] == 1 and values["fecf"] == 1 and values["farm_negative_window"] == 1
    assert values["frames_accepted"] == 3 and values["frames_rejected"] == 3 and values["farm_vr"] == 3
    assert values["authenticated"] == 0 and values["farm_state"] == 1
    clcws = []
    decoder = GroundDecoder(config, NullArchive())
    decoder.on_clcw = clcws.append
    decoder.feed(bytes(port.data))
    decoder.finish()
    assert decoder.uplink_housekeeping == {n: values[n] for n in products.UPLINK_HOUSEKEEPING_FIELDS}
    assert decoder.counters.ocf_not_clcw == 0
    assert clcws and clcws[-1].report_value == 3 and clcws[-1].virtual_channel_id == 0
