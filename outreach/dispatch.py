"""The async delivery of a `send` run: a queue, one worker per connection, a feeder that has
each chunk composed and claimed, a flusher that records what the servers said, signals, and
the rules that stop a run.

It knows nothing of SQL or of the ledger's rows: it talks to the run through `Books`, which
composes and claims a chunk (its intents committed before any of it is queued), records
deliveries in batches, does the work between deliveries, and hands back what never went.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .render import Envelope
from .transport import Delivery, Outcome

if TYPE_CHECKING:
    from .planning import Due
    from .send import SendResult

STOP_AFTER_FAILURES = 5      # consecutive failed messages that stop the run
# Intents are written per transaction in chunks of 2 per connection (at least 8): enough to
# batch the writes, small enough that composing a chunk never leaves the connections idle. (A
# killed run's chunk costs nothing: the hand-over log says which of it went.)
CHUNK_PER_CONNECTION = 2
MIN_CHUNK = 8
FLUSH_SECONDS = 0.05         # how often accepted messages are recorded
# CPU work between deliveries is done in small pieces with a turn of the event loop between
# them (every this many messages composed or call scripts rendered): a long stretch of it
# leaves every connection's reply waiting and then the server idle while they catch up.
PIECE = 2


class Books(Protocol):
    """The ledger side of a run, as delivery sees it."""

    @property
    def contested(self) -> int:
        """How many due messages turned out claimed by another sender (or ended) meanwhile."""

    def prepare(self, items: list[Due]) -> list[Due]:
        """Those of these no other sender has claimed meanwhile, with what composing them
        needs (their prospects) read in one query."""

    def compose(self, item: Due) -> Envelope | None:
        """The message of a due step (None: it cannot be rendered; reported)."""

    def claim(self, envelopes: list[Envelope]) -> list[Envelope]:
        """Commit the intents of a chunk; only those returned may be sent."""


    def record(self, batch: list[tuple[Envelope, Delivery]]) -> None:
        """Record what the transport reported, in one transaction."""

    async def between(self) -> None:
        """Work done while messages are on the wire (the steps after recorded emails)."""

    def release(self, unsent: list[Envelope]) -> None:
        """Forget the intents of claimed messages that were never handed over."""

    def settle_cut_short(self) -> int:
        """Settle the intents a stop at once cut short; returns how many are due again."""


async def dispatch(chosen: Sequence[Due], *, conns: Sequence[Any], books: Books,
                   result: SendResult, tell: Callable[[str], None] | None,
                   timeout: float) -> None:
    """Deliver `chosen` over `conns` (opened here; the first before anything is claimed, so a
    refused login stops the run with nothing recorded)."""
    await conns[0].open()
    await _Dispatch(chosen, conns, books, result, tell, timeout).run()


class _Dispatch:
    def __init__(self, chosen: Sequence[Due], conns: Sequence[Any], books: Books,
                 result: SendResult, tell: Callable[[str], None] | None,
                 timeout: float) -> None:
        self.chosen, self.conns, self.books, self.result = chosen, conns, books, result
        self.tell, self.timeout = tell, timeout
        self.chunk = max(MIN_CHUNK, CHUNK_PER_CONNECTION * len(conns))
        self.queue: asyncio.Queue[Envelope | None] = asyncio.Queue(maxsize=self.chunk)
        self.stop = asyncio.Event()
        self.unsent: list[Envelope] = []
        self.suppressed: list[Envelope] = []   # claimed, then withheld: suppressed since
        self.pending: list[tuple[Envelope, Delivery]] = []
        self.taken = 0   # how many of `chosen` were composed (the rest were never started)
        self.aborting = False
        self.in_flight = 0
        self.failures = 0   # consecutive
        self.tasks: list[asyncio.Task[None]] = []

    async def worker(self, conn: Any) -> None:
        while (env := await self.queue.get()) is not None:
            if self.stop.is_set():
                self.unsent.append(env)
                continue
            self.in_flight += 1
            try:
                delivery = await conn.deliver(env)
            except Exception as exc:  # a bug mid-handover: assume it may have gone
                delivery = Delivery(Outcome.UNKNOWN, f"{type(exc).__name__}: {exc}")
            finally:
                self.in_flight -= 1
            if delivery.outcome is Outcome.WITHHELD:   # released at the end, never sent
                self.suppressed.append(env)
                continue
            self.pending.append((env, delivery))
            self.count(delivery)
        await conn.close()

    async def feed(self) -> None:
        try:
            await self.produce()
        except Exception:
            self.stop.set()   # the workers finish what they hold and hand back the rest
            raise
        finally:
            if not self.aborting:
                for _ in self.conns:
                    await self.queue.put(None)

    async def produce(self) -> None:
        """Compose and claim chunk after chunk, oldest due first; once another sender turns
        out to be on the same messages, go on at a chunk picked at random, so the two part
        ways instead of composing the same messages twice from then on."""
        chosen, chunk = self.chosen, self.chunk
        starts = list(range(0, len(chosen), chunk))
        crossed = False
        while starts and not self.stop.is_set():
            start = starts.pop(random.randrange(len(starts)) if crossed else 0)
            given = list(chosen[start:start + chunk])
            self.taken += len(given)
            # While earlier chunks are on the wire.
            before = self.books.contested
            items = self.books.prepare(given)
            envelopes = []
            for n, item in enumerate(items, start=1):
                if (env := self.books.compose(item)) is not None:
                    envelopes.append(env)
                if n % PIECE == 0:
                    await asyncio.sleep(0)   # replies that came in meanwhile go on
            for env in self.books.claim(envelopes):
                if self.stop.is_set():
                    self.unsent.append(env)
                    continue
                await self.queue.put(env)
            crossed = self.books.contested > before

    def flush(self) -> None:
        if self.pending:
            batch, self.pending = self.pending, []
            self.books.record(batch)

    async def flusher(self) -> None:
        try:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                self.flush()
                await self.books.between()
        except Exception:
            # Deliveries that cannot be recorded must not go on piling up unrecorded (the
            # error hidden): the run sends nothing more, and `run` raises this at the end.
            self.stop.set()
            raise

    def count(self, delivery: Delivery) -> None:
        """Stop after STOP_AFTER_FAILURES failed messages in a row."""
        if delivery.outcome is Outcome.SENT:
            self.failures = 0
            return
        self.failures += 1
        if self.failures >= STOP_AFTER_FAILURES and not self.stop.is_set():
            self.stop.set()
            self.result.stopped = (
                f"stopped after {STOP_AFTER_FAILURES} failures in a row (last: {delivery.error}); "
                "the rest were not sent and stay due. Check the SMTP server, then run again.")

    def interrupted(self, name: str) -> None:
        """Ctrl-C or a cron timeout's SIGTERM: finish what is on the wire, send nothing more.
        A second one stops at once: what was in DATA is settled as after a crash."""
        result = self.result
        if result.interrupted is None:
            result.interrupted = name
            self.stop.set()
            result.stopped = (f"stopped by {name}: the messages in flight were "
                              "finished; the rest were not sent and stay due")
            if self.tell:
                n = self.in_flight
                self.tell(f"stopping: finishing {n} message{'' if n == 1 else 's'} in flight "
                          f"(up to {self.timeout:g} s)… (again to stop at once)")
            return
        if self.aborting:
            return
        self.aborting = True
        result.stopped = (f"stopped at once by a second {name}: messages whose "
                          "delivery was cut short are reported unknown; the rest were "
                          "not sent and stay due")
        if self.tell:
            self.tell("stopping now")
        for task in self.tasks:
            task.cancel()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        signals = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.interrupted, sig.name)
                signals.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass   # not the main thread, or no signals here: keep the default behaviour
        workers = [asyncio.create_task(self.worker(c)) for c in self.conns]
        self.tasks = [asyncio.create_task(self.feed()), *workers]
        flushing = asyncio.create_task(self.flusher())
        try:
            for outcome in await asyncio.gather(*self.tasks, return_exceptions=True):
                if isinstance(outcome, Exception):
                    raise outcome
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            flushing.cancel()
            if self.aborting:
                for conn in self.conns:
                    conn.abort()
            self.flush()
        while not self.queue.empty():   # queued when the run stopped at once
            if (env := self.queue.get_nowait()) is not None:
                self.unsent.append(env)
        if self.unsent or self.suppressed:
            self.books.release(self.unsent + self.suppressed)
        cut_short = self.books.settle_cut_short() if self.aborting else 0
        if self.stop.is_set():
            self.result.defer("interrupted" if self.result.interrupted else "stopped",
                              len(self.unsent) + len(self.chosen) - self.taken + cut_short)
        if flushing.done() and not flushing.cancelled() and (
                failed := flushing.exception()) is not None:
            raise failed   # recording a batch failed: that batch waits for the next run
