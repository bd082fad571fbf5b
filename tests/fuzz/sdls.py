"""SDLS processing (355.0-B-2) on the flight's uplink path, with real AES-256 keys and real SAs.

Two SAs as the flight loads them from its configuration (key files of mode 600, counter files through
associations_from_config): SPI 5 authenticated encryption on VC 0, SPI 6 authentication only on VC 1;
SPI 7 on VC 2 is configured with no counter, so it stays non-operational; VC 3 is in use and clear.
Keys are drawn from os.urandom when the harness starts (keys are never in the repository), so an input
that breaks the property reproduces with any key. Each input starts every flight SA at the same
high-water mark and a fresh FARM, so it reproduces alone.

Inputs are frames protected by the ground's SecurityAssociation.protect (the same code the ground sends
with) under a drawn SPI and sequence number (fresh, replayed, far beyond the window), 1..3 per input,
some repeated, then bit flips aimed at a region (authenticated header bits, the others, segment header,
SPI, IV, data, MAC, FECF) and octet mutations, the FECF recomputed on most. The property: only
FrameRejected leaves UplinkPath.cltu; a high-water mark moves only to the IV of a frame whose
authenticated octets are as the ground protected them (any flip there leaves every window unchanged);
a frame as protected, fresh and within the window, of its own SA, is accepted and gives back its packet;
pristine frames refused for their SPI or sequence number are refused with that reason.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path

from flight.farm import FarmState
from flight.uplink import UplinkPath
from kestrel.link.cltu import FILL, randomize
from kestrel.link.config import LinkConfig, SecurityAssociationConfig, UplinkConfig
from kestrel.link.errors import FrameRejected, Rejection
from kestrel.link.sdls import (HEADER_LENGTH, MAC_LENGTH, PRIMARY_HEADER_MASK, SecurityAssociation,
                               associations_from_config, write_counter)
from kestrel.link.tcframe import FrameType, TcFrame, TcFrameLayout
from kestrel.link.telecommand import PusTc

from .common import Draw, PropertyViolation, mutate
from .tcframe import fix_fecf

LINK = LinkConfig()
BASE = 1000                  # every flight SA's high-water mark at the start of an input
WINDOW = 64                  # uplink.replay_window, small so that far-future numbers are easy to draw
SAS = ((5, 0, "authenticated_encryption"), (6, 1, "authentication"), (7, 2, "authenticated_encryption"))
NON_OPERATIONAL = 7
CLEAR_VC = 3
REGIONS = ("header_vcid", "header_other", "segment", "spi", "iv", "data", "mac", "fecf")


class Harness:
    name = "sdls"

    def __init__(self):
        shm = Path("/dev/shm")
        # tmpfs when there is one: each accepted frame fsyncs its counter, and a disk would set the pace.
        self.directory = Path(tempfile.mkdtemp(prefix="kestrel-fuzz-sdls-", dir=shm if shm.is_dir() else None))
        # Removed on close(), or when the harness is collected or the interpreter exits (it holds keys).
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.directory, True)
        flight = self.directory / "flight"
        flight.mkdir()
        self.keys = {}
        configs = []
        for spi, vcid, mode in SAS:
            self.keys[spi] = os.urandom(32)
            path = self.directory / f"sa-{spi}.key"
            path.write_bytes(self.keys[spi])
            path.chmod(0o600)
            if spi != NON_OPERATIONAL:
                write_counter(flight, spi, BASE)
            configs.append(SecurityAssociationConfig(spi=spi, vcid=vcid, mode=mode, key_file=str(path)))
        self.uplinks = {seg: UplinkConfig(virtual_channels=(0, 1, 2, CLEAR_VC), counter_dir=str(flight),
                                          segment_header=seg, replay_window=WINDOW,
                                          security_associations=tuple(configs)) for seg in (False, True)}
        self.associations = {}
        for seg, uplink in self.uplinks.items():
            associations, problems = associations_from_config(uplink)
            if [sa.spi for sa in associations.by_spi.values() if not sa.operational] != [NON_OPERATIONAL]:
                raise RuntimeError(f"the harness's SAs did not load as intended: {problems}")
            self.associations[seg] = associations
        # The ground's side of each SA: the same key and mode, no counter file (the harness sets its number).
        self.ground = {spi: SecurityAssociation(spi, vcid, self.keys[spi], mode) for spi, vcid, mode in SAS}
        self.tc = PusTc(UplinkConfig().command_apid, 17, 1, b"", 7)
        self.tc_octets = self.tc.pack()

    def close(self) -> None:
        self._cleanup()

    def one_input(self, data: bytes) -> None:
        draw = Draw(data)
        segment = draw.bool()
        uplink, associations = self.uplinks[segment], self.associations[segment]
        for sa in associations.by_spi.values():
            sa.sequence = BASE
        layout = TcFrameLayout(LINK.spacecraft_id, frozenset(uplink.virtual_channels), segment)
        path = UplinkPath(LINK, uplink, associations, clock=lambda: 0.0)
        sent = []
        for _ in range(1 + draw.int(3)):
            if sent and draw.chance(1, 4):
                # The same octets again: refused as a replay if they were taken; a frame refused as too far
                # ahead may be taken now that the window has come closer (it was never taken before).
                self._receive(path, associations, *sent[draw.int(len(sent))])
                continue
            frame, intent = self._protected_frame(draw, layout, path)
            sent.append((frame, intent))
            self._receive(path, associations, frame, intent)

    def _protected_frame(self, draw: Draw, layout: TcFrameLayout, path: UplinkPath):
        vcid = draw.choice((0, 0, 1, 1, 2, CLEAR_VC))
        own = {v: s for s, v, _ in SAS}.get(vcid)
        spi = own if own is not None and draw.chance(3, 4) else draw.choice((5, 6, 7, 0, 0xFFFF, draw.int(0x10000)))
        # Sequence numbers: the next ones, a replay, the window's far edge, beyond it, anything at all.
        kind = draw.int(8)
        sequence = {0: BASE - draw.int(4), 1: BASE + WINDOW, 2: BASE + WINDOW + 1 + draw.int(1 << 20),
                    3: draw.int(1 << 96)}.get(kind, BASE + 1 + draw.int(4))
        frame_type = draw.choice((FrameType.BD, FrameType.BD, FrameType.AD, FrameType.BC))
        body = b"\x00" if frame_type == FrameType.BC else self.tc_octets   # BC: Unlock
        n_s = path.farms[vcid].vr if draw.chance(3, 4) else draw.int(256)
        seg = b"\xc0" if layout.segment_header and frame_type != FrameType.BC else b""
        if spi in self.ground and vcid != CLEAR_VC and not draw.chance(1, 16):
            ground = self.ground[spi]
            ground.sequence = max(sequence - 1, 0)      # protect takes the next number
            # Only the VCID of the primary header is authenticated (PRIMARY_HEADER_MASK): it is all protect needs.
            field = ground.protect(bytes([0, 0, vcid << 2, 0, 0]), seg, body)
            iv = int.from_bytes(field[2:HEADER_LENGTH], "big")
        else:
            field, iv = body, None       # clear, or under an SPI whose key nobody has
        frame = TcFrame(vcid, n_s, field, frame_type).pack(layout)
        raw = bytearray(frame)
        intent = dict(vcid=vcid, spi=spi, own=own, iv=iv, original=frame, segment=bool(seg), body=body,
                      frame_type=frame_type, farm_takes=frame_type != FrameType.AD or (
                          n_s == path.farms[vcid].vr and path.farms[vcid].state == FarmState.OPEN))
        if draw.chance(1, 2):
            self._flip(raw, draw.choice(REGIONS), bool(seg), draw)
        if draw.chance(1, 4):
            mutate(raw, draw, 2)
        if draw.chance(7, 8):
            fix_fecf(raw)
        return bytes(raw), intent

    @staticmethod
    def _flip(raw: bytearray, region: str, segment: bool, draw: Draw) -> None:
        start = 5 + segment
        spans = {"header_vcid": (2, 3), "header_other": (0, 5), "segment": (5, start), "spi": (start, start + 2),
                 "iv": (start + 2, start + HEADER_LENGTH), "data": (start + HEADER_LENGTH, len(raw) - 2 - MAC_LENGTH),
                 "mac": (len(raw) - 2 - MAC_LENGTH, len(raw) - 2), "fecf": (len(raw) - 2, len(raw))}
        low, high = spans[region]
        if not 0 <= low < high <= len(raw):
            return                  # a clear or cut frame has no such region
        at = low + draw.int(high - low)
        bits = PRIMARY_HEADER_MASK[at] if region == "header_vcid" else 0xFF
        if region == "header_other":
            bits = ~PRIMARY_HEADER_MASK[at] & 0xFF
        choices = [b for b in range(8) if bits >> b & 1]
        if choices:
            raw[at] ^= 1 << draw.choice(choices)

    @staticmethod
    def _authentic(sent: bytes, original: bytes) -> bool:
        """The authenticated octets (the header's VCID bits, segment header, SPI, IV, data, MAC) as protected."""
        if len(sent) != len(original):
            return False
        for i, (a, b) in enumerate(zip(sent, original)):
            if a == b or i >= len(sent) - 2:
                continue
            if i >= 5 or (a ^ b) & PRIMARY_HEADER_MASK[i]:
                return False
        return True

    def _receive(self, path: UplinkPath, associations, frame: bytes, intent) -> None:
        before = {spi: sa.sequence for spi, sa in associations.by_spi.items()}
        coded = randomize(frame) if path.randomized else frame
        try:
            got = path.cltu(coded + bytes([FILL]) * (-len(frame) % 7))
            refusal = None
        except FrameRejected as exc:
            if not isinstance(exc.reason, Rejection):
                raise PropertyViolation(f"FrameRejected with reason {exc.reason!r}") from exc
            got, refusal = None, exc
        after = {spi: sa.sequence for spi, sa in associations.by_spi.items()}
        moved = {spi for spi in before if before[spi] != after[spi]}
        authentic = self._authentic(frame, intent["original"])
        if moved:
            # Only up, only its own SA's, only to its IV, only for authentic octets (so never twice: the
            # second time the IV is not beyond the mark).
            if (len(moved) > 1 or not authentic or moved != {intent["spi"]} or after[intent["spi"]] != intent["iv"]
                    or after[intent["spi"]] <= before[intent["spi"]]):
                raise PropertyViolation(f"windows moved {before} -> {after} by a frame of SPI {intent['spi']}, IV "
                                        f"{intent['iv']}, authentic {authentic}")
        pristine = frame == intent["original"]
        # Fresh: beyond the high-water mark as it stood, within the window, of its own operational SA.
        spi, own, iv = intent["spi"], intent["own"], intent["iv"]
        fresh = (iv is not None and spi == own and spi != NON_OPERATIONAL
                 and before[spi] < iv <= before[spi] + WINDOW)
        if pristine and fresh and intent["farm_takes"]:
            if refusal is not None:
                raise PropertyViolation(f"a fresh frame of SA {intent['spi']} refused: {refusal}")
            expected = [] if intent["frame_type"] == FrameType.BC else [self.tc]
            if got != expected:
                raise PropertyViolation(f"the path gave {got}, the frame carried {expected}")
        elif pristine and intent["iv"] is not None and intent["vcid"] != CLEAR_VC and refusal is not None:
            want = (Rejection.SPI_OTHER_VC if spi != own else Rejection.SA_NOT_OPERATIONAL if spi == NON_OPERATIONAL
                    else Rejection.REPLAY if not fresh else None)
            if want is not None and refusal.reason != want:
                raise PropertyViolation(f"a frame of SPI {spi} on VC {intent['vcid']}, IV {intent['iv']}: refused "
                                        f"for {refusal.reason.value}, expected {want.value}")
        elif not authentic and intent["vcid"] != CLEAR_VC and refusal is None and intent["iv"] is not None:
            # Reaching here means no window moved; a tampered protected frame must not have been taken either.
            raise PropertyViolation(f"a tampered frame of SPI {intent['spi']} accepted: {got}")
