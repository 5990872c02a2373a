"""What the dashboard works on: the runs folder, and the queue when this process reaches one.

Three modes, by how the process was started:

- ``redis``: ``sparkle ui`` (or ``serve --ui``) with ``SPARKLE_REDIS_URL``: actions queue
  stages on Redis for the workers, dead letters can be listed and replayed;
- ``embedded``: ``sparkle serve --ui`` without Redis: actions queue stages on the
  in-memory broker worked by the same process;
- ``standalone``: ``sparkle ui`` without Redis: no queue reachable. Runs are shown; a new
  plan is handed to the inbox (a running ``sparkle serve`` takes it); cancel works (it is a
  file); resume needs ``sparkle serve --ui`` or ``sparkle resume``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sparkle.dispatch import Dispatcher
from sparkle.runstore import RunStore
from sparkle.settings import Settings


class Mode(enum.StrEnum):
    """How the dashboard's process reaches the stages."""

    #: Stage messages on Redis, worked by ``sparkle worker`` processes.
    redis = "redis"
    #: Stage messages in this process's memory, worked by its own threads (``serve --ui``).
    embedded = "embedded"
    #: No queue reachable from this process (``sparkle ui`` without Redis).
    standalone = "standalone"


#: What the pages say about a mode.
MODE_NOTES = {
    Mode.redis: "distributed: stages are queued on Redis for `sparkle worker` processes",
    Mode.embedded: "embedded: this `sparkle serve` process queues and works the stages",
    Mode.standalone: "standalone without Redis: new plans go to the inbox for a running "
                     "`sparkle serve`; resuming needs `sparkle serve --ui` or `sparkle resume`",
}


@dataclass
class Site:
    """The dashboard's services: runs folder, queue (when reachable), options."""

    settings: Settings
    store: RunStore
    mode: Mode
    #: Sends stage messages; None in standalone mode.
    dispatcher: Dispatcher | None = None
    #: The dramatiq broker; None in standalone mode.
    broker: Any = None
    #: In-process worker threads (embedded mode), for the operations page.
    worker_threads: int = 0
    read_only: bool = False

    @classmethod
    def for_process(cls, settings: Settings, read_only: bool = False,
                    worker_threads: int | None = None) -> Site:
        """The site of this process. ``worker_threads``: this process works the stages
        (``serve --ui``) with that many threads; None: it does not (``sparkle ui``)."""
        store = RunStore(settings.runs_dir)
        if settings.redis_url is None and worker_threads is None:
            return cls(settings, store, Mode.standalone, read_only=read_only)
        from sparkle.broker import is_embedded, load_actors
        from sparkle.engine import get_engine

        broker = load_actors()
        engine = get_engine()
        mode = Mode.embedded if is_embedded() else Mode.redis
        return cls(settings, engine.store, mode, engine.dispatcher, broker,
                   worker_threads or 0, read_only)

    @property
    def can_queue(self) -> bool:
        """Whether resume can queue a stage from here."""
        return self.dispatcher is not None

    def dead_letters(self) -> Any:
        """The dead-letter queue (Redis mode), else None."""
        if self.mode is not Mode.redis or self.dispatcher is None:
            return None
        from sparkle.dlq import DeadLetterQueue

        return DeadLetterQueue(self.dispatcher.client, self.store, self.settings.namespace,
                               self.dispatcher)
