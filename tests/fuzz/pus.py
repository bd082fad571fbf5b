"""PUS-C TC parsing and the acceptance entry of dispatch: the packets in a TC frame's data field
(flight.uplink.packets over PusTc.unpack), then kestrel.services.parse_request, the stateless acceptance
checks CommandHandler.handle runs first.

Inputs start as requests built by the service declarations (every TC type the flight knows, with valid
arguments) and TCs of unknown types, packed by the PUS_TC declaration, 1..3 back to back as in a frame;
then octets are mutated and, on most inputs, each packet's CRC recomputed where its length field says it
ends, so the mutation reaches the header and application-data checks behind it. The property: only
FrameRejected(PACKET) leaves `packets`; a packet it gives packs back to exactly its octets and the
declaration's parse agrees with it; unmutated data gives back exactly the TCs packed; only ServiceError
(its documented refusal, which the handler turns into an ST[01] acceptance failure) leaves parse_request,
and a request built by the declarations is accepted.
"""
from __future__ import annotations

import random

from flight.uplink import packets
from kestrel import services
from kestrel.link.crc import crc16_ccitt
from kestrel.link.errors import FrameRejected, Rejection
from kestrel.link.spacepacket import PRIMARY_HEADER_LENGTH, packet_length
from kestrel.link.telecommand import MIN_TC_PACKET_LENGTH, Ack, PusTc

from .common import Draw, PropertyViolation, mutate

APID = services.COMMAND_APID


def valid_requests() -> list[services.Request]:
    """One of each TC type the flight accepts, arguments within their declared ranges."""
    s, f = services, services.perform_function
    return [
        s.ping(), s.report_parameters([1, 10, 32]), s.set_parameters({1: 6.5, 11: 3, 30: -12.25}),
        s.change_mode(s.Mode.SAFE), s.enable_housekeeping([2, 3]), s.disable_housekeeping([3]),
        s.set_housekeeping_interval({2: 1000, 3: 100}), f("take_quicklook"), f("dump_store"),
        f("replay_store", by=int(s.StoreRange.TIME), apid=110, first=0, last=10),
        f("acknowledge_store", apid=110, first=1, last=3), f("reset_counters"), f("reload_config"),
        f("set_time_correlation", offset_s=1.5, drift_ppm=0.25, epoch_s=1e9), f("rekey_sa", spi=5, key=2),
    ]


def pool(seed: int = 13) -> tuple[tuple[PusTc, bytes, bool], ...]:
    """(TC, its octets, whether parse_request must accept it), built once through the declarations."""
    rng = random.Random(seed)
    out = [(tc, tc.pack(), True) for tc in (r.tc(APID, i + 1, i, rng.randrange(16))
                                            for i, r in enumerate(valid_requests()))]
    for i in range(24):   # unknown types, wrong APIDs, data the formats cannot take
        tc = PusTc(rng.choice((APID, rng.randrange(0x7FF))), rng.choice((3, 8, 17, 20, rng.randrange(256))),
                   rng.randrange(256), rng.randbytes(rng.choice((0, 1, 3, 8, 40))), rng.randrange(0x4000))
        out.append((tc, tc.pack(), False))
    return tuple(out)


def fix_crcs(buf: bytearray) -> None:
    """Recompute the CRC of each packet where its length field says it ends, as long as they chain."""
    at = 0
    while len(buf) - at >= PRIMARY_HEADER_LENGTH:
        total = packet_length(buf[at:at + PRIMARY_HEADER_LENGTH])
        if total < MIN_TC_PACKET_LENGTH or at + total > len(buf):
            return
        end = at + total
        buf[end - 2:end] = crc16_ccitt(bytes(buf[at:end - 2])).to_bytes(2, "big")
        at = end


class Harness:
    name = "pus"

    def __init__(self):
        self.pool = pool()

    def one_input(self, data: bytes) -> None:
        draw = Draw(data)
        chosen = [draw.choice(self.pool) for _ in range(1 + draw.int(3))]
        original = b"".join(raw for _, raw, _ in chosen)
        buf = bytearray(original)
        if draw.chance(3, 4):
            mutate(buf, draw, 4)
            if draw.chance(7, 8):
                fix_crcs(buf)
        field = bytes(buf)
        try:
            tcs = packets(field)
        except FrameRejected as exc:
            if exc.reason != Rejection.PACKET:
                raise PropertyViolation(f"packets refused with {exc.reason!r}, not PACKET") from exc
            if field == original:
                raise PropertyViolation(f"packets built by the declaration refused: {exc}") from exc
            return
        at = 0
        for tc in tcs:
            octets = field[at:at + packet_length(field[at:])]
            at += len(octets)
            if tc.pack() != octets:
                raise PropertyViolation(f"{tc} packs to other octets than the {octets.hex()} it came from")
            if PusTc.unpack_declared(octets) != tc:
                raise PropertyViolation(f"the declaration parses {octets.hex()} otherwise than {tc}")
        if at != len(field):
            raise PropertyViolation(f"packets accounted for {at} of {len(field)} octets")
        if field == original and tcs != [tc for tc, _, _ in chosen]:
            raise PropertyViolation(f"packets gave {tcs}, packed were {[tc for tc, _, _ in chosen]}")
        for tc in tcs:
            try:
                services.parse_request(tc, APID)
            except services.ServiceError as exc:
                if not isinstance(exc.reason, services.Reason):
                    raise PropertyViolation(f"ServiceError with reason {exc.reason!r}") from exc
                if field == original and any(tc == t and must for t, _, must in chosen):
                    raise PropertyViolation(f"{tc}, built by the declarations, refused: {exc}") from exc


class DispatchHarness(Harness):
    """The same inputs on through a real flight Executive's CommandHandler.handle, the one TC entry point.

    The property: handle raises nothing; each TC is accepted or refused exactly once, an accepted one
    completes or fails exactly once, handle says True exactly when it completed, and a report is stored
    for the downlink for every failure and for every success its acknowledgement flags ask for.
    """

    name = "dispatch"

    def __init__(self, executive):
        super().__init__()
        self.executive = executive

    def one_input(self, data: bytes) -> None:
        draw = Draw(data)
        chosen = [draw.choice(self.pool) for _ in range(1 + draw.int(3))]
        buf = bytearray(b"".join(raw for _, raw, _ in chosen))
        if draw.chance(1, 2):
            mutate(buf, draw, 3)
            fix_crcs(buf)
        try:
            tcs = packets(bytes(buf))
        except FrameRejected:
            return
        handler, store = self.executive.commands, self.executive.store
        for tc in tcs:
            c = handler.counters
            before = (c.accepted, c.rejected, c.completed, c.failed)
            reports = store.totals[store_class()].put
            done = handler.handle(tc)
            after = (c.accepted, c.rejected, c.completed, c.failed)
            step = tuple(a - b for a, b in zip(after, before))
            if step not in ((0, 1, 0, 0), (1, 0, 1, 0), (1, 0, 0, 1)) or done != (step[2] == 1):
                raise PropertyViolation(f"{tc}: handle gave {done}, counters moved by {step}")
            # Failures are always reported; successes when the TC's acknowledgement flags ask.
            asked = tc.ack_flags & (Ack.ACCEPTANCE | Ack.START | Ack.COMPLETION)
            if (step[1] or step[3] or asked) and store.totals[store_class()].put <= reports:
                raise PropertyViolation(f"{tc}: no verification report stored")


def store_class():
    from flight.store import ProductClass

    return ProductClass.VERIFICATION
