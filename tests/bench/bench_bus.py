"""Benchmark of the pubmarine.py bus against its baselines, side by side in one process.

Run from anywhere:

    python3 tests/bench/bench_bus.py [--pubmarine043 DIR] [--rounds 5] [--fair-rounds 7]

First it measures pubmarine.py against the fair floors (``FlatFloorBus``: event and arguments
queued flat, nothing tracked by the garbage collector per event; ``WeakFloorBus``: the same,
holding bound methods weakly as pubmarine.py does), at queue depths 10, 1,000 and 100,000 (a
coroutine publishes that many events, then lets the loop deliver them), with 1 and 10
subscribers: the median, min and max of the time ratios over ``--fair-rounds`` rounds that
measure them side by side (their order rotating) after a warm-up round, beside the goals (1.25x
the flat floor with functions, 1.35x the weak floor with bound methods). With functions it also
measures ``CheckedFloorBus``, the flat floor plus only the checks that pubmarine.py's promises
need on every publish and every call (keywords, the thread, an awaitable result): what those
checks cost over the flat floor, and pubmarine.py's time over that floor's.

Then it measures deliveries per second for a coroutine that publishes ``--events`` events to 1
and to 10 subscribers and then waits until all of them have been delivered, for:

* pubmarine.py, this repository's bus;
* the floor: the simplest deferred dispatcher there is (``FloorBus`` below), the yardstick of
  pubmarine.py's speed goal: at most 1.4 times the floor's time with 1 subscriber and 1.2
  times with 10, with plain functions as callbacks. The two are also measured with bound
  methods as callbacks, which pubmarine.py holds through weak references (the floor holds
  them strongly): the cost of that guarantee is shown, with no goal;
* a naive bus doing one ``loop.call_soon`` per callback (defined below);
* pubmarine 0.4.3, when ``--pubmarine043 DIR`` names a directory made by
  ``pip install --target DIR pubmarine==0.4.3`` (its module name is the same as ours, so it is
  loaded from there under another name);
* pyee's ``AsyncIOEventEmitter``, when pyee can be imported. Note that pyee calls plain
  functions synchronously inside ``emit()``; the others defer every call to the loop.

Implementations are interleaved round by round (the machine is shared and noisy) and the best
round is reported, with the median beside it. It also times unsubscribing N subscriptions of
one event in reverse order. This is a benchmark, not a test: it prints figures and asserts only
that every delivery happened.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import gc
import importlib.util
import platform
import statistics
import sys
import time
import weakref
from inspect import isawaitable
from pathlib import Path
from threading import get_ident
from types import MethodType, ModuleType
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import pubmarine  # noqa: E402  (this repository's module, found through the line above)


class NaiveBus:
    """The obvious bus: one ``loop.call_soon`` per callback per publish."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.subscribers: dict[str, list[Callable[..., Any]]] = {}

    def subscribe(self, event: str, callback: Callable[..., Any]) -> Callable[..., Any]:
        self.subscribers.setdefault(event, []).append(callback)
        return callback

    def publish(self, event: str, *args: Any) -> None:
        for callback in self.subscribers.get(event, ()):
            self.loop.call_soon(callback, *args)


class FloorBus:
    """The floor: the simplest deferred dispatcher there is, and the speed goal's yardstick.

    ``publish()`` appends ``(event, args)`` to a deque and schedules one ``loop.call_soon`` if
    none is pending; that call pops everything and calls each subscriber of the event from a
    dict of lists. No ids, no weak references, no error handling, no threads.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.subscribers: dict[str, list[Callable[..., Any]]] = {}
        self.queue: collections.deque[Any] = collections.deque()  # (event, args) tuples
        self.pending = False

    def subscribe(self, event: str, callback: Callable[..., Any]) -> Callable[..., Any]:
        self.subscribers.setdefault(event, []).append(callback)
        return callback

    def publish(self, event: str, *args: Any) -> None:
        self.queue.append((event, args))
        if not self.pending:
            self.pending = True
            self.loop.call_soon(self.deliver)

    def deliver(self) -> None:
        self.pending = False
        queue = self.queue
        subscribers = self.subscribers
        while queue:
            event, args = queue.popleft()
            for callback in subscribers.get(event, ()):
                callback(*args)


class FlatFloorBus(FloorBus):
    """The fair floor: like FloorBus, but an event and its arguments are queued flat (two
    appends), so that nothing per queued event is tracked by the garbage collector (a
    ``(event, args)`` tuple is, and every collection scans the queue again)."""

    def publish(self, event: str, *args: Any) -> None:
        queue = self.queue
        queue.append(event)
        queue.append(args)
        if not self.pending:
            self.pending = True
            self.loop.call_soon(self.deliver)

    def deliver(self) -> None:
        self.pending = False
        queue = self.queue
        subscribers = self.subscribers
        for _ in range(len(queue) // 2):
            event = queue.popleft()
            args = queue.popleft()
            for callback in subscribers.get(event, ()):
                callback(*args)


class WeakFloorBus(FlatFloorBus):
    """The fair floor for bound methods: held weakly, as pubmarine.py holds them (a weak
    reference to the object and the method's function, called as ``function(obj, *args)``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.held: dict[str, list[tuple[weakref.ref[Any], Callable[..., Any]]]] = {}

    def subscribe(self, event: str, callback: Callable[..., Any]) -> Callable[..., Any]:
        if isinstance(callback, MethodType):
            entry = (weakref.ref(callback.__self__), callback.__func__)
        else:  # "done": a function, held through a weak reference to itself
            entry = (weakref.ref(callback), lambda function, *args: function(*args))
            self.subscribers.setdefault(event, []).append(callback)  # keeps it alive
        self.held.setdefault(event, []).append(entry)
        return callback

    def deliver(self) -> None:
        self.pending = False
        queue = self.queue
        held = self.held
        for _ in range(len(queue) // 2):
            event = queue.popleft()
            args = queue.popleft()
            for ref, function in held.get(event, ()):
                obj = ref()
                if obj is not None:
                    function(obj, *args)


class CheckedFloorBus(FlatFloorBus):
    """The flat floor plus the checks that pubmarine.py's promises need on every event and
    every call, and nothing else, to measure what those promises cost at the least.

    * ``publish()`` takes keywords (0.4.3's API: they go to the callbacks), which makes a new
      dict per call, and checks that it runs on the loop's thread, as pubmarine.py's must
      (it may be called from any thread, and only the loop's thread may queue an event at
      once), the same way: the loop's ``_thread_id`` against ``get_ident()``. This floor
      refuses keywords and other threads instead of handling them.
    * Each callback's result is checked for an awaitable, which pubmarine.py runs as a task.
      This floor refuses one.
    """

    def publish(self, event: str, *args: Any, **kwargs: Any) -> None:
        if kwargs or self.loop._thread_id != get_ident():  # type: ignore[attr-defined]
            raise NotImplementedError("the checked floor takes no keywords and no threads")
        queue = self.queue
        queue.append(event)
        queue.append(args)
        if not self.pending:
            self.pending = True
            self.loop.call_soon(self.deliver)

    def deliver(self) -> None:
        self.pending = False
        queue = self.queue
        subscribers = self.subscribers
        for _ in range(len(queue) // 2):
            event = queue.popleft()
            args = queue.popleft()
            for callback in subscribers.get(event, ()):
                result = callback(*args)
                if result is not None and isawaitable(result):
                    raise NotImplementedError("the checked floor runs no awaitables")


class Impl:
    """One implementation under test, seen through the same four operations."""

    def __init__(
        self,
        name: str,
        make: Callable[[asyncio.AbstractEventLoop], Any],
        subscribe: str,
        publish: str,
        unsubscribe: str | None,
        by_callback: bool = False,
        goals: tuple[float | None, float | None] = (None, None),
        quadratic: bool = False,
        methods: bool = False,
    ) -> None:
        self.name = name
        self.make = make
        self.subscribe = subscribe
        self.publish = publish
        self.unsubscribe = unsubscribe
        self.by_callback = by_callback  # unsubscribe takes (event, callback), not an id
        self.goals = goals  # how many times faster pubmarine.py should be, at 1 and 10 subscribers
        self.quadratic = quadratic  # unsubscribe scans: time it with a smaller N
        self.methods = methods  # callbacks are bound methods rather than functions


def load_pubmarine043(directory: str) -> ModuleType:
    """Load pubmarine 0.4.3 from a ``pip install --target`` directory as ``pubmarine043``."""
    base = Path(directory)
    candidates = [base / "pubmarine" / "__init__.py", base / "__init__.py", base]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        sys.exit(f"no pubmarine package found in {directory}")
    spec = importlib.util.spec_from_file_location("pubmarine043", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_implementations(pubmarine043_dir: str | None) -> list[Impl]:
    name = "pubmarine.py " + pubmarine.__version__
    impls = [
        Impl(name, pubmarine.PubPen, "subscribe", "publish", "unsubscribe"),
        Impl(FLOOR, FloorBus, "subscribe", "publish", None),
        Impl(name + METHODS, pubmarine.PubPen, "subscribe", "publish", None, methods=True),
        Impl(FLOOR + METHODS, FloorBus, "subscribe", "publish", None, methods=True),
        Impl("naive call_soon", NaiveBus, "subscribe", "publish", None),
    ]
    if pubmarine043_dir:
        old = load_pubmarine043(pubmarine043_dir)
        name = "pubmarine " + old.__version__
        impls.append(
            Impl(
                name,
                old.PubPen,
                "subscribe",
                "publish",
                "unsubscribe",
                goals=(2, 5),
                quadratic=True,
            )
        )
    try:
        from pyee.asyncio import AsyncIOEventEmitter
    except ImportError:
        try:  # pyee before 9
            from pyee import AsyncIOEventEmitter  # type: ignore[attr-defined,no-redef]
        except ImportError:
            return impls
    from importlib.metadata import version

    def make_pyee(loop: asyncio.AbstractEventLoop) -> Any:
        return AsyncIOEventEmitter(loop=loop)

    name = f"pyee {version('pyee')} AsyncIO"
    impls.append(
        Impl(name, make_pyee, "on", "emit", "remove_listener", by_callback=True, goals=(None, 1))
    )
    return impls


FLOOR = "floor (deque + one call_soon)"
METHODS = ", bound methods"
# The speed goal: pubmarine.py's time at most this many times the floor's, at 1 and 10
# subscribers, with functions as callbacks.
FLOOR_TIME_GOALS = (1.4, 1.2)


class Ticker:
    """Callbacks as bound methods: each object counts into the shared counter."""

    def __init__(self, counter: list[int]) -> None:
        self.counter = counter

    def tick(self, _n: int) -> None:
        self.counter[0] += 1


def make_tick(counter: list[int]) -> Callable[[int], None]:
    """A distinct callback each call (pyee keys listeners by function)."""

    def tick(_n: int) -> None:
        counter[0] += 1

    return tick


def deliveries_per_second(impl: Impl, events: int, subscribers: int) -> float:
    loop = asyncio.new_event_loop()
    try:
        bus = impl.make(loop)
        subscribe = getattr(bus, impl.subscribe)
        counter = [0]
        # Kept referenced here: pubmarine 0.4.3 holds every callback weakly.
        tickers = [Ticker(counter) for _ in range(subscribers)]
        ticks: list[Callable[[int], None]]
        if impl.methods:
            ticks = [ticker.tick for ticker in tickers]
        else:
            ticks = [make_tick(counter) for _ in range(subscribers)]
        for tick in ticks:
            subscribe("tick", tick)
        done = loop.create_future()

        def finish() -> None:
            done.set_result(None)

        subscribe("done", finish)
        publish = getattr(bus, impl.publish)

        async def run() -> float:
            started = time.perf_counter()
            for n in range(events):
                publish("tick", n)
            publish("done")  # every bus here delivers in order: this one comes last
            await done
            return time.perf_counter() - started

        gc.collect()
        elapsed = loop.run_until_complete(run())
        if counter[0] != events * subscribers:
            sys.exit(f"{impl.name}: {counter[0]} deliveries, expected {events * subscribers}")
        return events * subscribers / elapsed
    finally:
        loop.close()


#: The fair floors' goals: pubmarine.py's time at most this many times theirs, at every depth and
#: subscriber count: with functions (flat floor), with bound methods (weak floor).
FAIR_GOALS = {"functions": 1.25, "bound methods": 1.35}
DEPTHS = (10, 1000, 100_000)


def seconds_at_depth(
    make: Callable[..., Any], methods: bool, subs: int, depth: int, n: int
) -> float:
    """Seconds to deliver ``n`` events to ``subs`` subscribers, published ``depth`` at a time
    with a turn of the loop between (the queue is never deeper than ``depth``, nor ``n``)."""
    depth = min(depth, n)
    loop = asyncio.new_event_loop()
    try:
        bus = make(loop)
        counter = [0]
        tickers = [Ticker(counter) for _ in range(subs)]
        for ticker, tick in zip(tickers, (make_tick(counter) for _ in range(subs))):
            bus.subscribe("tick", ticker.tick if methods else tick)
        done = loop.create_future()
        bus.subscribe("done", lambda: done.set_result(None))
        publish = bus.publish

        async def run() -> float:
            started = time.perf_counter()
            for _ in range(n // depth):
                for k in range(depth):
                    publish("tick", k)
                await asyncio.sleep(0)
            publish("done")
            await done
            return time.perf_counter() - started

        gc.collect()
        elapsed = loop.run_until_complete(run())
        if counter[0] != (n // depth) * depth * subs:
            sys.exit(f"{make.__name__}: {counter[0]} deliveries, expected {n * subs}")
        return elapsed
    finally:
        loop.close()


def fair_floor_ratios(rounds: int, events: int) -> None:
    """pubmarine.py's time over the fair floor's, measured side by side round by round (the
    order rotates, and a warm-up round is not counted): median, min and max of the ratios.
    With functions, also the checked floor's time over the flat floor's (what the checks
    that the promises need cost) and pubmarine.py's over the checked floor's."""
    print(
        f"\npubmarine.py time / fair floor time, {events:,} events: median (min-max) of "
        f"{rounds} rounds after a warm-up, each measuring them side by side"
    )
    print(f"{'':<32}" + "".join(f"{f'depth {d:,}':>22}" for d in DEPTHS) + "   goal")
    ours = pubmarine.PubPen
    for kind, floor in (("functions", FlatFloorBus), ("bound methods", WeakFloorBus)):
        methods = kind == "bound methods"
        buses: list[Callable[..., Any]] = [ours, floor]
        # The rows: a label, and the two buses whose times are divided.
        rows: list[tuple[str, Callable[..., Any], Callable[..., Any]]] = [("", ours, floor)]
        if not methods:
            buses.append(CheckedFloorBus)
            rows += [("  the checks alone", CheckedFloorBus, floor)]
            rows += [("  pubmarine / checked floor", ours, CheckedFloorBus)]
        for subs in (1, 10):
            # ratios[row][depth]: one ratio per round
            ratios: list[list[list[float]]] = [[[] for _ in DEPTHS] for _ in rows]
            for d, depth in enumerate(DEPTHS):
                for r in range(rounds + 1):
                    order = buses[r % len(buses) :] + buses[: r % len(buses)]
                    times: dict[Callable[..., Any], float] = {
                        m: seconds_at_depth(m, methods, subs, depth, events) for m in order
                    }
                    if r:  # round 0 warms up
                        for row, (_, top, bottom) in zip(ratios, rows):
                            row[d].append(times[top] / times[bottom])
            for row, (label, top, bottom) in zip(ratios, rows):
                label = label or f"{kind}, {subs} sub{'s' if subs > 1 else ''}"
                cells = [f"{statistics.median(c):.2f} ({min(c):.2f}-{max(c):.2f})" for c in row]
                print(f"{label:<32}" + "".join(f"{c:>22}" for c in cells), end="")
                if top is ours and bottom is floor:
                    met = all(statistics.median(c) <= FAIR_GOALS[kind] for c in row)
                    print(f"   <= {FAIR_GOALS[kind]:g}x: {'met' if met else 'MISSED'}")
                else:
                    print()


def unsubscribe_seconds(impl: Impl, count: int) -> float:
    loop = asyncio.new_event_loop()
    try:
        bus = impl.make(loop)
        subscribe = getattr(bus, impl.subscribe)
        unsubscribe = getattr(bus, str(impl.unsubscribe))
        callbacks = [functools.partial(print, n) for n in range(count)]  # distinct, referenced
        tokens = [subscribe("e", callback) for callback in callbacks]
        gc.collect()
        started = time.perf_counter()
        if impl.by_callback:
            for callback in reversed(callbacks):
                unsubscribe("e", callback)
        else:
            for token in reversed(tokens):
                unsubscribe(token)
        return time.perf_counter() - started
    finally:
        loop.close()


def mrate(rate: float) -> str:
    return f"{rate / 1e6:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pubmarine043",
        metavar="DIR",
        help="directory of `pip install --target DIR pubmarine==0.4.3`",
    )
    parser.add_argument("--events", type=int, default=100_000, help="publishes per run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument(
        "--fair-rounds", type=int, default=7, help="paired rounds against the fair floors"
    )
    parser.add_argument(
        "--unsubscribe", type=int, default=100_000, help="subscriptions removed in reverse order"
    )
    parser.add_argument(
        "--unsubscribe043",
        type=int,
        default=10_000,
        help="the same for pubmarine 0.4.3, whose unsubscribe is quadratic",
    )
    args = parser.parse_args()

    print(f"Python {platform.python_version()} ({platform.python_implementation()})")
    fair_floor_ratios(args.fair_rounds, args.events)
    impls = find_implementations(args.pubmarine043)
    fanouts = (1, 10)
    rates: dict[tuple[str, int], list[float]] = {(i.name, f): [] for i in impls for f in fanouts}
    for _ in range(args.rounds):
        for fanout in fanouts:
            for impl in impls:
                rates[impl.name, fanout].append(deliveries_per_second(impl, args.events, fanout))
    best = {key: max(values) for key, values in rates.items()}
    median = {key: statistics.median(values) for key, values in rates.items()}

    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.machine()}; {args.events:,} publishes per run, "
        f"best (and median) of {args.rounds} interleaved rounds"
    )
    width = max(28, *(len(i.name) + 5 for i in impls))
    print(f"\n{'Million deliveries/s':<{width}}{'1 subscriber':>20}{'10 subscribers':>20}")
    for impl in impls:
        cells = "".join(
            f"{mrate(best[impl.name, f]) + ' (' + mrate(median[impl.name, f]) + ')':>20}"
            for f in fanouts
        )
        print(f"{impl.name:<{width}}{cells}")

    ours = impls[0]
    print(
        f"\n{'pubmarine.py time / floor time':<{width}}{'1 subscriber':>20}{'10 subscribers':>20}"
    )
    for label, suffix, goals in (
        ("functions", "", FLOOR_TIME_GOALS),
        ("bound methods (weak refs)", METHODS, (None, None)),
    ):
        # Times are inverse rates: our time / the floor's = the floor's rate / ours.
        ratios = [best[FLOOR + suffix, f] / best[ours.name + suffix, f] for f in fanouts]
        verdicts = []
        for fanout, ratio, limit in zip(fanouts, ratios, goals):
            if limit is not None:
                state = "met" if ratio <= limit else "MISSED"
                verdicts.append(f"<= {limit:g}x at {fanout}: {state}")
        cells = "".join(f"{f'{ratio:.2f}x':>20}" for ratio in ratios)
        print(f"{label:<{width}}{cells}   {'; '.join(verdicts) or 'no goal'}")

    print(f"\n{'pubmarine.py is':<{width}}{'1 subscriber':>20}{'10 subscribers':>20}   goal")
    for impl in impls[1:]:
        if impl.methods or impl.name == FLOOR:
            continue
        ratios = [best[ours.name, f] / best[impl.name, f] for f in fanouts]
        verdicts = []
        for fanout, ratio, wanted in zip(fanouts, ratios, impl.goals):
            if wanted is not None:
                state = "met" if ratio >= wanted else f"MISSED by a factor {wanted / ratio:.2f}"
                verdicts.append(f">= {wanted:g}x at {fanout}: {state}")
        cells = "".join(f"{f'{ratio:.2f}x':>20}" for ratio in ratios)
        print(f"{'vs ' + impl.name:<{width}}{cells}   {'; '.join(verdicts) or '-'}")

    print(f"\n{'Unsubscribe, reverse order':<{width}}{'N':>10}{'seconds':>10}{'per call':>12}")
    for impl in impls:
        if impl.unsubscribe is None:
            continue
        count = args.unsubscribe043 if impl.quadratic else args.unsubscribe
        seconds = unsubscribe_seconds(impl, count)
        line = f"{impl.name:<{width}}{count:>10,}{seconds:>10.3f}{seconds / count * 1e6:>9.2f} us"
        if impl.quadratic and count != args.unsubscribe:
            guess = seconds * (args.unsubscribe / count) ** 2
            line += f"  (quadratic: ~{guess:,.0f} s for {args.unsubscribe:,})"
        print(line)


if __name__ == "__main__":
    main()
