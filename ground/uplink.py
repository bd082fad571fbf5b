"""The ground's uplink: TC packets into TC frames (SDLS where an SA protects the VC) into CLTUs, through FOP-1.

`TcSender` owns one virtual channel's FOP-1. `send(packet)` goes out as an AD
frame once the FOP is active (`start_ad` initiates it from the CLCW the
downlink's OCF carries: Set V(S) to its report value, then the CLCW check),
or as a BD frame with `bypass`. The ground's SDLS sequence counters live in
its own state directory (never the flight program's), written before each IV
is used.
"""
from __future__ import annotations

from pathlib import Path

from kestrel.link.cltu import encode_cltu
from kestrel.link.config import tc_frame_layout
from kestrel.link.cop1 import Clcw
from kestrel.link.sdls import OVERHEAD, associations_from_config
from kestrel.link.tcframe import MAX_FRAME_LENGTH, PRIMARY_HEADER_LENGTH, FrameType, TcFrame

from .fop import Fop1, FopState


class UplinkSetupError(ValueError):
    """The uplink cannot send as configured (an SA without key or counter, a packet too long)."""


class TcSender:
    def __init__(self, link, uplink, write, counter_dir: Path, clock):
        self.layout = tc_frame_layout(link, uplink)
        self.vcid = uplink.command_vcid
        self.randomize = uplink.randomize
        associations, problems = associations_from_config(uplink, counter_dir=counter_dir)
        self.sa = next((sa for sa in associations.by_spi.values() if sa.vcid == self.vcid), None)
        if self.sa is not None and not self.sa.operational:
            hint = (f" (a first counter: python -m kestrel.link.sdls provision {counter_dir} {self.sa.spi})"
                    if "missing" in self.sa.problem else "")
            raise UplinkSetupError(f"SA {self.sa.spi} cannot send: {self.sa.problem}{hint}")
        self._write = write
        self.fop = Fop1(self.vcid, self.build, write, window=uplink.fop_window, t1_initial_s=uplink.fop_timer_s,
                        transmission_limit=uplink.fop_transmission_limit, clock=clock)
        self.clcw_seen: Clcw | None = None

    @property
    def max_packet(self) -> int:
        return (MAX_FRAME_LENGTH - self.layout.overhead(FrameType.AD)
                - (OVERHEAD if self.sa is not None else 0))

    def build(self, frame_type: FrameType, sequence_number: int, data: bytes) -> bytes:
        """One frame as a CLTU: protected by the VC's SA if it has one, randomized if the link is."""
        if self.sa is not None:
            draft = TcFrame(self.vcid, sequence_number, bytes(len(data) + OVERHEAD), frame_type).pack(self.layout)
            segment = draft[PRIMARY_HEADER_LENGTH:PRIMARY_HEADER_LENGTH + 1] if (
                self.layout.segment_header and frame_type != FrameType.BC) else b""
            data = self.sa.protect(draft[:PRIMARY_HEADER_LENGTH], segment, data)
        frame = TcFrame(self.vcid, sequence_number, data, frame_type).pack(self.layout)
        return encode_cltu(frame, self.randomize)

    def clcw(self, clcw: Clcw) -> None:
        if clcw.virtual_channel_id != self.vcid:
            return
        self.clcw_seen = clcw
        self.fop.clcw(clcw)

    def start_ad(self) -> bool:
        """From the latest CLCW: Set V(S) to its V(R), initiate with the CLCW check; False until one came."""
        if self.fop.state != FopState.INITIAL:
            return True
        if self.clcw_seen is None:
            return False
        self.fop.set_vs(self.clcw_seen.report_value)
        if self.clcw_seen.lockout:
            self.fop.initiate_with_unlock()
            return True
        self.fop.initiate(clcw_check=True)
        return True

    def check_size(self, packet: bytes) -> None:
        if len(packet) > self.max_packet:
            raise UplinkSetupError(f"a TC packet of {len(packet)} octets does not fit a TC frame here "
                                   f"({self.max_packet} at most)")
