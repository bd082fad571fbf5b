"""The payload's PUS-C services (ECSS-E-ST-70-41C): what commands carry and what their reports say.

    ST[01] verification  TM(1,1..8): acceptance, start, progress, completion; success or failure
    ST[03] housekeeping  TC(3,5) enable, TC(3,6) disable, TC(3,31) re-time periodic reports
    ST[05] events        TM(5,1..4), declared in kestrel.products
    ST[08] functions     TC(8,1) perform a function: change mode, quick-look, store, counters, config, time
    ST[17] test          TC(17,1) ping, TM(17,2) the answer
    ST[20] parameters    TC(20,1) report values, TM(20,2) the values, TC(20,3) set values
    ST[132] alerts       TM(132,1) alert opened or updated, TM(132,2) closed, declared in kestrel.products

Every format is declared once here with construct: the flight parses TCs and
builds TM with it, the ground builds TCs and parses TM with it. A command's
verification reports and replies come from the application process that
took it, so they carry its APID (COMMAND_APID until the lead wires the
config). Failure data is UTF-8 text for the operator, at most
MAX_FAILURE_DATA octets. `command_table()` renders all of it as Markdown.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Callable, Final, NamedTuple

import construct as cs

from . import products
from .link.errors import ChecksumMismatch, LinkError, MalformedError, TruncatedError
from .link.spacepacket import IDLE_APID, MAX_SEQUENCE_COUNT, PRIMARY_HEADER
from .link.telecommand import Ack, PusTc

COMMAND_APID: Final = 50
MAX_FAILURE_DATA: Final = 64

SERVICE_VERIFICATION: Final = 1
SERVICE_HOUSEKEEPING: Final = products.SERVICE_HOUSEKEEPING
SERVICE_EVENTS: Final = products.SERVICE_EVENTS
SERVICE_FUNCTIONS: Final = 8
SERVICE_TEST: Final = 17
SERVICE_PARAMETERS: Final = 20


class _Described(enum.IntEnum):
    """An IntEnum whose members carry the sentence the command table prints."""

    def __new__(cls, value: int, meaning: str):
        member = int.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member


class Reason(_Described):
    """Failure codes of ST[01] failure notices."""

    WRONG_APID = 1, "the packet is not addressed to this payload's command APID"
    BAD_CHECKSUM = 2, "the packet error control (CRC-16) does not match"
    BAD_LENGTH = 3, "the packet, or its application data, is shorter or longer than its type needs"
    MALFORMED_PACKET = 4, "a header field holds a value the format does not allow"
    UNKNOWN_SERVICE = 5, "no such service on this payload"
    UNKNOWN_SUBTYPE = 6, "the service has no such telecommand subtype"
    PARAMETER_UNKNOWN = 7, "no parameter has this id"
    VALUE_OUT_OF_RANGE = 8, "a value lies outside its declared range (or is not finite)"
    UNKNOWN_FUNCTION = 9, "no ST[08] function has this id"
    UNKNOWN_STRUCTURE = 10, "no housekeeping structure has this id"
    NOT_ALLOWED_IN_MODE = 11, "the command is not allowed in the current mode"
    STORE_ERROR = 12, "the product store could not do it"
    PERSISTENCE_ERROR = 13, "the new value could not be saved; the old one stays"
    BUSY = 14, "an earlier command of the same kind is still running"
    EXECUTION_ERROR = 15, "the command was started but could not be completed"


class Mode(_Described):
    """Payload modes, in the order the payload goes up through them (the values of flight/modes.py)."""

    BOOT = 0, "starting: checks the configuration, store and sensor; entered only by starting"
    SAFE = 1, "commands and housekeeping only: no detection, no imagery"
    STANDBY = 2, "the sensor is read and the background model kept warm, without products"
    OBSERVE = 3, "the mission: detection, alerts first, imagery"


COMMANDABLE_MODES: Final = (Mode.SAFE, Mode.STANDBY, Mode.OBSERVE)


# replay_store by time of every APID. Not an APID (they end at 0x7FF), so it cannot be mistaken for one.
ALL_APIDS: Final = 0xFFFF


class StoreRange(_Described):
    """How replay_store names its range."""

    TIME = 1, f"first..last: POSIX seconds (UTC) when the products were made; apid: one APID, or {ALL_APIDS} for all"
    SEQUENCE = 2, ("first, last: 14-bit packet sequence counts of the APID as received (last below first: "
                   "the count wrapped); the flight resolves them to the products it holds")


class ServiceError(MalformedError):
    """A request (or report) the service declarations refuse, with the ST[01] reason to report."""

    def __init__(self, reason: Reason, detail: str):
        super().__init__(f"{reason.name} ({reason.value}): {detail}")
        self.reason = reason
        self.detail = detail


def reason_for(exc: LinkError) -> Reason:
    """The failure code of an acceptance failure caused by `exc`."""
    if isinstance(exc, ServiceError):
        return exc.reason
    if isinstance(exc, ChecksumMismatch):
        return Reason.BAD_CHECKSUM
    if isinstance(exc, TruncatedError):
        return Reason.BAD_LENGTH
    return Reason.MALFORMED_PACKET


def failure_data(text: str) -> bytes:
    """Failure notice data: the text, cut to MAX_FAILURE_DATA octets on a character boundary."""
    return text.encode("utf8")[:MAX_FAILURE_DATA].decode("utf8", "ignore").encode("utf8")


class _Refuse(cs.Construct):
    """A Switch default: an id nothing declares is a ServiceError with its reason, not a parse error."""

    def __init__(self, reason: Reason, what: str, key):
        super().__init__()
        self.reason, self.what, self.key = reason, what, key

    def _parse(self, stream, context, path):
        raise ServiceError(self.reason, f"{self.what} {self.key(context)} unknown")

    def _build(self, obj, stream, context, path):
        raise ServiceError(self.reason, f"{self.what} {self.key(context)} unknown")


# --- ST[01] verification ---------------------------------------------------------------

# The request id is the first four octets of the TC's primary header. Its
# version is read as sent, not held to 0: a refused packet is reported as it came.
REQUEST_ID = cs.BitStruct("version" / cs.BitsInteger(3), *PRIMARY_HEADER.subcon.subcons[1:6])


class RequestId(NamedTuple):
    apid: int
    sequence_count: int
    sequence_flags: int = 3
    is_telecommand: bool = True
    has_secondary_header: bool = True
    version: int = 0

    @classmethod
    def of(cls, tc: PusTc) -> "RequestId":
        return cls(tc.apid, tc.sequence_count, tc.sequence_flags)

    @classmethod
    def of_octets(cls, raw) -> "RequestId":
        """The request id of a packet that may not parse (at least 4 octets): what a failure report names."""
        parsed = REQUEST_ID.parse(bytes(raw[:4]))
        return cls(**{name: parsed[name] for name in cls._fields})

    def pack(self) -> bytes:
        return REQUEST_ID.build(self._asdict())

    def __str__(self) -> str:
        return f"APID {self.apid} sequence count {self.sequence_count}"


class Stage(_Described):
    """Verification stages by their success subtype; the failure subtype is one more."""

    ACCEPTANCE = 1, "the command was checked and taken"
    START = 3, "its execution started"
    PROGRESS = 5, "a step of its execution finished"
    COMPLETION = 7, "its execution finished"


def _verification_format(stage: Stage, success: bool) -> cs.Construct:
    fields = ["request_id" / REQUEST_ID]
    if stage == Stage.PROGRESS:
        fields.append("step" / cs.Int16ub)
    if success:
        fields.append(cs.Terminated)
    else:
        fields += ["code" / cs.Int16ub, "data" / cs.GreedyBytes]
    return cs.Struct(*fields)


VERIFICATION_FORMATS: Final = {stage + (not success): _verification_format(stage, success)
                               for stage in Stage for success in (True, False)}


@dataclass(frozen=True)
class VerificationReport:
    """TM(1,x): the outcome of one stage of one command."""

    request_id: RequestId
    stage: Stage
    success: bool = True
    step: int | None = None   # progress reports only
    code: int = 0             # a Reason on failure; kept as an int, a newer flight may send a code we lack
    data: bytes = b""

    def __post_init__(self):
        if (self.step is None) == (self.stage == Stage.PROGRESS):
            raise ValueError("a progress report, and only one, names its step")
        if self.success and (self.code or self.data):
            raise ValueError("a success report carries no failure notice")

    @property
    def subtype(self) -> int:
        return self.stage + (not self.success)

    @property
    def reason(self) -> Reason | int:
        try:
            return Reason(self.code)
        except ValueError:
            return self.code

    def pack(self) -> bytes:
        fields = dict(request_id=self.request_id._asdict(), step=self.step, code=self.code, data=self.data)
        return VERIFICATION_FORMATS[self.subtype].build(fields)

    @classmethod
    def failure(cls, request_id: RequestId, stage: Stage, error: ServiceError,
                step: int | None = None) -> "VerificationReport":
        return cls(request_id, stage, False, step, error.reason, failure_data(error.detail))

    @classmethod
    def unpack(cls, subtype: int, data: bytes) -> "VerificationReport":
        fmt = VERIFICATION_FORMATS.get(subtype)
        if fmt is None:
            raise MalformedError(f"TM(1,{subtype}) is not a verification report")
        try:
            parsed = fmt.parse(data)
        except cs.ConstructError as exc:
            raise MalformedError(f"TM(1,{subtype}): {exc}") from None
        request_id = RequestId(**{n: parsed.request_id[n] for n in RequestId._fields})
        return cls(request_id, Stage(subtype - (not subtype & 1)), bool(subtype & 1), parsed.get("step"),
                   parsed.get("code", 0), parsed.get("data", b""))


# --- ST[20] parameters -------------------------------------------------------------------

WIRE_TYPES: Final = {"u8": cs.Int8ub, "u16": cs.Int16ub, "u32": cs.Int32ub, "i32": cs.Int32sb,
                     "f32": cs.Float32b, "f64": cs.Float64b}
_WIRE_NAMES: Final = {id(c): name for name, c in WIRE_TYPES.items()}


@dataclass(frozen=True)
class Parameter:
    """An on-board parameter: the flight owns its value, this declares its id, type and range (inclusive)."""

    id: int
    name: str
    type: str
    low: float
    high: float
    unit: str
    meaning: str

    @property
    def format(self) -> cs.Construct:
        return WIRE_TYPES[self.type]

    @property
    def rule(self) -> str:
        """The range as the table and the errors print it: whole numbers in full."""
        return "..".join(str(int(x)) if float(x).is_integer() else f"{x:g}" for x in (self.low, self.high))

    def check(self, value):
        """`value` if it may be set, else ServiceError(VALUE_OUT_OF_RANGE)."""
        if isinstance(value, float) and not math.isfinite(value) or not self.low <= value <= self.high:
            raise ServiceError(Reason.VALUE_OUT_OF_RANGE, f"{self.name} must be {self.rule}, got {value!r}")
        return value

    def from_text(self, text: str):
        """A value typed by an operator (ValueError if it is not a number of this type)."""
        return float(text) if self.type.startswith("f") else int(text)


# Ranges lie inside the flight's config rules, so a commanded value is also a valid config value.
# The housekeeping period is not here: TC(3,31) re-times housekeeping, one way to do it.
PARAMETERS: Final = (
    Parameter(1, "detection.k_sigma", "f32", 1.0, 50.0, "sigma", "detection threshold in local noise sigmas"),
    Parameter(10, "imaging.quicklook_period_s", "f32", 0.0, 86400.0, "s",
              "seconds between quick-look frames (0: none)"),
    Parameter(11, "imaging.chips_per_frame", "u16", 0, 64, "", "most image chips sent per frame (0: none)"),
    # Onboard time = system time + offset_s + drift_ppm * 1e-6 * (system time - epoch_s).
    # A board without a real-time clock may boot in 1970, hence an offset of decades.
    Parameter(30, "time.offset_s", "f64", -2.0**32, 2.0**32, "s", "time correlation: offset at the epoch"),
    Parameter(31, "time.drift_ppm", "f64", -1000.0, 1000.0, "ppm", "time correlation: rate of the correction"),
    Parameter(32, "time.epoch_s", "f64", 0.0, 2.0**33, "s",
              "time correlation: system time (POSIX) at which the offset holds"),
)
PARAMETERS_BY_ID: Final = {p.id: p for p in PARAMETERS}
PARAMETERS_BY_NAME: Final = {p.name: p for p in PARAMETERS}

PARAMETER_VALUE = cs.Struct(
    "id" / cs.Int16ub,
    "value" / cs.Switch(cs.this.id, {p.id: p.format for p in PARAMETERS},
                        default=_Refuse(Reason.PARAMETER_UNKNOWN, "parameter", cs.this.id)),
)
PARAMETER_IDS = cs.Struct("ids" / cs.PrefixedArray(cs.Int8ub, cs.Int16ub), cs.Terminated)
PARAMETER_VALUES = cs.Struct("parameters" / cs.PrefixedArray(cs.Int8ub, PARAMETER_VALUE), cs.Terminated)


def _check_report_parameters(request) -> None:
    for pid in request.ids:
        if pid not in PARAMETERS_BY_ID:
            raise ServiceError(Reason.PARAMETER_UNKNOWN, f"parameter {pid} unknown")


def _check_set_parameters(request) -> None:
    for item in request.parameters:
        PARAMETERS_BY_ID[item.id].check(item.value)


# --- ST[08] functions --------------------------------------------------------------------

@dataclass(frozen=True)
class Function:
    id: int
    name: str
    arguments: cs.Struct
    meaning: str
    check: Callable | None = None


def _check_mode(arguments) -> None:
    if arguments.mode not in COMMANDABLE_MODES:
        raise ServiceError(Reason.VALUE_OUT_OF_RANGE, f"mode {arguments.mode} cannot be commanded "
                           f"(one of {', '.join(f'{m.value} {m.name}' for m in COMMANDABLE_MODES)})")


def _check_apid(apid: int, any_allowed: bool = False) -> None:
    if not (apid < IDLE_APID or any_allowed and apid == ALL_APIDS):
        raise ServiceError(Reason.VALUE_OUT_OF_RANGE, f"APID {apid} names no products")


def _check_counts(arguments) -> None:
    for count in (arguments.first, arguments.last):
        if count > MAX_SEQUENCE_COUNT:
            raise ServiceError(Reason.VALUE_OUT_OF_RANGE, f"sequence count {count} is above {MAX_SEQUENCE_COUNT}")


def _check_replay(arguments) -> None:
    if arguments.by == StoreRange.TIME:
        _check_apid(arguments.apid, any_allowed=True)
        if arguments.first > arguments.last:
            raise ServiceError(Reason.VALUE_OUT_OF_RANGE, f"time range {arguments.first}..{arguments.last} is empty")
    elif arguments.by == StoreRange.SEQUENCE:
        _check_apid(arguments.apid)
        _check_counts(arguments)
    else:
        raise ServiceError(Reason.VALUE_OUT_OF_RANGE, f"store range kind {arguments.by} unknown")


def _check_acknowledge(arguments) -> None:
    _check_apid(arguments.apid)
    _check_counts(arguments)


def _check_time_correlation(arguments) -> None:
    for name in ("offset_s", "drift_ppm", "epoch_s"):
        PARAMETERS_BY_NAME["time." + name].check(arguments[name])


STORE_RANGE = cs.Struct("by" / cs.Int8ub, "apid" / cs.Int16ub, "first" / cs.Int32ub, "last" / cs.Int32ub)
SEQUENCE_RANGE = cs.Struct("apid" / cs.Int16ub, "first" / cs.Int16ub, "last" / cs.Int16ub)
NO_ARGUMENTS = cs.Struct()

FUNCTIONS: Final = (
    Function(1, "change_mode", cs.Struct("mode" / cs.Int8ub), "go to the mode (see Modes)", _check_mode),
    Function(2, "take_quicklook", NO_ARGUMENTS, "send a quick-look of the next frame now"),
    Function(3, "dump_store", NO_ARGUMENTS, "send everything the store holds again, by priority"),
    Function(4, "replay_store", STORE_RANGE, "send the held products in the range again (see Store ranges)",
             _check_replay),
    Function(5, "acknowledge_store", SEQUENCE_RANGE, "the ground holds the APID's packets first..last "
             "(14-bit counts, as for replay by sequence): the store may free them", _check_acknowledge),
    Function(6, "reset_counters", NO_ARGUMENTS, "zero the housekeeping counters"),
    Function(7, "reload_config", NO_ARGUMENTS, "read the configuration again; refused whole if a value is invalid"),
    # One function for all three, so that no packet is stamped with a new offset and an old drift.
    Function(8, "set_time_correlation",
             cs.Struct("offset_s" / cs.Float64b, "drift_ppm" / cs.Float64b, "epoch_s" / cs.Float64b),
             "set time.offset_s, time.drift_ppm and time.epoch_s together", _check_time_correlation),
    Function(9, "rekey_sa", cs.Struct("spi" / cs.Int16ub, "key" / cs.Int16ub),
             "SDLS key rotation: the SA takes key number KEY from uplink.key_dir (file key-KEY, mode 600); its "
             "sequence numbers go on; kept across restarts"),
)
FUNCTIONS_BY_ID: Final = {f.id: f for f in FUNCTIONS}
FUNCTIONS_BY_NAME: Final = {f.name: f for f in FUNCTIONS}

PERFORM_FUNCTION = cs.Struct(
    "function" / cs.Int16ub,
    "arguments" / cs.Switch(cs.this.function, {f.id: f.arguments for f in FUNCTIONS},
                            default=_Refuse(Reason.UNKNOWN_FUNCTION, "function", cs.this.function)),
    cs.Terminated,
)


def _check_function(request) -> None:
    function = FUNCTIONS_BY_ID[request.function]
    if function.check is not None:
        function.check(request.arguments)


# --- ST[03] housekeeping -----------------------------------------------------------------

# Structures are defined in the flight's config; these are the ones the payload ships with.
HK_STRUCTURES: Final = {products.HK_STRUCTURE_FLIGHT: "flight", products.HK_STRUCTURE_UPLINK: "uplink"}
HK_INTERVAL_MS: Final = (100, 3_600_000)

HK_STRUCTURE_IDS = cs.Struct("structures" / cs.PrefixedArray(cs.Int8ub, cs.Int16ub), cs.Terminated)
HK_INTERVALS = cs.Struct(
    "intervals" / cs.PrefixedArray(cs.Int8ub, cs.Struct("structure" / cs.Int16ub, "interval_ms" / cs.Int32ub)),
    cs.Terminated,
)


def _check_intervals(request) -> None:
    low, high = HK_INTERVAL_MS
    for item in request.intervals:
        if not low <= item.interval_ms <= high:
            raise ServiceError(Reason.VALUE_OUT_OF_RANGE, f"housekeeping structure {item.structure}: interval "
                               f"{item.interval_ms} ms is not {low}..{high}")


# --- the message types -------------------------------------------------------------------

EMPTY = cs.Struct(cs.Terminated)


@dataclass(frozen=True)
class MessageType:
    service: int
    subtype: int
    name: str
    format: cs.Construct
    data: str                      # what the application or source data holds, for the table
    check: Callable | None = None  # TC only: the checks beyond the format


TC_TYPES: Final = {(t.service, t.subtype): t for t in (
    MessageType(3, 5, "enable periodic housekeeping", HK_STRUCTURE_IDS, "N (u8), N x structure id (u16)"),
    MessageType(3, 6, "disable periodic housekeeping", HK_STRUCTURE_IDS, "N (u8), N x structure id (u16)"),
    MessageType(3, 31, "modify housekeeping collection interval", HK_INTERVALS,
                f"N (u8), N x (structure id (u16), interval ms (u32), {HK_INTERVAL_MS[0]}..{HK_INTERVAL_MS[1]})",
                _check_intervals),
    MessageType(8, 1, "perform a function", PERFORM_FUNCTION, "function id (u16), its arguments (see Functions)",
                _check_function),
    MessageType(17, 1, "are-you-alive (ping)", EMPTY, "none"),
    MessageType(20, 1, "report parameter values", PARAMETER_IDS, "N (u8), N x parameter id (u16)",
                _check_report_parameters),
    MessageType(20, 3, "set parameter values", PARAMETER_VALUES,
                "N (u8), N x (parameter id (u16), value (its type))", _check_set_parameters),
)}

TM_TYPES: Final = {(t.service, t.subtype): t for t in (
    *(MessageType(1, stage + (not ok), f"{stage.name.lower()} {'success' if ok else 'failure'}",
                  VERIFICATION_FORMATS[stage + (not ok)],
                  "request id (4 octets)" + (", step (u16)" if stage == Stage.PROGRESS else "")
                  + ("" if ok else f", failure code (u16), failure data (UTF-8, <= {MAX_FAILURE_DATA} octets)"))
      for stage in Stage for ok in (True, False)),
    MessageType(17, 2, "are-you-alive report", EMPTY, "none"),
    MessageType(20, 2, "parameter value report", PARAMETER_VALUES,
                "N (u8), N x (parameter id (u16), value (its type))"),
)}


def parse_request(tc: PusTc, apid: int = COMMAND_APID):
    """The application data of `tc` parsed and checked (a construct Container); ServiceError says why not.

    These are the acceptance checks that need no state; the flight adds its own
    (mode, busy, configured structures) and reports them the same way.
    """
    if tc.apid != apid:
        raise ServiceError(Reason.WRONG_APID, f"APID {tc.apid} is not the command APID {apid}")
    kind = TC_TYPES.get((tc.service, tc.subtype))
    if kind is None:
        if any(service == tc.service for service, _ in TC_TYPES):
            raise ServiceError(Reason.UNKNOWN_SUBTYPE, f"TC({tc.service},{tc.subtype}) unknown")
        raise ServiceError(Reason.UNKNOWN_SERVICE, f"service {tc.service} unknown")
    try:
        request = kind.format.parse(tc.data)
    except cs.ConstructError as exc:
        # Every way these formats fail is a field cut short or octets left over.
        raise ServiceError(Reason.BAD_LENGTH, f"TC({tc.service},{tc.subtype}) application data of "
                           f"{len(tc.data)} octets does not fit its format") from exc
    if kind.check is not None:
        kind.check(request)
    return request


class Request(NamedTuple):
    """A TC's type and application data, before it is given an APID and a sequence count."""

    service: int
    subtype: int
    data: bytes

    def tc(self, apid: int, sequence_count: int, source_id: int = 0, ack_flags: int = Ack.ALL) -> PusTc:
        return PusTc(apid, self.service, self.subtype, self.data, sequence_count, source_id, ack_flags)


def _request(service: int, subtype: int, **fields) -> Request:
    return Request(service, subtype, TC_TYPES[(service, subtype)].format.build(fields))


def ping() -> Request:
    return _request(17, 1)


def report_parameters(ids) -> Request:
    return _request(20, 1, ids=list(ids))


def set_parameters(values: dict[int, float]) -> Request:
    return _request(20, 3, parameters=[dict(id=k, value=v) for k, v in values.items()])


def perform_function(name: str, **arguments) -> Request:
    return _request(8, 1, function=FUNCTIONS_BY_NAME[name].id, arguments=arguments)


def change_mode(mode: Mode) -> Request:
    return perform_function("change_mode", mode=int(mode))


def enable_housekeeping(structures) -> Request:
    return _request(3, 5, structures=list(structures))


def disable_housekeeping(structures) -> Request:
    return _request(3, 6, structures=list(structures))


def set_housekeeping_interval(intervals_ms: dict[int, int]) -> Request:
    return _request(3, 31, intervals=[dict(structure=k, interval_ms=v) for k, v in intervals_ms.items()])


def parameter_report(values: dict[int, float]) -> bytes:
    """Source data of TM(20,2)."""
    return PARAMETER_VALUES.build(dict(parameters=[dict(id=k, value=v) for k, v in values.items()]))


def parse_parameter_report(data: bytes) -> dict[int, float]:
    """Values of a TM(20,2); MalformedError (ServiceError for an id we lack) when it does not parse."""
    try:
        return {item.id: item.value for item in PARAMETER_VALUES.parse(data).parameters}
    except cs.ConstructError as exc:
        raise MalformedError(f"TM(20,2): {exc}") from None


# --- the table ---------------------------------------------------------------------------

APIDS: Final = (
    (COMMAND_APID, "TC, TM", "telecommands; their verification reports (1,x) and replies (17,2), (20,2)"),
    (products.APID_HOUSEKEEPING, "TM", "housekeeping reports (3,25)"),
    (products.APID_EVENTS, "TM", "events (5,1..4)"),
    (products.APID_ALERT_OPENINGS, "TM", "alerts opened (132,1, update 0)"),
    (products.APID_ALERTS, "TM", "alerts updated (132,1), closed (132,2)"),
    (products.APID_DETECTIONS, "TM", "detection reports (130,1)"),
    (products.APID_IMAGES, "TM", "image chips (131,1), track chips (131,3)"),
    (products.APID_QUICKLOOK, "TM", "quick-look frames (131,2)"),
)

PRODUCT_TM_TYPES: Final = (
    (products.SERVICE_HOUSEKEEPING, products.SUBTYPE_HK_REPORT, "housekeeping report", "kestrel.products"),
    *((products.SERVICE_EVENTS, severity, f"event, {name} severity", "kestrel.products")
      for severity, name in ((products.EVENT_INFO, "info"), (products.EVENT_LOW, "low"),
                             (products.EVENT_MEDIUM, "medium"), (products.EVENT_HIGH, "high"))),
    (products.SERVICE_DETECTIONS, products.SUBTYPE_DETECTION_REPORT, "detection report", "kestrel.products"),
    (products.SERVICE_IMAGES, products.SUBTYPE_CHIP, "image chip segment", "kestrel.products"),
    (products.SERVICE_IMAGES, products.SUBTYPE_QUICKLOOK, "quick-look frame segment", "kestrel.products"),
    (products.SERVICE_IMAGES, products.SUBTYPE_TRACK_CHIP, "track chip segment (an alert's chip sequence)",
     "kestrel.products"),
    (products.SERVICE_ALERTS, products.SUBTYPE_ALERT_UPDATE, "alert opened or updated: track id, kind and "
     "evidence, first seen, position and velocity with covariance, intensity trend, scores, lat/lon",
     "kestrel.products"),
    (products.SERVICE_ALERTS, products.SUBTYPE_ALERT_CLOSED, "alert closed: the track's last state and why it "
     "ended", "kestrel.products"),
)


def argument_fields(fmt: cs.Struct) -> list[tuple[str, str]]:
    """(name, wire type) of each field of a function's arguments, in order."""
    return [(sc.name, _WIRE_NAMES[id(sc.subcon)]) for sc in fmt.subcons if sc.name]


def _arguments(fmt: cs.Struct) -> str:
    return ", ".join(f"{name} ({kind})" for name, kind in argument_fields(fmt)) or "none"


def _table(header: tuple[str, ...], rows) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def command_table() -> str:
    """Markdown: every APID, service and subtype, function, parameter, mode and reason code, from the declarations."""
    messages = sorted([(s, st, "TC", t.name, t.data) for (s, st), t in TC_TYPES.items()]
                      + [(s, st, "TM", t.name, t.data) for (s, st), t in TM_TYPES.items()]
                      + [(s, st, "TM", name, f"see {where}") for s, st, name, where in PRODUCT_TM_TYPES])
    low, high = HK_INTERVAL_MS
    sections = [
        ("APIDs", _table(("APID", "direction", "carries"), APIDS)),
        ("Services and subtypes", _table(("service", "subtype", "direction", "message", "data"), messages)),
        ("Functions, TC(8,1)", _table(("id", "name", "arguments", "does"),
                                      [(f.id, f.name, _arguments(f.arguments), f.meaning) for f in FUNCTIONS])),
        ("Parameters, ST[20]", _table(("id", "name", "type", "range", "unit", "meaning"),
                                      [(p.id, p.name, p.type, p.rule, p.unit, p.meaning)
                                       for p in PARAMETERS])),
        ("Modes", _table(("id", "mode", "meaning"), [(m.value, m.name, m.meaning) for m in Mode])),
        ("Store ranges, replay_store", _table(("by", "kind", "meaning"),
                                              [(k.value, k.name, k.meaning) for k in StoreRange])),
        ("Housekeeping structures, ST[3]", _table(("id", "name", "interval"),
                                                  [(i, n, f"{low}..{high} ms") for i, n in HK_STRUCTURES.items()])),
        ("Acknowledgement flags", _table(("bit value", "stage reported on success"),
                                         [(a.value, a.name.lower()) for a in Ack if a != Ack.ALL])),
        ("Reason codes, ST[1] failure notices", _table(("code", "name", "meaning"),
                                                      [(r.value, r.name, r.meaning) for r in Reason])),
    ]
    return "\n".join(line for title, table in sections for line in (f"### {title}", "", *table, "")).rstrip() + "\n"
