"""Following a manifest as server-sent events: whole lines only, any event kind, in order."""

from __future__ import annotations

import json
from pathlib import Path

import anyio

from sparkle.web.events import follow_manifest, sse, watch


async def _take(run_dir: Path, start: int, count: int, write=None) -> list[str]:  # type: ignore[no-untyped-def]
    found: list[str] = []
    stream = follow_manifest(str(run_dir), start, poll=0.01)
    with anyio.fail_after(10):
        async for chunk in stream:
            text = chunk.decode()
            if "event: " in text:
                found.append(text)
            if write is not None:
                write()
                write = None
            if len(found) == count:
                break
    await stream.aclose()
    return found


def _fields(message: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in message.strip().splitlines())


def test_each_whole_line_is_one_event_with_its_offset_and_unknown_kinds_pass(tmp_path):
    # Given a manifest with a known event, one of a kind this version does not know, and a
    # line still being written
    known = {"run_id": "r", "stage": "script", "status": "begin", "attempt": 1}
    future = {"run_id": "r", "stage": "videos", "status": "review_decision", "take": 2}
    manifest = tmp_path / "manifest.jsonl"
    first = json.dumps(known) + "\n"
    manifest.write_text(first + json.dumps(future) + "\n" + '{"run_id": "r", "sta')

    def finish_the_line() -> None:
        with manifest.open("a") as handle:
            handle.write('ge": "qa", "status": "success", "attempt": 1}\n')

    # When I follow it from its start
    events = [_fields(m) for m in anyio.run(_take, tmp_path, 0, 3, finish_the_line)]
    # Then each whole line is one event, in order, passed on as written, id = offset after it
    assert [json.loads(e["data"])["status"] for e in events] == ["begin", "review_decision",
                                                                  "success"]
    assert json.loads(events[1]["data"])["take"] == 2
    assert int(events[0]["id"]) == len(first)
    assert int(events[2]["id"]) == manifest.stat().st_size
    # and following from an offset skips what was seen
    (later,) = anyio.run(_take, tmp_path, len(first), 1)
    assert json.loads(_fields(later)["data"])["status"] == "review_decision"


def test_a_manifest_rewritten_shorter_starts_over(tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"status": "begin"}\n')
    (reset, again) = anyio.run(_take, tmp_path, 10_000, 2)
    assert _fields(reset)["event"] == "reset"
    assert json.loads(_fields(again)["data"])["status"] == "begin"


def test_multiline_data_is_split_into_data_lines():
    assert sse("a\nb", "x", "3") == b"id: 3\nevent: x\ndata: a\ndata: b\n\n"


def test_watch_sends_a_change_naming_what_changed():
    """The runs page's stream: a `change` event whenever a watched identity differs."""
    looks = iter([{"a": 1, "b": 1}, {"a": 1, "b": 1}, {"a": 2, "b": 1}, {"a": 2}])

    async def take() -> list[str]:
        found: list[str] = []
        stream = watch(lambda: next(looks), poll=0.01)
        with anyio.fail_after(10):
            async for chunk in stream:
                if b"event: change" in chunk:
                    found.append(json.loads(_fields(chunk.decode())["data"])["changed"])
                if len(found) == 2:
                    break
        await stream.aclose()
        return found

    assert anyio.run(take) == [["a"], ["b"]]
