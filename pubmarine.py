"""A small publish/subscribe bus for asyncio, compatible with pubmarine 0.4.3.

A :class:`PubPen` carries named events from publishers to subscribers. Publishing never
calls a subscriber directly: callbacks run on the event loop soon afterwards, in the order
things were published, so a publisher never finds itself re-entered by its own event::

    import asyncio
    from pubmarine import PubPen

    async def main() -> None:
        pubpen = PubPen(asyncio.get_running_loop())
        pubpen.subscribe("greeting", lambda name: print("hello,", name))
        pubpen.publish("greeting", "world")  # nothing printed yet
        await pubpen.drain()                 # prints "hello, world"

    asyncio.run(main())

Code written for pubmarine 0.4.3 runs unchanged. The differences are fixes: plain functions,
lambdas and :func:`functools.partial` objects are held strongly (0.4.3 dropped them as soon as
nothing else referenced them), ``async def`` callbacks are run as tasks, :meth:`PubPen.publish`
may be called from any thread, unsubscribing is O(1) and wins over events already published,
and :meth:`PubPen.drain` waits until the bus is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import threading
import warnings
import weakref
from asyncio import _get_running_loop
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from inspect import isawaitable
from operator import length_hint
from threading import get_ident
from types import MappingProxyType, MethodType
from typing import Any, Callable

__all__ = ["EventNotFoundError", "PubMarineError", "PubPen"]
__version__ = "0.5.0"
__version_info__ = tuple(__version__.split("."))


class PubMarineError(Exception):
    """Base of all errors specific to pubmarine."""


class EventNotFoundError(PubMarineError):
    """Raised when an event is not in the :class:`PubPen`'s ``event_list``."""


class _Subscription:
    """One subscription: what to call, and whether it still stands."""

    __slots__ = ("active", "event", "function", "target", "weak")

    def __init__(
        self,
        event: str,
        target: Callable[..., Any],
        weak: bool,
        function: Callable[..., Any] | None = None,
    ) -> None:
        self.event = event
        # The callback itself; or (weak) a weak reference to it, or for a bound method to its
        # object, with the method's function in ``function``. (WeakMethod would do, but
        # calling it costs four times as much as rebuilding the bound method.)
        self.target = target
        self.weak = weak
        self.function = function
        self.active = True  # False once unsubscribed: queued events then skip it


class _Snapshot:
    """The subscribers of one event at the time it was published.

    ``subscriptions`` is what delivery needs in general: each one is checked for
    ``active`` (unsubscribe wins) and weak ones are dereferenced. The other three are
    shortcuts for the common cases, where no such check is needed: ``callbacks``, the plain
    callbacks in order, while every subscription is strong; ``only``, the one callback when
    there is exactly one such; ``methods``, when every subscription is a bound method held
    weakly, their pairs of weak reference (to the object) and function; ``method``, the one
    such pair when there is exactly one. The PubPen caches
    the current snapshot of each event, and drops the shortcuts of the one it forgets
    whenever the event's subscriptions change, so a snapshot with a shortcut is exactly up
    to date when its delivery starts; an unsubscribe during that delivery cuts it short
    (see :meth:`PubPen.unsubscribe`).
    """

    __slots__ = ("callbacks", "event", "kwargs", "method", "methods", "only", "subscriptions")

    def __init__(
        self,
        event: str,
        subscriptions: tuple[_Subscription, ...],
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.event = event
        self.subscriptions = subscriptions
        self.callbacks: tuple[Callable[..., Any], ...] | None = None
        # A snapshot made for one keyword publish carries its keywords (and no shortcut).
        self.kwargs = kwargs
        self.only: Callable[..., Any] | None = None
        self.methods: tuple[tuple[Any, Callable[..., Any]], ...] | None = None
        self.method: tuple[Any, Callable[..., Any]] | None = None
        if kwargs is not None:
            return
        if not any(subscription.weak for subscription in subscriptions):
            self.callbacks = tuple(subscription.target for subscription in subscriptions)
            if len(self.callbacks) == 1:
                self.only = self.callbacks[0]
        else:
            pairs = [(s.target, s.function) for s in subscriptions if s.function is not None]
            if len(pairs) == len(subscriptions):
                self.methods = tuple(pairs)
                if len(pairs) == 1:
                    self.method = pairs[0]

    def drop_shortcuts(self) -> None:
        """From now on, delivery checks each subscription (it may have been removed)."""
        self.callbacks = self.only = self.methods = self.method = None


class _AskAsyncio:
    """Which thread runs a loop that does not say so itself (one not based on asyncio's).

    asyncio's own loops keep the id of the thread running them in ``_thread_id`` (``None``
    when stopped), which :meth:`PubPen.publish` compares with the caller's: 30 ns, where
    :func:`asyncio.get_running_loop` makes a ``getpid()`` system call on Python 3.11 and
    older (200 ns). Other loops get this slower stand-in with the same attribute.
    """

    __slots__ = ("loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    @property
    def _thread_id(self) -> int | None:
        return get_ident() if _get_running_loop() is self.loop else None


#: What PubPen._fast is while publish() may not take its fast way: no snapshot at all.
_CLOSED: Mapping[str, _Snapshot] = MappingProxyType({})

#: The bus task a coroutine runs in (see PubPen._run_task), for drain().
_bus_task: contextvars.ContextVar[asyncio.Future[Any] | None] = contextvars.ContextVar(
    "pubmarine_bus_task", default=None
)


def _named(thing: object) -> str:
    """``repr(thing)``, or, should that raise, what type of object it is."""
    try:
        return repr(thing)
    except Exception:
        return f"<{type(thing).__qualname__} object (its repr() failed)>"


def _forget(pubpen_ref: weakref.ref[PubPen], sub_id: int, _dead: object) -> None:
    """Weak reference callback: remove the subscription whose callback just went away.

    The last reference to an object may be dropped in any thread, and the subscription tables
    belong to the loop's thread: from elsewhere the removal is handed to the loop. Until it
    runs, delivery skips the dead reference.
    """
    pubpen = pubpen_ref()
    if pubpen is None:
        return
    if pubpen._running._thread_id == get_ident():
        pubpen.unsubscribe(sub_id)
    else:
        # A closed loop raises RuntimeError: nothing will be delivered any more anyway.
        with contextlib.suppress(RuntimeError):
            pubpen.loop.call_soon_threadsafe(pubpen.unsubscribe, sub_id)


class PubPen:
    """Coordinates subscriptions and publications on one asyncio event loop.

    Most programs create one PubPen and share it between all the objects that talk to each
    other. Subscribe and unsubscribe on the loop's thread; publish from any thread.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, event_list: Iterable[str] | None = None
    ) -> None:
        """
        :param loop: the event loop on which every callback will run.
        :param event_list: if given, the only event names that may be subscribed to or
            published; anything else raises :class:`EventNotFoundError`, which catches typos.
            If omitted (or empty, as in 0.4.3), any name may be used.
        """
        self.loop = loop
        # Tells which thread runs the loop (see _AskAsyncio): publish() checks it each time.
        self._running: Any = loop
        if not (isinstance(loop, asyncio.BaseEventLoop) and hasattr(loop, "_thread_id")):
            self._running = _AskAsyncio(loop)
        self._event_list = frozenset(event_list or ()) or None
        self._ids = itertools.count()

        # State of the loop's thread. Only code running on that thread reads or changes it,
        # so it needs no lock: one thread cannot race with itself.
        self._subscriptions: dict[int, _Subscription] = {}
        self._handlers: dict[str, dict[int, _Subscription]] = {}  # event -> id -> subscription
        self._snapshots: dict[str, _Snapshot] = {}  # current snapshot of each event published
        # The snapshots that publish() may use at once: the cached ones while a delivery is
        # pending and nothing from other threads waits to go first, otherwise none (_CLOSED),
        # and publish() goes its slower way, which sees to those. One lookup for three checks.
        # The exception to the rule above: another thread closes it (under the lock, see
        # _open_fast), and publish() looks in it before it knows its thread (off the loop's
        # thread, what it finds is not used).
        self._fast: Mapping[str, _Snapshot] = _CLOSED
        # Published but not yet delivered, two items per event: its positional arguments,
        # then its snapshot. An event goes in with one call (list.extend) and comes out with
        # one step (of zip), so that no interrupt, nor a signal handler that publishes, can
        # split the pair. Not one tuple per event: a snapshot is tracked by the garbage
        # collector, and such tuples, alive until delivered, would make every collection
        # meanwhile scan them all. A list, not a deque: _deliver takes it whole and leaves
        # a new one in its place, and extending a list by a tuple is the cheapest such call.
        self._queue: list[Any] = []
        self._pending: asyncio.Handle | None = None  # the _deliver that call_soon scheduled
        self._tasks: set[asyncio.Future[Any]] = set()  # asyncio itself keeps tasks only weakly
        # Each waiting drain(): its future, and its task if the bus started that task.
        self._drainers: list[tuple[asyncio.Future[None], asyncio.Future[Any] | None]] = []
        # While _deliver loops over a shortcut (the plain callbacks, or the bound methods'
        # pairs): its iterator; and how many were left when unsubscribe() cut it short.
        self._rest: Iterator[Any] | None = None
        self._left = 0

        # State shared with other threads: touched only while holding the lock. Reentrant: a
        # garbage collection inside the locked region may run a finalizer that publishes, on
        # the same thread (it then adds its event to the inbox first, which is in order).
        self._lock = threading.RLock()
        self._inbox: list[tuple[str, tuple[Any, ...], dict[str, Any] | None]] = []
        self._wake_pending = False  # a _take_inbox is pending via call_soon_threadsafe

    def _check(self, event: str) -> None:
        if self._event_list is not None and event not in self._event_list:
            raise EventNotFoundError(f"{event!r} is not a registered event")

    def subscribe(
        self, event: str, callback: Callable[..., Any], *, weak: bool | None = None
    ) -> int:
        """Call ``callback`` each time ``event`` is published.

        Callbacks of one event are called in the order they subscribed. Subscribing the same
        callback N times means N calls per publish. A subscription sees only events published
        after it was made. Call it on the loop's thread (or before the loop runs).

        :param event: name of the event.
        :param callback: any callable; it gets the positional and keyword arguments given to
            :meth:`publish`. If it returns an awaitable (an ``async def`` function does), the
            awaitable is run as a task that the PubPen keeps referenced until it finishes.
        :param weak: how the PubPen holds ``callback``. By default (``None``) bound methods are
            held weakly, so an object that goes away is unsubscribed at once and leaves
            nothing behind (unless the object cannot be weakly referenced: then strongly),
            while functions, lambdas, :func:`functools.partial` objects and other callables
            are held strongly. ``True`` or ``False`` forces either way.
        :returns: the subscription id, unique within this PubPen and increasing from 0 (as in
            0.4.3), for :meth:`unsubscribe`.
        :raises EventNotFoundError: ``event`` is not in the ``event_list``.
        :raises TypeError: ``weak=True`` and ``callback`` cannot be weakly referenced.
        """
        self._check(event)
        sub_id = next(self._ids)
        target: Callable[..., Any] = callback
        function = None
        held_weakly = False
        if weak or (weak is None and isinstance(callback, MethodType)):
            forget = functools.partial(_forget, weakref.ref(self), sub_id)
            try:
                if isinstance(callback, MethodType):
                    target = weakref.ref(callback.__self__, forget)
                    function = callback.__func__
                else:
                    target = weakref.ref(callback, forget)
                held_weakly = True
            except TypeError:  # e.g. the method of an object with __slots__ and no __weakref__
                if weak:
                    raise
        subscription = _Subscription(event, target, held_weakly, function)
        # The event's table first: a name that cannot be a key (a list) raises TypeError here,
        # before anything of this subscription is kept.
        handlers = self._handlers.setdefault(event, {})
        handlers[sub_id] = subscription
        self._subscriptions[sub_id] = subscription
        self._forget_snapshot(event)
        return sub_id

    def unsubscribe(self, sub_id: int) -> None:
        """Remove a subscription, in constant time.

        Once this returns, the callback is never called again for it, not even for events
        published before. An unknown or already removed id is silently ignored. Call it on
        the loop's thread.

        :param sub_id: an id returned by :meth:`subscribe`.
        """
        subscription = self._subscriptions.pop(sub_id, None)
        if subscription is None:
            return
        subscription.active = False
        rest = self._rest
        if rest is not None:
            left = length_hint(rest)
            if left:
                # A callback of a delivery through a shortcut loop is unsubscribing: the
                # callbacks left in that loop may include this one. Empty the loop's
                # iterator and tell _deliver how many were left: it checks them one by one.
                deque(rest, maxlen=0)
                self._rest = None
                self._left = left
        event = subscription.event
        handlers = self._handlers[event]
        del handlers[sub_id]
        if not handlers:
            del self._handlers[event]
        self._forget_snapshot(event)

    def _forget_snapshot(self, event: str) -> None:
        # Events still queued with it may meet a removed subscription: they must check.
        snapshot = self._snapshots.pop(event, None)
        if snapshot is not None:
            snapshot.drop_shortcuts()

    def _snapshot(self, event: str) -> _Snapshot | None:
        """The current snapshot of ``event`` (loop's thread), or None if nobody listens."""
        snapshot = self._snapshots.get(event)
        if snapshot is None:
            self._check(event)
            handlers = self._handlers.get(event)
            if not handlers:
                return None  # not cached: event names without subscribers may be unbounded
            snapshot = self._snapshots[event] = _Snapshot(event, tuple(handlers.values()))
        return snapshot

    def publish(self, event: str, *args: Any, **kwargs: Any) -> None:
        """Publish ``event``: each of its subscribers will be called with ``*args, **kwargs``.

        Never calls a callback itself: callbacks run on the loop soon after, in subscription
        order, and everything published earlier is delivered before anything published later,
        whatever the event (FIFO). Callbacks subscribed by then receive the event unless they
        unsubscribe before it is delivered (for an event from another thread, "by then" is
        when the loop takes it in).

        One loop callback delivers every event queued when it starts, so events published
        together stay together: ``publish(A)``, ``loop.call_soon(x)``, ``publish(B)`` runs the
        callbacks of A, then of B, then ``x`` (0.4.3, with one loop callback per subscriber,
        ran A, x, B). Events that callbacks publish wait for the next loop callback, behind
        whatever the loop has ready by then, so a callback that keeps publishing cannot starve
        I/O.

        Errors follow asyncio's rule for loop callbacks: :class:`SystemExit` and
        :class:`KeyboardInterrupt` propagate (what was not delivered yet stays queued and is
        delivered if the loop runs again). Such an interrupt may land between any two
        bytecodes, in the bus's own code too: the bus stays in order and loses at most the
        event in flight; if it lands just as a delivery starts, what is queued is delivered
        by the next drain() (or the next publish from another thread). A signal handler that
        publishes, between any two bytecodes, loses nothing. Any other exception from a
        callback or its task, :class:`asyncio.CancelledError` from a plain callback included,
        goes to ``loop.call_exception_handler`` with the event's name, and the other
        callbacks still run. A task that ends cancelled (by someone else, or raising
        CancelledError itself) is not an error, as for asyncio, and is not reported.

        Safe to call from any thread. From another thread the event is handed over under a
        lock and the loop is woken at once; the callbacks still run on the loop's thread, the
        events of one thread keep their order, and they are delivered before any callback
        that thread schedules on the loop afterwards, and before anything the loop's thread
        publishes once that publish() has returned (after joining the thread, say).

        :param event: name of the event.
        :param args: positional arguments for the callbacks.
        :param kwargs: keyword arguments for the callbacks.
        :raises EventNotFoundError: ``event`` is not in the ``event_list``.
        :raises RuntimeError: the loop is closed; nothing of this call stays queued.
        """
        snapshot = self._fast.get(event)
        if snapshot is not None and not kwargs and self._running._thread_id == get_ident():
            # The common case, kept lean: the loop's thread (see below), an event that
            # someone listens to, no keywords, a delivery pending (see _fast).
            self._queue.extend((args, snapshot))
        else:
            self._publish_slowly(event, args, kwargs)

    def _publish_slowly(self, event: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """publish(), in every case."""
        if self._running._thread_id == get_ident():
            # The loop's thread: all the state used here is its own (see __init__), so no
            # lock. Only that thread can find its own id here: it wrote it when the loop
            # started and clears it when the loop stops; no other thread ever writes it.
            if self._wake_pending:
                # Another thread published, and the loop has not taken it in yet: that
                # happened before this (the thread may even have been joined), so it goes
                # into the queue first. Reading the flag needs no lock: a thread that sets
                # it a moment later publishes after this.
                self._take_early()
            snapshot = self._snapshot(event)
            if snapshot is None:
                return
            if kwargs:
                snapshot = _Snapshot(event, snapshot.subscriptions, kwargs)
            if self._pending is None:
                self._schedule()  # if it raises, nothing is queued
            self._queue.extend((args, snapshot))  # one call: see __init__
        else:
            self._publish_from_elsewhere(event, args, kwargs or None)

    def _publish_from_elsewhere(
        self, event: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> None:
        """Hand an event over to the loop's thread (any thread, or no loop running)."""
        self._check(event)  # the event list never changes: reading it needs no lock
        with self._lock:
            if self.loop.is_closed():  # a wake-up may be pending that will never run
                raise RuntimeError("Event loop is closed")
            if not self._wake_pending:
                # call_soon_threadsafe also wakes a loop asleep in select(). It comes before
                # the append: if it raises, nothing of this call stays behind.
                self.loop.call_soon_threadsafe(self._take_inbox)
                self._wake_pending = True
                self._fast = _CLOSED  # after the flag: see _open_fast
            self._inbox.append((event, args, kwargs))

    def emit(self, event: str, *args: Any, **kwargs: Any) -> None:
        """Deprecated alias of :meth:`publish`; issues a :class:`DeprecationWarning`.

        :param event: name of the event.
        :param args: positional arguments for the callbacks.
        :param kwargs: keyword arguments for the callbacks.
        """
        warnings.warn(
            "PubPen.emit() is deprecated; use PubPen.publish() instead",
            DeprecationWarning,
            stacklevel=2,
        )
        self.publish(event, *args, **kwargs)

    async def drain(self) -> None:
        """Wait until the bus is idle.

        Returns once everything published so far has been delivered and every task started
        for it has finished, including whatever those callbacks and tasks published in turn.
        Must be awaited on the PubPen's loop.

        Awaited inside a task that the bus started (an ``async def`` callback), it waits for
        everything except that task itself, and except other such tasks that are waiting in
        ``drain()`` too: all of these resume together once the rest of the bus is idle. (A
        task cannot wait for its own end.) The same holds where such a task awaits drain()
        through tasks of its own, as :func:`asyncio.wait_for` and :func:`asyncio.gather`
        start: tasks started from a bus task count as that task.
        """
        # The bus's task this runs in, if any: itself, or one that awaits it through tasks of
        # its own (asyncio.wait_for(), gather(), ...), which inherit its context.
        task = _bus_task.get()
        own_task = task if task is not None and task in self._tasks else None
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._drainers.append((waiter, own_task))
        if self._queue and self._pending_is_stale():
            self._schedule()
        self._settle()
        await waiter

    def _pending_is_stale(self) -> bool:
        """Whether no delivery is really pending: a KeyboardInterrupt that lands just as one
        starts, before it can say so, leaves it marked pending when it has run. Asked only
        by drain(), of asyncio's own loops (their queue of ready callbacks), and otherwise
        taken as no."""
        pending = self._pending
        if pending is None:
            return True
        ready = getattr(self.loop, "_ready", None)
        return ready is not None and pending not in ready

    def _settle(self) -> None:
        """Release the drain() calls that the bus's state now satisfies (loop's thread)."""
        if self._queue:
            return  # a _deliver is pending and will settle again
        with self._lock:
            if self._inbox:
                return  # a _take_inbox is pending and will settle again
        waiting = [(waiter, task) for waiter, task in self._drainers if not waiter.done()]
        in_drain = {task for _, task in waiting if task is not None}
        outside_idle = not self._tasks  # for a drain() from outside the bus's tasks
        inside_idle = self._tasks <= in_drain  # for one from inside: those tasks are waiting
        ready = [
            (waiter, task)
            for waiter, task in waiting
            if (outside_idle if task is None else inside_idle)
        ]
        # Built whole, then put in place: an interrupt meanwhile leaves every drain() listed.
        self._drainers = [pair for pair in waiting if pair not in ready]
        for waiter, _task in ready:
            waiter.set_result(None)

    def _take_early(self) -> None:
        """Queue what other threads published, ahead of an event the loop's thread publishes
        now; the wake-up they scheduled still delivers it, as it would have (loop's thread)."""
        self._move_inbox()
        if self._pending is None and self._queue:
            self._schedule()

    def _move_inbox(self) -> None:
        """Move what other threads published into the queue, in order (loop's thread)."""
        with self._lock:
            inbox, self._inbox = self._inbox, []
            self._wake_pending = False
        self._open_fast()
        queue = self._queue
        for event, args, kwargs in inbox:
            snapshot = self._snapshot(event)
            if snapshot is not None:
                if kwargs:
                    snapshot = _Snapshot(event, snapshot.subscriptions, kwargs)
                queue.extend((args, snapshot))  # one call: see __init__

    def _take_inbox(self) -> None:
        """Queue and deliver what other threads published (runs on the loop's thread)."""
        self._move_inbox()
        # Delivering now, rather than behind whatever is ready on the loop, keeps the promise
        # that a thread's events come before the callbacks it schedules afterwards. A delivery
        # scheduled earlier is not needed then: cancelled, so that what the callbacks publish
        # now waits for a new one, behind whatever the loop has ready (not for that one).
        if self._pending is not None:
            self._pending.cancel()
        self._deliver()

    def _schedule(self) -> None:
        """Have _deliver called soon, behind whatever the loop has ready (loop's thread)."""
        self._pending = self.loop.call_soon(self._deliver)
        self._open_fast()

    def _open_fast(self) -> None:
        """Let publish() take its fast way if it may (see _fast; loop's thread)."""
        self._fast = self._snapshots if self._pending is not None else _CLOSED
        # Read after the write above, as another thread sets the flag before it closes: in
        # every order, the fast way ends closed when something waits in the inbox.
        if self._wake_pending:
            self._fast = _CLOSED

    def _deliver(self) -> None:
        """Deliver the events queued when this call started (runs on the loop's thread).

        Events published meanwhile wait for the next call, which goes to the back of the
        loop's ready queue, so a callback that keeps publishing cannot starve I/O.
        """
        self._fast = _CLOSED
        self._pending = None
        batch = items = None
        try:
            # Taken whole, a new queue in its place: what callbacks publish goes there. An
            # interrupt leaves what was not delivered yet at the front of it (see finally).
            batch = self._queue
            self._queue = []
            items = iter(batch)
            for args, snapshot in zip(items, items):  # one step takes an event's pair
                only = snapshot.only
                if only is not None:
                    # The commonest case, kept leanest: one plain callback, no keywords.
                    try:
                        result = only(*args)
                        if result is not None and isawaitable(result):
                            self._start_task(result, snapshot.event, only)
                    except (SystemExit, KeyboardInterrupt):
                        raise  # nothing of this event is left to deliver
                    except BaseException as exc:  # asyncio.Handle's rule
                        self._report(exc, snapshot.event, only)
                    continue
                callbacks = snapshot.callbacks
                if callbacks is not None:
                    # Plain callbacks, every subscription strong and still active: no check
                    # per call. Should a callback unsubscribe anything, unsubscribe() cuts
                    # this loop short (see there). One try around the whole loop, not one
                    # per call (which costs on Python 3.9 and 3.10): after a failure the loop
                    # goes on where it was, as its iterator knows.
                    rest: Iterator[Any]
                    rest = self._rest = iter(callbacks)
                    while True:
                        try:
                            for callback in rest:
                                result = callback(*args)
                                if result is not None and isawaitable(result):
                                    self._start_task(result, snapshot.event, callback)
                            break
                        except (SystemExit, KeyboardInterrupt):
                            self._requeue_shortcut(snapshot, rest, args, items)
                            raise
                        except BaseException as exc:
                            self._report(exc, snapshot.event, callback)
                    if self._rest is rest:
                        continue
                    subscriptions = self._left_after_cut(snapshot)
                elif (method := snapshot.method) is not None:
                    # One bound method held weakly (see methods below). Checked after the
                    # plain callbacks: on Python 3.9 and 3.10 each attribute read costs.
                    ref, function = method
                    obj = ref()
                    if obj is not None:  # else it died, and its removal is on its way
                        try:
                            if len(args) == 1:
                                result = function(obj, args[0])
                            else:
                                result = function(obj, *args)
                            if result is not None and isawaitable(result):
                                bound = MethodType(function, obj)
                                self._start_task(result, snapshot.event, bound)
                        except (SystemExit, KeyboardInterrupt):
                            raise  # nothing of this event is left to deliver
                        except BaseException as exc:
                            self._report(exc, snapshot.event, MethodType(function, obj))
                    continue
                elif snapshot.methods is not None:
                    # Bound methods held weakly, and nothing else: each is called as its
                    # function with its object, which is what the bound method would do,
                    # without making one (with one argument, faster still). Cut short, and
                    # one try, the same way.
                    one = len(args) == 1
                    rest = self._rest = iter(snapshot.methods)
                    while True:
                        try:
                            for ref, function in rest:
                                obj = ref()
                                if obj is None:  # died; its removal is on its way
                                    continue
                                result = function(obj, args[0]) if one else function(obj, *args)
                                if result is not None and isawaitable(result):
                                    bound = MethodType(function, obj)
                                    self._start_task(result, snapshot.event, bound)
                            break
                        except (SystemExit, KeyboardInterrupt):
                            self._requeue_shortcut(snapshot, rest, args, items)
                            raise
                        except BaseException as exc:
                            self._report(exc, snapshot.event, MethodType(function, obj))
                    if self._rest is rest:
                        continue
                    subscriptions = self._left_after_cut(snapshot)
                else:
                    subscriptions = snapshot.subscriptions
                kwargs = snapshot.kwargs
                for subscription in (remaining := iter(subscriptions)):
                    if not subscription.active:  # unsubscribed since publish: unsubscribe wins
                        continue
                    callback = subscription.target
                    if subscription.weak:
                        callback = callback()
                        if callback is None:  # died; its removal is on its way
                            continue
                        if subscription.function is not None:
                            callback = MethodType(subscription.function, callback)
                    try:
                        result = callback(*args, **kwargs) if kwargs else callback(*args)
                        if result is not None and isawaitable(result):
                            self._start_task(result, snapshot.event, callback)
                    except (SystemExit, KeyboardInterrupt):
                        left = len(tuple(remaining))
                        self._requeue(snapshot, subscriptions, left, args, items)
                        raise
                    except BaseException as exc:
                        self._report(exc, snapshot.event, callback)
            batch = None  # all delivered
        finally:
            self._rest = None
            if batch is not None and batch is not self._queue:
                # Left early (an interrupt): what was not taken yet goes back to the front,
                # before whatever callbacks published meanwhile. (An interrupt between the
                # first two lines of the try leaves batch and the queue one list: nothing
                # to put back.)
                undelivered = batch if items is None else list(items)
                if undelivered:
                    self._queue[:0] = undelivered
            if self._queue:
                if self._pending is None:
                    self._schedule()
            elif self._drainers:
                self._settle()

    def _left_after_cut(self, snapshot: _Snapshot) -> tuple[_Subscription, ...]:
        """The subscriptions that a delivery through a shortcut had not called yet when
        unsubscribe() cut it short: they are checked one by one."""
        return snapshot.subscriptions[len(snapshot.subscriptions) - self._left :]

    def _requeue_shortcut(
        self, snapshot: _Snapshot, rest: Iterator[Any], args: tuple[Any, ...], items: Iterator[Any]
    ) -> None:
        """_requeue() for a delivery through a shortcut, ``rest`` its iterator."""
        left = length_hint(rest) if self._rest is rest else self._left
        self._requeue(snapshot, snapshot.subscriptions, left, args, items)

    def _requeue(
        self,
        snapshot: _Snapshot,
        subscriptions: tuple[_Subscription, ...],
        left: int,
        args: tuple[Any, ...],
        items: Iterator[Any],
    ) -> None:
        """Put the ``left`` last ``subscriptions`` of an interrupted event back at the front,
        and the events after it in the batch (``items``) behind them."""
        front = list(items)
        if left:
            rest = _Snapshot(snapshot.event, subscriptions[len(subscriptions) - left :])
            rest.drop_shortcuts()  # it is not the cached snapshot: check every subscription
            rest.kwargs = snapshot.kwargs
            front[:0] = (args, rest)
        self._queue[:0] = front  # one call

    def _start_task(self, awaitable: Any, event: str, callback: Callable[..., Any]) -> None:
        task = asyncio.ensure_future(self._run_task(awaitable), loop=self.loop)
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._task_done, event, callback))

    async def _run_task(self, awaitable: Any) -> Any:
        """A callback's awaitable, run as one of the bus's tasks. It counts as one from its
        first step: under an eager task factory (Python 3.12) that step comes before
        ensure_future() even returns, and a drain() it awaits then must know whose it is."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            _bus_task.set(task)  # seen by drain() here and in the tasks this one starts
        return await awaitable

    def _task_done(
        self, event: str, callback: Callable[..., Any], task: asyncio.Future[Any]
    ) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self._report(exc, event, callback, task)
        if self._drainers:
            self._settle()

    def _report(
        self,
        exc: BaseException,
        event: str,
        callback: Callable[..., Any],
        task: asyncio.Future[Any] | None = None,
    ) -> None:
        """Hand a callback's failure to the loop's exception handler.

        Reporting never stops a delivery: an exception or callback whose ``repr()`` raises is
        named by its type, and a handler that raises (anything but SystemExit and
        KeyboardInterrupt, which propagate as from a callback) falls back to the loop's
        default handler, as asyncio does for its own callbacks.
        """
        message = (
            f"pubmarine: callback {_named(callback)} for event {_named(event)} raised {_named(exc)}"
        )
        context: dict[str, Any] = {
            "message": message,
            "exception": exc,
            "event": event,
            "callback": callback,
        }
        if task is not None:
            context["future"] = task
        try:
            self.loop.call_exception_handler(context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            with contextlib.suppress(BaseException):
                self.loop.default_exception_handler(context)
