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
lambdas and :func:`functools.partial` objects are held strongly (0.4.3 dropped them at once),
``async def`` callbacks are run as tasks, a failing callback no longer stops the others,
:meth:`PubPen.publish` may be called from any thread, and unsubscribing is O(1).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import warnings
import weakref
from collections.abc import Iterable
from inspect import isawaitable
from types import MethodType
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    # One subscription as delivery sees it: (id, callback or weak reference to it, is_weak).
    _Entry = tuple[int, Callable[..., Any], bool]

__all__ = ["EventNotFoundError", "PubMarineError", "PubPen"]
__version__ = "0.5.0"
__version_info__ = ("0", "5", "0")


class PubMarineError(Exception):
    """Base of all errors specific to pubmarine."""


class EventNotFoundError(PubMarineError):
    """Raised when an event is not in the :class:`PubPen`'s ``event_list``."""


def _forget(pubpen_ref: weakref.ref[PubPen], sub_id: int, _dead: object) -> None:
    """Weak reference callback: remove the subscription whose callback just went away."""
    pubpen = pubpen_ref()
    if pubpen is not None:
        pubpen.unsubscribe(sub_id)


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
        self._event_list = frozenset(event_list or ()) or None
        self._ids = itertools.count(1)
        self._subscriptions: dict[int, str] = {}  # sub id -> event
        self._handlers: dict[str, dict[int, _Entry]] = {}  # event -> sub id -> entry
        self._snapshots: dict[str, tuple[_Entry, ...]] = {}  # cache of _handlers[event]
        # Published but not yet delivered: (event, subscribers then, args, kwargs).
        self._queue: collections.deque[
            tuple[str, tuple[_Entry, ...], tuple[Any, ...], dict[str, Any]]
        ] = collections.deque()
        self._scheduled = False  # a _deliver is pending via call_soon (loop thread only)
        self._tasks: set[asyncio.Future[Any]] = set()
        self._drain_waiters: list[asyncio.Future[None]] = []

    def _check(self, event: str) -> None:
        if self._event_list is not None and event not in self._event_list:
            raise EventNotFoundError(f"{event!r} is not a registered event")

    def subscribe(
        self, event: str, callback: Callable[..., Any], *, weak: bool | None = None
    ) -> int:
        """Call ``callback`` each time ``event`` is published.

        Callbacks of one event are called in the order they subscribed. Subscribing the same
        callback N times means N calls per publish. A subscription sees only events published
        after it was made.

        :param event: name of the event.
        :param callback: any callable; it gets the positional and keyword arguments given to
            :meth:`publish`. If it returns an awaitable (an ``async def`` function does), the
            awaitable is run as a task that the PubPen keeps referenced until it finishes.
        :param weak: how the PubPen holds ``callback``. By default (``None``) bound methods are
            held weakly, so an object that goes away is unsubscribed at once and leaves
            nothing behind (unless the object cannot be weakly referenced: then strongly),
            while functions, lambdas, :func:`functools.partial` objects and other callables
            are held strongly. ``True`` or ``False`` forces either way.
        :returns: the subscription id, unique within this PubPen and increasing, for
            :meth:`unsubscribe`.
        :raises EventNotFoundError: ``event`` is not in the ``event_list``.
        :raises TypeError: ``weak=True`` and ``callback`` cannot be weakly referenced.
        """
        self._check(event)
        sub_id = next(self._ids)
        target: Callable[..., Any] = callback
        held_weakly = False
        if weak or (weak is None and isinstance(callback, MethodType)):
            forget = functools.partial(_forget, weakref.ref(self), sub_id)
            try:
                if isinstance(callback, MethodType):
                    target = weakref.WeakMethod(callback, forget)
                else:
                    target = weakref.ref(callback, forget)
                held_weakly = True
            except TypeError:  # e.g. the method of an object with __slots__ and no __weakref__
                if weak:
                    raise
        self._subscriptions[sub_id] = event
        self._handlers.setdefault(event, {})[sub_id] = (sub_id, target, held_weakly)
        self._snapshots.pop(event, None)
        return sub_id

    def unsubscribe(self, sub_id: int) -> None:
        """Remove a subscription, in constant time.

        Once this returns, the callback is never called again for it, not even for events
        published before. An unknown or already removed id is silently ignored.

        :param sub_id: an id returned by :meth:`subscribe`.
        """
        try:
            event = self._subscriptions.pop(sub_id)
        except KeyError:
            return
        handlers = self._handlers[event]
        del handlers[sub_id]
        if not handlers:
            del self._handlers[event]
        self._snapshots.pop(event, None)

    def publish(self, event: str, *args: Any, **kwargs: Any) -> None:
        """Publish ``event``: each of its subscribers will be called with ``*args, **kwargs``.

        Never calls a callback itself: callbacks run on the loop soon after, in subscription
        order, and everything published earlier is delivered before anything published later,
        whatever the event (FIFO). Callbacks subscribed by then receive the event unless they
        unsubscribe before it is delivered. An exception from a callback (or from its task)
        does not stop the others: it goes to ``loop.call_exception_handler``.

        Safe to call from any thread: off the loop's thread the event is handed over
        thread-safely and the loop is woken at once; callbacks still run on the loop's thread,
        and the events of one thread keep their order.

        :param event: name of the event.
        :param args: positional arguments for the callbacks.
        :param kwargs: keyword arguments for the callbacks.
        :raises EventNotFoundError: ``event`` is not in the ``event_list``.
        """
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:  # no loop running in this thread
            on_loop = False
        entries = self._snapshots.get(event)
        if entries is None:
            self._check(event)
            handlers = self._handlers.get(event)
            if not handlers:
                return
            # tuple() copies a dict in one C call, so another thread cannot catch it half-made.
            entries = tuple(handlers.values())
            if on_loop:
                # Only the loop's thread fills the cache: a thread could otherwise store a copy
                # taken before a subscribe() that has since emptied the cache.
                self._snapshots[event] = entries
        self._queue.append((event, entries, args, kwargs))
        if on_loop:
            if not self._scheduled:
                self._scheduled = True
                self.loop.call_soon(self._deliver)
        else:
            # The flag is read and written by the loop's thread only. Another thread must not
            # rely on it: seeing it set, it cannot know whether the pending _deliver has
            # already counted its batch, and plain call_soon would not wake a loop asleep in
            # select(). So each foreign publish appends first, then schedules its own wake-up.
            # deque.append is atomic, only _deliver pops, and that wake-up runs after the
            # append, so the item is delivered by it at the latest, behind everything queued
            # before it (one thread's events keep their order). A wake-up that finds the item
            # already delivered by an earlier _deliver simply does nothing.
            self.loop.call_soon_threadsafe(self._deliver)

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
        """
        while True:
            if self._queue:
                waiter = self.loop.create_future()
                self._drain_waiters.append(waiter)
                await waiter
            elif self._tasks:
                await asyncio.wait(tuple(self._tasks))
            else:
                return

    def _deliver(self) -> None:
        """Deliver the events queued when this call started (runs on the loop's thread).

        Events published meanwhile wait for the next call, which goes to the back of the
        loop's ready queue, so a callback that keeps publishing cannot starve I/O.
        """
        self._scheduled = False
        queue = self._queue
        live = self._subscriptions
        try:
            for _ in range(len(queue)):
                event, entries, args, kwargs = queue.popleft()
                for sub_id, target, weak in entries:
                    if sub_id not in live:  # unsubscribed since publish: unsubscribe wins
                        continue
                    if weak:
                        callback = target()
                        if callback is None:
                            continue
                    else:
                        callback = target
                    try:
                        # Calling without ** when there are no keywords is measurably faster.
                        result = callback(*args, **kwargs) if kwargs else callback(*args)
                        if result is not None and isawaitable(result):
                            self._start_task(result, event, callback)
                    except Exception as exc:
                        self._report(exc, event, callback)
        finally:
            if queue:
                if not self._scheduled:
                    self._scheduled = True
                    self.loop.call_soon(self._deliver)
            elif self._drain_waiters:
                waiters, self._drain_waiters = self._drain_waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    def _start_task(self, awaitable: Any, event: str, callback: Callable[..., Any]) -> None:
        task = asyncio.ensure_future(awaitable, loop=self.loop)
        self._tasks.add(task)  # asyncio itself keeps tasks only weakly
        task.add_done_callback(functools.partial(self._task_done, event, callback))

    def _task_done(
        self, event: str, callback: Callable[..., Any], task: asyncio.Future[Any]
    ) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self._report(exc, event, callback, task)

    def _report(
        self,
        exc: BaseException,
        event: str,
        callback: Callable[..., Any],
        task: asyncio.Future[Any] | None = None,
    ) -> None:
        context: dict[str, Any] = {
            "message": f"pubmarine: callback {callback!r} for event {event!r} raised {exc!r}",
            "exception": exc,
            "event": event,
            "callback": callback,
        }
        if task is not None:
            context["future"] = task
        self.loop.call_exception_handler(context)
