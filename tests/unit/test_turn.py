"""The bookkeeping turn (sparkle.turn): one thread at a time, given away while a thread
waits on something else, and never a reason for a thread to stop for good."""

from __future__ import annotations

import os
import threading

from sparkle import atomic, turn
from sparkle.turn import Turn, away

#: Long enough for a thread that can go on to do so; the assertions are about order.
WAIT = 10.0


def _in_thread(body) -> threading.Thread:  # type: ignore[no-untyped-def]
    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def _taking(shared: Turn, hold: threading.Event | None = None
            ) -> tuple[threading.Thread, threading.Event]:
    """A thread that takes the turn (and keeps it until ``hold`` is set), and the event it
    sets once it has the turn."""
    inside = threading.Event()

    def body() -> None:
        with shared.taken():
            inside.set()
            if hold is not None:
                hold.wait(WAIT)

    return _in_thread(body), inside


def test_a_second_thread_waits_for_the_turn_until_the_first_gives_it():
    """While one thread holds the turn, another that asks for it does not get it."""
    shared, leave = Turn(wait_sec=60), threading.Event()
    a, first_in = _taking(shared, hold=leave)
    assert first_in.wait(WAIT)
    b, second_in = _taking(shared)
    assert not second_in.wait(0.3)  # (held by the first)
    leave.set()
    assert second_in.wait(WAIT)
    a.join(WAIT), b.join(WAIT)
    assert shared.restarts == 0


def test_away_lets_another_thread_have_the_turn_and_takes_it_back_after():
    """A thread waiting away from its turn (an adapter, a flush) lets another thread keep
    its books meanwhile, and holds the turn again when it comes back."""
    shared = Turn(wait_sec=60)
    held_after: list[bool] = []
    with shared.taken():
        with away():
            assert not turn.holding()
            thread, other_in = _taking(shared)
            assert other_in.wait(WAIT)  # (it got the turn while this one was away)
        held_after.append(turn.holding())
    thread.join(WAIT)
    assert held_after == [True]
    assert not turn.holding()


def test_away_without_a_turn_does_nothing():
    """Code that runs outside any worker (the CLI, the dashboard) goes through away()
    unchanged: there is nothing to give up and nothing is taken after."""
    with away():
        assert not turn.holding()
    assert not turn.holding()


def test_a_thread_that_waited_too_long_starts_a_new_turn_and_goes_on():
    """A turn held past wait_sec (a holder stuck on a disk or on Redis) does not stop the
    others: the waiter starts a new turn; the old holder can still give its own back."""
    shared, leave = Turn(wait_sec=0.2), threading.Event()
    a, stuck_in = _taking(shared, hold=leave)
    assert stuck_in.wait(WAIT)
    b, second_in = _taking(shared)
    assert second_in.wait(WAIT)
    assert shared.restarts == 1
    leave.set()
    a.join(WAIT), b.join(WAIT)
    assert not a.is_alive()


def test_a_turn_left_held_by_an_exception_is_given_back_by_its_thread_next_time():
    """An exception raised into a thread between taking the turn and noting it (dramatiq's
    time limit can land anywhere) must not cost every later stage a wait: the thread's
    next turn gives the stale one back first, and other threads get the turn at once."""
    shared = Turn(wait_sec=60)
    shared._take()  # (taken and never given back: what such an exception leaves)
    with shared.taken():
        pass
    thread, got = _taking(shared)
    assert got.wait(WAIT)
    thread.join(WAIT)
    assert shared.restarts == 0


def test_a_durable_write_is_made_away_from_the_turn(tmp_path, monkeypatch):
    """An fsync waits on the disk: while a thread flushes a durable write, another thread
    can take the turn (on a disk, serialised flushes cost more than the turn saves)."""
    shared = Turn(wait_sec=60)
    flushing, other_done = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        flushing.set()
        assert other_done.wait(WAIT), "another thread could not take the turn meanwhile"
        real_fsync(fd)

    def other() -> None:
        assert flushing.wait(WAIT)
        with shared.taken():
            other_done.set()

    thread = _in_thread(other)
    monkeypatch.setattr(os, "fsync", slow_fsync)
    with shared.taken():
        atomic.write_bytes(tmp_path / "state.json", b"{}", durable=True)
        assert turn.holding()
    thread.join(WAIT)
    assert (tmp_path / "state.json").read_bytes() == b"{}"
