"""PUS-C telecommands and the payload's service formats.

References: the construct declaration (PUS_TC) for the fast parser, errors
and their numbers included; the peer spacepackets for the packets and the
ST[01] reports both ways; a one-shot parse for the stream parser fed as a
serial line delivers, with the octet accounting checked after every read.
"""
import math
import random

import pytest
from hypothesis import given, settings, strategies as st

from kestrel import services
from kestrel.link.crc import crc16_ccitt
from kestrel.link.errors import ChecksumMismatch, LinkError, MalformedError, TruncatedError
from kestrel.link.spacepacket import PusTm, SpacePacket
from kestrel.link.telecommand import (MIN_TC_PACKET_LENGTH, PUS_TC, Ack, PusTc, TcStreamParser)
from kestrel.services import Mode, Reason, RequestId, ServiceError, Stage, VerificationReport


def peer(module: str):
    """A module of the peer implementation (spacepackets); only the tests that compare with it skip without it."""
    return pytest.importorskip(module, reason="spacepackets (test peer) is not installed")


pus_tc = st.builds(
    PusTc, apid=st.integers(0, 0x7FE), service=st.integers(0, 255), subtype=st.integers(0, 255),
    data=st.binary(max_size=60), sequence_count=st.integers(0, 0x3FFF), source_id=st.integers(0, 0xFFFF),
    ack_flags=st.integers(0, 15), sequence_flags=st.integers(0, 3))


# --- the packet ------------------------------------------------------------------------------

def test_a_known_packet():
    # TC(17,1) to APID 50, sequence count 5, all acknowledgements: spacepackets packs the same octets.
    raw = PusTc(apid=50, service=17, subtype=1, sequence_count=5).pack()
    assert raw.hex() == "1832c00500062f1101000042f7"
    assert crc16_ccitt(raw) == 0   # CRC-16-CCITT over a packet and its own CRC leaves no remainder


@given(pus_tc)
@settings(max_examples=200)
def test_round_trip_both_parsers(tc):
    raw = tc.pack()
    assert PusTc.unpack(raw) == tc == PusTc.unpack_declared(raw)
    assert PusTc.unpack(raw + b"\x00\xff") == tc   # octets after the packet are not its own


def _outcome(parse, raw):
    """What a parser made of `raw`: the packet, or the kind of error with its numbers."""
    try:
        return parse(raw)
    except (TruncatedError, ChecksumMismatch) as exc:
        return type(exc), exc.expected, exc.actual
    except LinkError as exc:
        return type(exc)


@given(pus_tc, st.lists(st.tuples(st.integers(0, 80), st.integers(1, 255)), max_size=3), st.integers(0, 12))
@settings(max_examples=500)
def test_fast_parse_equals_declared_parse(tc, damage, cut):
    raw = bytearray(tc.pack())
    for at, xor in damage:
        if at < len(raw):
            raw[at] ^= xor
    raw = bytes(raw[:max(0, len(raw) - cut)])
    assert _outcome(PusTc.unpack, raw) == _outcome(PusTc.unpack_declared, raw)


@given(st.binary(max_size=40))
@settings(max_examples=300)
def test_fast_parse_equals_declared_parse_on_noise(raw):
    assert _outcome(PusTc.unpack, raw) == _outcome(PusTc.unpack_declared, raw)


@given(st.one_of(st.integers(0x18, 0x1F), st.integers(0, 255)), st.binary(min_size=MIN_TC_PACKET_LENGTH - 3, max_size=40))
@settings(max_examples=300)
def test_fast_parse_equals_declared_parse_on_noise_with_a_valid_crc(first, rest):
    # Noise almost never has a valid length and CRC, so the checks between them would go untested without this.
    body = bytes([first]) + rest
    body = body[:4] + (len(body) + 2 - 7).to_bytes(2, "big") + body[6:]
    raw = body + crc16_ccitt(body).to_bytes(2, "big")
    assert _outcome(PusTc.unpack, raw) == _outcome(PusTc.unpack_declared, raw)


def test_errors_say_what_was_expected():
    raw = PusTc(apid=50, service=17, subtype=1, data=b"abc").pack()
    with pytest.raises(TruncatedError) as info:
        PusTc.unpack(raw[:-1])
    assert (info.value.expected, info.value.actual) == (len(raw), len(raw) - 1)
    with pytest.raises(TruncatedError) as info:
        PusTc.unpack(raw[:5])
    assert (info.value.expected, info.value.actual) == (MIN_TC_PACKET_LENGTH, 5)
    damaged = bytearray(raw)
    damaged[12] ^= 0x40
    with pytest.raises(ChecksumMismatch) as info:
        PusTc.unpack(bytes(damaged))
    assert info.value.expected == int.from_bytes(raw[-2:], "big") and info.value.actual != info.value.expected


@pytest.mark.parametrize("what, packet", [
    ("a TM packet", PusTm(apid=50, service=17, subtype=2, data=b"", time=bytes(6)).pack()),
    ("no secondary header", SpacePacket(50, 0, bytes(9), is_telecommand=True).pack()),
    ("an idle packet", SpacePacket(0x7FF, 0, bytes(9), is_telecommand=True, has_secondary_header=True).pack()),
    ("PUS version 1", SpacePacket(50, 0, b"\x1f" + bytes(8), is_telecommand=True, has_secondary_header=True).pack()),
])
def test_what_is_not_a_pus_c_telecommand_is_malformed(what, packet):
    raw = packet[:-2] + crc16_ccitt(packet[:-2]).to_bytes(2, "big")
    for parse in (PusTc.unpack, PusTc.unpack_declared):
        with pytest.raises(MalformedError):
            parse(raw)


def test_fields_out_of_range_are_refused():
    with pytest.raises(ValueError, match="APID"):
        PusTc(apid=0x7FF, service=17, subtype=1)
    with pytest.raises(ValueError, match="ack_flags"):
        PusTc(apid=1, service=17, subtype=1, ack_flags=16)


def test_acknowledgement_flags_are_ecss_bits():
    # ECSS-E-ST-70-41C numbers the four bits from the most significant: bit 3 (value 1) is acceptance.
    raw = PusTc(apid=1, service=17, subtype=1, ack_flags=Ack.ACCEPTANCE | Ack.COMPLETION).pack()
    assert raw[6] == 0x29
    assert PUS_TC.parse(raw).packet.value.secondary.flags.ack_flags == 0b1001


# --- the peer ---------------------------------------------------------------------------------

@given(pus_tc.filter(lambda tc: tc.sequence_flags == 3))
@settings(max_examples=200)
def test_spacepackets_parses_what_we_pack(tc):
    theirs = peer("spacepackets.ecss.tc").PusTc.unpack(tc.pack())   # it checks the CRC too
    assert (theirs.apid, theirs.service, theirs.message_subtype) == (tc.apid, tc.service, tc.subtype)
    assert theirs.app_data == tc.data and theirs.seq_count == tc.sequence_count
    assert theirs.source_id == tc.source_id and theirs.pus_tc_sec_header.ack_flags == tc.ack_flags


@given(pus_tc.filter(lambda tc: tc.sequence_flags == 3))
@settings(max_examples=200)
def test_we_parse_what_spacepackets_packs(tc):
    tc_module = peer("spacepackets.ecss.tc")
    raw = bytes(tc_module.PusTc(service=tc.service, message_subtype=tc.subtype, apid=tc.apid, app_data=tc.data,
                                seq_count=tc.sequence_count, source_id=tc.source_id,
                                ack_flags=tc.ack_flags).pack())
    assert PusTc.unpack(raw) == tc == PusTc.unpack_declared(raw)


def test_the_request_id_is_the_peers():
    tc_module = peer("spacepackets.ecss.tc")
    req_id = peer("spacepackets.ecss.req_id")
    theirs = tc_module.PusTc(service=17, message_subtype=1, apid=50, seq_count=1234)
    ours = RequestId.of(PusTc.unpack(bytes(theirs.pack())))
    assert ours.pack() == req_id.RequestId.from_pus_tc(theirs).pack()
    assert RequestId.of_octets(theirs.pack()) == ours


@pytest.mark.parametrize("subtype", range(1, 9))
def test_spacepackets_reads_our_verification_reports(subtype):
    verification = peer("spacepackets.ecss.pus_1_verification")
    tm = peer("spacepackets.ecss.tm")
    tc = PusTc(apid=50, service=20, subtype=1, sequence_count=77)
    step = 3 if subtype in (5, 6) else None
    report = VerificationReport(RequestId.of(tc), Stage(subtype - (not subtype & 1)), bool(subtype & 1), step,
                                0 if subtype & 1 else Reason.PARAMETER_UNKNOWN,
                                b"" if subtype & 1 else b"parameter 999 unknown")
    raw = PusTm(apid=50, service=1, subtype=subtype, data=report.pack(), time=bytes(6)).pack()
    # Our step ids and failure codes are 16-bit enumerations.
    theirs = verification.Service1Tm.unpack(raw, tm.ManagedParams(timestamp_len=6),
                                            verification.ManagedParamsVerification(bytes_step_id=2,
                                                                                   bytes_err_code=2))
    assert theirs.message_subtype == subtype
    assert theirs.tc_req_id.pack() == bytes(tc.pack()[:4])
    if step is not None:
        assert theirs._verif_params.step_id.val == step
    if not subtype & 1:
        assert theirs.failure_notice.code.val == Reason.PARAMETER_UNKNOWN
        assert theirs.failure_notice.data == b"parameter 999 unknown"
    assert VerificationReport.unpack(subtype, report.pack()) == report


# --- the stream parser ------------------------------------------------------------------------

def _garbage(rnd: random.Random, n: int, headless: bool) -> bytes:
    """Random octets; `headless`: none of them can start a TC header, so all sent packets must come out."""
    junk = bytearray(rnd.randbytes(n))
    if headless:
        for i, b in enumerate(junk):
            if b & 0xF8 == 0x18:
                junk[i] ^= 0x80
    return bytes(junk)


def _stream(seed: int, headless: bool):
    rnd = random.Random(seed)
    packets, pieces = [], []
    for i in range(rnd.randint(0, 8)):
        pieces.append(_garbage(rnd, rnd.choice((0, 0, 1, 5, 40, 300)), headless))
        tc = PusTc(apid=rnd.randrange(0x7FF), service=rnd.randrange(256), subtype=rnd.randrange(256),
                   data=rnd.randbytes(rnd.randint(0, 200)), sequence_count=i)
        packets.append(tc)
        raw = tc.pack()
        if rnd.random() < 0.1:       # a packet cut short, then the next one: the parser must find that one
            pieces.append(raw[:rnd.randrange(len(raw))])
        pieces.append(raw)
    pieces.append(_garbage(rnd, rnd.choice((0, 3, 50)), headless))
    return b"".join(pieces), packets


def _feed_split(stream: bytes, rnd: random.Random, parser: TcStreamParser) -> list[PusTc]:
    out, at = [], 0
    while at < len(stream):
        n = rnd.choice((1, 2, 7, 13, 100, 4096))
        out += parser.feed(stream[at:at + n])
        at += n
        c = parser.counters
        assert c.octets_read == min(at, len(stream)) == c.octets_in_packets + c.octets_skipped + parser.buffered
        assert parser.buffered < 2 * parser.max_packet_length
    out += parser.flush()
    c = parser.counters
    assert parser.buffered == 0 and c.octets_read == len(stream) == c.octets_in_packets + c.octets_skipped
    assert c.octets_in_packets == sum(len(p.pack()) for p in out) and c.packets == len(out)
    return out


@given(st.integers(0, 2**32 - 1), st.booleans(), st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_stream_parser_split_anyhow_gives_the_one_shot_packets(seed, headless, split_seed):
    stream, sent = _stream(seed, headless)
    one_shot = TcStreamParser()
    reference = one_shot.feed(stream) + one_shot.flush()
    assert _feed_split(stream, random.Random(split_seed), TcStreamParser()) == reference
    if headless:
        assert reference == sent


@given(st.binary(max_size=3000), st.integers(0, 2**32 - 1))
@settings(max_examples=100, deadline=None)
def test_stream_parser_on_noise_accounts_for_every_octet(noise, split_seed):
    _feed_split(noise, random.Random(split_seed), TcStreamParser())


def test_a_long_false_header_is_given_up_by_flush():
    # Noise that looks like the header of a 1000-octet TC, then a real command: it waits until flush.
    tc = PusTc(apid=50, service=17, subtype=1)
    parser = TcStreamParser()
    assert parser.feed(b"\x18\x32\xc0\x00\x03\xe1" + tc.pack()) == []
    assert parser.flush() == [tc]
    assert parser.counters.octets_skipped == 6 and parser.counters.candidates_rejected == 0


def test_a_packet_longer_than_the_bound_is_skipped():
    small, big = PusTc(apid=50, service=17, subtype=1), PusTc(apid=50, service=20, subtype=3, data=bytes(200))
    parser = TcStreamParser(max_packet_length=100)
    assert parser.feed(big.pack() + small.pack()) + parser.flush() == [small]
    assert parser.counters.octets_skipped == len(big.pack())
    with pytest.raises(ValueError):
        TcStreamParser(max_packet_length=12)


def test_a_damaged_packet_is_counted_and_skipped():
    first, second = PusTc(apid=50, service=17, subtype=1, sequence_count=1), PusTc(apid=50, service=17, subtype=1)
    damaged = bytearray(first.pack())
    damaged[-1] ^= 1
    parser = TcStreamParser()
    assert parser.feed(bytes(damaged) + second.pack()) == [second]
    assert parser.counters.candidates_rejected >= 1 and parser.counters.octets_skipped == len(damaged)


# --- the services -----------------------------------------------------------------------------

def _refused(request: services.Request, apid: int = services.COMMAND_APID) -> Reason:
    with pytest.raises(ServiceError) as info:
        services.parse_request(request.tc(apid, 0))
    return info.value.reason


def test_requests_round_trip_through_the_declarations():
    assert services.parse_request(services.ping().tc(50, 0)) == {}
    assert list(services.parse_request(services.report_parameters([1, 11]).tc(50, 0)).ids) == [1, 11]
    parsed = services.parse_request(services.set_parameters({1: 6.5, 11: 3}).tc(50, 0))
    assert [(p.id, p.value) for p in parsed.parameters] == [(1, 6.5), (11, 3)]
    parsed = services.parse_request(services.change_mode(Mode.OBSERVE).tc(50, 0))
    assert parsed.function == 1 and parsed.arguments.mode == Mode.OBSERVE
    parsed = services.parse_request(services.perform_function(
        "replay_store", by=services.StoreRange.SEQUENCE, apid=110, first=16000, last=20).tc(50, 0))
    assert (parsed.arguments.by, parsed.arguments.apid, parsed.arguments.first, parsed.arguments.last) \
        == (2, 110, 16000, 20)
    parsed = services.parse_request(services.perform_function(
        "replay_store", by=services.StoreRange.TIME, apid=services.ALL_APIDS, first=10, last=20).tc(50, 0))
    assert parsed.arguments.apid == services.ALL_APIDS
    parsed = services.parse_request(services.perform_function("acknowledge_store", apid=110, first=3, last=9).tc(50, 0))
    assert (parsed.arguments.apid, parsed.arguments.first, parsed.arguments.last) == (110, 3, 9)
    assert list(services.parse_request(services.enable_housekeeping([2]).tc(50, 0)).structures) == [2]
    parsed = services.parse_request(services.set_housekeeping_interval({2: 5000}).tc(50, 0))
    assert parsed.intervals[0].interval_ms == 5000
    assert services.parse_parameter_report(services.parameter_report({1: 5.0, 11: 2})) == {1: 5.0, 11: 2}


def test_requests_are_refused_with_their_reason():
    assert _refused(services.ping(), apid=51) == Reason.WRONG_APID
    assert _refused(services.Request(99, 1, b"")) == Reason.UNKNOWN_SERVICE
    assert _refused(services.Request(17, 3, b"")) == Reason.UNKNOWN_SUBTYPE
    assert _refused(services.Request(17, 1, b"x")) == Reason.BAD_LENGTH
    assert _refused(services.Request(20, 1, b"\x02\x00\x01")) == Reason.BAD_LENGTH
    assert _refused(services.report_parameters([999])) == Reason.PARAMETER_UNKNOWN
    assert _refused(services.Request(20, 3, b"\x01\x03\xe7\x00\x00")) == Reason.PARAMETER_UNKNOWN
    assert _refused(services.set_parameters({1: 0.5})) == Reason.VALUE_OUT_OF_RANGE
    assert _refused(services.set_parameters({1: math.nan})) == Reason.VALUE_OUT_OF_RANGE
    assert _refused(services.set_parameters({11: 65})) == Reason.VALUE_OUT_OF_RANGE
    assert _refused(services.Request(8, 1, b"\x00\x63")) == Reason.UNKNOWN_FUNCTION
    assert _refused(services.change_mode(Mode.BOOT)) == Reason.VALUE_OUT_OF_RANGE
    for by, apid, first, last in ((1, 110, 5, 4), (9, 110, 1, 4), (2, services.ALL_APIDS, 1, 4), (2, 110, 1, 0x4000),
                                  (1, 0x7FF, 1, 4)):
        assert _refused(services.perform_function("replay_store", by=by, apid=apid, first=first, last=last)) \
            == Reason.VALUE_OUT_OF_RANGE, (by, apid, first, last)
    assert _refused(services.perform_function("acknowledge_store", apid=0x7FF, first=1, last=2)) \
        == Reason.VALUE_OUT_OF_RANGE
    assert _refused(services.perform_function("set_time_correlation", offset_s=0.0, drift_ppm=2e3, epoch_s=0.0)) \
        == Reason.VALUE_OUT_OF_RANGE
    assert _refused(services.set_housekeeping_interval({2: 99})) == Reason.VALUE_OUT_OF_RANGE


def test_link_errors_map_to_reasons():
    assert services.reason_for(ChecksumMismatch("x", 1, 2)) == Reason.BAD_CHECKSUM
    assert services.reason_for(TruncatedError("x", 13, 2)) == Reason.BAD_LENGTH
    assert services.reason_for(MalformedError("x")) == Reason.MALFORMED_PACKET
    assert services.reason_for(ServiceError(Reason.BUSY, "x")) == Reason.BUSY


def test_failure_data_is_cut_on_a_character_boundary():
    data = services.failure_data("é" * 100)
    assert len(data) <= services.MAX_FAILURE_DATA and data.decode("utf8") == "é" * 32


def test_modes_on_the_wire_are_the_flights():
    flight_modes = pytest.importorskip("flight.modes")
    assert {m.name: m.value for m in Mode} == {m.name: m.value for m in flight_modes.Mode}


def test_parameter_ranges_fit_their_wire_types():
    for p in services.PARAMETERS:
        p.format.build(p.low)
        p.format.build(p.high)


def test_the_command_table_lists_every_declared_item():
    table = services.command_table()
    for apid, _, _ in services.APIDS:
        assert f"| {apid} |" in table
    messages = list(services.TC_TYPES) + list(services.TM_TYPES) + [(s, t) for s, t, _, _ in
                                                                     services.PRODUCT_TM_TYPES]
    for service, subtype in messages:
        assert f"| {service} | {subtype} |" in table
    for p in services.PARAMETERS:
        assert f"| {p.id} | {p.name} | {p.type} | {p.rule} |" in table
    for f in services.FUNCTIONS:
        assert f"| {f.id} | {f.name} |" in table
    for reason in Reason:
        assert f"| {reason.value} | {reason.name} | {reason.meaning} |" in table
    for mode in Mode:
        assert f"| {mode.value} | {mode.name} |" in table
    assert all(line.startswith(("### ", "|")) for line in table.splitlines() if line)
