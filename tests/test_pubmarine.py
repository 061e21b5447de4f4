"""Tests of pubmarine.py: one behaviour per test, named after the guarantee it checks.

Each test runs on a fresh event loop: pytest-asyncio's (function scope), or its own where it
must stop the loop or watch it sleep. Nothing sleeps to wait for delivery: tests await
``pubpen.drain()`` or a future under an ``asyncio.wait_for`` deadline, or wait on a
``threading.Event`` with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dis
import functools
import gc
import io
import json
import os
import selectors
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any, Callable

import pytest
import pytest_asyncio
from terminal import (
    DEADLINE,
    REPO_ROOT,
)

import pubmarine
from pubmarine import EventNotFoundError, PubMarineError, PubPen

WAKE_DEADLINE = DEADLINE / 2  # a woken loop delivers in well under a millisecond


@pytest_asyncio.fixture
async def pubpen() -> PubPen:
    return PubPen(asyncio.get_running_loop())


async def drained(pubpen: PubPen) -> None:
    """Wait for ``pubpen.drain()``, failing rather than hanging if it never returns."""
    await asyncio.wait_for(pubpen.drain(), DEADLINE)


def capture_errors(loop: asyncio.AbstractEventLoop) -> list[dict[str, Any]]:
    """Route the loop's exception handler into a list and return the list."""
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    return contexts


def is_empty(pubpen: PubPen) -> bool:
    """True when the PubPen's internal tables hold no trace of any subscription."""
    return not (pubpen._subscriptions or pubpen._handlers or pubpen._snapshots)


async def collect_and_publish_again(pubpen: PubPen) -> None:
    """Collect garbage, check that no subscription is left, then publish ``e`` 2 and deliver it."""
    gc.collect()
    assert is_empty(pubpen)
    pubpen.publish("e", 2)
    await drained(pubpen)


def publish_many(pubpen: PubPen, count: int, *first_args: Any) -> None:
    """Publish ``e`` ``count`` times with ``*first_args, n`` for n counting from 0."""
    for n in range(count):
        pubpen.publish("e", *first_args, n)


class Recorder:
    def __init__(self, calls: list[Any]) -> None:
        self.calls = calls

    def method(self, value: Any) -> None:
        self.calls.append(value)


def test_version_is_a_release_after_0_4_3_in_both_forms() -> None:
    # 0.4.3 code may read either attribute (0.4.3 has both): they must agree, and say that
    # this is the API of 0.4.3 or later.
    assert pubmarine.__version_info__ == tuple(pubmarine.__version__.split("."))
    assert all(part.isdigit() for part in pubmarine.__version_info__)
    assert tuple(map(int, pubmarine.__version_info__)) > (0, 4, 3)


def test_api_names_and_error_hierarchy() -> None:
    assert set(pubmarine.__all__) == {"PubPen", "PubMarineError", "EventNotFoundError"}
    assert issubclass(PubMarineError, Exception)
    assert issubclass(EventNotFoundError, PubMarineError)


@pytest.mark.asyncio
async def test_loop_is_a_public_attribute() -> None:
    loop = asyncio.get_running_loop()
    assert PubPen(loop).loop is loop
    assert PubPen(loop=loop, event_list=None).loop is loop


@pytest.mark.asyncio
async def test_subscription_ids_count_from_zero_as_in_0_4_3(pubpen: PubPen) -> None:
    assert [pubpen.subscribe("a", print) for _ in range(3)] == [0, 1, 2]


@pytest.mark.asyncio
async def test_subscription_ids_are_unique_and_increasing(pubpen: PubPen) -> None:
    ids = [pubpen.subscribe(event, print) for event in ("a", "b", "a", "c", "b")]
    assert ids == sorted(set(ids))
    pubpen.unsubscribe(ids[-1])
    assert pubpen.subscribe("a", print) > ids[-1]  # ids are never reused


@pytest.mark.asyncio
async def test_unsubscribe_of_unknown_or_removed_id_is_ignored(pubpen: PubPen) -> None:
    sub_id = pubpen.subscribe("a", print)
    pubpen.unsubscribe(sub_id)
    pubpen.unsubscribe(sub_id)
    pubpen.unsubscribe(12345)
    assert is_empty(pubpen)


@pytest.mark.asyncio
async def test_args_and_kwargs_reach_the_callback(pubpen: PubPen) -> None:
    calls: list[Any] = []
    pubpen.subscribe("e", lambda *a, **k: calls.append((a, k)))
    pubpen.publish("e", 1, "two", three=3)
    await drained(pubpen)
    assert calls == [((1, "two"), {"three": 3})]


@pytest.mark.asyncio
async def test_emit_warns_and_still_delivers(pubpen: PubPen) -> None:
    calls: list[int] = []
    pubpen.subscribe("e", calls.append)
    with pytest.warns(DeprecationWarning, match="publish"):
        pubpen.emit("e", 7)
    await drained(pubpen)
    assert calls == [7]


@pytest.mark.asyncio
async def test_event_list_rejects_subscribe_to_unknown_event_by_name() -> None:
    pubpen = PubPen(asyncio.get_running_loop(), event_list=["known"])
    pubpen.subscribe("known", print)
    with pytest.raises(EventNotFoundError, match="typo_event"):
        pubpen.subscribe("typo_event", print)


@pytest.mark.asyncio
async def test_event_list_rejects_publish_of_unknown_event_by_name() -> None:
    pubpen = PubPen(asyncio.get_running_loop(), event_list=["known"])
    pubpen.publish("known")
    with pytest.raises(EventNotFoundError, match="typo_event"):
        pubpen.publish("typo_event")


@pytest.mark.asyncio
async def test_empty_event_list_allows_any_event_as_in_0_4_3() -> None:
    pubpen = PubPen(asyncio.get_running_loop(), event_list=[])
    calls: list[int] = []
    pubpen.subscribe("anything", calls.append)
    pubpen.publish("anything", 1)
    await drained(pubpen)
    assert calls == [1]


@pytest.mark.asyncio
async def test_publish_without_subscribers_is_a_no_op(pubpen: PubPen) -> None:
    pubpen.publish("nobody_listens", 1)
    await drained(pubpen)
    assert is_empty(pubpen)


@pytest.mark.asyncio
async def test_publish_never_calls_a_callback_itself(pubpen: PubPen) -> None:
    calls: list[int] = []
    pubpen.subscribe("e", calls.append)
    pubpen.publish("e", 1)
    assert calls == []
    await drained(pubpen)
    assert calls == [1]


@pytest.mark.asyncio
async def test_callbacks_run_in_subscription_order(pubpen: PubPen) -> None:
    calls: list[str] = []
    for name in "abcde":
        pubpen.subscribe("e", functools.partial(calls.append, name))
    pubpen.publish("e")
    await drained(pubpen)
    assert calls == list("abcde")


@pytest.mark.asyncio
async def test_delivery_is_fifo_across_events(pubpen: PubPen) -> None:
    calls: list[tuple[str, int]] = []
    pubpen.subscribe("a", lambda n: calls.append(("a", n)))
    pubpen.subscribe("b", lambda n: calls.append(("b", n)))
    expected = [("a", 1), ("b", 2), ("a", 3), ("b", 4), ("b", 5), ("a", 6)]
    for event, n in expected:
        pubpen.publish(event, n)
    await drained(pubpen)
    assert calls == expected


@pytest.mark.asyncio
async def test_events_published_by_a_callback_come_after_those_already_queued(
    pubpen: PubPen,
) -> None:
    calls: list[str] = []

    def first(_: object) -> None:
        calls.append("first")
        pubpen.publish("third", None)

    pubpen.subscribe("first", first)
    pubpen.subscribe("second", lambda _: calls.append("second"))
    pubpen.subscribe("third", lambda _: calls.append("third"))
    pubpen.publish("first", None)
    pubpen.publish("second", None)
    await drained(pubpen)
    assert calls == ["first", "second", "third"]


@pytest.mark.asyncio
async def test_subscription_made_after_publish_misses_that_event(pubpen: PubPen) -> None:
    early: list[int] = []
    late: list[int] = []
    pubpen.subscribe("e", early.append)
    pubpen.publish("e", 1)
    pubpen.subscribe("e", late.append)
    pubpen.publish("e", 2)
    await drained(pubpen)
    assert early == [1, 2]
    assert late == [2]


@pytest.mark.asyncio
async def test_one_batch_runs_before_loop_callbacks_scheduled_between_its_publishes(
    pubpen: PubPen,
) -> None:
    # Documented: one loop callback delivers the batch, so A, B, then x (0.4.3: A, x, B).
    loop = asyncio.get_running_loop()
    calls: list[str] = []
    x_ran = loop.create_future()
    pubpen.subscribe("a", lambda: calls.append("A"))
    pubpen.subscribe("b", lambda: calls.append("B"))
    pubpen.publish("a")

    def x() -> None:
        calls.append("x")
        x_ran.set_result(None)

    loop.call_soon(x)
    pubpen.publish("b")
    await asyncio.wait_for(x_ran, DEADLINE)
    await drained(pubpen)
    assert calls == ["A", "B", "x"]


@pytest.mark.asyncio
async def test_subscription_made_by_a_callback_misses_events_already_published(
    pubpen: PubPen,
) -> None:
    calls: list[tuple[str, int]] = []

    def first(n: int) -> None:
        calls.append(("first", n))
        if n == 1:
            pubpen.subscribe("e", lambda n: calls.append(("new", n)))

    pubpen.subscribe("e", first)
    pubpen.subscribe("e", lambda n: calls.append(("second", n)))
    pubpen.publish("e", 1)
    pubpen.publish("e", 2)
    await drained(pubpen)
    pubpen.publish("e", 3)
    await drained(pubpen)
    assert calls == [
        ("first", 1),
        ("second", 1),
        ("first", 2),
        ("second", 2),
        ("first", 3),
        ("second", 3),
        ("new", 3),
    ]


@pytest.mark.asyncio
async def test_callback_subscribed_n_times_is_called_n_times(pubpen: PubPen) -> None:
    calls: list[int] = []
    for _ in range(3):
        pubpen.subscribe("e", calls.append)
    pubpen.publish("e", 1)
    await drained(pubpen)
    assert calls == [1, 1, 1]


@pytest.mark.asyncio
async def test_bound_method_subscribed_n_times_is_called_n_times(pubpen: PubPen) -> None:
    calls: list[int] = []
    recorder = Recorder(calls)
    for _ in range(3):
        pubpen.subscribe("e", recorder.method)
    pubpen.publish("e", 1)
    await drained(pubpen)
    assert calls == [1, 1, 1]


@pytest.mark.asyncio
async def test_bound_method_is_held_weakly_and_leaves_nothing_behind(pubpen: PubPen) -> None:
    calls: list[int] = []
    recorder = Recorder(calls)
    pubpen.subscribe("e", recorder.method)
    pubpen.publish("e", 1)
    await drained(pubpen)
    assert calls == [1]

    del recorder
    await collect_and_publish_again(pubpen)
    assert calls == [1]


@pytest.mark.asyncio
async def test_object_dying_with_an_event_queued_is_not_called(pubpen: PubPen) -> None:
    calls: list[int] = []
    recorder = Recorder(calls)
    pubpen.subscribe("e", recorder.method)
    pubpen.publish("e", 1)
    del recorder
    gc.collect()
    await drained(pubpen)
    assert calls == []
    assert is_empty(pubpen)


@pytest.mark.asyncio
async def test_partial_is_held_strongly_and_called(pubpen: PubPen) -> None:
    # pubmarine 0.4.3 held this partial weakly: it died at once and was never called.
    calls: list[tuple[str, int]] = []
    pubpen.subscribe("e", functools.partial(lambda tag, n: calls.append((tag, n)), "tag"))
    gc.collect()
    pubpen.publish("e", 1)
    await drained(pubpen)
    assert calls == [("tag", 1)]


@pytest.mark.asyncio
async def test_lambda_is_held_strongly_and_called(pubpen: PubPen) -> None:
    # pubmarine 0.4.3 held this lambda weakly: it died at once and was never called.
    calls: list[int] = []
    pubpen.subscribe("e", lambda n: calls.append(n))
    gc.collect()
    pubpen.publish("e", 1)
    await drained(pubpen)
    assert calls == [1]


@pytest.mark.asyncio
async def test_nested_function_is_held_strongly(pubpen: PubPen) -> None:
    calls: list[int] = []

    def make_callback() -> Any:
        def callback(n: int) -> None:
            calls.append(n)

        return callback

    pubpen.subscribe("e", make_callback())
    gc.collect()
    pubpen.publish("e", 1)
    await drained(pubpen)
    assert calls == [1]


@pytest.mark.asyncio
async def test_weak_false_keeps_a_bound_method_alive(pubpen: PubPen) -> None:
    calls: list[int] = []
    recorder = Recorder(calls)
    alive = weakref.ref(recorder)
    pubpen.subscribe("e", recorder.method, weak=False)
    del recorder
    gc.collect()
    assert alive() is not None
    pubpen.publish("e", 1)
    await drained(pubpen)
    assert calls == [1]


@pytest.mark.asyncio
async def test_weak_true_holds_a_function_weakly(pubpen: PubPen) -> None:
    calls: list[int] = []

    def callback(n: int) -> None:
        calls.append(n)

    pubpen.subscribe("e", callback, weak=True)
    pubpen.publish("e", 1)
    await drained(pubpen)
    assert calls == [1]

    del callback
    await collect_and_publish_again(pubpen)
    assert calls == [1]


@pytest.mark.asyncio
async def test_weak_true_on_an_unreferenceable_callable_raises_type_error(
    pubpen: PubPen,
) -> None:
    class NoWeakRefs:
        __slots__ = ()

        def __call__(self) -> None:
            pass

    with pytest.raises(TypeError):
        pubpen.subscribe("e", NoWeakRefs(), weak=True)
    assert is_empty(pubpen)


@pytest.mark.asyncio
async def test_method_of_an_unreferenceable_object_is_held_strongly_by_default(
    pubpen: PubPen,
) -> None:
    # pubmarine 0.4.3 fell back to a weak reference to the bound method itself, which died
    # at once: such a method was never called.
    calls: list[int] = []

    class Slotted:
        __slots__ = ()

        def method(self, n: int) -> None:
            calls.append(n)

    pubpen.subscribe("e", Slotted().method)
    gc.collect()
    pubpen.publish("e", 1)
    await drained(pubpen)
    assert calls == [1]


@pytest.mark.asyncio
async def test_unsubscribe_leaves_nothing_behind(pubpen: PubPen) -> None:
    ids = [pubpen.subscribe(event, print) for event in ("a", "b", "a")]
    pubpen.publish("a", "x")  # fills the snapshot cache
    for sub_id in ids:
        pubpen.unsubscribe(sub_id)
    assert is_empty(pubpen)
    await drained(pubpen)


@pytest.mark.asyncio
async def test_unsubscribe_wins_over_an_event_already_published(pubpen: PubPen) -> None:
    calls: list[int] = []
    sub_id = pubpen.subscribe("e", calls.append)
    pubpen.publish("e", 1)
    pubpen.unsubscribe(sub_id)
    await drained(pubpen)
    assert calls == []


@pytest.mark.asyncio
async def test_unsubscribe_by_an_earlier_callback_wins_within_one_delivery(
    pubpen: PubPen,
) -> None:
    calls: list[str] = []
    victim = 0

    def killer(_: object) -> None:
        calls.append("killer")
        pubpen.unsubscribe(victim)

    pubpen.subscribe("e", killer)
    victim = pubpen.subscribe("e", lambda _: calls.append("victim"))
    pubpen.publish("e", None)
    pubpen.publish("e", None)
    await drained(pubpen)
    assert calls == ["killer", "killer"]


@pytest.mark.asyncio
async def test_callbacks_that_unsubscribe_themselves_are_each_called_once(pubpen: PubPen) -> None:
    calls: list[tuple[int, int]] = []
    ids: list[int] = []

    def make_once(k: int) -> Any:
        def once(n: int) -> None:
            calls.append((k, n))
            pubpen.unsubscribe(ids[k])

        return once

    ids.extend(pubpen.subscribe("e", make_once(k)) for k in range(5))
    pubpen.publish("e", 1)
    pubpen.publish("e", 2)
    await drained(pubpen)
    assert calls == [(k, 1) for k in range(5)]
    assert is_empty(pubpen)


@pytest.mark.asyncio
async def test_unsubscribing_from_another_event_during_a_delivery_spares_the_rest(
    pubpen: PubPen,
) -> None:
    calls: list[str] = []
    other = pubpen.subscribe("other", print)
    pubpen.subscribe("e", lambda: pubpen.unsubscribe(other))
    pubpen.subscribe("e", lambda: calls.append("second"))
    pubpen.subscribe("e", lambda: calls.append("third"))
    pubpen.publish("e")
    pubpen.publish("e")
    await drained(pubpen)
    assert calls == ["second", "third", "second", "third"]


@pytest.mark.asyncio
async def test_unsubscribe_wins_over_a_keyword_publish_already_queued(pubpen: PubPen) -> None:
    calls: list[dict[str, int]] = []
    kept: list[dict[str, int]] = []
    sub_id = pubpen.subscribe("e", lambda **kwargs: calls.append(kwargs))
    pubpen.subscribe("e", lambda **kwargs: kept.append(kwargs))
    pubpen.publish("e", n=1)
    pubpen.unsubscribe(sub_id)
    await drained(pubpen)
    assert calls == []
    assert kept == [{"n": 1}]


@pytest.mark.asyncio
async def test_removing_many_subscriptions_in_reverse_is_fast(pubpen: PubPen) -> None:
    # 0.4.3 scanned the event's subscriptions on each unsubscribe: quadratic, minutes here.
    loop = asyncio.get_running_loop()
    ids = [pubpen.subscribe("e", print) for _ in range(100_000)]
    started = loop.time()
    for sub_id in reversed(ids):
        pubpen.unsubscribe(sub_id)
    assert loop.time() - started < 5.0  # a generous bound; it takes a few tens of ms
    assert is_empty(pubpen)


@pytest.mark.asyncio
async def test_coroutine_callback_runs_to_completion(pubpen: PubPen) -> None:
    calls: list[str] = []

    async def callback(n: int) -> None:
        calls.append(f"start {n}")
        await asyncio.sleep(0)
        calls.append(f"end {n}")

    pubpen.subscribe("e", callback)
    pubpen.publish("e", 1)
    await drained(pubpen)
    assert calls == ["start 1", "end 1"]


@pytest.mark.asyncio
async def test_coroutine_task_is_kept_referenced_until_it_finishes(pubpen: PubPen) -> None:
    # The task waits on a future that only the task itself references. Were the bus to drop
    # the task, garbage collection would destroy task and future while still pending.
    loop = asyncio.get_running_loop()
    gate: list[weakref.ref[asyncio.Future[None]]] = []
    finished = loop.create_future()

    async def callback() -> None:
        inner: asyncio.Future[None] = loop.create_future()
        gate.append(weakref.ref(inner))
        await inner
        finished.set_result(None)

    pubpen.subscribe("e", callback)
    pubpen.publish("e")
    while not gate:
        await asyncio.sleep(0)
    gc.collect()
    inner = gate[0]()
    assert inner is not None, "the pending task was garbage collected"
    inner.set_result(None)
    del inner
    await asyncio.wait_for(finished, DEADLINE)
    await drained(pubpen)
    assert not pubpen._tasks


@pytest.mark.asyncio
async def test_drain_waits_for_tasks_and_what_they_publish(pubpen: PubPen) -> None:
    calls: list[str] = []

    async def step(n: int) -> None:
        await asyncio.sleep(0)
        calls.append(f"step {n}")
        if n < 3:
            pubpen.publish("step", n + 1)

    pubpen.subscribe("step", step)
    pubpen.publish("step", 1)
    await drained(pubpen)
    assert calls == ["step 1", "step 2", "step 3"]


@pytest.mark.asyncio
async def test_drain_returns_at_once_when_idle(pubpen: PubPen) -> None:
    await drained(pubpen)


@pytest.mark.asyncio
async def test_drain_inside_a_callback_task_waits_for_the_rest_but_not_for_itself(
    pubpen: PubPen,
) -> None:
    # pubmarine.py 0.5.0 waited for the very task that awaited drain(): it hung for ever.
    calls: list[str] = []

    async def work(n: int) -> None:
        await asyncio.sleep(0)  # a task that needs more than one step
        calls.append(f"work {n}")

    async def publish_and_wait() -> None:
        pubpen.publish("work", 1)
        pubpen.publish("work", 2)
        await pubpen.drain()
        calls.append("drained")

    pubpen.subscribe("work", work)
    pubpen.subscribe("wait", publish_and_wait)
    pubpen.publish("wait")
    await drained(pubpen)
    assert calls == ["work 1", "work 2", "drained"]
    assert not pubpen._tasks


@pytest.mark.asyncio
async def test_callback_tasks_draining_at_the_same_time_resume_together(pubpen: PubPen) -> None:
    # Each waits for the other's work, not for the other itself (which waits too); a
    # drain() from outside returns only once both have finished.
    calls: list[str] = []

    async def work(name: str) -> None:
        await asyncio.sleep(0)
        calls.append(f"work {name}")

    async def publish_and_wait(name: str) -> None:
        pubpen.publish("work", name)
        await pubpen.drain()
        calls.append(f"{name} resumed")

    pubpen.subscribe("work", work)
    pubpen.subscribe("wait", publish_and_wait)
    pubpen.publish("wait", "a")
    pubpen.publish("wait", "b")
    await drained(pubpen)
    assert sorted(calls[:2]) == ["work a", "work b"]
    assert sorted(calls[2:]) == ["a resumed", "b resumed"]
    assert not pubpen._tasks


@pytest.mark.asyncio
async def test_failing_callback_does_not_stop_the_others(pubpen: PubPen) -> None:
    errors = capture_errors(asyncio.get_running_loop())
    calls: list[str] = []
    boom = ValueError("boom")

    def fail(_: object) -> None:
        raise boom

    pubpen.subscribe("e", lambda n: calls.append(f"before {n}"))
    pubpen.subscribe("e", fail)
    pubpen.subscribe("e", lambda n: calls.append(f"after {n}"))
    pubpen.subscribe("later", lambda n: calls.append(f"later {n}"))
    pubpen.publish("e", 1)
    pubpen.publish("later", 2)
    await drained(pubpen)
    assert calls == ["before 1", "after 1", "later 2"]
    assert len(errors) == 1
    assert errors[0]["exception"] is boom
    assert "'e'" in errors[0]["message"]


class Member:
    """A subscriber whose callbacks are bound methods, for the test below."""

    def __init__(self, name: str, calls: list[Any], pubpen: PubPen) -> None:
        self.name = name
        self.calls = calls
        self.pubpen = pubpen
        self.victim = -1

    def record(self, *args: Any) -> None:
        self.calls.append((self.name, args))

    def record_and_unsubscribe(self, *args: Any) -> None:
        self.calls.append((self.name, args))
        self.pubpen.unsubscribe(self.victim)

    def fail(self, *args: Any) -> None:
        raise ValueError(self.name)

    async def fail_later(self, *args: Any) -> None:
        await asyncio.sleep(0)
        raise RuntimeError(self.name)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["functions", "bound methods"])
async def test_bound_methods_alone_are_delivered_by_the_same_rules_as_functions(
    pubpen: PubPen, kind: str
) -> None:
    # Events whose subscribers are all plain callbacks, or all bound methods, each go their
    # own quick way (one subscriber or several); the rules are the same: an earlier callback
    # that unsubscribes a later one wins within the delivery, failures are reported naming
    # the callback and stop nothing, tasks are started, any number of arguments.
    errors = capture_errors(asyncio.get_running_loop())
    calls: list[Any] = []
    a, b, c, d = (Member(name, calls, pubpen) for name in "abcd")

    def held(method: Callable[..., Any]) -> Callable[..., Any]:
        return method if kind == "bound methods" else lambda *args: method(*args)

    callbacks = {
        "a": held(a.record_and_unsubscribe),
        "b": held(b.fail),
        "c": held(c.record),
        "d": held(d.record),
        "later": held(d.fail_later),
    }
    pubpen.subscribe("e", callbacks["a"])
    pubpen.subscribe("e", callbacks["b"])
    a.victim = pubpen.subscribe("e", callbacks["c"])
    pubpen.subscribe("one", callbacks["d"])
    pubpen.subscribe("task", callbacks["later"])
    for args in ((), (1,), (1, 2)):
        pubpen.publish("e", *args)
        pubpen.publish("one", *args)
    pubpen.publish("task", 3)
    await drained(pubpen)
    assert calls == [
        ("a", ()),
        ("d", ()),
        ("a", (1,)),
        ("d", (1,)),
        ("a", (1, 2)),
        ("d", (1, 2)),
    ]
    assert [type(context["exception"]) for context in errors] == [ValueError] * 3 + [RuntimeError]
    assert [context["callback"] for context in errors] == [callbacks["b"]] * 3 + [
        callbacks["later"]
    ]
    assert all(context["event"] == "e" for context in errors[:3])
    assert errors[3]["event"] == "task"


@pytest.mark.asyncio
async def test_failing_task_is_reported_naming_the_event(pubpen: PubPen) -> None:
    errors = capture_errors(asyncio.get_running_loop())
    calls: list[int] = []
    boom = RuntimeError("task boom")

    async def fail(_: object) -> None:
        await asyncio.sleep(0)
        raise boom

    pubpen.subscribe("async_event", fail)
    pubpen.subscribe("async_event", calls.append)
    pubpen.publish("async_event", 1)
    pubpen.publish("async_event", 2)
    await drained(pubpen)
    assert calls == [1, 2]
    assert [context["exception"] for context in errors] == [boom, boom]
    assert all("'async_event'" in context["message"] for context in errors)


@pytest.mark.asyncio
async def test_cancelled_task_is_not_reported(pubpen: PubPen) -> None:
    errors = capture_errors(asyncio.get_running_loop())

    async def cancelled() -> None:
        raise asyncio.CancelledError

    pubpen.subscribe("e", cancelled)
    pubpen.publish("e")
    await drained(pubpen)
    assert errors == []
    assert not pubpen._tasks


@pytest.mark.asyncio
async def test_cancelled_error_from_a_plain_callback_is_reported_and_the_others_run(
    pubpen: PubPen,
) -> None:
    # asyncio's rule for loop callbacks: anything but SystemExit and KeyboardInterrupt is
    # reported, CancelledError included (pubmarine.py 0.5.0 dropped the rest of the event).
    loop = asyncio.get_running_loop()
    errors = capture_errors(loop)
    calls: list[str] = []
    cancelled: asyncio.Future[None] = loop.create_future()
    cancelled.cancel()

    pubpen.subscribe("e", lambda: calls.append("before"))
    pubpen.subscribe("e", cancelled.result)  # raises CancelledError
    pubpen.subscribe("e", lambda: calls.append("after"))
    pubpen.subscribe("later", lambda: calls.append("later"))
    pubpen.publish("e")
    pubpen.publish("later")
    await drained(pubpen)
    assert calls == ["before", "after", "later"]
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], asyncio.CancelledError)
    assert errors[0]["event"] == "e"
    assert "'e'" in errors[0]["message"]


class Stopper:
    """Bound methods for the test below: ``stop`` raises at 1."""

    def __init__(self, calls: list[Any], exc_type: type[BaseException]) -> None:
        self.calls = calls
        self.exc_type = exc_type

    def before(self, n: int) -> None:
        self.calls.append(f"before {n}")

    def stop(self, n: int) -> None:
        self.calls.append(f"stop {n}")
        if n == 1:
            raise self.exc_type


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
@pytest.mark.parametrize("held", ["strongly", "weakly", "all weakly", "alone", "method alone"])
def test_system_exit_and_keyboard_interrupt_propagate_and_the_rest_waits(
    exc_type: type[BaseException], held: str
) -> None:
    # As from any loop callback, they stop the loop; what was not delivered yet is not lost:
    # it is delivered, in order, once the loop runs again. ``held`` picks the way delivery
    # goes: plain callbacks, a mix with a bound method, bound methods only, one callback, one
    # bound method.
    loop = asyncio.new_event_loop()
    try:
        errors = capture_errors(loop)
        pubpen = PubPen(loop)
        calls: list[Any] = []
        recorder = Recorder(calls)
        stopper = Stopper(calls, exc_type)
        if held == "all weakly":
            pubpen.subscribe("e", stopper.before)
            pubpen.subscribe("e", stopper.stop)
        elif held == "alone":
            pubpen.subscribe("e", lambda n: stopper.stop(n))
        elif held == "method alone":
            pubpen.subscribe("e", stopper.stop)
        else:
            pubpen.subscribe("e", lambda n: calls.append(f"before {n}"))
            pubpen.subscribe("e", lambda n: stopper.stop(n))
        if held in ("weakly", "all weakly"):
            pubpen.subscribe("e", recorder.method)
        elif held == "strongly":
            pubpen.subscribe("e", recorder.method, weak=False)
        pubpen.subscribe("later", lambda n: calls.append(f"later {n}"))

        def publish() -> None:
            pubpen.publish("e", 1)
            pubpen.publish("later", 2)

        loop.call_soon(publish)
        with pytest.raises(exc_type):
            loop.run_forever()
        first = [] if "alone" in held else ["before 1"]
        assert calls == [*first, "stop 1"]
        loop.run_until_complete(asyncio.wait_for(pubpen.drain(), DEADLINE))
        rest = [] if "alone" in held else [1]
        assert calls == [*first, "stop 1", *rest, "later 2"]
        assert errors == []
    finally:
        loop.close()


@pytest.mark.asyncio
async def test_publish_from_a_thread_runs_callbacks_on_the_loop_thread_in_order(
    pubpen: PubPen,
) -> None:
    loop = asyncio.get_running_loop()
    count = 2_000
    seen: list[tuple[int, int]] = []
    done = loop.create_future()

    def callback(n: int) -> None:
        seen.append((threading.get_ident(), n))
        if n == count - 1:
            done.set_result(None)

    pubpen.subscribe("e", callback)
    publisher = threading.Thread(target=publish_many, args=(pubpen, count))
    publisher.start()
    # The loop has nothing else to do: it sleeps until the thread's publish wakes it.
    await asyncio.wait_for(done, DEADLINE)
    await loop.run_in_executor(None, publisher.join)
    assert {ident for ident, _ in seen} == {threading.get_ident()}
    assert [n for _, n in seen] == list(range(count))


class SleepWatchingSelector(selectors.DefaultSelector):
    """A selector that says when the loop blocks in select() with no timeout at all."""

    def __init__(self) -> None:
        super().__init__()
        self.asleep = threading.Event()

    def select(self, timeout: float | None = None) -> Any:
        if timeout is None:  # nothing ready, no timer: only I/O can wake the loop now
            self.asleep.set()
        return super().select(timeout)


def test_publish_from_a_thread_wakes_an_idle_loop_at_once() -> None:
    # The thread publishes while the loop is blocked in select() with no timer at all: with
    # no wake-up (the self-pipe write of call_soon_threadsafe) nothing would be delivered,
    # ever. WAKE_DEADLINE is generous for a loop that is woken.
    selector = SleepWatchingSelector()
    loop = asyncio.SelectorEventLoop(selector)
    try:
        pubpen = PubPen(loop)
        delivered = threading.Event()
        pubpen.subscribe("e", delivered.set)
        outcome: list[str] = []

        def publisher() -> None:
            try:
                if not selector.asleep.wait(DEADLINE):
                    outcome.append("the loop never went to sleep")
                    return
                pubpen.publish("e")
                woken = delivered.wait(WAKE_DEADLINE)
                outcome.append("delivered" if woken else "not delivered: the loop slept on")
            finally:
                loop.call_soon_threadsafe(loop.stop)

        thread = threading.Thread(target=publisher)
        thread.start()
        loop.run_forever()
        thread.join()
    finally:
        loop.close()
    assert outcome == ["delivered"]


@pytest.mark.asyncio
async def test_threads_and_loop_publishing_together_lose_nothing(pubpen: PubPen) -> None:
    loop = asyncio.get_running_loop()
    threads, count = 4, 500
    seen: dict[str, list[int]] = {}
    done = loop.create_future()
    total = (threads + 1) * count

    def callback(source: str, n: int) -> None:
        seen.setdefault(source, []).append(n)
        if sum(map(len, seen.values())) == total:
            done.set_result(None)

    pubpen.subscribe("e", callback)
    workers = [
        threading.Thread(target=publish_many, args=(pubpen, count, f"t{i}")) for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for n in range(count):
        pubpen.publish("e", "loop", n)
        if n % 50 == 0:
            await asyncio.sleep(0)
    await asyncio.wait_for(done, DEADLINE)
    for worker in workers:
        await loop.run_in_executor(None, worker.join)
    assert all(ns == list(range(count)) for ns in seen.values())
    assert len(seen) == threads + 1


@pytest.mark.asyncio
async def test_stress_threads_publishing_while_the_loop_thread_subscribes_and_unsubscribes(
    pubpen: PubPen,
) -> None:
    # 200,000 events from 4 threads; meanwhile the loop's thread keeps changing the event's
    # subscriptions. None may be lost, and each thread's events keep their order.
    loop = asyncio.get_running_loop()
    threads, count = 4, 50_000
    seen: dict[str, list[int]] = {f"t{i}": [] for i in range(threads)}
    total = threads * count
    received = 0
    done = loop.create_future()

    def callback(source: str, n: int) -> None:
        nonlocal received
        seen[source].append(n)
        received += 1
        if received == total:
            done.set_result(None)

    pubpen.subscribe("e", callback)
    workers = [
        threading.Thread(target=publish_many, args=(pubpen, count, f"t{i}")) for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    churn = 0
    started = loop.time()
    while not done.done() and loop.time() - started < DEADLINE:
        extra = pubpen.subscribe("e", lambda source, n: None)
        other = pubpen.subscribe("other", print)
        await asyncio.sleep(0)
        pubpen.unsubscribe(extra)
        pubpen.unsubscribe(other)
        churn += 1
    await asyncio.wait_for(done, DEADLINE)
    for worker in workers:
        await loop.run_in_executor(None, worker.join)
    assert all(ns == list(range(count)) for ns in seen.values())
    assert churn > 1
    assert not pubpen._handlers.get("other")


@pytest.mark.asyncio
async def test_events_from_a_thread_come_before_what_it_schedules_next(pubpen: PubPen) -> None:
    loop = asyncio.get_running_loop()
    order: list[tuple[str, int]] = []
    done = loop.create_future()
    count = 200
    pubpen.subscribe("e", lambda n: order.append(("event", n)))

    def publisher() -> None:
        for n in range(count):
            pubpen.publish("e", n)
            loop.call_soon_threadsafe(order.append, ("scheduled", n))
        loop.call_soon_threadsafe(done.set_result, None)

    thread = threading.Thread(target=publisher)
    thread.start()
    await asyncio.wait_for(done, DEADLINE)
    await loop.run_in_executor(None, thread.join)
    assert sorted(order) == sorted(
        (kind, n) for n in range(count) for kind in ("event", "scheduled")
    )
    assert [n for kind, n in order if kind == "event"] == list(range(count))
    assert all(order.index(("event", n)) < order.index(("scheduled", n)) for n in range(count))


@pytest.mark.asyncio
async def test_object_dying_in_another_thread_is_unsubscribed_and_never_called(
    pubpen: PubPen,
) -> None:
    # The weak reference's callback runs in the thread that drops the last reference; the
    # subscription tables belong to the loop's thread, which does the removal.
    loop = asyncio.get_running_loop()
    calls: list[int] = []
    holder = [Recorder(calls)]
    pubpen.subscribe("e", holder[0].method)
    pubpen.publish("e", 1)
    await loop.run_in_executor(None, holder.clear)
    pubpen.publish("e", 2)
    await drained(pubpen)
    assert calls == []
    await drained(pubpen)
    assert is_empty(pubpen)


@pytest.mark.parametrize("wake_up_pending", [False, True])
def test_publish_to_a_closed_loop_raises_and_keeps_nothing(wake_up_pending: bool) -> None:
    loop = asyncio.new_event_loop()
    pubpen = PubPen(loop)
    pubpen.subscribe("e", print)
    if wake_up_pending:
        pubpen.publish("e", "accepted before the loop closed")
    loop.close()
    argument = Recorder([])
    alive = weakref.ref(argument)
    with pytest.raises(RuntimeError, match="closed"):
        pubpen.publish("e", argument)
    del argument
    gc.collect()
    assert alive() is None, "the failed publish() left its event queued"


def test_publish_before_the_loop_runs_is_delivered_once_it_runs() -> None:
    loop = asyncio.new_event_loop()
    try:
        pubpen = PubPen(loop)
        calls: list[int] = []
        pubpen.subscribe("e", calls.append)
        pubpen.publish("e", 1)
        pubpen.publish("e", 2)
        assert calls == []
        loop.run_until_complete(asyncio.wait_for(pubpen.drain(), DEADLINE))
        assert calls == [1, 2]
    finally:
        loop.close()


@pytest.mark.asyncio
async def test_republishing_callback_does_not_starve_the_loop(pubpen: PubPen) -> None:
    # A callback that publishes again on every call must leave room for the loop's other
    # work; 0.4.3-style "deliver until the queue is empty" would never let `other` run.
    loop = asyncio.get_running_loop()
    limit = 10_000
    calls = 0
    other_ran_at: list[int] = []

    def again() -> None:
        nonlocal calls
        calls += 1
        if not other_ran_at and calls < limit:
            pubpen.publish("again")

    pubpen.subscribe("again", again)
    pubpen.publish("again")
    loop.call_soon(lambda: other_ran_at.append(calls))
    await drained(pubpen)
    assert other_ran_at, "the other callback never ran"
    assert other_ran_at[0] < 5


@pytest.mark.asyncio
async def test_republishing_callback_does_not_starve_socket_io(pubpen: PubPen) -> None:
    import socket

    loop = asyncio.get_running_loop()
    left, right = socket.socketpair()
    left.setblocking(False)
    right.setblocking(False)
    limit = 100_000
    calls = 0
    received = loop.create_future()
    loop.add_reader(right.fileno(), lambda: received.set_result(right.recv(10)))

    def again() -> None:
        nonlocal calls
        calls += 1
        if not received.done() and calls < limit:
            pubpen.publish("again")

    try:
        pubpen.subscribe("again", again)
        pubpen.publish("again")
        left.send(b"ping")
        assert await asyncio.wait_for(received, DEADLINE) == b"ping"
        await drained(pubpen)
        assert calls < limit
    finally:
        loop.remove_reader(right.fileno())
        left.close()
        right.close()


# Run against pubmarine 0.4.3 in a subprocess (its module name is ours too); prints what it saw.
# 0.4.3 has no drain(): publish() schedules each callback with loop.call_soon at once, so one
# `await asyncio.sleep(0)` lets every callback scheduled so far run before the script resumes.
OBSERVE_0_4_3 = r"""
import asyncio, functools, gc, json, sys, warnings
sys.path.insert(0, sys.argv[1])
import pubmarine
assert pubmarine.__version__ == "0.4.3", pubmarine.__file__
seen = {}
calls = []

def module_function():
    calls.append("module function")

class Recorder:
    def method(self):
        calls.append("method")

class Slotted:
    __slots__ = ()
    def method(self):
        calls.append("slotted method")

class CountingDict(dict):
    steps = 0
    def __iter__(self):
        for key in dict.__iter__(self):
            CountingDict.steps += 1
            yield key

async def main():
    loop = asyncio.get_running_loop()
    errors = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    pubpen = pubmarine.PubPen(loop)
    def factory():
        def nested():
            calls.append("nested function")
        return nested
    ids = [pubpen.subscribe("kinds", lambda: calls.append("lambda"))]
    ids.append(pubpen.subscribe("kinds", functools.partial(calls.append, "partial")))
    pubpen.subscribe("kinds", factory())
    pubpen.subscribe("kinds", module_function)
    recorder = Recorder()
    pubpen.subscribe("kinds", recorder.method)
    pubpen.subscribe("kinds", Slotted().method)
    gc.collect()
    pubpen.publish("kinds")
    await asyncio.sleep(0)
    seen["ids"] = ids
    seen["called"] = list(calls)

    ran = []
    async def coroutine():
        ran.append(True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pubpen.subscribe("async", coroutine)
        pubpen.publish("async")
        await asyncio.sleep(0)
        gc.collect()
    seen["async body ran"] = bool(ran)
    seen["never awaited"] = any("never awaited" in str(w.message) for w in caught)

    # From here on, callbacks are kept referenced by local names: 0.4.3 holds them weakly.
    order = []
    def before():
        order.append("before")
    def fail():
        raise ValueError("boom")
    def after():
        order.append("after")
    for callback in (before, fail, after):
        pubpen.subscribe("raise", callback)
    pubpen.publish("raise")
    await asyncio.sleep(0)
    seen["raise"] = order
    seen["reported"] = [type(c.get("exception")).__name__ for c in errors]

    late = []
    def victim():
        late.append(True)
    sub_id = pubpen.subscribe("unsubscribed", victim)
    pubpen.publish("unsubscribed")
    pubpen.unsubscribe(sub_id)
    await asyncio.sleep(0)
    seen["unsubscribed but called"] = bool(late)

    sequence = []
    def a():
        sequence.append("A")
    def b():
        sequence.append("B")
    pubpen.subscribe("A", a)
    pubpen.subscribe("B", b)
    pubpen.publish("A")
    loop.call_soon(sequence.append, "x")
    pubpen.publish("B")
    await asyncio.sleep(0)
    seen["order"] = sequence

    keep = [functools.partial(print, n) for n in range(200)]
    removed = [pubpen.subscribe("many", callback) for callback in keep]
    pubpen._event_handlers["many"] = CountingDict(pubpen._event_handlers["many"])
    for sub_id in reversed(removed):
        pubpen.unsubscribe(sub_id)
    seen["unsubscribe steps"] = CountingDict.steps

asyncio.run(main())
print(json.dumps(seen))
"""


# What the README says of 0.4.3 (whitespace aside), and what 0.4.3 must then do.
CLAIMS_ABOUT_0_4_3: list[tuple[str, str, Any]] = [
    ("returns an id: from 0 (as in 0.4.3)", "ids", [0, 1]),
    (
        "0.4.3 holds every callback through a weak reference, so it silently never calls one "
        "that nothing else references: lambdas, `functools.partial` objects, functions made "
        "by a factory, methods of objects with `__slots__`. It calls module-level functions "
        "and methods of live objects.",
        "called",
        ["module function", "method"],
    ),
    ("0.4.3 never runs an `async def` callback", "async body ran", False),
    (
        'the coroutine is made and dropped ("coroutine ... was never awaited")',
        "never awaited",
        True,
    ),
    (
        "0.4.3 still calls a callback unsubscribed after the event was published",
        "unsubscribed but called",
        True,
    ),
    (
        "its `unsubscribe()` scans the event's subscriptions (quadratic to remove them all)",
        "unsubscribe steps",
        sum(range(1, 201)),  # removing 200 from the end scans 200, then 199, ...
    ),
    ("(0.4.3, with one loop callback per subscriber: A, x, B)", "order", ["A", "x", "B"]),
    (
        "when a callback raises, 0.4.3 still calls the other subscribers",
        "raise",
        ["before", "after"],
    ),
    ("the error goes to the loop's exception handler", "reported", ["ValueError"]),
]


@pytest.fixture(scope="module")
def observed_0_4_3(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # PUBMARINE043=DIR names a directory made by `pip install --target DIR pubmarine==0.4.3`;
    # without it, 0.4.3 is installed into a temporary one (its module name is ours, so it
    # cannot go into this environment).
    directory = os.environ.get("PUBMARINE043", "")
    if not os.path.isdir(os.path.join(directory, "pubmarine")):
        directory = str(tmp_path_factory.mktemp("pubmarine043-target"))
        install = ["install", "--quiet", "--no-deps", "--target", directory, "pubmarine==0.4.3"]
        pip = subprocess.run(
            [sys.executable, "-m", "pip", "--disable-pip-version-check", *install],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if pip.returncode != 0:
            last = (pip.stderr.strip().splitlines() or ["pip failed"])[-1]
            pytest.skip(f"cannot install pubmarine 0.4.3 to check the README's claims: {last}")
    result = subprocess.run(
        [sys.executable, "-c", OBSERVE_0_4_3, os.path.abspath(directory)],
        cwd=tmp_path_factory.mktemp("pubmarine043"),  # away from our pubmarine.py
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    observed: dict[str, Any] = json.loads(result.stdout)
    return observed


@pytest.mark.parametrize(("claim", "key", "expected"), CLAIMS_ABOUT_0_4_3)
def test_readme_claim_about_0_4_3_is_what_0_4_3_does(
    observed_0_4_3: dict[str, Any], claim: str, key: str, expected: Any
) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert " ".join(claim.split()) in " ".join(readme.split())
    assert observed_0_4_3[key] == expected


# -- reporting never stops a delivery -------------------------------------------------------------


class UnspeakableError(Exception):
    """An exception whose repr() itself raises."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class Unspeakable:
    """A callable whose repr() raises, and which raises when called."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    def __call__(self) -> None:
        raise ValueError("called")


def raise_unspeakable() -> None:
    raise UnspeakableError


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "failing", [raise_unspeakable, Unspeakable()], ids=["exception", "callback"]
)
async def test_a_failure_whose_repr_raises_is_reported_and_the_others_still_run(
    pubpen: PubPen, failing: Callable[[], None]
) -> None:
    errors = capture_errors(asyncio.get_running_loop())
    calls: list[str] = []
    pubpen.subscribe("e", failing)
    pubpen.subscribe("e", lambda: calls.append("after"))
    pubpen.subscribe("later", lambda: calls.append("later"))
    pubpen.publish("e")
    pubpen.publish("later")
    await drained(pubpen)
    assert calls == ["after", "later"]
    assert len(errors) == 1 and "(its repr() failed)" in errors[0]["message"]


@pytest.mark.asyncio
async def test_an_exception_handler_that_raises_stops_no_delivery(pubpen: PubPen) -> None:
    loop = asyncio.get_running_loop()
    handled: list[dict[str, Any]] = []

    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        handled.append(context)
        raise RuntimeError("the handler itself fails")

    loop.set_exception_handler(handler)
    calls: list[str] = []
    pubpen.subscribe("e", raise_value_error)
    pubpen.subscribe("e", lambda: calls.append("after"))
    pubpen.publish("e")
    with contextlib.redirect_stderr(io.StringIO()):  # the default handler logs the handler's
        await drained(pubpen)
    assert calls == ["after"] and len(handled) == 1


def raise_value_error() -> None:
    raise ValueError("boom")


# -- a bad event name leaves nothing behind -------------------------------------------------------


@pytest.mark.asyncio
async def test_subscribing_to_a_name_that_cannot_be_one_leaves_nothing_behind(
    pubpen: PubPen,
) -> None:
    def callback() -> None:
        pass

    held = weakref.ref(callback)
    with pytest.raises(TypeError):
        pubpen.subscribe([], callback)  # type: ignore[arg-type]
    del callback
    gc.collect()
    assert held() is None, "the refused subscription still holds its callback"
    assert is_empty(pubpen)


# -- publishing from a finalizer ------------------------------------------------------------------

# A garbage collection inside publish()'s locked region (a publish from another thread, or from
# the loop's thread while the loop is not running) runs a finalizer that publishes too: the
# collection is made to happen there, in call_soon_threadsafe(), which runs under the lock.
_FINALIZER_PUBLISHES = """\
import asyncio, gc, sys
sys.path.insert(0, sys.argv[1])
from pubmarine import PubPen

loop = asyncio.new_event_loop()
pubpen = PubPen(loop)
seen = []
pubpen.subscribe("e", seen.append)


class Publishes:
    def __del__(self):
        pubpen.publish("e", "from a finalizer")


def collecting(call_soon_threadsafe):
    def collected(*args):
        gc.collect()
        return call_soon_threadsafe(*args)
    return collected


loop.call_soon_threadsafe = collecting(loop.call_soon_threadsafe)
garbage = Publishes()
garbage.cycle = garbage
del garbage
pubpen.publish("e", "published")
loop.run_until_complete(pubpen.drain())
print(sorted(seen))
"""


def test_a_finalizer_may_publish_during_a_publish(tmp_path: Path) -> None:
    script = tmp_path / "finalizer_publishes.py"
    script.write_text(_FINALIZER_PUBLISHES)
    try:
        result = subprocess.run(
            [sys.executable, str(script), str(REPO_ROOT)],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("publish() deadlocked: a finalizer published while it held its lock")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "['from a finalizer', 'published']\n"


# -- drain() from inside the bus's tasks, however they await it ----------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("through", ["wait_for", "gather"])
async def test_drain_awaited_through_a_child_task_of_a_bus_task_returns(
    pubpen: PubPen, through: str
) -> None:
    """asyncio.wait_for() (before Python 3.12) and gather() run drain() in a task of their
    own: it must still know that it waits inside a bus task, and not wait for that task."""
    calls: list[str] = []

    async def drains_inside() -> None:
        if through == "wait_for":
            await asyncio.wait_for(pubpen.drain(), DEADLINE)
        else:
            await asyncio.gather(pubpen.drain())
        calls.append("drained inside")

    pubpen.subscribe("e", drains_inside)
    pubpen.subscribe("e", lambda: calls.append("plain"))
    pubpen.publish("e")
    await drained(pubpen)
    assert calls == ["plain", "drained inside"]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in Python 3.12")
def test_drain_waits_for_tasks_that_an_eager_task_factory_started() -> None:
    loop = asyncio.new_event_loop()
    try:
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
        pubpen = PubPen(loop)
        calls: list[str] = []
        go_on = loop.create_future()

        async def waits_then_records() -> None:
            calls.append("started")  # runs at once, inside ensure_future()
            await go_on
            calls.append("finished")

        async def drains_eagerly() -> None:
            await pubpen.drain()  # inside a bus task from its very first step
            calls.append("drained inside")

        pubpen.subscribe("e", waits_then_records)
        pubpen.subscribe("f", drains_eagerly)

        async def main() -> None:
            pubpen.publish("e")
            pubpen.publish("f")
            draining = asyncio.ensure_future(pubpen.drain())
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert not draining.done(), "drain() returned before the bus's task had finished"
            go_on.set_result(None)
            await asyncio.wait_for(draining, DEADLINE)

        loop.run_until_complete(main())
        assert calls == ["started", "finished", "drained inside"]
    finally:
        loop.close()


@pytest.mark.asyncio
async def test_after_a_wake_up_from_another_thread_callbacks_events_wait_behind_the_loop(
    pubpen: PubPen,
) -> None:
    """The inbox delivers at once what a thread published (and what was queued with it);
    what its callbacks publish then waits behind what the loop had ready: a delivery that was
    scheduled earlier must not take it ahead. (The thread's event comes first: it was
    published, and the thread joined, before the loop's.)"""
    loop = asyncio.get_running_loop()
    order: list[str] = []

    def from_thread() -> None:
        order.append("A")
        pubpen.publish("from callback")

    pubpen.subscribe("from thread", from_thread)
    pubpen.subscribe("from callback", lambda: order.append("B"))
    pubpen.subscribe("from loop", lambda: order.append("P"))
    thread = threading.Thread(target=pubpen.publish, args=("from thread",))
    thread.start()
    thread.join()  # ready: the inbox's wake-up
    pubpen.publish("from loop")  # ready: the wake-up, then a delivery
    loop.call_soon(order.append, "x")  # ready: the wake-up, the delivery, x
    await drained(pubpen)
    assert order == ["A", "P", "x", "B"]


@pytest.mark.asyncio
async def test_what_a_joined_thread_published_is_delivered_before_what_the_loop_publishes_next(
    pubpen: PubPen,
) -> None:
    """What happens before in the program is delivered before: the thread's publish returned,
    and the thread was joined, before the loop's thread published."""
    order: list[str] = []
    pubpen.subscribe("e", order.append)
    for round_ in range(20):
        thread = threading.Thread(target=pubpen.publish, args=("e", f"thread {round_}"))
        thread.start()
        thread.join()
        pubpen.publish("e", f"loop {round_}")
    await drained(pubpen)
    expected = [f"{who} {n}" for n in range(20) for who in ("thread", "loop")]
    assert order == expected


# -- interrupts and signal handlers at any point ------------------------------------------------

#: Bytecodes that cannot raise: NOP (a ``try:`` line) and jumps. CPython 3.11 and later gives
#: such a bytecode no exception handler, so an exception that a tracer raises there leaves the
#: function past its ``finally`` clauses, which no real exception does (a backward jump looks
#: for pending signals once it has jumped). The sweeps below skip them, and lose nothing by
#: it: an interrupt before one of them finds the program as it is before the next bytecode.
CANNOT_RAISE = frozenset(op for name, op in dis.opmap.items() if name == "NOP" or "JUMP" in name)


class _AtOpcode:
    """A tracer that does something at the ``k``-th bytecode executed in pubmarine.py's own
    frames (once), as a real Ctrl-C or a signal handler may: between any two bytecodes.
    (``unit="line"``: at the k-th line, where a Python gives no bytecode events to a tracer:
    CPython 3.12.1 does not.)"""

    def __init__(self, k: int, act: Callable[[], None], unit: str = "opcode") -> None:
        self.k = k
        self.act = act
        self.unit = unit
        self.count = 0
        self.busy = False

    def __call__(self, frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename != pubmarine.__file__:
            return None
        frame.f_trace_opcodes = True
        lasti = frame.f_lasti
        skipped = lasti >= 0 and frame.f_code.co_code[lasti] in CANNOT_RAISE
        if event == self.unit and not self.busy and not skipped:
            self.count += 1
            if self.count == self.k:
                self.busy = True  # what act() runs in pubmarine is not counted
                try:
                    self.act()
                finally:
                    self.busy = False
        return self


#: The events of the scenario, one for each way a delivery goes: two plain callbacks, one,
#: two bound methods held weakly, one, and a mix (which checks each subscription).
SWEPT = ("two", "one", "methods", "method", "mixed")


def _publish_deliver_then_drain(
    act_at: int, act: Callable[[PubPen], None], unit: str = "opcode"
) -> dict[str, Any]:
    """Publish each event of SWEPT twice on a fresh loop while ``act`` runs at one bytecode
    of pubmarine's, then each twice more, and drain. What each subscriber got (by event),
    what was published, what the loop's exception handler heard, whether drain() returned,
    how many bytecodes ran."""
    loop = asyncio.new_event_loop()
    pubpen = PubPen(loop)
    got: dict[str, list[list[Any]]] = {event: [[], []] for event in SWEPT}
    got["one"].pop()  # these have one subscriber
    got["method"].pop()
    errors: list[Any] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    recorders = [Recorder(got["methods"][0]), Recorder(got["methods"][1])]
    recorders.append(Recorder(got["mixed"][1]))
    recorders.append(Recorder(got["method"][0]))
    pubpen.subscribe("two", got["two"][0].append)
    pubpen.subscribe("two", got["two"][1].append)
    pubpen.subscribe("one", got["one"][0].append)
    pubpen.subscribe("methods", recorders[0].method)
    pubpen.subscribe("methods", recorders[1].method)
    pubpen.subscribe("mixed", got["mixed"][0].append)
    pubpen.subscribe("mixed", recorders[2].method)
    pubpen.subscribe("method", recorders[3].method)
    pubpen.subscribe("h", lambda n: got["two"][0].append(("h", n)))
    tracer = _AtOpcode(act_at, lambda: act(pubpen), unit)
    published: list[tuple[str, int]] = []

    def publish(numbers: range) -> None:
        for n in numbers:
            for event in SWEPT:
                published.append((event, n))  # if publish() is interrupted, it is in flight
                pubpen.publish(event, n)

    async def first() -> None:
        publish(range(2))
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    async def then() -> None:
        publish(range(2, 4))
        await asyncio.wait_for(pubpen.drain(), DEADLINE)

    sys.settrace(tracer)
    try:
        loop.run_until_complete(first())
    except KeyboardInterrupt:
        pass
    finally:
        sys.settrace(None)
    drained = True
    try:
        loop.run_until_complete(then())
    except asyncio.TimeoutError:
        drained = False
    finally:
        loop.close()
    return {
        "got": got,
        "published": published,
        "errors": errors,
        "drained": drained,
        "bytecodes": tracer.count,
        # Kept by the caller while it sweeps: an interrupted run leaves reference cycles, and
        # were these objects to die in a later run's garbage collection, their weak references
        # would call back into pubmarine in the middle of the bytecodes counted there.
        "recorders": recorders,
    }


def _points_of_the_scenario() -> tuple[str, int]:
    """Bytecodes (or, where a tracer gets none, lines) that the scenario runs in pubmarine."""
    for unit in ("opcode", "line"):
        total = int(_publish_deliver_then_drain(10**9, lambda pubpen: None, unit)["bytecodes"])
        if total:
            return unit, total
    raise AssertionError("the tracer saw nothing of pubmarine.py")


def test_a_ctrl_c_at_any_bytecode_loses_at_most_the_event_in_flight() -> None:
    """KeyboardInterrupt raised at every bytecode of pubmarine.py that eight publishes and
    their delivery run, one at a time: afterwards the bus still delivers, in order, loses
    at most the one event that was in flight, and drain() returns."""

    def interrupt(pubpen: PubPen) -> None:
        raise KeyboardInterrupt

    unit, total = _points_of_the_scenario()
    assert total > (200 if unit == "opcode" else 60)  # real code, not an empty scenario
    kept = []
    for k in range(1, total + 1):
        seen = _publish_deliver_then_drain(k, interrupt, unit)
        kept.append(seen["recorders"])
        assert seen["drained"], f"drain() did not return after an interrupt at bytecode {k}"
        assert not seen["errors"], (k, seen["errors"])
        lost = set()
        for event, subscribers in seen["got"].items():
            for got in subscribers:
                assert got == sorted(set(got)), (k, seen["got"])  # in order, none twice
                assert {2, 3} <= set(got), (k, seen["got"])  # what came after, all of it
                lost |= {(e, n) for e, n in seen["published"] if e == event and n not in got}
        assert len(lost) <= 1, (k, lost, seen["got"])


def test_a_signal_handler_that_publishes_at_any_bytecode_loses_nothing() -> None:
    """A signal handler runs between any two bytecodes of the loop's thread, inside
    publish() and delivery too; when it publishes, nothing is lost or reordered."""

    def handler(pubpen: PubPen) -> None:
        pubpen.publish("h", 1)

    unit, total = _points_of_the_scenario()
    assert total > (200 if unit == "opcode" else 60)
    kept = []
    for k in range(1, total + 1):
        seen = _publish_deliver_then_drain(k, handler, unit)
        kept.append(seen["recorders"])
        assert seen["drained"] and not seen["errors"], (k, seen["errors"])
        for event, subscribers in seen["got"].items():
            for got in subscribers:
                numbers = [n for n in got if not isinstance(n, tuple)]
                assert numbers == list(range(4)), (k, event, seen["got"])
        assert seen["got"]["two"][0].count(("h", 1)) == 1, (k, seen["got"])
