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

from sparkle.app import App
from sparkle.backends import Backend, DeadLettersUnavailable
from sparkle.dispatch import Dispatcher
from sparkle.dlq import DeadLetterQueue
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
    #: Where messages live; None in standalone mode.
    backend: Backend | None = None
    #: In-process worker threads (embedded mode), for the operations page.
    worker_threads: int = 0
    read_only: bool = False

    @classmethod
    def for_app(cls, app: App, read_only: bool = False,
                worker_threads: int | None = None) -> Site:
        """The site of ``app``'s process. ``worker_threads``: this process works the stages
        (``serve --ui``) with that many threads; None: it does not (``sparkle ui``)."""
        if app.works_in_process and worker_threads is None:
            # (nothing here would work a queued stage: show and hand plans to the inbox)
            return cls(app.settings, app.store, Mode.standalone, read_only=read_only)
        app.declare_actors()
        mode = Mode.embedded if app.works_in_process else Mode.redis
        return cls(app.settings, app.store, mode, app.dispatcher, app.backend,
                   worker_threads or 0, read_only)

    @property
    def can_queue(self) -> bool:
        """Whether resume can queue a stage from here."""
        return self.dispatcher is not None

    def dead_letters(self) -> DeadLetterQueue | None:
        """The dead-letter queue, None where the backend keeps none (or none is reached)."""
        if self.backend is None:
            return None
        try:
            return self.backend.dead_letters(self.store, self.settings.namespace,
                                             self.dispatcher)
        except DeadLettersUnavailable:
            return None
