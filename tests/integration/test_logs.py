"""Log lines carry the run id and stage of the stage message being handled."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator

from sparkle.logs import ContextFilter, JsonFormatter, TextFormatter, configure_logging, log_context


@contextlib.contextmanager
def capture(formatter: logging.Formatter, logger: str | None) -> Iterator[io.StringIO]:
    """What ``logger`` (None: the root) logs at INFO and above, through ``formatter`` and
    the context filter, while the block runs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    target = logging.getLogger(logger)
    old_level = target.level
    target.addHandler(handler)
    target.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        target.removeHandler(handler)
        target.setLevel(old_level)


def test_records_inside_a_log_context_carry_run_and_stage_from_any_logger():
    logger = logging.getLogger("some.adapter")
    with capture(JsonFormatter(), "some.adapter") as stream:
        with log_context("run-1", "videos"):
            logger.info("encoding clip")
        logger.info("outside")
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (inside["run_id"], inside["stage"], inside["message"]) == ("run-1", "videos",
                                                                     "encoding clip")
    assert "run_id" not in outside and "stage" not in outside


def test_text_lines_name_the_run_once():
    logger = logging.getLogger("sparkle.test_text")
    with capture(TextFormatter(), "sparkle.test_text") as stream, log_context("run-2", "tts"):
        logger.info("voice missing")
        logger.info("run run-2 stage tts: succeeded")
    first, second = stream.getvalue().splitlines()
    assert first.endswith("voice missing [run=run-2 stage=tts]")
    assert second.endswith("run run-2 stage tts: succeeded")


def test_engine_log_records_carry_run_and_stage(pipeline, plans_dir):
    """Everything logged while a stage message is handled names its run and stage."""
    with capture(JsonFormatter(), None) as stream:
        run = pipeline.create(plans_dir / "rooftop.json", fault_images="transient:1")
        assert pipeline.work(run).status.value == "succeeded"
    engine_lines = [json.loads(line) for line in stream.getvalue().splitlines()
                    if '"sparkle.engine"' in line]
    assert engine_lines
    assert all(line["run_id"] == run.run_id and line.get("stage") for line in engine_lines)
    assert any(line["stage"] == "images" and "failed (transient)" in line["message"]
               for line in engine_lines)


def test_configure_logging_installs_the_context_filter():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        configure_logging("info", "json", stream)
        with log_context("run-3", "qa"):
            logging.getLogger("x").info("hello")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    assert json.loads(stream.getvalue())["stage"] == "qa"
