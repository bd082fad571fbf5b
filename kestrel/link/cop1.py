"""COP-1, CCSDS 232.1-B-2: what FARM-1 (on board) and FOP-1 (on the ground) share.

The Communications Link Control Word (232.0-B 4.2.1, 232.1-B-2 4.2.1) is
declared once here: the flight program builds it into the TM frame's
operational control field, the ground parses it from there. COP-1's control
commands (Unlock, Set V(R)) and its window arithmetic, all modulo 256, are
here too, so both ends read them from one place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import construct as cs

MODULUS: Final = 256
COP_IN_EFFECT_COP1: Final = 1
UNLOCK: Final = b"\x00"
SET_VR_PREFIX: Final = b"\x82\x00"

CLCW_FORMAT = cs.BitStruct(
    "control_word_type" / cs.Const(0, cs.BitsInteger(1)),
    "version" / cs.Const(0, cs.BitsInteger(2)),
    "status" / cs.BitsInteger(3),
    "cop_in_effect" / cs.BitsInteger(2),
    "virtual_channel_id" / cs.BitsInteger(6),
    "spare1" / cs.Const(0, cs.BitsInteger(2)),
    "no_rf_available" / cs.Flag,
    "no_bit_lock" / cs.Flag,
    "lockout" / cs.Flag,
    "wait" / cs.Flag,
    "retransmit" / cs.Flag,
    "farm_b_counter" / cs.BitsInteger(2),
    "spare2" / cs.Const(0, cs.BitsInteger(1)),
    "report_value" / cs.BitsInteger(8),
)


@dataclass(frozen=True)
class Clcw:
    virtual_channel_id: int
    report_value: int
    lockout: bool = False
    wait: bool = False
    retransmit: bool = False
    farm_b_counter: int = 0
    no_rf_available: bool = False
    no_bit_lock: bool = False
    status: int = 0
    cop_in_effect: int = COP_IN_EFFECT_COP1

    def pack(self) -> bytes:
        return CLCW_FORMAT.build(dict(status=self.status, cop_in_effect=self.cop_in_effect,
                                      virtual_channel_id=self.virtual_channel_id,
                                      no_rf_available=self.no_rf_available, no_bit_lock=self.no_bit_lock,
                                      lockout=self.lockout, wait=self.wait, retransmit=self.retransmit,
                                      farm_b_counter=self.farm_b_counter, report_value=self.report_value))

    @classmethod
    def unpack(cls, raw) -> "Clcw":
        """ValueError when the four octets are not a CLCW (type 0, version 0, spares 0)."""
        try:
            p = CLCW_FORMAT.parse(bytes(raw[:4]))
        except cs.ConstructError as exc:
            raise ValueError(f"not a CLCW: {bytes(raw[:4]).hex()} ({exc})") from None
        return cls(p.virtual_channel_id, p.report_value, p.lockout, p.wait, p.retransmit, p.farm_b_counter,
                   p.no_rf_available, p.no_bit_lock, p.status, p.cop_in_effect)


def set_vr(value: int) -> bytes:
    """The Set V(R) control command (232.1-B-2 4.2.2): 0x82 0x00 and the new V(R)."""
    if not 0 <= value < MODULUS:
        raise ValueError(f"V(R) is 0..255, got {value}")
    return SET_VR_PREFIX + bytes([value])


def ahead(a: int, b: int) -> int:
    """How far `a` is ahead of `b`, modulo 256 (0..255)."""
    return (a - b) % MODULUS
