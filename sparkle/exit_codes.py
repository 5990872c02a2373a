"""The exit codes of ``sparkle`` commands, below every layer that ends a process with one:
the CLI (:mod:`sparkle.cli.exits`, which words them for ``--help``) and the worker
supervisor (:mod:`sparkle.supervisor`)."""

from __future__ import annotations

#: The command did what it was asked.
EXIT_OK = 0

#: A stage failed (the message says how to resume), the run was cancelled or rejected, or
#: a review decision was refused.
EXIT_FAILED = 1

#: Bad input or setting: the message names the file, the field and what to do.
EXIT_USAGE = 2

#: An infrastructure failure: a full disk, a read-only folder, an I/O error under
#: Sparkle's own files (:mod:`sparkle.infrastructure`), or a Redis that cannot be reached.
#: Nothing is wrong with the plan or the stages; the run (if one was made) resumes once the
#: cause is gone.
EXIT_INFRASTRUCTURE = 3

#: The run stopped at a review gate and waits for a person (``sparkle run``, an embedded
#: ``approve``, ``redo`` or ``resume``): the files to look at and the commands that decide
#: are printed.
EXIT_AWAITING_REVIEW = 5
