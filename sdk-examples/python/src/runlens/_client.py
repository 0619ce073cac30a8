"""The transport: a bounded buffer and a background thread that streams it to the sidecar.

Recording never waits on the network: each call appends one message to a bounded
in-memory buffer and returns. A background thread streams the buffer to the sidecar over
the `Session` rpc, keeps every message until the sidecar acknowledges that it is durably
committed, and reconnects (resending what is unacknowledged) when the stream breaks, for
example while the sidecar restarts.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import itertools
import os
import random
import sys
import threading
import time
import uuid
import warnings

from typing import TYPE_CHECKING

import grpc

from .v1 import runlens_pb2 as pb
from .v1 import runlens_pb2_grpc as rpc

if TYPE_CHECKING:
    from ._recording import Run, Span

__all__ = ["Client", "normalize_endpoint", "DEFAULT_ENDPOINT"]

#: Where the sidecar listens by default (`runlens serve`'s default `--listen`).
DEFAULT_ENDPOINT = "127.0.0.1:50551"

_BATCH = 1024  # messages per stream frame

#: How long a recorded message waits for others before they are sent together, by
#: default (milliseconds); `RUNLENS_LINGER_MS` or `linger_ms=` set another.
DEFAULT_LINGER_MS = 500


def _linger_from_env() -> float:
    """The linger in seconds from `RUNLENS_LINGER_MS`, else the default."""
    text = os.environ.get("RUNLENS_LINGER_MS", "").strip()
    if not text:
        return DEFAULT_LINGER_MS / 1000
    try:
        ms = int(text)
        if ms < 0:
            raise ValueError(text)
        return ms / 1000
    except ValueError:
        _warn(f"RUNLENS_LINGER_MS={text!r} is not a whole number of milliseconds; "
              f"using {DEFAULT_LINGER_MS} ms")
        return DEFAULT_LINGER_MS / 1000


#: How long `close()` (and the exit flush) waits for a sidecar this client never reached.
NEVER_CONNECTED_WAIT_S = 0.5

#: How long the sidecar may be unreachable before the client says so (once per outage).
UNREACHABLE_WARNING_AFTER_S = 10.0


def normalize_endpoint(endpoint: str) -> str:
    """The target for grpc: `host:port` from `host:port`, `http://host:port` or
    `https://host:port` (TLS: see `Client`), or a Unix socket `unix:///path` (or `unix:path`) as is. Anything
    else raises ValueError naming the expected forms, at once, rather than a client that
    never connects."""
    text = endpoint.strip()
    expected = ("write it as HOST:PORT, http://HOST:PORT or https://HOST:PORT, e.g. "
                "127.0.0.1:50551, or unix:///path/to.sock")
    if text.startswith("unix:"):
        if not text[len("unix:"):].lstrip("/"):
            raise ValueError(f"invalid endpoint {endpoint!r}: a Unix socket needs a path; "
                             f"{expected}")
        return text
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme not in ("http", "https"):
            raise ValueError(f"invalid endpoint {endpoint!r}: unsupported scheme {scheme!r}; "
                             f"{expected}")
        text = rest.rstrip("/")
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or "/" in text or " " in text:
        raise ValueError(f"invalid endpoint {endpoint!r}: {expected}")
    return text


def _warn(message: str) -> None:
    """A warning the agent's author sees (Python's `warnings`, on stderr by default)."""
    warnings.warn(f"runlens: {message}", RuntimeWarning, stacklevel=3)


def _resolve(future: "asyncio.Future") -> None:
    if not future.done():
        future.set_result(True)


class Client:
    """A connection to the runlens sidecar. Safe to share between threads."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, name: str = "",
                 capacity: int = 100_000, flush_at_exit: float = 5.0,
                 token: str | None = None, ca_file: str | None = None,
                 linger_ms: int | None = None):
        """`endpoint` is host:port, http://host:port or unix:///path (ValueError
        otherwise). `token` is the sidecar's bearer token (its --token-file), sent as
        `authorization: Bearer <token>`; it defaults to `RUNLENS_TOKEN`. An `https://`
        endpoint connects with TLS, checking the sidecar's certificate against `ca_file`
        (PEM; default `RUNLENS_CA_FILE`, else the system's roots). `capacity`
        bounds the messages kept while unacknowledged; beyond it new messages are dropped,
        counted (`dropped`) and warned about once. Nothing is ever lost silently: a sidecar
        unreachable for a while, and messages left unacknowledged at `close()` or exit,
        are warned about with their count. Messages linger up to `linger_ms` (default
        `RUNLENS_LINGER_MS`, else 500) for others to travel with them in one frame; a span
        that asks for a fresh snapshot, `flush()` and `close()` send at once, and 0 sends
        each message as soon as it is recorded."""
        self.endpoint = normalize_endpoint(endpoint)
        self._credentials = None
        if endpoint.strip().lower().startswith("https://"):
            ca_file = ca_file or os.environ.get("RUNLENS_CA_FILE") or None
            roots = None
            if ca_file:
                with open(ca_file, "rb") as f:
                    roots = f.read()
            self._credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        self.name = name
        if token is None:
            token = os.environ.get("RUNLENS_TOKEN", "")
        token = token.strip()
        if token and not all(33 <= ord(c) <= 126 for c in token):
            raise ValueError("invalid token: use the printable text of the sidecar's "
                             "--token-file")
        self._metadata = [("authorization", f"Bearer {token}")] if token else []
        self.client_id = "py-" + uuid.uuid4().hex[:16]
        self._ids = itertools.count(1)
        self._id_prefix = self.client_id[3:]
        self._capacity = max(1, capacity)
        self._linger = _linger_from_env() if linger_ms is None else max(0, linger_ms) / 1000
        # Since when messages wait to be sent (None while none do), and the last message
        # that must go at once (a fresh-snapshot request, a flush).
        self._pending_since: float | None = None
        self._urgent_seq = 0
        self._cond = threading.Condition()
        self._next_seq = 1
        self._pending: collections.deque = collections.deque()
        self._inflight: collections.deque = collections.deque()
        self._acked = 0
        self._generation = 0
        self._closed = False
        self.dropped = 0
        self._dropped_reported = 0
        self.rejected = 0
        self.last_error = ""
        # Whether a session ever opened: at exit, a client that never reached the sidecar
        # does not wait out its whole flush bound for it.
        self._ever_connected = False
        # Over a Unix socket gRPC would send the path as the HTTP/2 :authority, which is
        # not a valid authority and the sidecar's HTTP/2 server refuses the stream.
        self._channel_options = ([("grpc.default_authority", "localhost")]
                                 if self.endpoint.startswith("unix:") else [])
        # (seq, loop, future) of `aflush()` callers, resolved from the sender thread.
        self._waiters: list = []
        self._thread = threading.Thread(target=self._drive, name="runlens-client", daemon=True)
        self._thread.start()
        if flush_at_exit:
            atexit.register(self.close, flush_at_exit)

    # ---- recording -------------------------------------------------------------------

    def _new_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    def _push(self, urgent: bool = False, **body) -> None:
        """Buffers one message. The sender thread is woken only when there is something to
        decide (a first message starts the linger; an urgent one or a full frame ends it):
        each wake-up costs the agent's thread the GIL."""
        with self._cond:
            if len(self._pending) + len(self._inflight) >= self._capacity:
                self.dropped += 1
                self._cond.notify()
                if self.dropped == 1:
                    _warn(f"buffer full ({self._capacity} messages unacknowledged, sidecar at "
                          f"{self.endpoint}): dropping new messages; the count is in "
                          "`client.dropped` and reported to the sidecar")
                return
            seq = self._next_seq
            self._next_seq += 1
            self._pending.append(pb.ClientMessage(seq=seq, **body))
            first = self._pending_since is None
            if first:
                self._pending_since = time.monotonic()
            if urgent:
                self._urgent_seq = seq
            if first or urgent or not self._linger or len(self._pending) >= _BATCH:
                self._cond.notify()

    def _hurry(self) -> None:
        """Makes everything recorded so far due at once (a flush)."""
        with self._cond:
            self._urgent_seq = self._next_seq - 1
            self._cond.notify_all()

    def _due_in(self) -> float:
        """Seconds until the pending messages are due (0: now). Called with the lock held
        and messages pending."""
        if (self._closed or len(self._pending) >= _BATCH or not self._linger
                or self._pending[0].seq <= self._urgent_seq or self._pending_since is None):
            return 0.0
        return max(0.0, self._pending_since + self._linger - time.monotonic())

    def run(self, name: str, **attributes) -> "Run":
        """Opens a run (the sidecar takes a fresh baseline snapshot). Use it with `with`
        (it becomes the current run for `runlens.span()` below it), or call `end()` /
        `fail()` yourself."""
        from ._recording import Run
        return Run(self, name, attributes)

    def span(self, name: str, fresh_snapshot: bool = False, **attributes) -> "Run | Span":
        """Opens a span nested in the current run or span of this client (see
        `runlens.current()`); with none current, opens a run of that name instead."""
        from ._recording import open_span
        return open_span(self, name, fresh_snapshot, attributes)

    # ---- delivery --------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until the sidecar has durably committed everything recorded so far.
        Returns False if `timeout` (seconds) passed first; nothing is lost then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._hurry()
        with self._cond:
            target = self._next_seq - 1
            while self._acked < target:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 1.0)
            return True

    async def aflush(self, timeout: float | None = None) -> bool:
        """`flush()` for asyncio code: waits for the sidecar's acknowledgement of
        everything recorded so far without blocking the event loop (the sender thread
        resolves a future). Returns False if `timeout` (seconds) passed first."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._hurry()
        with self._cond:
            target = self._next_seq - 1
            if self._acked >= target:
                return True
            waiter = (target, loop, future)
            self._waiters.append(waiter)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            with self._cond:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    @property
    def unacknowledged(self) -> int:
        """Messages recorded but not yet acknowledged by the sidecar."""
        with self._cond:
            return self._next_seq - 1 - self._acked

    def close(self, timeout: float = 5.0) -> bool:
        """Flushes for up to `timeout` seconds and stops the background thread. What is
        still unacknowledged then is lost: warned about with its count and the reason. A
        client that never reached the sidecar waits at most `NEVER_CONNECTED_WAIT_S` (the
        sidecar is not there: an agent should not take longer to exit for it)."""
        if not self._ever_connected:
            timeout = min(timeout, NEVER_CONNECTED_WAIT_S)
        flushed = self.flush(timeout)
        with self._cond:
            already = self._closed
            self._closed = True
            self._cond.notify_all()
        left = self.unacknowledged
        if not flushed and not already and left:
            why = f" (last error: {self.last_error})" if self.last_error else ""
            if self._ever_connected:
                _warn(f"{left} message(s) not acknowledged by the sidecar at {self.endpoint} "
                      f"after {timeout:g}s; they are lost{why}")
            else:
                _warn(f"the sidecar at {self.endpoint} was never reachable; {left} "
                      f"message(s) recorded by this process are lost{why}")
        return flushed

    def _acknowledge(self, seq: int) -> None:
        done = []
        with self._cond:
            while self._inflight and self._inflight[0].seq <= seq:
                self._inflight.popleft()
            while not self._inflight and self._pending and self._pending[0].seq <= seq:
                self._pending.popleft()
            if not self._pending:
                self._pending_since = None
            if seq > self._acked:
                self._acked = seq
            self._cond.notify_all()
            if self._waiters:
                done = [w for w in self._waiters if w[0] <= self._acked]
                self._waiters = [w for w in self._waiters if w[0] > self._acked]
        for _, loop, future in done:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:
                pass  # that event loop is closed: nobody is waiting any more

    def _requests(self, generation: int):
        """The outgoing stream of one connection; ends when that connection is replaced."""
        yield pb.ClientMessage(seq=0, hello=pb.SessionHello(
            client_id=self.client_id, client_name=self.name, pid=os.getpid(),
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            nvidia_visible_devices=os.environ.get("NVIDIA_VISIBLE_DEVICES", "")))
        while True:
            with self._cond:
                while generation == self._generation:
                    if self.dropped != self._dropped_reported:
                        break
                    if self._pending:
                        # Linger: let what the agent records next travel in this frame.
                        wait = self._due_in()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    elif self._closed:
                        break
                    else:
                        self._cond.wait(0.5)
                if generation != self._generation or (self._closed and not self._pending):
                    return
                if self.dropped > self._dropped_reported:
                    # Tell the sidecar how much was lost (stored in clients.dropped_messages).
                    self._dropped_reported = self.dropped
                    self._pending.append(pb.ClientMessage(
                        seq=self._next_seq,
                        stats=pb.ClientStats(dropped_total=self.dropped)))
                    self._next_seq += 1
                batch = list(itertools.islice(self._pending, _BATCH))
                for _ in batch:
                    self._pending.popleft()
                self._inflight.extend(batch)
                self._pending_since = time.monotonic() if self._pending else None
            # One frame per batch: gRPC Python's per-message cost would otherwise dominate.
            yield pb.ClientMessage(batch=pb.MessageBatch(messages=batch))

    def _drive(self) -> None:
        delay = 0.05
        down_since = None  # when the current outage began
        warned = False
        while True:
            with self._cond:
                if self._closed and self._next_seq - 1 == self._acked:
                    return
                self._generation += 1
                generation = self._generation
                # Everything sent on a previous connection and not acknowledged goes again,
                # at once: it waited long enough.
                self._inflight.extend(self._pending)
                self._pending = self._inflight
                self._inflight = collections.deque()
                if self._pending:
                    self._urgent_seq = max(self._urgent_seq, self._pending[-1].seq)
                    self._pending_since = self._pending_since or time.monotonic()
            if self._credentials is not None:
                channel = grpc.secure_channel(self.endpoint, self._credentials,
                                              options=self._channel_options)
            else:
                channel = grpc.insecure_channel(self.endpoint, options=self._channel_options)
            try:
                stub = rpc.RunlensStub(channel)
                for reply in stub.Session(self._requests(generation),
                                          metadata=self._metadata):
                    kind = reply.WhichOneof("body")
                    if kind == "welcome":
                        self._ever_connected = True
                        delay = 0.05
                        down_since, warned = None, False
                        self.last_error = ""
                        self._acknowledge(reply.welcome.committed_seq)
                    elif kind == "ack":
                        self._acknowledge(reply.ack.committed_seq)
                    elif kind == "error":
                        self.rejected += 1
                        self.last_error = reply.error.message
                        print(f"runlens: message {reply.error.seq} rejected: "
                              f"{reply.error.message}", file=sys.stderr)
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else None
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    # gRPC without the runlens API: most often runlens's own OTLP port.
                    self.last_error = (
                        f"{self.endpoint} answers gRPC but has no runlens API (UNIMPLEMENTED): "
                        f"is it runlens's OTLP port (4317)? The runlens API listens on "
                        f"{DEFAULT_ENDPOINT} by default (`runlens serve --listen`)")
                else:
                    self.last_error = str(e.details() if hasattr(e, "details") else e)
            finally:
                with self._cond:
                    self._generation += 1  # ends the old request generator
                    self._cond.notify_all()
                channel.close()
            with self._cond:
                if self._closed and self._next_seq - 1 == self._acked:
                    return
            if down_since is None:
                down_since = time.monotonic()
            down_for = time.monotonic() - down_since
            if not warned and down_for >= UNREACHABLE_WARNING_AFTER_S:
                warned = True
                _warn(f"sidecar at {self.endpoint} unreachable for {down_for:.0f}s "
                      f"({self.last_error or 'no answer'}); {self.unacknowledged} message(s) "
                      "buffered, still retrying")
            # Capped exponential backoff with full jitter.
            time.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 5.0)
