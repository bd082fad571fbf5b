"""The one entry point for telecommands: acceptance, execution, and a verification report for each stage.

Every TC that reaches `handle` ends in a report the ground can tie to it
(ST[01], keyed by its request id): an acceptance failure with its reason
when the format or this payload's state refuses it, otherwise acceptance,
start and completion (success or failure with a reason), each sent when the
TC's acknowledgement flags ask for it; failures are always sent. Replies
(ST[17] are-you-alive, ST[20] parameter values) go on the command APID.

The formats and the stateless checks are kestrel.services'; here are the
checks that need the payload's state (mode, configured housekeeping
structures) and the execution, through the executive's operations.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from kestrel import services
from kestrel.link.telecommand import Ack, PusTc
from kestrel.services import Reason, RequestId, ServiceError, Stage, VerificationReport

from .modes import Cause, Mode, ModeRefused
from .parameters import ParameterError, ParameterStorageError, UnknownParameterError
from .store import ProductClass, StoreError

log = logging.getLogger(__name__)

# Functions that need the sensor running.
_SENSING_FUNCTIONS = {"take_quicklook"}


@dataclass
class CommandCounters:
    accepted: int = 0
    rejected: int = 0        # acceptance failures
    completed: int = 0
    failed: int = 0          # execution (completion) failures


class CommandHandler:
    """`ops`: the executive's operations (send_tm, modes, parameters, time, store, housekeeping control...)."""

    def __init__(self, ops, apid: int):
        self.ops = ops
        self.apid = apid
        self.counters = CommandCounters()

    # --- reports --------------------------------------------------------------------------
    def _report(self, report: VerificationReport) -> None:
        self.ops.send_tm(ProductClass.VERIFICATION, self.apid, 1, report.subtype, report.pack())

    def _reply(self, service: int, subtype: int, data: bytes = b"") -> None:
        self.ops.send_tm(ProductClass.VERIFICATION, self.apid, service, subtype, data)

    # --- the entry point --------------------------------------------------------------------
    def handle(self, tc: PusTc) -> bool:
        """Check, execute and report one TC; True when it completed."""
        request_id = RequestId.of(tc)
        try:
            request = services.parse_request(tc, self.apid)
            self._check_state(tc, request)
        except ServiceError as exc:
            self.counters.rejected += 1
            log.warning("command %s refused: %s", request_id, exc)
            self._report(VerificationReport.failure(request_id, Stage.ACCEPTANCE, exc))
            return False
        self.counters.accepted += 1
        if tc.ack_flags & Ack.ACCEPTANCE:
            self._report(VerificationReport(request_id, Stage.ACCEPTANCE))
        if tc.ack_flags & Ack.START:
            self._report(VerificationReport(request_id, Stage.START))
        try:
            self._execute(tc, request)
        except ServiceError as exc:
            self.counters.failed += 1
            log.warning("command %s failed: %s", request_id, exc)
            self._report(VerificationReport.failure(request_id, Stage.COMPLETION, exc))
            return False
        self.counters.completed += 1
        if tc.ack_flags & Ack.COMPLETION:
            self._report(VerificationReport(request_id, Stage.COMPLETION))
        return True

    # --- acceptance that needs state -----------------------------------------------------------
    def _check_state(self, tc: PusTc, request) -> None:
        if (tc.service, tc.subtype) == (8, 1):
            name = services.FUNCTIONS_BY_ID[request.function].name
            if name in _SENSING_FUNCTIONS and not self.ops.modes.sensing:
                raise ServiceError(Reason.NOT_ALLOWED_IN_MODE, f"{name} needs STANDBY or OBSERVE, the payload is "
                                   f"in {self.ops.modes.mode.name}")
            if name == "change_mode":
                refusal = self.ops.modes.allowed(Mode(request.arguments.mode), Cause.COMMAND)
                if refusal is not None:
                    raise ServiceError(Reason.NOT_ALLOWED_IN_MODE, refusal)
        if tc.service == 3:
            ids = request.structures if tc.subtype in (5, 6) else [i.structure for i in request.intervals]
            unknown = [i for i in ids if i not in self.ops.housekeeping_structures]
            if unknown:
                raise ServiceError(Reason.UNKNOWN_STRUCTURE, f"housekeeping structure {unknown[0]} unknown")

    # --- execution --------------------------------------------------------------------------
    def _execute(self, tc: PusTc, request) -> None:
        kind = (tc.service, tc.subtype)
        if kind == (17, 1):
            self._reply(17, 2)
        elif kind == (20, 1):
            values = {pid: self.ops.parameters.get(services.PARAMETERS_BY_ID[pid].name) for pid in request.ids}
            self._reply(20, 2, services.parameter_report(values))
        elif kind == (20, 3):
            values = {services.PARAMETERS_BY_ID[item.id].name: item.value for item in request.parameters}
            self._set_parameters(values)
        elif kind == (8, 1):
            self._function(services.FUNCTIONS_BY_ID[request.function].name, request.arguments)
        elif kind in ((3, 5), (3, 6)):
            for structure in request.structures:
                self.ops.housekeeping_structures[structure] = kind == (3, 5)
        elif kind == (3, 31):
            for item in request.intervals:
                self.ops.set_housekeeping_period(item.structure, item.interval_ms / 1000)
        else:  # parse_request knows only the types above
            raise ServiceError(Reason.UNKNOWN_SUBTYPE, f"TC{kind} has no execution")

    def _set_parameters(self, values: dict) -> None:
        try:
            self.ops.parameters.set_many(values)
        except UnknownParameterError as exc:
            raise ServiceError(Reason.PARAMETER_UNKNOWN, str(exc)) from None
        except ParameterStorageError as exc:
            raise ServiceError(Reason.PERSISTENCE_ERROR, str(exc)) from None
        except (ParameterError, ValueError) as exc:
            raise ServiceError(Reason.VALUE_OUT_OF_RANGE, str(exc)) from None

    def _function(self, name: str, arguments) -> None:
        ops = self.ops
        try:
            if name == "change_mode":
                ops.modes.enter(Mode(arguments.mode), Cause.COMMAND, "commanded")
            elif name == "take_quicklook":
                ops.request_quicklook()
            elif name == "dump_store":
                ops.store.replay(float("-inf"), float("inf"), by="time")
            elif name == "replay_store":
                self._replay(arguments)
            elif name == "acknowledge_store":
                first, last = self._resolve(arguments.apid, arguments.first, arguments.last)
                ops.store.acknowledge(arguments.apid, first, last)
            elif name == "reset_counters":
                ops.reset_counters()
            elif name == "reload_config":
                ops.reload_config()
            elif name == "rekey_sa":
                ops.rekey_sa(arguments.spi, arguments.key)
            elif name == "set_time_correlation":
                self._set_parameters({"time.offset_s": arguments.offset_s, "time.drift_ppm": arguments.drift_ppm,
                                      "time.epoch_s": arguments.epoch_s})
            else:
                raise ServiceError(Reason.UNKNOWN_FUNCTION, f"function {name} has no execution")
        except ModeRefused as exc:
            raise ServiceError(Reason.NOT_ALLOWED_IN_MODE, str(exc)) from None
        except StoreError as exc:
            raise ServiceError(Reason.STORE_ERROR, str(exc)) from None
        except (ValueError, OSError) as exc:
            raise ServiceError(Reason.EXECUTION_ERROR, str(exc)) from None

    def _resolve(self, apid: int, first: int, last: int) -> tuple[int, int]:
        """14-bit counts as the ground received them -> the unwrapped sequences the store holds."""
        low, high = self.ops.store.resolve(apid, first), self.ops.store.resolve(apid, last)
        if low is None or high is None:
            raise ServiceError(Reason.STORE_ERROR, f"APID {apid}: the store holds no product with count "
                               f"{first if low is None else last}")
        return low, high

    def _replay(self, arguments) -> None:
        if arguments.by == services.StoreRange.TIME:
            apid = None if arguments.apid == services.ALL_APIDS else arguments.apid
            self.ops.store.replay(arguments.first, arguments.last, by="time", apid=apid)
        else:
            first, last = self._resolve(arguments.apid, arguments.first, arguments.last)
            self.ops.store.replay(first, last, by="sequence", apid=arguments.apid)
