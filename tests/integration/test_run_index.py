"""The unfinished-run index on a real Redis: rebuilt from the run folders when missing,
joined by every run a stage is sent for, left by runs found finished, and the reaper
reads only the runs it names."""

from __future__ import annotations

import time

import pytest
import redis
from dramatiq.brokers.stub import StubBroker

from sparkle import keys
from sparkle.backends.redis import RedisBackend
from sparkle.dispatch import Dispatcher
from sparkle.plans import load_plan_file
from sparkle.runindex import RunIndex
from sparkle.runstore import RunStore
from sparkle.schemas import STAGES

pytestmark = pytest.mark.redis


@pytest.fixture
def world(redis_server, tmp_path, plans_dir):
    client = redis.Redis.from_url(redis_server.url)
    broker = StubBroker()
    for stage in STAGES:
        broker.declare_queue(keys.queue_name(stage))
    store = RunStore(tmp_path / "runs")
    plan = load_plan_file(plans_dir / "rooftop.json", 1 << 20)

    def make(run_id: str, cancelled: bool = False):
        run, _ = store.create(plan, run_id)
        if cancelled:
            run.set_cancelled(True)
        return run

    # (messages in memory, leases and the index on the real Redis)
    yield client, Dispatcher(RedisBackend(broker, client, "test"), "sparkle"), store, make
    broker.close()


def ids(summaries) -> list[str]:
    return [s.run_id for s in summaries]


def test_rebuilt_when_missing_then_read_alone(world):
    client, _, store, make = world
    # Given runs on disk and no index (a new deployment, or Redis restarted)
    for n in range(3):
        make(f"done-{n}", cancelled=True)
    make("queued-a")
    make("queued-b")
    index = RunIndex(client, "sparkle")
    # When the reaper asks for the unfinished runs
    # Then the index is rebuilt from the folders and names only the unfinished ones
    assert ids(index.unfinished(store)) == ["queued-a", "queued-b"]
    assert index.members() == {"queued-a", "queued-b"}
    # And later passes read only the runs it names: one created without any message
    # sent is not seen...
    make("queued-c")
    assert ids(index.unfinished(store)) == ["queued-a", "queued-b"]
    # ...until the index is rebuilt (its freshness key expired or lost)
    client.delete(keys.unfinished_runs_fresh("sparkle"))
    assert ids(index.unfinished(store)) == ["queued-a", "queued-b", "queued-c"]


def test_sending_a_stage_puts_the_run_in_and_finished_runs_leave(world):
    client, dispatcher, store, make = world
    index = RunIndex(client, "sparkle")
    index.unfinished(store)  # (built, empty)
    # Given a run whose first stage is sent
    run = make("fresh")
    dispatcher.send(run.run_id, "script")
    # Then it is in the index at once
    assert ids(index.unfinished(store)) == ["fresh"]
    # When it finishes (cancelled here), it leaves the index at the next look
    run.set_cancelled(True)
    client.delete(keys.pending("sparkle", run.run_id))
    assert ids(index.unfinished(store)) == []
    assert index.members() == set()
    # And a resume puts it back
    run.set_cancelled(False)
    dispatcher.send(run.run_id, "script")
    assert ids(index.unfinished(store)) == ["fresh"]


def test_a_run_resumed_while_the_reaper_looks_stays(world):
    client, dispatcher, store, make = world
    index = RunIndex(client, "sparkle")
    index.unfinished(store)
    run = make("racing")
    dispatcher.send(run.run_id, "script")
    run.set_cancelled(True)
    # Given a stage sent for the run after the reaper read it as finished (a mark in the
    # future stands for "sent after the look")
    client.set(keys.pending("sparkle", run.run_id), f"script {time.time() + 60:.3f}")
    # When the reaper looks, the run is not dropped from the index
    assert ids(index.unfinished(store)) == []
    assert index.members() == {"racing"}


def test_runs_listing_of_unfinished_runs_comes_from_the_index(world, redis_server, tmp_path):
    from sparkle.app import App
    from sparkle.runindex import listing
    from sparkle.settings import Settings

    client, dispatcher, store, make = world
    make("old-finished", cancelled=True)
    RunIndex(client, "sparkle").unfinished(store)  # (built)
    run = make("waiting")
    dispatcher.send(run.run_id, "script")
    make("never-sent")  # not in the index until its next rebuild
    app = App(Settings(redis_url=redis_server.url, runs_dir=tmp_path / "runs"))
    # `sparkle runs --status queued` on Redis: only what the index names
    assert ids(listing(app, "queued")) == ["waiting"]
    # every other listing reads every folder
    assert ids(listing(app, None)) == ["never-sent", "old-finished", "waiting"]
    # embedded: the runs folder's own index (sparkle.runindex_folder), built here from the
    # folders because it does not exist yet: the unfinished runs only
    assert ids(listing(App(Settings(runs_dir=tmp_path / "runs")), "queued")) == [
        "never-sent", "waiting"]


def test_runs_fast_path_on_redis_lists_from_the_index_as_the_full_cli(world, redis_server,
                                                                      tmp_path):
    """`sparkle runs --status queued` answered by sparkle.entry (no pydantic, no click) from
    the Redis index prints what the full CLI prints, and leaves a due rebuild to it."""
    from click.testing import CliRunner

    from sparkle.cli import main as cli
    from sparkle.entry import fast_runs

    client, dispatcher, store, make = world
    make("old-finished", cancelled=True)
    RunIndex(client, "sparkle").unfinished(store)  # (built)
    for run_id in ("waiting", "also-waiting"):
        dispatcher.send(make(run_id).run_id, "script")
    make("never-sent")  # not in the index until its next rebuild
    args = ["runs", "--status", "queued", "--runs-dir", str(store.root)]
    environ = {"SPARKLE_REDIS_URL": redis_server.url}
    full = CliRunner().invoke(cli, args, env=environ)
    assert full.exit_code == 0, full.output
    assert "waiting" in full.output and "never-sent" not in full.output
    assert fast_runs(args[1:], environ, str(tmp_path)) + "\n" == full.output
    # a run that finished since is dropped from the index by the fast path too
    store.run("waiting").set_cancelled(True)
    store.summaries()  # (its cache refreshed, as the reaper's pass leaves it)
    shown = fast_runs(args[1:], environ, str(tmp_path))
    assert shown is not None
    assert [line.split()[0] for line in shown.splitlines()[1:]] == ["also-waiting"]
    assert RunIndex(client, "sparkle").members() == {"also-waiting"}
    # a rebuild due: the full CLI does it
    client.delete(keys.unfinished_runs_fresh("sparkle"))
    assert fast_runs(args[1:], environ, str(tmp_path)) is None
