"""The YAMCS mission database of the commands tests/test_yamcs_uplink.py sends, as XTCE, built with yamcs-pymdb.

Every command is a PUS-C TC packet (ECSS-E-ST-70-41C 7.4.4.1) as kestrel.link.telecommand declares it:
the primary header with the command APID (YAMCS's PusCommandPostprocessor fills in the length and the
sequence count, and appends the CRC-16), the secondary header (PUS version 2, all acknowledgements asked,
service, subtype, source id 0), then the application data. The ids, types and ranges of the application
data come from kestrel.services, so the MDB cannot drift from what the flight parses.
"""
from __future__ import annotations

from yamcs import pymdb

from kestrel import services
from kestrel.link.spacepacket import PUS_VERSION
from kestrel.link.telecommand import Ack
from kestrel.services import FUNCTIONS_BY_NAME, PARAMETERS_BY_NAME, SERVICE_FUNCTIONS, SERVICE_PARAMETERS, SERVICE_TEST

SYSTEM_NAME = "Kestrel"
# Each command twice: NAME goes out in a BD frame on VC 0, AD_NAME in an AD frame through YAMCS's FOP-1 on
# VC 1 (the instance's tcPatterns route them).
AD_PREFIX = "AD_"
# The parameter the parameterised commands set and read back.
K_SIGMA = PARAMETERS_BY_NAME["detection.k_sigma"]


def _hex(value: int, octets: int) -> str:
    return value.to_bytes(octets, "big").hex()


def build(apid: int) -> pymdb.System:
    system = pymdb.System(SYSTEM_NAME)
    service = pymdb.IntegerArgument(name="pus_service", signed=False, encoding=pymdb.uint8_t)
    subtype = pymdb.IntegerArgument(name="pus_subtype", signed=False, encoding=pymdb.uint8_t)
    # Version 0, type TC, secondary header present, the APID; standalone, count 0; length 0 (filled by YAMCS).
    packet_id = 0b0001_1 << 11 | apid
    base = pymdb.Command(
        system=system, name="pus_tc", abstract=True,
        arguments=[service, subtype],
        entries=[
            pymdb.FixedValueEntry(_hex(packet_id, 2), name="ccsds_packet_id", bits=16),
            pymdb.FixedValueEntry("c000", name="ccsds_sequence", bits=16),
            pymdb.FixedValueEntry("0000", name="ccsds_length", bits=16),
            pymdb.FixedValueEntry(_hex(PUS_VERSION << 4 | Ack.ALL, 1), name="pus_version_ack", bits=8),
            pymdb.ArgumentEntry(service),
            pymdb.ArgumentEntry(subtype),
            pymdb.FixedValueEntry("0000", name="pus_source_id", bits=16),
        ],
    )

    for prefix in ("", AD_PREFIX):
        _commands(system, base, prefix)
    return system


def _commands(system: pymdb.System, base: pymdb.Command, prefix: str) -> None:
    def command(name: str, kind: tuple[int, int], arguments=(), entries=()) -> None:
        pymdb.Command(system=system, name=prefix + name, base=base,
                      assignments={"pus_service": kind[0], "pus_subtype": kind[1]},
                      arguments=list(arguments), entries=list(entries))

    command("PING", (SERVICE_TEST, 1))

    mode = pymdb.EnumeratedArgument(name="mode", encoding=pymdb.uint8_t,
                                    choices=[(int(m), m.name) for m in services.COMMANDABLE_MODES])
    command("CHANGE_MODE", (SERVICE_FUNCTIONS, 1), [mode], [
        pymdb.FixedValueEntry(_hex(FUNCTIONS_BY_NAME["change_mode"].id, 2), name="function_id", bits=16),
        pymdb.ArgumentEntry(mode)])

    assert K_SIGMA.type == "f32"
    value = pymdb.FloatArgument(name="value", bits=32, minimum=K_SIGMA.low, maximum=K_SIGMA.high,
                                encoding=pymdb.float32_t, units=K_SIGMA.unit)
    one_k_sigma = [pymdb.FixedValueEntry("01", name="count", bits=8),
                   pymdb.FixedValueEntry(_hex(K_SIGMA.id, 2), name="parameter_id", bits=16)]
    command("SET_K_SIGMA", (SERVICE_PARAMETERS, 3), [value], [*one_k_sigma, pymdb.ArgumentEntry(value)])
    command("REPORT_K_SIGMA", (SERVICE_PARAMETERS, 1), entries=one_k_sigma)


def write(path, apid: int) -> None:
    with open(path, "w") as f:
        build(apid).dump(f)
