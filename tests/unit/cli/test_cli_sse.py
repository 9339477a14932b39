"""The SSE parser against the WHATWG event-stream rules, including awkward chunking."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volant.cli.sse import SSEEvent, SSEParser


def parse_all(*chunks: str) -> tuple[list[SSEEvent], SSEParser]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events, parser


def test_event_with_id_type_and_data() -> None:
    events, parser = parse_all('id: 7\nevent: VM_RUNNING\ndata: {"a":1}\n\n')
    assert events == [SSEEvent(event="VM_RUNNING", data='{"a":1}', id="7")]
    assert parser.last_event_id == "7"


def test_multi_line_data_is_joined_with_newlines() -> None:
    events, _ = parse_all("data: one\ndata:two\ndata:  three\n\n")
    assert [e.data for e in events] == ["one\ntwo\n three"]
    assert events[0].event == "message"


def test_comments_are_counted_and_never_dispatched() -> None:
    events, parser = parse_all(": keepalive\n\n: another\n\ndata: x\n\n")
    assert [e.data for e in events] == ["x"]
    assert parser.comments == 2


def test_retry_only_accepts_digits() -> None:
    events, parser = parse_all("retry: 2000\n\nretry: 12ms\n\nretry: -5\ndata: a\n\n")
    assert parser.retry == 2000
    assert events[0].retry == 2000


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_every_line_ending(newline: str) -> None:
    text = f"id: 1{newline}event: E{newline}data: a{newline}data: b{newline}{newline}"
    events, _ = parse_all(text)
    assert events == [SSEEvent(event="E", data="a\nb", id="1")]


def test_crlf_split_between_chunks_is_one_line_break() -> None:
    # "\r" ends a chunk and "\n" starts the next: one line end, not two (no early dispatch).
    events, _ = parse_all("data: a\r", "\ndata: b\r\n", "\r\n")
    assert [e.data for e in events] == ["a\nb"]


def test_feeding_one_character_at_a_time_gives_the_same_events() -> None:
    text = "id: 1\r\nevent: A\r\ndata: x\r\n\r\n: c\r\nid: 2\ndata: y\rdata: z\n\n"
    whole, _ = parse_all(text)
    pieces, _ = parse_all(*text)
    assert pieces == whole
    assert [(e.id, e.data) for e in whole] == [("1", "x"), ("2", "y\nz")]


def test_id_persists_and_resets_event_type() -> None:
    events, _ = parse_all("id: 5\nevent: A\ndata: 1\n\ndata: 2\n\n")
    assert [(e.id, e.event) for e in events] == [("5", "A"), ("5", "message")]


def test_id_with_nul_is_ignored() -> None:
    events, parser = parse_all("id: 3\n\nid: 4\x00\ndata: x\n\n")
    assert events[0].id == "3"
    assert parser.last_event_id == "3"


def test_event_without_data_is_not_dispatched() -> None:
    events, _ = parse_all("event: A\nid: 9\n\n")
    assert events == []


def test_unterminated_event_is_dropped_at_close() -> None:
    parser = SSEParser()
    assert parser.feed("data: partial\n") == []
    assert parser.close() == []
    assert parser.feed("data: next\n\n")[0].data == "next"


def test_field_without_colon_and_unknown_fields() -> None:
    events, _ = parse_all("data\nfoo: bar\ndata\n\n")
    assert [e.data for e in events] == ["\n"]


def test_leading_bom_is_stripped_once() -> None:
    events, _ = parse_all("\ufeffdata: a\n\n", "\ufeffdata: b\n\n")
    assert events[0].data == "a"
    assert len(events) == 1  # a BOM later in the stream is part of a field name, not "data"


def test_empty_chunk_keeps_a_pending_carriage_return() -> None:
    events, _ = parse_all("data: a\r", "", "\n", "\n")
    assert [e.data for e in events] == ["a"]


_LINES = st.lists(st.one_of(
    st.sampled_from(["", ": keepalive", "retry: 1500", "retry: x", "event: VM_RUNNING", "data",
                     "id: 12", "id", "data:  spaced"]),
    st.builds(lambda v: f"data: {v}", st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=20)),
), max_size=30)


@settings(max_examples=200, deadline=None)
@given(lines=_LINES, newline=st.sampled_from(["\n", "\r\n", "\r"]),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_chunking_never_changes_the_events(lines: list[str], newline: str,
                                           cuts: list[int]) -> None:
    text = newline.join(lines) + newline
    whole, whole_parser = parse_all(text)
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    chunked, chunked_parser = parse_all(*pieces)
    assert chunked == whole
    assert chunked_parser.last_event_id == whole_parser.last_event_id
    assert chunked_parser.comments == whole_parser.comments


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_accepted(text: str) -> None:
    parser = SSEParser()
    for event in parser.feed(text):
        assert isinstance(event.data, str)
    parser.close()
