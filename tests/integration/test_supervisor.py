"""The supervisor of `sparkle worker`: replaces dead worker processes with backoff, stops
on a configuration error, and drains on SIGTERM. Worker processes are small Python
scripts here; tests/integration/test_ops.py runs the real ones."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from pathlib import Path

import pytest

from sparkle.supervisor import EXIT_CONFIG, EXIT_USAGE, Supervisor, describe_exit


def python(code: str):
    return lambda index: [sys.executable, "-c", code]


def run_in_thread(supervisor: Supervisor, stop: threading.Event) -> tuple[threading.Thread, list]:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run(stop)))
    thread.start()
    return thread, result


def test_dead_worker_processes_are_replaced_with_growing_backoff():
    # Given worker processes that die at once
    deaths: list[tuple[float, int, int]] = []
    supervisor = Supervisor(python("import sys; sys.exit(7)"), 2, min_backoff=0.1,
                            max_backoff=0.4,
                            on_death=lambda i, code: deaths.append((time.monotonic(), i, code)))
    stop = threading.Event()
    thread, result = run_in_thread(supervisor, stop)
    # When they have been replaced a few times
    deadline = time.monotonic() + 15
    while sum(1 for _, i, _ in deaths if i == 0) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(15)
    # Then each death was seen with its exit code, and the waits grew to the maximum
    slot0 = [t for t, i, code in deaths if i == 0 and code == 7]
    assert len(slot0) >= 5
    gaps = [b - a for a, b in itertools.pairwise(slot0)]
    assert gaps[0] < gaps[2]
    assert 0.35 <= gaps[3] <= 1.5  # capped at max_backoff (plus the process start-up)
    assert {i for _, i, _ in deaths} == {0, 1}
    assert result == [0]


def test_configuration_error_stops_the_supervisor():
    supervisor = Supervisor(python(f"import sys; sys.exit({EXIT_CONFIG})"), 1, min_backoff=0.05)
    started = time.monotonic()
    assert supervisor.run(threading.Event()) == EXIT_USAGE
    assert time.monotonic() - started < 10


def test_sigterm_drains_each_worker_process(tmp_path: Path):
    """Stopping sends SIGTERM and waits for each process to finish what it was doing."""
    code = (
        "import signal, sys, time, pathlib\n"
        f"out = pathlib.Path({str(tmp_path)!r}) / sys.argv[1]\n"
        "def term(s, f):\n"
        "    time.sleep(0.5)  # a stage finishing\n"
        "    out.write_text('drained')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "pathlib.Path(str(out) + '.up').write_text('')\n"
        "while True: time.sleep(0.05)\n"
    )
    supervisor = Supervisor(lambda i: [sys.executable, "-c", code, f"w{i}"], 2,
                            shutdown_timeout=5)
    stop = threading.Event()
    thread, result = run_in_thread(supervisor, stop)
    deadline = time.monotonic() + 10
    while not all((tmp_path / f"w{i}.up").exists() for i in range(2)):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pids = supervisor.pids()
    stop.set()
    thread.join(20)
    assert result == [0]
    assert [(tmp_path / f"w{i}").read_text() for i in range(2)] == ["drained", "drained"]
    assert len(pids) == 2 and supervisor.pids() == []


def test_a_process_that_ignores_sigterm_is_killed_after_the_drain_timeout(monkeypatch):
    import sparkle.supervisor as module

    monkeypatch.setattr(module, "KILL_GRACE_SEC", 0.2)
    supervisor = Supervisor(python(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)"),
        1, shutdown_timeout=0.3)
    stop = threading.Event()
    thread, result = run_in_thread(supervisor, stop)
    time.sleep(0.5)
    stop.set()
    thread.join(10)
    assert result == [0] and not thread.is_alive()


@pytest.mark.parametrize(("code", "words"), [(-9, "killed by SIGKILL"), (1, "exited with code 1"),
                                             (137, "exited with code 137")])
def test_exit_descriptions(code, words):
    assert describe_exit(code) == words


def test_worker_processes_poll_idle_queues_as_often_as_the_settings_say():
    """The worker's poll interval of idle queues (dramatiq's worker_timeout) is taken from
    SPARKLE_WORKER_POLL_MS (3000 ms by default: doorbells, not polls, wake an idle queue
    for Sparkle's own messages), and queue and thread options pass through."""
    from dramatiq.brokers.stub import StubBroker

    from sparkle.settings import Settings
    from sparkle.supervisor import build_worker

    broker = StubBroker()
    worker = build_worker(broker, Settings(worker_poll_ms=120), 3, ["sparkle.videos"])
    assert worker.worker_timeout == 120
    assert worker.worker_threads == 3
    assert worker.consumer_whitelist == {"sparkle.videos"}
    assert build_worker(broker, Settings(), 1, []).worker_timeout == 3000


def test_a_poll_interval_longer_than_the_heartbeat_timeout_is_refused():
    """A worker polling less often than the broker's heartbeat timeout would look dead and
    have its running messages requeued: the setting is refused with both names."""
    from pydantic import ValidationError

    from sparkle.settings import Settings

    names = r"SPARKLE_WORKER_POLL_MS.*SPARKLE_HEARTBEAT_TIMEOUT_MS"
    with pytest.raises(ValidationError, match=names):
        Settings(worker_poll_ms=30_000, heartbeat_timeout_ms=30_000)
    assert Settings(worker_poll_ms=29_999, heartbeat_timeout_ms=30_000).worker_poll_ms == 29_999


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_worker_process_that_lost_a_dramatiq_thread_drains_to_be_replaced():
    """dramatiq catches Exception in its threads, not a BaseException raised while a
    message is post-processed (a late time limit, dramatiq #445): that thread ends, and the
    process would go on fetching messages that nothing runs. The worker process's watch
    sees the dead thread and returns the code that has the supervisor start a fresh one;
    a healthy worker is watched until told to stop."""
    import os

    import dramatiq
    from dramatiq.brokers.stub import StubBroker

    from sparkle.supervisor import EXIT_THREAD_DIED, dead_threads, watch

    class LateInterrupt(BaseException):
        pass

    class Raising(dramatiq.Middleware):
        def after_process_message(self, broker, message, *, result=None, exception=None):
            if message.args == ("fatal",):
                raise LateInterrupt

    broker = StubBroker(middleware=[Raising()])
    broker.emit_after("process_boot")
    actor = dramatiq.actor(lambda name: None, actor_name="stage", broker=broker)
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()
        actor.send("healthy")
        assert watch(worker, stop, os.getppid(), every_sec=0.05) == 0
        assert dead_threads(worker) == []
        actor.send("fatal")
        assert watch(worker, threading.Event(), os.getppid(), every_sec=0.05) == \
            EXIT_THREAD_DIED
        assert len(dead_threads(worker)) == 1
    finally:
        worker.stop(timeout=2000)
