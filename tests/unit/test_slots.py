"""sparkle.slots: at most N threads in the engine's bookkeeping, none lost to an exception."""

from __future__ import annotations

import ctypes
import itertools
import sys
import threading
import time
from typing import Any

import pytest

from sparkle.slots import Slots


def _inside_at_once(slots: Slots, threads: int) -> int:
    """The most threads ever inside ``slots.held()`` together, out of ``threads`` trying."""
    inside, most = 0, 0
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def work() -> None:
        nonlocal inside, most
        start.wait()
        for _ in range(50):
            with slots.held():
                with lock:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.0005)  # give the others every chance to come in too
                with lock:
                    inside -= 1

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(30)
    return most


def test_no_more_threads_than_the_limit_are_inside_at_once():
    """Eight threads competing for two slots: never more than two inside, and two do get in."""
    assert _inside_at_once(Slots(2, wait_sec=60), threads=8) == 2


def test_released_lets_another_thread_in_and_takes_a_slot_back():
    """A thread stepping out (its adapter running) frees its slot for another one."""
    slots = Slots(1)
    other_got_in = threading.Event()

    def other() -> None:
        with slots.held():
            other_got_in.set()

    with slots.held():
        with slots.released():
            assert not slots.holding()
            thread = threading.Thread(target=other)
            thread.start()
            assert other_got_in.wait(10), "the slot was not given up"
            thread.join(10)
        assert slots.holding()


def test_held_again_by_its_holder_does_not_wait_for_itself():
    """Nested held() in one thread (limit 1) goes straight in instead of deadlocking, and
    leaves the slot free."""
    slots = Slots(1, wait_sec=60)
    with slots.held(), slots.held():
        assert slots.holding()
    assert not slots.holding()
    assert not slots._locks[0].locked()


def _raise_in(thread: threading.Thread, exc: type[BaseException]) -> None:
    """Raise ``exc`` in ``thread`` as dramatiq's time limit does."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                      ctypes.py_object(exc))
    assert done == 1


class _TimeUp(Exception):
    pass


def test_a_thread_interrupted_while_waiting_loses_no_slot_and_frees_none():
    """A waiting thread hit by an exception (a time limit) leaves; the holder keeps its slot
    and, once it leaves, the slot is free again: none was lost, none given twice."""
    slots = Slots(1, wait_sec=1)
    waiting = threading.Event()
    outcome: list[str] = []

    def waiter() -> None:
        waiting.set()
        try:
            with slots.held():
                outcome.append("got in")
        except _TimeUp:
            outcome.append("interrupted")

    with slots.held():
        thread = threading.Thread(target=waiter)
        thread.start()
        assert waiting.wait(10)
        time.sleep(0.05)  # let it block on the slot
        _raise_in(thread, _TimeUp)
        thread.join(10)
        assert outcome == ["interrupted"]
        assert slots.holding()
    # The holder's slot is free again, and only one fits (limit 1), as before.
    slots.wait_sec = 60
    assert _inside_at_once(slots, threads=4) == 1


def test_an_exception_from_outside_the_slot_leaves_it_free_once():
    """An adapter's exception (raised inside released()) ends with the slot taken back and
    given back once: free, and still only one fits."""
    slots = Slots(1, wait_sec=60)
    with pytest.raises(RuntimeError), slots.held(), slots.released():
        raise RuntimeError("adapter failed")
    assert not slots.holding()
    assert _inside_at_once(slots, threads=4) == 1


def test_a_limit_below_one_is_refused():
    """Zero slots would stop every stage: refused when the engine is built."""
    with pytest.raises(ValueError, match="at least 1"):
        Slots(0)


def test_a_slow_disk_wait_gives_the_slot_up_and_a_quick_one_keeps_it(monkeypatch):
    """While fsyncs are slow (a real disk) the slot is free during one, so another thread's
    bookkeeping goes on; while they are quick (tmpfs) the hand-over is not worth it."""
    from sparkle import slots as slots_module

    slots = Slots(1, wait_sec=60)
    with slots.held():
        monkeypatch.setattr(slots_module, "_wait_ns", [10 * slots_module._SLOW_WAIT_NS])
        with slots_module.waiting_on_disk():
            assert not slots.holding()
        assert slots.holding()
        monkeypatch.setattr(slots_module, "_wait_ns", [0])
        with slots_module.waiting_on_disk():
            assert slots.holding()
    with slots_module.waiting_on_disk():  # outside any slot: nothing to give up
        assert not slots.holding()
    assert _inside_at_once(slots, threads=4) == 1


def test_the_average_disk_wait_follows_the_waits_measured(monkeypatch):
    """The average moves towards what the waits take: quick waits bring it under the
    threshold, so a tmpfs stops handing the slot over."""
    from sparkle import slots as slots_module

    monkeypatch.setattr(slots_module, "_wait_ns", [10 * slots_module._SLOW_WAIT_NS])
    for _ in range(100):
        with slots_module.waiting_on_disk():
            pass
    assert slots_module._wait_ns[0] < slots_module._SLOW_WAIT_NS


def test_a_slot_lost_to_an_exception_is_carried_on_by_the_next_waiter():
    """An exception between taking a slot's lock and recording it leaves the lock taken
    by nobody: the next thread to wait it out takes the slot over, and gives it back."""
    slots = Slots(1, wait_sec=0.05)
    assert slots._locks[0].acquire()  # taken, never recorded: what the exception leaves
    with slots.held():
        assert slots.holding()
    assert not slots._locks[0].locked()
    slots.wait_sec = 60
    assert _inside_at_once(slots, threads=4) == 1


def test_a_stuck_holder_holds_the_others_up_only_for_the_wait():
    """A holder stuck on a dead connection or a hung disk does not stop the process's
    other stages: after the wait they do their bookkeeping without a slot."""
    slots = Slots(1, wait_sec=0.05)
    finished = threading.Event()
    had_slot: list[bool] = []

    def other() -> None:
        with slots.held():
            had_slot.append(slots.holding())
        finished.set()

    with slots.held():  # the stuck holder
        thread = threading.Thread(target=other)
        thread.start()
        assert finished.wait(30)
        assert slots.holding()
    thread.join(10)
    assert had_slot == [False]
    slots.wait_sec = 60
    assert _inside_at_once(slots, threads=4) == 1  # nothing given back twice


def test_a_manifest_append_keeps_its_slot_under_the_manifest_lock(tmp_path, monkeypatch):
    """An append's fdatasync runs under the manifest's flock: giving the slot up there
    would have the thread wait for a slot while holding the lock another holder may need."""
    from sparkle import runstore
    from sparkle import slots as slots_module

    run = runstore.Run(tmp_path, "run-1")
    run.dir.mkdir()
    monkeypatch.setattr(slots_module, "_wait_ns", [10 * slots_module._SLOW_WAIT_NS])
    slots = Slots(1, wait_sec=60)
    held_while_syncing: list[bool] = []
    fdatasync = runstore.os.fdatasync

    def watched(fd: int) -> None:
        held_while_syncing.append(slots.holding())
        fdatasync(fd)

    monkeypatch.setattr(runstore.os, "fdatasync", watched)
    with slots.held():
        run.append_event("script", "success", 1)
    assert held_while_syncing == [True]


class _Injected(BaseException):
    pass


def _slot_states(slots: Slots) -> list[str]:
    """Each slot: free, lost (locked by nobody: the next waiter carries it on), or kept."""
    return ["free" if not lock.locked() else "lost" if owner is None else "kept"
            for lock, owner in zip(slots._locks, slots._owners, strict=True)]


def _inject_once(scenario: Any, limit: int, target: int) -> tuple[str, list[str]]:
    """Run ``scenario`` in a thread, raising an exception at the ``target``-th bytecode of
    sparkle.slots it executes (as dramatiq's time limit can), then let the same thread
    handle its next message. Returns where it was raised ("" if it ran out of bytecodes
    first) and the slots' states after."""
    from sparkle import slots as slots_module

    slots = Slots(limit, wait_sec=0.01)
    slots_module._wait_ns[0] = 10 * slots_module._SLOW_WAIT_NS  # fsyncs are slow
    seen, where = [0], [""]

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename != slots_module.__file__:
            return None
        frame.f_trace_opcodes = True

        def each(frame: Any, event: str, arg: Any) -> Any:
            if event == "opcode":
                seen[0] += 1
                if seen[0] == target:
                    where[0] = f"{frame.f_code.co_name}:{frame.f_lineno}"
                    raise _Injected
            return each
        return each

    def thread() -> None:
        sys.settrace(tracer)
        try:
            scenario(slots)
        except _Injected:
            pass
        finally:
            sys.settrace(None)
        with slots.held():  # the thread's next message
            pass

    worker = threading.Thread(target=thread)
    worker.start()
    worker.join(30)
    return where[0], _slot_states(slots)


def _inject_everywhere(scenario: Any, limit: int) -> tuple[int, list[tuple[str, list[str]]]]:
    """:func:`_inject_once` at every bytecode in turn: how many, and where a slot was kept."""
    wrong: list[tuple[str, list[str]]] = []
    for target in itertools.count(1):
        where, states = _inject_once(scenario, limit, target)
        if not where:
            return target - 1, wrong
        if "kept" in states:
            wrong.append((where, states))
    raise AssertionError("unreachable")


def _stage(slots: Slots) -> None:
    with slots.held(), slots.released():  # the adapter
        pass


def _stage_with_fsync(slots: Slots) -> None:
    from sparkle import slots as slots_module

    with slots.held(), slots_module.waiting_on_disk():
        pass


@pytest.mark.parametrize("limit", [1, 2])
@pytest.mark.parametrize("scenario", [_stage, _stage_with_fsync])
def test_an_exception_at_any_bytecode_never_keeps_a_slot_for_good(scenario, limit,
                                                                  monkeypatch):
    """Wherever an exception lands in the slot code, once the thread has handled its next
    message no slot is left held by it: each is free or carried on by the next waiter."""
    from sparkle import slots as slots_module

    monkeypatch.setattr(slots_module, "_wait_ns", [0])
    points, wrong = _inject_everywhere(scenario, limit)
    assert points > 50  # (the tracer did reach the slot code)
    assert wrong == []
