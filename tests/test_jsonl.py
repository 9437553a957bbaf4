import json

import pytest

from tunechat.core.jsonl import ImportFormatError, parse_pairs, write_pairs


def _lines(path, *records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def _rec(q, a, system=None):
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return {"messages": msgs}


def test_export_then_import_round_trips(store, tmp_path):
    store.add_pair("What is my name?", "Ada Quill.")
    store.add_pair("Où j'habite ?", "Tromsø — Norway\nsecond line")
    out = tmp_path / "pairs.jsonl"
    write_pairs(out, store.pairs())
    assert parse_pairs(out) == [(p.question, p.answer) for p in store.pairs()]
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert first == {"messages": [{"role": "user", "content": "What is my name?"},
                                  {"role": "assistant", "content": "Ada Quill."}]}


def test_system_turns_are_ignored_and_multi_turn_gives_several_pairs(tmp_path):
    rec = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q1"},
                        {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"},
                        {"role": "assistant", "content": "a2"}]}
    assert parse_pairs(_lines(tmp_path / "f.jsonl", rec)) == [("q1", "a1"), ("q2", "a2")]


@pytest.mark.parametrize("bad, message", [
    ('{"messages": [', "line 2: not valid JSON"),
    ('{"foo": 1}', 'line 2: expected an object with a "messages" list'),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
     "line 2: The answer is empty"),
    ({"messages": [{"role": "assistant", "content": "a"}]}, "line 2: an assistant message comes before"),
    ({"messages": [{"role": "robot", "content": "a"}]}, "line 2: unknown role 'robot'"),
    ({"messages": [{"role": "user", "content": "q"}]}, "line 2: no user message followed"),
])
def test_a_broken_line_is_named_and_nothing_is_imported(tmp_path, bad, message):
    path = _lines(tmp_path / "f.jsonl", _rec("ok q", "ok a"), bad, _rec("q3", "a3"))
    with pytest.raises(ImportFormatError, match=message):
        parse_pairs(path)


def test_empty_missing_and_binary_files_are_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ImportFormatError, match="no pairs found"):
        parse_pairs(tmp_path / "empty.jsonl")
    with pytest.raises(ImportFormatError, match="no such file"):
        parse_pairs(tmp_path / "missing.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ImportFormatError, match="not UTF-8"):
        parse_pairs(tmp_path / "bin.jsonl")
