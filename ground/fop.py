"""FOP-1, CCSDS 232.1-B-2 section 5: the sending end of COP-1, one per virtual channel.

States (5.1.8): ACTIVE (S1), RETRANSMIT_WITHOUT_WAIT (S2), RETRANSMIT_WITH_WAIT
(S3), INITIALISING_WITHOUT_BC (S4), INITIALISING_WITH_BC (S5), INITIAL (S6).
Variables: V(S), the next N(S); NN(R), the oldest unacknowledged N(S); the
sent queue (at most the window K frames); the timer T1 and the transmission
count against the transmission limit; the timeout type (0: alert, 1:
suspend) and the suspend state SS. All arithmetic is modulo 256.

What this FOP does on each input:
- transmit_ad(data): in ACTIVE with fewer than K frames outstanding, sent as
  an AD frame with N(S) = V(S), V(S) + 1; otherwise refused (False).
- transmit_bd(data): sent at once as a BD frame, in any state (bypass).
- a CLCW of this virtual channel: lockout -> alert; an N(R) outside
  NN(R)..V(S) -> alert; N(R) acknowledges frames (removed, the count reset);
  the retransmit flag -> every outstanding frame sent again (once per
  acknowledgement or entry, then on the timer); the wait flag -> S3, timer
  stopped until it clears; none of them with all acknowledged -> ACTIVE.
  A CLCW with N(R) = V(S) and no flag completes initialisation (S4, S5).
- poll(): timer T1 expired -> everything outstanding again, up to the
  transmission limit; then alert (type 0) or suspend (type 1).
- directives: initiate without CLCW check, with CLCW check, with Unlock, with
  Set V(R); terminate; resume (after a suspend); set V(S) (in INITIAL).

Frames are built by `build(frame_type, sequence_number, data) -> bytes` and
sent by `emit(octets)`, each time: a retransmission is built again, so with
SDLS it carries a fresh sequence number (an IV is never used twice).
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from kestrel.link.cop1 import MODULUS, UNLOCK, Clcw, ahead, set_vr
from kestrel.link.tcframe import FrameType


class FopState(enum.IntEnum):
    ACTIVE = 1
    RETRANSMIT_WITHOUT_WAIT = 2
    RETRANSMIT_WITH_WAIT = 3
    INITIALISING_WITHOUT_BC = 4
    INITIALISING_WITH_BC = 5
    INITIAL = 6


@dataclass
class FopCounters:
    ad_sent: int = 0
    bd_sent: int = 0
    bc_sent: int = 0
    retransmissions: int = 0
    acknowledged: int = 0
    alerts: int = 0
    suspends: int = 0


@dataclass
class _Sent:
    sequence_number: int
    data: bytes


@dataclass
class Fop1:
    virtual_channel_id: int
    build: object                      # (FrameType, sequence number, data) -> frame octets
    emit: object                       # octets -> None
    window: int = 5                    # K, frames outstanding at most: no more than the FARM's PW = W/2,
                                       # or a lost frame puts those behind it in the FARM's lockout area
    t1_initial_s: float = 5.0
    transmission_limit: int = 3
    timeout_type: int = 0              # 0: alert on the limit, 1: suspend
    clock: object = time.monotonic
    state: FopState = FopState.INITIAL
    vs: int = 0
    nnr: int = 0
    suspend_state: int = 0
    alert_reason: str | None = None
    counters: FopCounters = field(default_factory=FopCounters)

    def __post_init__(self):
        if not 1 <= self.window < MODULUS:
            raise ValueError(f"FOP window K must be 1..255, got {self.window}")
        if self.transmission_limit < 1:
            raise ValueError(f"transmission limit must be at least 1, got {self.transmission_limit}")
        self._sent: list[_Sent] = []
        self._bc: bytes | None = None         # the control command of an initialisation with BC
        self._timer: float | None = None
        self._count = 1
        self._retransmitted_for: int | None = None   # the N(R) whose retransmit flag was already answered

    # --- what the ground operator sees ---------------------------------------------------------
    @property
    def outstanding(self) -> int:
        return len(self._sent)

    @property
    def ready(self) -> bool:
        """An AD frame would be sent now."""
        return self.state == FopState.ACTIVE and len(self._sent) < self.window

    # --- requests ----------------------------------------------------------------------------------
    def transmit_ad(self, data: bytes) -> int | None:
        """Send `data` as the next AD frame; its N(S), or None when the FOP cannot take it now."""
        if not self.ready:
            return None
        ns = self.vs
        self.vs = (self.vs + 1) % MODULUS
        self._sent.append(_Sent(ns, bytes(data)))
        self._send(FrameType.AD, ns, data)
        self.counters.ad_sent += 1
        if self._timer is None:
            self._start_timer()
        return ns

    def transmit_bd(self, data: bytes) -> None:
        self._send(FrameType.BD, 0, data)
        self.counters.bd_sent += 1

    # --- directives --------------------------------------------------------------------------------
    def set_vs(self, value: int) -> None:
        if self.state != FopState.INITIAL:
            raise ValueError("Set V(S) is accepted only in the initial state")
        self.vs = self.nnr = value % MODULUS

    def initiate(self, *, clcw_check: bool = False) -> None:
        """Initiate AD service without a CLCW check (ACTIVE at once) or with one (S4 until a CLCW agrees)."""
        self._purge()
        self.nnr = self.vs
        self.alert_reason = None
        if clcw_check:
            self.state = FopState.INITIALISING_WITHOUT_BC
            self._start_timer()
        else:
            self.state = FopState.ACTIVE

    def initiate_with_unlock(self) -> None:
        self._initiate_bc(UNLOCK)

    def initiate_with_set_vr(self, value: int) -> None:
        self._purge()
        self.vs = self.nnr = value % MODULUS
        self._initiate_bc(set_vr(self.vs))

    def terminate(self) -> None:
        self._alert("terminated by the operator")
        self.counters.alerts -= 1

    def resume(self) -> None:
        if self.state != FopState.INITIAL or not self.suspend_state:
            raise ValueError("resume needs a suspended FOP")
        self.state = FopState(self.suspend_state)
        self.suspend_state = 0
        self._count = 1
        self._start_timer()

    # --- inputs from the downlink and the clock ---------------------------------------------------
    def clcw(self, clcw: Clcw) -> None:
        if clcw.virtual_channel_id != self.virtual_channel_id or clcw.cop_in_effect != 1:
            return
        if self.state == FopState.INITIAL:
            return
        if clcw.lockout:
            self._alert("FARM-1 reports lockout")
            return
        nr = clcw.report_value
        if ahead(nr, self.nnr) > ahead(self.vs, self.nnr):
            self._alert(f"N(R) {nr} is outside NN(R) {self.nnr} .. V(S) {self.vs}")
            return
        acknowledged = ahead(nr, self.nnr)
        if acknowledged:
            del self._sent[:acknowledged]
            self.nnr = nr
            self._count = 1
            self._retransmitted_for = None
            self.counters.acknowledged += acknowledged
            self._stop_timer() if not self._sent else self._start_timer()
        if self.state in (FopState.INITIALISING_WITHOUT_BC, FopState.INITIALISING_WITH_BC):
            if nr == self.vs and not clcw.retransmit and not clcw.wait:
                self._bc = None
                self._stop_timer()
                self.state = FopState.ACTIVE
            return
        if clcw.wait:
            self.state = FopState.RETRANSMIT_WITH_WAIT
            self._stop_timer()
            return
        if clcw.retransmit and self._sent:
            entering = self.state != FopState.RETRANSMIT_WITHOUT_WAIT or self._retransmitted_for != nr
            self.state = FopState.RETRANSMIT_WITHOUT_WAIT
            if entering:
                self._retransmitted_for = nr
                self._retransmit()
            return
        if self.state == FopState.RETRANSMIT_WITH_WAIT and self._sent:
            # The wait is over and frames are still outstanding: they go again.
            self.state = FopState.RETRANSMIT_WITHOUT_WAIT
            self._retransmit()
            return
        if not self._sent:
            self.state = FopState.ACTIVE

    def poll(self) -> None:
        """Call often: acts on an expired T1."""
        if self._timer is None or self.clock() < self._timer:
            return
        if self._count >= self.transmission_limit:
            if self.timeout_type == 1:
                self.suspend_state = int(self.state)
                self.state = FopState.INITIAL
                self._stop_timer()
                self.counters.suspends += 1
            else:
                self._alert(f"no acknowledgement after {self.transmission_limit} transmissions")
            return
        if self.state == FopState.INITIALISING_WITH_BC and self._bc is not None:
            self._count += 1
            self._send(FrameType.BC, 0, self._bc)
            self.counters.bc_sent += 1
            self._start_timer()
        elif self.state == FopState.INITIALISING_WITHOUT_BC:
            self._count += 1
            self._start_timer()
        else:
            self._retransmit()

    # --- inside ----------------------------------------------------------------------------------
    def _initiate_bc(self, command: bytes) -> None:
        self._purge()
        self.nnr = self.vs
        self.alert_reason = None
        self._bc = command
        self.state = FopState.INITIALISING_WITH_BC
        self._send(FrameType.BC, 0, command)
        self.counters.bc_sent += 1
        self._start_timer()

    def _retransmit(self) -> None:
        if self._count >= self.transmission_limit:
            self.poll_limit()
            return
        self._count += 1
        for item in self._sent:
            self._send(FrameType.AD, item.sequence_number, item.data)
            self.counters.retransmissions += 1
        self._start_timer()

    def poll_limit(self) -> None:
        """The transmission limit is reached: alert or suspend as the timeout type says."""
        self._timer = self.clock()
        self.poll()

    def _send(self, frame_type: FrameType, ns: int, data: bytes) -> None:
        self.emit(self.build(frame_type, ns, data))

    def _start_timer(self) -> None:
        self._timer = self.clock() + self.t1_initial_s

    def _stop_timer(self) -> None:
        self._timer = None

    def _purge(self) -> None:
        self._sent.clear()
        self._bc = None
        self._stop_timer()
        self._count = 1
        self.suspend_state = 0
        self._retransmitted_for = None

    def _alert(self, reason: str) -> None:
        self._purge()
        self.alert_reason = reason
        self.state = FopState.INITIAL
        self.counters.alerts += 1
