"""Runs and spans, and the current one: the `contextvars` variable that makes nesting
implicit.

Entering a run or span with `with` (or `async with`) makes it current until the block
exits. A `contextvars` variable is per thread and per asyncio task (each task starts with
a copy of its creator's context), so concurrent tasks and threads each keep their own
current span, as OpenTelemetry's context does.
"""

from __future__ import annotations

import contextvars
import time
from typing import TYPE_CHECKING, Any

from .v1 import runlens_pb2 as pb

if TYPE_CHECKING:
    from ._client import Client

_OK = pb.END_STATUS_OK
_FAILED = pb.END_STATUS_FAILED

#: The run or span entered last in this thread / asyncio task, or None.
_current: contextvars.ContextVar["Run | Span | None"] = contextvars.ContextVar(
    "runlens_current", default=None)


def current() -> "Run | Span | None":
    """The run or span whose `with` block encloses this code in this thread or asyncio
    task, or None outside any."""
    return _current.get()


def _now_ns() -> int:
    return time.time_ns()


def _attrs(attributes: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in attributes.items()}


def error_text(exc_type: type, exc: BaseException) -> str:
    """How an exception is stored as a run's or span's error: "Type: message"."""
    return f"{exc_type.__name__}: {exc}"


def open_span(client: "Client", name: str, fresh_snapshot: bool,
              attributes: dict[str, Any]) -> "Run | Span":
    """A span under the current run or span of `client`; a run of that name when there
    is none (so instrumented code records something wherever it is called from)."""
    parent = _current.get()
    if parent is not None and parent._client is client and not parent._ended:
        return parent.span(name, fresh_snapshot=fresh_snapshot, **attributes)
    return Run(client, name, attributes)


class _Recorder:
    """What runs and spans share: metrics, events, nested spans, ending, and being the
    current one inside their `with` block."""

    _client: "Client"
    _run_id: str
    _span_id: str = ""
    _ended: bool = False
    _error: str = ""
    _token: "contextvars.Token | None" = None
    _outer: "Run | Span | None" = None

    def metric(self, name: str, value: float, unit: str = "", **attributes: Any) -> None:
        """Records one numeric measurement (must be finite)."""
        self._client._push(metric=pb.Metric(
            run_id=self._run_id, span_id=self._span_id, name=name, value=float(value),
            unit=unit, attributes=_attrs(attributes), time_ns=_now_ns()))

    def event(self, name: str, **attributes: Any) -> None:
        """Records a named occurrence, e.g. "retry"."""
        self._client._push(event=pb.Event(
            run_id=self._run_id, span_id=self._span_id, name=name,
            attributes=_attrs(attributes), time_ns=_now_ns()))

    def span(self, name: str, fresh_snapshot: bool = False, **attributes: Any) -> "Span":
        """Opens a span nested here. `fresh_snapshot` asks the sidecar to sample at its
        start and end rather than attach its latest periodic sample."""
        return Span(self._client, self._run_id, self._span_id, name, fresh_snapshot,
                    attributes)

    def fail(self, error: str) -> None:
        """Marks it failed; it ends as failed when its `with` block exits."""
        self._error = error or "failed"

    def end(self, error: str = "") -> None:
        """Ends it: ok, or failed when `error` (or an earlier `fail`) is given."""
        if self._ended:
            return
        self._ended = True
        error = error or self._error
        self._push_end(_FAILED if error else _OK, error)

    def _push_end(self, status: "pb.EndStatus", error: str) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._outer = _current.get()
        self._token = _current.set(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Returns None: an exception inside the block always propagates.
        self.end(error_text(exc_type, exc) if exc_type else "")
        token, self._token = self._token, None
        try:
            if token is not None:
                _current.reset(token)
        except ValueError:
            # Exited in another context than it was entered in (e.g. a generator resumed
            # elsewhere): restore what was current when it was entered.
            _current.set(self._outer)

    async def __aenter__(self):
        return self.__enter__()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        self.__exit__(exc_type, exc, tb)


class Run(_Recorder):
    """One task of an agent, from request to answer."""

    def __init__(self, client: "Client", name: str, attributes: dict[str, Any]):
        self._client = client
        self._run_id = client._new_id()
        client._push(start_run=pb.StartRunRequest(
            run_id=self._run_id, name=name, attributes=_attrs(attributes), time_ns=_now_ns()))

    @property
    def id(self) -> str:
        """The run's id, as stored in runs.run_id."""
        return self._run_id

    def _push_end(self, status: "pb.EndStatus", error: str) -> None:
        self._client._push(end_run=pb.EndRunRequest(
            run_id=self._run_id, status=status, error=error, time_ns=_now_ns()))


class Span(_Recorder):
    """One step of a run (plan, llm_call, tool_call, ...), possibly nested."""

    def __init__(self, client: "Client", run_id: str, parent: str, name: str,
                 fresh_snapshot: bool, attributes: dict[str, Any]):
        self._client = client
        self._run_id = run_id
        self._span_id = client._new_id()
        self._fresh = fresh_snapshot
        client._push(urgent=fresh_snapshot, start_span=pb.StartSpanRequest(
            run_id=run_id, span_id=self._span_id, parent_span_id=parent, name=name,
            attributes=_attrs(attributes), time_ns=_now_ns(), fresh_snapshot=fresh_snapshot))

    @property
    def id(self) -> str:
        """The span's id, as stored in spans.span_id."""
        return self._span_id

    @property
    def run_id(self) -> str:
        """The id of the run this span belongs to."""
        return self._run_id

    def _push_end(self, status: "pb.EndStatus", error: str) -> None:
        self._client._push(urgent=self._fresh, end_span=pb.EndSpanRequest(
            span_id=self._span_id, status=status, error=error, time_ns=_now_ns(),
            fresh_snapshot=self._fresh))
