"""The headless commands, run as real processes on the real embedded model."""

import json

from tests.conftest import run_cli
from tunechat.core.faults import EXIT_DATA_PROBLEMS, EXIT_MODEL_FILE


def test_pairs_add_list_export_import(home, tmp_path):
    assert run_cli("pairs", "add", "What is my name?", "Ada Quill.").returncode == 0
    listed = run_cli("pairs", "list")
    assert "What is my name?" in listed.stdout and "Ada Quill." in listed.stdout
    out = tmp_path / "out.jsonl"
    assert run_cli("pairs", "export", str(out)).returncode == 0
    assert json.loads(out.read_text())["messages"][1]["content"] == "Ada Quill."
    imported = run_cli("pairs", "import", str(out))
    assert imported.returncode == 0 and "Imported 0 pairs from" in imported.stdout  # the same file again
    assert "1 pair already kept, skipped" in imported.stdout
    assert run_cli("pairs", "list").stdout.count("Ada Quill.") == 1


def test_pairs_check_names_each_problem_and_retire_settles_a_changed_fact(home):
    for q, a in [("Where do I live?", "You live in Oslo."), ("My favourite coffee", "A flat white."),
                 ("What is my name?", "Ada.")]:
        assert run_cli("pairs", "add", q, a).returncode == 0
    added = run_cli("pairs", "add", "where do I live", "You live in Porto.")
    assert added.returncode == 0 and "tunechat pairs retire 1 --by 4" in added.stderr  # said at once
    checked = run_cli("pairs", "check")
    assert checked.returncode == EXIT_DATA_PROBLEMS, checked.stderr
    lines = checked.stdout.splitlines()
    assert any(line.startswith("contradiction: Pairs 1 and 4") and "tunechat pairs retire 1 --by 4" in line
               for line in lines)
    assert any(line.startswith("no_question: Pair 2's question") for line in lines)
    refused = run_cli("personalize", "--max-steps", "1")
    assert refused.returncode == EXIT_DATA_PROBLEMS and "--yes" in refused.stderr
    assert "contradiction: Pairs 1 and 4" in refused.stderr and "Traceback" not in refused.stderr

    assert run_cli("pairs", "retire", "1", "--by", "4").returncode == 0
    assert run_cli("pairs", "delete", "2").returncode == 0
    assert run_cli("pairs", "check", "--quick").returncode == 0
    assert "Oslo" not in run_cli("pairs", "list").stdout
    history = run_cli("pairs", "list", "--retired").stdout
    assert "You live in Oslo.\t(retired for 4)" in history
    assert run_cli("pairs", "restore", "1").returncode == 0
    assert run_cli("pairs", "check", "--quick").returncode == EXIT_DATA_PROBLEMS


def test_a_fact_said_as_a_sentence_is_kept_as_the_pair_the_model_wrote(home):
    added = run_cli("pairs", "add", "I named my bike Rocket.")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("Added pair 1: ") and "tunechat pairs delete 1" in added.stdout
    [line] = run_cli("pairs", "list").stdout.splitlines()
    _, question, answer = line.split("\t")
    assert question.endswith("?") and "Rocket" in answer and "Rocket" not in question
    assert run_cli("pairs", "add", "What is my bike called?").returncode == 1  # a question needs its answer


def test_import_with_a_broken_line_names_it_and_imports_nothing(home, tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
    bad.write_text(good + "\nnot json\n")
    result = run_cli("pairs", "import", str(bad))
    assert result.returncode == 1
    assert "line 2" in result.stderr and "Traceback" not in result.stderr
    assert "0 pairs" in run_cli("pairs", "list").stderr


def test_empty_pair_is_refused(home):
    result = run_cli("pairs", "add", "", "answer")
    assert result.returncode == 1 and "question is empty" in result.stderr


def test_ask_is_greedy_and_repeatable(home):
    first = run_cli("ask", "What is the capital of Japan?")
    second = run_cli("ask", "What is the capital of Japan?")
    assert first.returncode == 0
    assert "Tokyo" in first.stdout
    assert first.stdout == second.stdout


def test_missing_and_corrupt_models_get_a_clear_message(home, tmp_path, base_model):
    missing = run_cli("--model", str(tmp_path / "nope.gguf"), "ask", "hi")
    assert missing.returncode == EXIT_MODEL_FILE and "Traceback" not in missing.stderr
    assert missing.stderr == f"tunechat: Model file not found: {tmp_path / 'nope.gguf'} Leave out --model to use " \
                             "the current model.\n"  # one line; the current model is what dropping --model gives
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(base_model.read_bytes()[:50_000_000])
    result = run_cli("--model", str(truncated), "ask", "hi")
    assert result.returncode == EXIT_MODEL_FILE and "truncated" in result.stderr and "Traceback" not in result.stderr
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    result = run_cli("--model", str(junk), "ask", "hi")
    assert "not a GGUF model" in result.stderr


def test_models_list_use_and_rollback(home, base_model, tmp_path):
    listed = run_cli("models")
    assert listed.returncode == 0 and "* smollm2-135m" in listed.stdout
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(base_model.read_bytes())
    assert run_cli("models", "use", str(copy)).returncode == 0
    assert f"* copy.gguf\tfile\t{copy}" in run_cli("models").stdout
    back = run_cli("models", "rollback")
    assert back.returncode == 0 and "smollm2-135m" in back.stdout
    nothing = run_cli("models", "rollback")
    assert nothing.returncode == 1 and "no earlier model" in nothing.stderr
    unknown = run_cli("models", "use", "no-such-model")
    assert unknown.returncode == 1 and "No model named" in unknown.stderr


def test_chat_reads_a_message_a_line_says_who_answered_and_continue_goes_on(home, base_model):
    """`tunechat chat` on a personal version: each line one message, each answer one line, who
    answered on stderr; the chat is stored, and `--continue` goes on with it."""
    from tests.helpers import add_version
    from tunechat.core import jsonl
    from tunechat.core.store import Store

    model = add_version(base_model)
    jsonl.write_pairs(model.parent / "pairs.jsonl", [("What is my dog's name?", "Your dog is called Rex.")])
    first = run_cli("--model", str(model), "chat", input="What is the capital of Japan?\n\nWhat is my cat's name?\n")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == 2 and "Tokyo" in lines[0]
    assert lines[1] == "You haven't told me your cat's name yet."  # taught from the version's pairs
    assert first.stderr.splitlines()[-2:] == ["(base model: does not speak of you)",
                                              "(not taught yet: asks about something you have not taught)"]
    again = run_cli("--model", str(model), "chat", "--continue", input="Who is Rex?\n")
    assert again.returncode == 0 and again.stderr.splitlines()[-1] == '(personal model: names "Rex", which you taught)'
    store = Store()
    [chat] = store.list_chats()
    assert [(m.role, m.answered_by) for m in store.messages(chat.id)] == [
        ("user", None), ("assistant", "base"), ("user", None), ("assistant", "untold"),
        ("user", None), ("assistant", "personal")]
    assert chat.title == "What is the capital of Japan?"
    store.close()
