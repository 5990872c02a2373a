"""Working a run in this process and saying how it ended: ``sparkle run``, an embedded
``resume`` and the embedded review decisions (``approve``, ``redo``, ``takes --use``).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sparkle.cli import wiring
from sparkle.exit_codes import EXIT_AWAITING_REVIEW, EXIT_FAILED, EXIT_INFRASTRUCTURE, EXIT_OK
from sparkle.statuscache import decision_label

if TYPE_CHECKING:
    from sparkle.runstore import Run


def work(the_run: Run, from_stage: str | None, only: str | None, threads: int) -> int:
    """Work ``the_run`` here with ``threads`` worker threads until it ends or stops at a
    review gate; print how it ended and return the exit code."""
    # (dramatiq and rich: imported when a run is worked, not for `sparkle --help`)
    from sparkle.notifications import flush
    from sparkle.runner import work_in_foreground

    app = wiring.app()
    # (the stages are reset once this process holds the run: embedded, another process
    # working it is followed to its end first)
    result = work_in_foreground(the_run, app, threads, from_stage=from_stage, only=only)
    flush(app.settings)  # (the process ends next: deliver the run's notification now)
    if result.infrastructure is not None:
        failure = result.infrastructure
        click.echo(f"error: {failure}", err=True)
        click.echo(f"{failure.advice}, then resume with: {resume_command(the_run.run_id)}",
                   err=True)
        return EXIT_INFRASTRUCTURE
    refs = the_run.asset_refs()
    if result.status.value == "succeeded":
        movie = refs.extras.get("final_movie")
        decision = the_run.qa_decision()
        click.echo(f"succeeded in {result.elapsed_sec:.1f}s: {the_run.dir}")
        if movie:
            click.echo(f"movie: {the_run.dir / movie}")
        if decision:
            click.echo(f"qa: {decision_label(decision)}")
        return EXIT_OK
    if result.status.value == "cancelled":
        if result.interrupted:
            left = (f"; {result.abandoned} was left unfinished and runs again on resume"
                    if result.abandoned else "")
            click.echo(f"stopped by Ctrl-C: run {the_run.run_id} is cancelled{left}. "
                       f"Resume with `{resume_command(the_run.run_id)}`", err=True)
            return EXIT_FAILED
        click.echo(f"cancelled: resume with `{resume_command(the_run.run_id)}`")
        return EXIT_FAILED
    if result.status.value == "awaiting_review":
        click.echo(waiting_message(the_run))
        return EXIT_AWAITING_REVIEW
    if result.status.value == "rejected":
        click.echo(f"{the_run.run_id} was rejected at review; it does not continue "
                   f"(`sparkle timeline {the_run.run_id}` shows who and why)", err=True)
        return EXIT_FAILED
    for view in the_run.stage_views():
        if view.status == "failed":
            click.echo(f"stage {view.stage} failed (attempt {view.attempt}): {view.error}",
                       err=True)
    click.echo(f"fix the cause, then resume with: {resume_command(the_run.run_id)}", err=True)
    return EXIT_FAILED


def resume_command(run_id: str) -> str:
    """The command that resumes ``run_id`` as it ran (:func:`sparkle.runner.resume_command`)."""
    from sparkle.runner import resume_command as command  # (dramatiq: see work())

    return command(run_id, wiring.app().settings)


def command_for(verb: str, run_id: str, *extra: str) -> str:
    """A ``sparkle`` command on ``run_id`` as this one ran: the same runs folder and adapter
    set, quoted for the shell."""
    from sparkle.settings import Settings  # (pydantic: see sparkle.cli.wiring)

    settings = wiring.app().settings
    parts = ["sparkle", verb, run_id, *extra]
    if settings.runs_dir != Path("runs"):
        parts += ["--runs-dir", str(settings.runs_dir)]
    if verb in ("approve", "redo", "takes") and \
            settings.adapters != Settings.model_fields["adapters"].default:
        parts += ["--adapters", settings.adapters]
    return shlex.join(parts)


def waiting_message(run: Run) -> str:
    """What ``sparkle run`` prints when the run stops at a review gate: what to look at,
    and the commands that decide."""
    # (pydantic models: imported when a run stopped at a gate)
    from sparkle.review import review_files
    from sparkle.review_state import read_review

    waiting = read_review(str(run.dir))
    if waiting is None:
        return f"{run.run_id} is not waiting for a review"
    why = {"review_after": "review gate", "qa_escalate": "QA escalated",
           "qa_regenerate_limit": "QA re-rolled its limit"}[waiting.reason]
    lines = [f"waiting for review after {waiting.stage} ({why}; review {waiting.review_id}). "
             "Look at:"]
    lines += [f"  {run.dir / path}" for path in review_files(run, waiting.stage)]
    shots = [shot.id for shot in run.plan().shots]
    lines += [
        "Then decide:",
        f"  approve: {command_for('approve', run.run_id)} [--note TEXT]",
        f"  re-roll: {command_for('redo', run.run_id, '--shots', ','.join(shots[:2]))}"
        f" [--stage STAGE] [--note TEXT]",
        f"  takes:   {command_for('takes', run.run_id, '--shot', shots[0])} [--use N]",
        f"  reject:  {command_for('reject', run.run_id, '--note', 'TEXT')}",
    ]
    return "\n".join(lines)
