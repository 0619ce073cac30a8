"""runlens for Python: record an agent's runs and steps; the runlens sidecar annotates
each with a resource snapshot (GPUs, CPU, RAM, the container's limits) and stores it in
SQLite.

    import runlens

    with runlens.run("answer-question", model="llama-3-8b"):
        with runlens.span("llm_call", fresh_snapshot=True) as llm:
            llm.metric("gen_ai.usage.output_tokens", 512, unit="{token}")
    runlens.flush()

Nesting is implicit, as in OpenTelemetry: `runlens.span()` opens a span under whatever run
or span encloses it in this thread or asyncio task (a `contextvars` variable), wherever
the code is; outside any run it opens a run of its own. `@runlens.traced("tool_call")`
does the same for a whole function, sync or async. An exception inside a block or a
traced function ends that span failed with the exception's text, and propagates.

Recording never blocks: it appends to a bounded buffer that a background thread streams
to the sidecar, resending after a reconnect until the sidecar acknowledges a durable
commit. `runlens.flush()` (sync) and `await runlens.aflush()` (asyncio, without blocking
the loop) wait for that acknowledgement; at interpreter exit pending data is flushed for
up to 5 s.

The module-level functions use a default client, created on first use from the
environment: `RUNLENS_ENDPOINT` (host:port or http://host:port, default 127.0.0.1:50551)
and `RUNLENS_CLIENT_NAME` (default: the script's name), with the token of a sidecar that
asks for one from `RUNLENS_TOKEN`. `runlens.configure()` sets it
explicitly; `runlens.Client` objects can be used side by side.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import threading
from typing import Any, Callable, TypeVar, overload

from ._client import DEFAULT_ENDPOINT, Client, normalize_endpoint
from ._recording import Run, Span, current, open_span

__all__ = [
    "Client", "Run", "Span", "DEFAULT_ENDPOINT", "aflush", "client", "configure", "current",
    "event", "flush", "metric", "normalize_endpoint", "run", "span", "traced",
]

__version__ = "0.2.0"

F = TypeVar("F", bound=Callable[..., Any])

_default: Client | None = None
_default_lock = threading.Lock()


def configure(endpoint: str | None = None, name: str | None = None,
              **options: Any) -> Client:
    """Sets the default client used by the module-level functions and returns it.
    `endpoint` defaults to `RUNLENS_ENDPOINT`, `name` to `RUNLENS_CLIENT_NAME`; other
    options go to `Client` (capacity, flush_at_exit, token). A previous default client is
    flushed for up to 5 s and closed."""
    global _default
    new = Client(endpoint or _env_endpoint(), name=name or _env_name(), **options)
    with _default_lock:
        old, _default = _default, new
    if old is not None:
        old.close(5.0)
    return new


def client() -> Client:
    """The default client (created from the environment on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Client(_env_endpoint(), name=_env_name())
        return _default


def _env_endpoint() -> str:
    return os.environ.get("RUNLENS_ENDPOINT") or DEFAULT_ENDPOINT


def _env_name() -> str:
    name = os.environ.get("RUNLENS_CLIENT_NAME")
    if name:
        return name
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return script or "python"


def run(name: str, **attributes: Any) -> Run:
    """Opens a run on the default client; inside its `with` block it is the current run,
    so `runlens.span()` anywhere below nests in it. The sidecar takes a fresh baseline
    snapshot at its start and end."""
    return client().run(name, **attributes)


def span(name: str, fresh_snapshot: bool = False, **attributes: Any) -> Run | Span:
    """Opens a span under the current run or span (of this thread or asyncio task); with
    none current, opens a run of that name. `fresh_snapshot` asks the sidecar to sample at
    its start and end (use around heavy steps such as an LLM call)."""
    parent = current()
    owner = parent._client if parent is not None else client()
    return open_span(owner, name, fresh_snapshot, attributes)


def metric(name: str, value: float, unit: str = "", **attributes: Any) -> bool:
    """Records a metric on the current run or span. Returns False (and records nothing)
    outside any."""
    here = current()
    if here is None:
        return False
    here.metric(name, value, unit, **attributes)
    return True


def event(name: str, **attributes: Any) -> bool:
    """Records an event on the current run or span. Returns False (and records nothing)
    outside any."""
    here = current()
    if here is None:
        return False
    here.event(name, **attributes)
    return True


def flush(timeout: float | None = None) -> bool:
    """Waits until the sidecar has durably committed everything the default client
    recorded so far; False if `timeout` seconds passed first (nothing is lost then)."""
    return client().flush(timeout)


async def aflush(timeout: float | None = None) -> bool:
    """`flush()` for asyncio code: awaits the acknowledgement without blocking the loop."""
    return await client().aflush(timeout)


@overload
def traced(name: F, /) -> F: ...
@overload
def traced(name: str | None = None, /, *, fresh_snapshot: bool = False,
           client: Client | None = None, **attributes: Any) -> Callable[[F], F]: ...


def traced(name: Any = None, /, *, fresh_snapshot: bool = False,
           client: Client | None = None, **attributes: Any) -> Any:
    """Records each call of a function as a span (or a run, outside any), for sync and
    async functions alike:

        @runlens.traced("tool_call", tool="search")
        async def search(query): ...

        @runlens.traced            # the span is named after the function
        def plan(task): ...

    An exception fails the span with its text ("Type: message") and is re-raised.
    """
    def decorate(fn: F) -> F:
        span_name = name if isinstance(name, str) and name else fn.__qualname__

        def open_() -> Run | Span:
            if client is None:
                return span(span_name, fresh_snapshot, **attributes)
            return client.span(span_name, fresh_snapshot, **attributes)

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with open_():
                    return await fn(*args, **kwargs)
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with open_():
                return fn(*args, **kwargs)
        return wrapper  # type: ignore[return-value]

    if callable(name):
        fn, name = name, None
        return decorate(fn)
    return decorate
