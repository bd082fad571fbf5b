"""kestrel-ground command: send one telecommand and follow its verification reports.

The TC goes out over the port in a CLTU: a TC frame on the command virtual
channel, SDLS-protected when an SA protects it, as an AD frame through FOP-1
when the downlink's TM frames carry the CLCW (link.ocf; FOP-1 starts from
the V(R) it reports), else (or with --bypass) as a BD frame. With
uplink.mode = "bare_tc" it goes as a bare PUS-C packet (the bench mode). The
same port's downlink is decoded as `listen` decodes it, and the reports of
the command APID that name this TC's request id are printed as they come:
exit 0 on completion success, EXIT_FAILURE on a failure report (its reason
printed), EXIT_NO_REPLY when no completion came in time.

Before sending, the command is put through the payload's own stateless
acceptance checks (kestrel.services.parse_request), so a typo is refused
here; --no-check sends it anyway, to exercise the payload's checks.

Sequence counts: --sequence N uses N. Otherwise the next count per APID is
kept in DIR/tc_sequence.json (--out DIR, default $XDG_STATE_HOME/kestrel),
advanced before the TC goes out, so that a late report of an earlier command
is never taken for this one's.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import deque
from pathlib import Path

import serial

from kestrel import services
from kestrel.cli import EXIT_FAILURE, EXIT_STORAGE, EXIT_USAGE, add_common_arguments, fail, seconds
from kestrel.link.errors import MalformedError
from kestrel.link.port import PortError
from kestrel.link.spacepacket import IDLE_APID, MAX_SEQUENCE_COUNT, PusTm
from kestrel.services import Mode, Reason, RequestId, Stage, VerificationReport

from .archive import NullArchive
from .decoder import GroundDecoder
from .listen import open_link
from .uplink import TcSender, UplinkSetupError

log = logging.getLogger("kestrel-ground")

EXIT_NO_REPLY = 4       # the command went out but its completion was not reported in time
SEQUENCE_FILE = "tc_sequence.json"
# A function argument of these names may also be given by the name of its value.
_NAMED_VALUES = {"mode": {m.name: m.value for m in Mode}, "by": {k.name: k.value for k in services.StoreRange},
                 "apid": {"ALL": services.ALL_APIDS}}


def _ranged(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}, got {value}")
        return value
    return parse


def _add_options(parser: argparse.ArgumentParser, nested: bool) -> None:
    """The command's options, taken before or after the TC's name (nested: keep what came before)."""
    kept = {"default": argparse.SUPPRESS} if nested else {}
    parser.add_argument("--port", metavar="URL", help="any pyserial URL: the uplink and the downlink", **kept)
    parser.add_argument("--apid", type=_ranged(0, IDLE_APID - 1), metavar="N",
                        help="APID of the payload's command process (default: uplink.command_apid in the "
                        f"config, {services.COMMAND_APID} unless set)", **(kept or {"default": None}))
    parser.add_argument("--source-id", type=_ranged(0, 0xFFFF), metavar="N",
                        help="PUS source id of this ground station (default 0)", **(kept or {"default": 0}))
    parser.add_argument("--sequence", type=_ranged(0, MAX_SEQUENCE_COUNT), metavar="N",
                        help=f"packet sequence count of the TC (default: the next one kept in --out/{SEQUENCE_FILE})",
                        **kept)
    parser.add_argument("--out", metavar="DIR", help="directory keeping the TC sequence counts "
                        "(default $XDG_STATE_HOME/kestrel)", **kept)
    parser.add_argument("--timeout", type=seconds, metavar="S",
                        help="longest wait for the completion report (default 10)", **(kept or {"default": 10.0}))
    parser.add_argument("--no-check", action="store_true",
                        help="send a command the payload's acceptance checks would refuse (bench tests)", **kept)
    parser.add_argument("--bypass", action="store_true",
                        help="send a BD frame (expedited, past FARM-1's sequence check); the default is an AD "
                        "frame through FOP-1 when the downlink's frames carry the CLCW (link.ocf), else BD", **kept)
    add_common_arguments(parser, subcommand=True)


def add_command_parser(sub) -> argparse.ArgumentParser:
    """`kestrel-ground command`, added to the program's subparsers."""
    command = sub.add_parser("command", help="send one telecommand over the port and report its verification",
                             description="Send one PUS-C telecommand as a bare TC packet and follow its "
                             "verification reports on the downlink of the same port.")
    _add_options(command, nested=False)
    tcs = command.add_subparsers(dest="tc", metavar="TC", required=True)
    nested = [tcs.add_parser("ping", help="TC(17,1): are you alive?")]
    get = tcs.add_parser("get-parameter", help="TC(20,1): report parameter values")
    get.add_argument("names", nargs="+", metavar="NAME", help="parameter name or id")
    put = tcs.add_parser("set-parameter", help="TC(20,3): set a parameter")
    put.add_argument("name", metavar="NAME", help="parameter name or id")
    put.add_argument("value", metavar="VALUE")
    mode = tcs.add_parser("mode", help="TC(8,1) change_mode")
    mode.add_argument("mode", type=str.upper, choices=[m.name for m in Mode], metavar="MODE",
                      help=", ".join(m.name.lower() for m in services.COMMANDABLE_MODES))
    function = tcs.add_parser("function", help="TC(8,1): perform a function")
    function.add_argument("function", choices=list(services.FUNCTIONS_BY_NAME), metavar="NAME",
                          help=", ".join(services.FUNCTIONS_BY_NAME))
    function.add_argument("arguments", nargs="*", metavar="ARG", help="the function's arguments, in order")
    hk = tcs.add_parser("hk", help="TC(3,5)/TC(3,6): enable or disable periodic housekeeping")
    hk.add_argument("action", choices=("enable", "disable"))
    hk.add_argument("structures", nargs="+", metavar="STRUCTURE", help="structure name or id")
    interval = tcs.add_parser("hk-interval", help="TC(3,31): set a housekeeping structure's collection interval")
    interval.add_argument("structure", metavar="STRUCTURE", help="structure name or id")
    interval.add_argument("interval", type=seconds, metavar="S", help="seconds between reports")
    for parser in nested + [get, put, mode, function, hk, interval]:
        _add_options(parser, nested=True)
    return command


# --- the request ---------------------------------------------------------------------------------

def _parameter(text: str) -> services.Parameter | int:
    """A parameter by name or id; an id the table lacks stays a number (only a report can ask for it)."""
    if text in services.PARAMETERS_BY_NAME:
        return services.PARAMETERS_BY_NAME[text]
    try:
        pid = int(text)
    except ValueError:
        raise ValueError(f"no parameter {text!r}; known: {', '.join(services.PARAMETERS_BY_NAME)}") from None
    return services.PARAMETERS_BY_ID.get(pid, pid)


def _structure(text: str) -> int:
    for sid, name in services.HK_STRUCTURES.items():
        if text == name:
            return sid
    try:
        return _ranged(0, 0xFFFF)(text)
    except argparse.ArgumentTypeError:
        raise ValueError(f"no housekeeping structure {text!r}; known: {', '.join(services.HK_STRUCTURES.values())}"
                         ) from None


def _function_arguments(function: services.Function, texts: list[str]) -> dict:
    fields = services.argument_fields(function.arguments)
    if len(texts) != len(fields):
        wanted = " ".join(name.upper() for name, _ in fields) or "no arguments"
        raise ValueError(f"{function.name} takes {wanted}, got {len(texts)} argument(s)")
    arguments = {}
    for (name, kind), text in zip(fields, texts):
        named = _NAMED_VALUES.get(name)
        if named is not None and text.upper() in named:
            arguments[name] = named[text.upper()]
            continue
        try:
            arguments[name] = float(text) if kind.startswith("f") else int(text)
        except ValueError:
            raise ValueError(f"{function.name}: {name} must be a number, got {text!r}") from None
    return arguments


def build_request(args) -> services.Request:
    """The request the command line names; ValueError (or ServiceError) says what is wrong with it."""
    if args.tc == "ping":
        return services.ping()
    if args.tc == "get-parameter":
        return services.report_parameters(p if isinstance(p, int) else p.id for p in map(_parameter, args.names))
    if args.tc == "set-parameter":
        parameter = _parameter(args.name)
        if isinstance(parameter, int):
            raise ValueError(f"parameter {parameter} is unknown here: its type, so its value, cannot be sent")
        try:
            value = parameter.from_text(args.value)
        except ValueError:
            raise ValueError(f"{parameter.name} takes a {parameter.type} value, got {args.value!r}") from None
        if not args.no_check:
            parameter.check(value)
        return services.set_parameters({parameter.id: value})
    if args.tc == "mode":
        return services.change_mode(Mode[args.mode])
    if args.tc == "function":
        function = services.FUNCTIONS_BY_NAME[args.function]
        return services.perform_function(function.name, **_function_arguments(function, args.arguments))
    if args.tc == "hk":
        structures = [_structure(s) for s in args.structures]
        return (services.enable_housekeeping if args.action == "enable" else services.disable_housekeeping)(structures)
    if args.tc == "hk-interval":
        return services.set_housekeeping_interval({_structure(args.structure): round(args.interval * 1000)})
    raise AssertionError(f"no request for {args.tc!r}")


def state_directory(out: str | None) -> Path:
    if out:
        return Path(out)
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "kestrel"


def next_sequence(directory: Path, apid: int) -> int:
    """The next TC sequence count of `apid`, kept in `directory` (OSError or ValueError if it cannot be)."""
    path = directory / SEQUENCE_FILE
    try:
        counts = json.loads(path.read_text())
    except FileNotFoundError:
        counts = {}
    if not isinstance(counts, dict):
        raise ValueError(f"{path} does not hold sequence counts by APID")
    count = int(counts.get(str(apid), 0)) & MAX_SEQUENCE_COUNT
    counts[str(apid)] = (count + 1) & MAX_SEQUENCE_COUNT
    directory.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(counts))
    temporary.replace(path)   # a reader never sees half a file
    return count


# --- the downlink ---------------------------------------------------------------------------------

class ReplyArchive(NullArchive):
    """What the decoder archives while a command runs: the command APID's reports, kept in memory.

    The products of the pass are not kept: `listen` is the archive of a pass."""

    def __init__(self):
        super().__init__()
        self.replies: deque[PusTm] = deque()

    def reply(self, tm: PusTm) -> None:
        self.replies.append(tm)


def reply_decoder(config, archive: ReplyArchive, apid: int) -> GroundDecoder:
    """The ground decoder, with the command APID's packets handed to the archive whole (a verification
    report is all source data, which the archive interface does not carry)."""
    return GroundDecoder(config, archive, handlers={apid: archive.reply})


def _reason(report: VerificationReport) -> str:
    reason = report.reason
    text = f"{reason.name} ({reason.value})" if isinstance(reason, Reason) else f"reason code {reason}"
    # The text came over the radio: nothing in it may drive the operator's terminal.
    detail = "".join(c if c.isprintable() else "?" for c in report.data.decode("utf8", "replace"))
    return f"{text}: {detail}" if detail else text


class Follower:
    """Turns the command APID's reports into lines and an outcome, for one request id."""

    def __init__(self, request_id: RequestId, out=print):
        self.request_id = request_id
        self.seen: list[str] = []
        self.outcome: tuple[int, str] | None = None   # (exit status, error line) once decided
        self._out = out

    def take(self, tm: PusTm) -> None:
        key = (tm.service, tm.subtype)
        if tm.service == services.SERVICE_VERIFICATION:
            try:
                report = VerificationReport.unpack(tm.subtype, tm.data)
            except MalformedError as exc:
                log.warning("undecodable verification report: %s", exc)
                return
            if report.request_id != self.request_id:
                log.info("a report of another command (%s) passed by", report.request_id)
                return
            stage = report.stage.name.lower() + (f" step {report.step}" if report.step is not None else "")
            if report.success:
                self.seen.append(stage)
                self._out(f"{stage}: success")
                if report.stage == Stage.COMPLETION:
                    self.outcome = (0, "")
            else:
                self._out(f"{stage}: FAILED, {_reason(report)}")
                self.outcome = (EXIT_FAILURE, f"the command failed at {stage}: {_reason(report)}")
        elif key == (services.SERVICE_TEST, 2):
            self._out("reply TM(17,2): the payload is alive")
        elif key == (services.SERVICE_PARAMETERS, 2):
            try:
                values = services.parse_parameter_report(tm.data)
            except MalformedError as exc:
                self._out(f"reply TM(20,2) undecodable: {exc}")
                return
            for pid, value in values.items():
                parameter = services.PARAMETERS_BY_ID.get(pid)
                self._out(f"{parameter.name if parameter else pid} = {value:g}"
                          + (f" {parameter.unit}" if parameter and parameter.unit else ""))
        else:
            log.info("TM(%d,%d) from the command APID", tm.service, tm.subtype)


def _send(sender: TcSender | None, tc, ad: bool, write) -> bool:
    """Send the TC if it can go now (an AD frame waits for FOP-1 to be active); True once it went."""
    if sender is None:
        write(tc.pack())
        return True
    if not ad:
        sender.fop.transmit_bd(tc.pack())
        return True
    if not sender.start_ad() or not sender.fop.ready:
        return False
    return sender.fop.transmit_ad(tc.pack()) is not None


def run_command(config, args, parser) -> int:
    if not args.port:
        fail(parser, "command needs --port URL", EXIT_USAGE)
    if args.apid is None:
        args.apid = config.uplink.command_apid
    try:
        request = build_request(args)
        if not args.no_check:
            services.parse_request(request.tc(args.apid, 0), apid=args.apid)
    except (ValueError, MalformedError) as exc:
        hint = "; --no-check sends it anyway" if isinstance(exc, services.ServiceError) else ""
        fail(parser, f"not sent: {exc}{hint}", EXIT_USAGE)
    sequence = args.sequence
    if sequence is None:
        directory = state_directory(args.out)
        try:
            sequence = next_sequence(directory, args.apid)
        except (OSError, ValueError, TypeError) as exc:
            fail(parser, f"TC sequence counts in {directory}: {exc}; give --sequence N", EXIT_STORAGE)
    tc = request.tc(args.apid, sequence, args.source_id)
    try:
        port = open_link(args.port, config.link.baud, timeout=config.ground.read_timeout_s,
                         flush_on_open=config.ground.flush_on_open)
    except PortError as exc:
        fail(parser, str(exc))
    name = services.TC_TYPES[(tc.service, tc.subtype)].name
    follower = Follower(RequestId.of(tc), out=lambda line: print(line, flush=True))
    def write(octets: bytes) -> None:
        port.write(octets)
        port.flush()

    try:
        archive = ReplyArchive()
        decoder = reply_decoder(config, archive, args.apid)
        sender = None
        if config.uplink.mode == "cltu":
            try:
                sender = TcSender(config.link, config.uplink, write, state_directory(args.out) / "sdls",
                                  time.monotonic)
                sender.check_size(tc.pack())
            except UplinkSetupError as exc:
                fail(parser, f"not sent: {exc}", EXIT_USAGE)
            decoder.on_clcw = sender.clcw
        ad = sender is not None and config.link.ocf and not args.bypass
        try:
            sent = False
            deadline = time.monotonic() + args.timeout
            while follower.outcome is None and time.monotonic() < deadline:
                if not sent:
                    sent = _send(sender, tc, ad, write)
                    if sent:
                        how = ("as a bare packet" if sender is None else
                               f"in an {'AD' if ad else 'BD'} frame on VC {sender.vcid}"
                               + (f", SDLS SPI {sender.sa.spi}" if sender.sa is not None else ""))
                        print(f"kestrel-ground: sent TC({tc.service},{tc.subtype}) {name} to APID {tc.apid}, "
                              f"sequence count {tc.sequence_count}, {how}", flush=True)
                decoder.feed(port.read(config.ground.read_size))
                if sender is not None:
                    sender.fop.poll()
                    if sender.fop.alert_reason is not None:
                        fail(parser, f"FOP-1 alert on VC {sender.vcid}: {sender.fop.alert_reason}")
                while archive.replies and follower.outcome is None:
                    follower.take(archive.replies.popleft())
            if not sent:
                fail(parser, f"not sent: no CLCW of VC {sender.vcid} came on the downlink within {args.timeout:g} s "
                     "(FOP-1 starts from it); --bypass sends a BD frame", EXIT_NO_REPLY)
        except (serial.SerialException, OSError) as exc:
            fail(parser, f"the port failed before the command completed: {exc}")
    finally:
        port.close()
    if follower.outcome is None:
        seen = ", ".join(follower.seen) or "none"
        fail(parser, f"no completion report for TC({tc.service},{tc.subtype}) within {args.timeout:g} s "
             f"(reports received: {seen})", EXIT_NO_REPLY)
    status, error = follower.outcome
    if status:
        fail(parser, error, status)
    return 0
