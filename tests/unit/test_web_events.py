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


def _manifest(events: list[dict[str, object]]) -> bytes:
    """A manifest.json in Sparkle's layout (one event per line)."""
    from sparkle.manifest import encode, record

    return encode("r", [record(event) for event in events])


def test_each_event_line_of_manifest_json_is_one_event_with_its_offset(tmp_path):
    """manifest.json is rewritten whole with each event (its last line, ``]}``, moves and
    the line before gains a comma): every event is sent once, in order, unknown kinds too,
    each with the offset after it."""
    from sparkle.manifest import append, record
    from sparkle.web.details import manifest_size

    # Given a manifest with a known event and one of a kind this version does not know
    known = {"run_id": "r", "stage": "script", "status": "begin", "attempt": 1}
    future = {"run_id": "r", "stage": "videos", "status": "review_decision", "take": 2}
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(_manifest([known, future]))
    later = {"run_id": "r", "stage": "qa", "status": "success", "attempt": 1}

    def add_an_event() -> None:
        manifest.write_bytes(append(manifest.read_bytes(), record(later)))

    # When I follow it from its start while an event is added
    events = [_fields(m) for m in anyio.run(_take, tmp_path, 0, 3, add_an_event)]
    # Then each event line is one event, in order, passed on as written
    assert [json.loads(e["data"])["status"] for e in events] == ["begin", "review_decision",
                                                                  "success"]
    assert json.loads(events[1]["data"])["take"] == 2
    assert json.loads(manifest.read_bytes())["events"][-1] == later  # (still valid JSON)

    # and a page rendered now (following from manifest_size) gets only the events added after
    class Run:
        dir = tmp_path

    shown = manifest_size(Run())  # type: ignore[arg-type]
    newest = {"run_id": "r", "stage": "qa", "status": "review_requested", "attempt": 1}

    def add_another() -> None:
        manifest.write_bytes(append(manifest.read_bytes(), record(newest)))

    (after,) = anyio.run(_take, tmp_path, shown, 1, add_another)
    assert json.loads(_fields(after)["data"]) == newest
    # and following from an event's id skips what was seen
    (second,) = anyio.run(_take, tmp_path, int(events[0]["id"]), 1)
    assert json.loads(_fields(second)["data"])["status"] == "review_decision"


def test_a_manifest_rewritten_shorter_starts_over(tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(_manifest([{"status": "begin"}]))
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
