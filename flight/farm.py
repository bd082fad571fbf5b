"""FARM-1, CCSDS 232.1-B-2 section 6: the receiving end of COP-1, one per virtual channel.

The state table (232.1-B-2 table 6-1), all arithmetic modulo 256, with the
sliding window W split into a positive window PW = W/2 (V(R) .. V(R)+PW-1)
and a negative window NW = W/2 (V(R)-NW .. V(R)-1); the rest is the lockout
area:

  event                                   S1 Open              S2 Wait              S3 Lockout
  E1  AD, N(S) = V(R), room               accept, V(R)+1, R=0  --                   discard
  E2  AD, N(S) = V(R), no room            discard, R=1, W=1,S2 discard              discard
  E3  AD, N(S) in positive window         discard, R=1         discard              discard
  E4  AD, N(S) in negative window         discard              discard              discard
  E5  AD, N(S) in lockout area            discard, L=1, S3     discard, L=1, S3     discard
  E6  BD                                  accept, B+1          accept, B+1          accept, B+1
  E7  BC Unlock                           B+1, R=0             B+1, R=0, W=0, S1    B+1, R=0, W=0, L=0, S1
  E8  BC Set V(R)                         B+1, R=0, V(R)=v     B+1, R=0, W=0, V(R)=v, S1   B+1 (no change)
  E9  BC, any other command               discard              discard              discard
  E10 buffer release                      --                   W=0, S1              W=0

(R: retransmit flag, W: wait flag, L: lockout flag, B: the FARM-B counter, two bits.)

`frame()` returns whether the frame's data goes on; a discard is a
FrameRejected with its reason, so the receiver counts it like any other.
"""
from __future__ import annotations

import enum
from typing import Final

from kestrel.link.cop1 import MODULUS, SET_VR_PREFIX, UNLOCK, Clcw, ahead
from kestrel.link.errors import FrameRejected, Rejection
from kestrel.link.tcframe import FrameType

FARM_B_MODULUS: Final = 4


class FarmState(enum.IntEnum):
    OPEN = 1
    WAIT = 2
    LOCKOUT = 3


def check_window(width: int) -> int:
    """The FARM sliding window W: even, 2..254 (232.1-B-2 6.1.8.2)."""
    if not (2 <= width <= MODULUS - 2 and width % 2 == 0):
        raise ValueError(f"FARM window W must be even and 2..254, got {width}")
    return width


class Farm1:
    """One virtual channel's FARM-1. `room()`: whether the buffer behind it can take a frame's data."""

    def __init__(self, virtual_channel_id: int, window: int = 10, room=lambda: True):
        self.virtual_channel_id = virtual_channel_id
        self.window = check_window(window)
        self._room = room
        self.state = FarmState.OPEN
        self.vr = 0
        self.lockout = False
        self.wait = False
        self.retransmit = False
        self.farm_b_counter = 0

    @property
    def positive_window(self) -> int:
        return self.window // 2

    @property
    def negative_window(self) -> int:
        return self.window // 2

    def clcw(self) -> Clcw:
        return Clcw(self.virtual_channel_id, self.vr, self.lockout, self.wait, self.retransmit,
                    self.farm_b_counter)

    # --- events -----------------------------------------------------------------------------
    def frame(self, frame_type: FrameType, sequence_number: int, data: bytes = b"") -> bool:
        """A valid frame of this virtual channel: True when its data is accepted (AD, BD); BC frames
        are executed here and return False (nothing goes on). A discarded frame raises FrameRejected."""
        if frame_type == FrameType.BD:
            self._count_b()
            return True
        if frame_type == FrameType.BC:
            self._control(data)
            return False
        return self._sequenced(sequence_number)

    def buffer_released(self) -> None:
        """E10: the buffer has room again."""
        self.wait = False
        if self.state == FarmState.WAIT:
            self.state = FarmState.OPEN

    def _count_b(self) -> None:
        self.farm_b_counter = (self.farm_b_counter + 1) % FARM_B_MODULUS

    def _sequenced(self, ns: int) -> bool:
        distance = ahead(ns, self.vr)
        if distance == 0:
            if self.state == FarmState.LOCKOUT:
                raise FrameRejected(Rejection.FARM_LOCKOUT, f"N(S) {ns}: FARM-1 is in lockout")
            if self.state == FarmState.WAIT:
                raise FrameRejected(Rejection.FARM_WAIT, f"N(S) {ns}: FARM-1 waits for buffer space")
            if not self._room():                                          # E2
                self.retransmit = True
                self.wait = True
                self.state = FarmState.WAIT
                raise FrameRejected(Rejection.FARM_WAIT, f"N(S) {ns}: no buffer space, FARM-1 enters wait")
            self.vr = (self.vr + 1) % MODULUS                             # E1
            self.retransmit = False
            return True
        if distance < self.positive_window:                               # E3
            if self.state == FarmState.OPEN:
                self.retransmit = True
            raise FrameRejected(Rejection.FARM_LOCKOUT if self.state == FarmState.LOCKOUT
                                else Rejection.FARM_RETRANSMISSION,
                                f"N(S) {ns} is ahead of V(R) {self.vr}: a frame was lost, retransmission asked")
        if MODULUS - distance <= self.negative_window:                    # E4
            raise FrameRejected(Rejection.FARM_LOCKOUT if self.state == FarmState.LOCKOUT
                                else Rejection.FARM_NEGATIVE_WINDOW,
                                f"N(S) {ns} is behind V(R) {self.vr}: already received")
        if self.state != FarmState.LOCKOUT:                               # E5
            self.lockout = True
            self.state = FarmState.LOCKOUT
            raise FrameRejected(Rejection.FARM_OUT_OF_WINDOW, f"N(S) {ns} is outside the window of V(R) "
                                f"{self.vr} (W {self.window}): lockout")
        raise FrameRejected(Rejection.FARM_LOCKOUT, f"N(S) {ns}: FARM-1 is in lockout")

    def _control(self, data: bytes) -> None:
        if data == UNLOCK:                                                # E7
            self._count_b()
            self.retransmit = False
            self.wait = False
            self.lockout = False
            self.state = FarmState.OPEN
            return
        if len(data) == 3 and data[:2] == SET_VR_PREFIX:                  # E8
            self._count_b()
            if self.state == FarmState.LOCKOUT:
                return
            self.retransmit = False
            self.wait = False
            self.vr = data[2]
            self.state = FarmState.OPEN
            return
        raise FrameRejected(Rejection.CONTROL_COMMAND, f"control command {data[:8].hex()} is neither "
                            "Unlock nor Set V(R)")
