from streams.contract.events import validate_event
from streams.contract.files import key_of, read_jsonl, read_sasrec, read_sasrec_sequences


def test_sasrec_lines_become_ordered_play_events(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("1 10\n1 11\n2 10\n\n1 12\n")
    events = list(read_sasrec(path))
    assert [e["item_id"] for e in events] == ["10", "11", "10", "12"]
    assert all(validate_event(e)[1] == [] for e in events)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert len({e["event_id"] for e in events}) == 4
    assert read_sasrec_sequences(path) == {"1": ["10", "11", "12"], "2": ["10"]}


def test_jsonl_lines_are_passed_through_unparsed(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"user_id": "u1"}\n\nnot json\n')
    lines = list(read_jsonl(path))
    assert lines == [b'{"user_id": "u1"}', b"not json"]
    assert key_of(lines[0]) == b"u1" and key_of(lines[1]) is None
