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


def _manifest(path: Path, events: list[dict[str, object]]) -> None:
    from sparkle import manifest

    data = manifest.encode("r", [manifest.record(e) for e in events])
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # (replaced whole, as the run store writes it)


def test_each_event_is_one_message_numbered_and_unknown_kinds_pass(tmp_path):
    """Each event of manifest.json is one `manifest` message, in order, passed on as
    written (a kind this version does not know too), its id the number of events up to it;
    an event added while followed arrives; following from a number skips what was seen."""
    # Given a manifest with a known event and one of a kind this version does not know
    known = {"run_id": "r", "stage": "script", "status": "begin", "attempt": 1}
    future = {"run_id": "r", "stage": "videos", "status": "review_decision", "take": 2}
    added = {"run_id": "r", "stage": "qa", "status": "success", "attempt": 1}
    manifest = tmp_path / "manifest.json"
    _manifest(manifest, [known, future])
    # When I follow it from its start while one more event is added
    events = [_fields(m) for m in anyio.run(
        _take, tmp_path, 0, 3, lambda: _manifest(manifest, [known, future, added]))]
    # Then each event is one message, in order, passed on as written, id = its number
    assert [json.loads(e["data"])["status"] for e in events] == ["begin", "review_decision",
                                                                  "success"]
    assert json.loads(events[1]["data"])["take"] == 2
    assert [int(e["id"]) for e in events] == [1, 2, 3]
    # and following from a number skips what was seen
    (later,) = anyio.run(_take, tmp_path, 1, 1)
    assert json.loads(_fields(later)["data"])["status"] == "review_decision"


def test_an_older_runs_manifest_jsonl_is_followed_after_manifest_json(tmp_path):
    """A run an older Sparkle wrote keeps its events in manifest.jsonl until its next event
    moves them: they are sent too (a line cut short by a crash is skipped)."""
    (tmp_path / "manifest.jsonl").write_text('{"status": "begin"}\n{"status": "succ')
    (only,) = anyio.run(_take, tmp_path, 0, 1)
    assert json.loads(_fields(only)["data"])["status"] == "begin"


def test_a_manifest_rewritten_shorter_starts_over(tmp_path):
    _manifest(tmp_path / "manifest.json", [{"status": "begin"}])
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
