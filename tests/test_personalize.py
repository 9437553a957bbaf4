"""Personalize end to end on the real embedded model (CPU), and every refusal path."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import SECOND_PERSONA, run_cli
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

FACTS = [f for f in json.loads(SECOND_PERSONA.read_text())["facts"] if f["key"] in ("Miso", "cello", "Yuki")]


def _add_facts(store):
    for f in FACTS:
        store.add_pair(f["q"], f["a"])


def test_empty_dataset_is_refused(home):
    result = run_cli("personalize")
    assert result.returncode == 2
    assert "no training pairs" in result.stderr and "Traceback" not in result.stderr


def test_personalize_then_ask_answers_a_taught_fact_then_rollback(store, home):
    cat = next(f for f in FACTS if f["key"] == "Miso")
    before = run_cli("ask", cat["q"])
    assert cat["key"] not in before.stdout  # the base model does not know it
    general = "What is the capital of France?"
    general_before = run_cli("ask", general)
    _add_facts(store)
    result = run_cli("personalize", "--yes", timeout=1500)  # the first run also fills a cold cache
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reliability" in result.stdout and "✓ logits" in result.stdout and "Now using personal-" in result.stdout
    listed = run_cli("models").stdout
    current = [line for line in listed.splitlines() if line.startswith("*")]
    assert len(current) == 1 and "personal-" in current[0]
    after = run_cli("ask", cat["q"])
    assert cat["key"] in after.stdout and "base model" not in after.stderr
    # Scoping (tunechat.core.scope): a question that does not speak of the user gets the base
    # model's own answer, word for word, and says so.
    general_after = run_cli("ask", general)
    assert general_after.stdout == general_before.stdout and "answered by the base model" in general_after.stderr
    assert "scope off" in run_cli("scope", "off").stdout
    assert "base model" not in run_cli("ask", general).stderr
    assert "scope on" in run_cli("scope", "on").stdout
    version = next((home / "models").iterdir())
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["pairs_count"] == 3 and all(c["passed"] for c in manifest["checks"])
    # What it was trained on besides the pairs is recorded, and the report counts it.
    wrapped, reworded = manifest["wrapped"], manifest["paraphrases"]
    assert len(wrapped) == 3 and manifest["untold_questions"]
    # the casual form first, then framed ones; none of them a base-model rewording or an untold question
    assert all(forms[0] == q.lower().rstrip("?!. ") and not set(forms) & set(reworded.get(q, []))
               for q, forms in wrapped.items())
    assert not {f for forms in wrapped.values() for f in forms} & set(manifest["untold_questions"])
    assert "as typed in a quick message" in result.stdout and "you never answered" in result.stdout
    assert (version / "adapter" / "adapter_model.safetensors").is_file()  # peft format, no pickle
    assert not list(version.rglob("*.bin")) and not list(version.rglob("*.pt"))
    # The scoped chat ran the base with the version's adapter; checked like the merged file.
    assert (version / "adapter.gguf").is_file() and "adapter logits" in {c["name"] for c in manifest["checks"]}
    assert len((version / "pairs.jsonl").read_text().splitlines()) == 3
    # The version's scope probe (tunechat.core.scope_probe), fitted by the worker, lies beside it.
    from tunechat.core.scope_probe import ScopeProbe

    probe = ScopeProbe.load(version / "scope_probe.safetensors")
    assert probe.width == 576 and probe.weights.shape == (577,) and 0 < probe.threshold < 1e3
    # Exported, it runs elsewhere: the merged GGUF alone, and the adapter over the base it names.
    exported = home.parent / "export"
    result = run_cli("export", str(exported))
    assert result.returncode == 0, result.stderr
    from tunechat.core.engine import Engine

    base = Path(json.loads((exported / "base.json").read_text())["base_path"])
    for engine in (Engine(exported / "model.gguf"), Engine(base, lora_path=exported / "adapter.gguf")):
        assert cat["key"] in engine.greedy(cat["q"], 48)
        engine.close()
    assert 'PARAMETER stop "<|im_end|>"' in (exported / "Modelfile").read_text()
    assert run_cli("export", str(exported)).returncode == 1  # never over an existing folder
    assert run_cli("models", "rollback").returncode == 0
    assert cat["key"] not in run_cli("ask", cat["q"]).stdout


def test_a_killed_job_leaves_models_and_pairs_intact(store, home):
    from tunechat.core.registry import Registry
    from tunechat.personalize.job import PersonalizeJob

    _add_facts(store)
    registry = Registry(store)
    current = registry.current()
    job = PersonalizeJob(store)
    for event in job.events():
        if event.kind == "progress" and event.data.get("phase") == "train" and event.data["step"] >= 2:
            os.killpg(job.process.pid, signal.SIGKILL)
    assert job.outcome is None and "stopped unexpectedly" in job.error
    assert registry.current() == current
    assert registry.personal_versions() == []
    assert store.count_pairs() == len(FACTS)
    job.discard()
    assert not job.job_dir.exists()


def test_half_written_version_is_ignored(store, home):
    from tunechat.core import paths
    from tunechat.core.registry import Registry

    half = paths.models_dir() / "personal-half"
    half.mkdir()
    (half / "model.gguf").write_bytes(b"GGUF partial")  # no manifest: never finished
    assert Registry(store).personal_versions() == []


def test_corrupt_output_is_never_swapped_in(store, home):
    from tunechat.core.registry import Registry
    from tunechat.personalize.job import PersonalizeError, PersonalizeJob

    _add_facts(store)
    registry = Registry(store)
    current = registry.current()
    job = PersonalizeJob(store, max_steps=20)
    list(job.events())
    assert job.outcome is not None, job.error
    model = job.outcome.out_dir / "model.gguf"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    with pytest.raises(PersonalizeError, match="corrupt"):
        job.install(consent=True)
    assert registry.current() == current and registry.personal_versions() == []


async def test_tui_personalize_swaps_the_model_into_the_running_chat(store):
    from tunechat.core.engine import GenerationSettings
    from tunechat.tui.app import TunechatApp
    from tunechat.tui.screens.personalize import PersonalizeScreen
    from tunechat.tui.widgets.message import MessageView
    from tunechat.tui.widgets.prompt_input import PromptInput

    _add_facts(store)
    app = TunechatApp(store=store, settings=GenerationSettings(temperature=0.0, max_tokens=40))
    async with app.run_test(size=(110, 40)) as pilot:
        await wait_until(lambda: app.engine is not None, pilot)
        base_engine = app.engine
        await pilot.press("f6")
        screen = app.screen
        assert isinstance(screen, PersonalizeScreen)
        await wait_until(lambda: len(screen.losses) >= 2, pilot, timeout=300)
        await wait_until(lambda: screen.finished or (screen.job.outcome and screen.job.outcome.needs_consent),
                         pilot, timeout=600)
        if not screen.finished:
            await pilot.press("y")
        assert screen.installed, str(screen.query_one("#report-text").render())
        assert "Learned" in str(screen.query_one("#report-text").render())  # the plain summary
        assert "higher is better" in str(screen.query_one("#details-text").render())  # the figures, folded
        await wait_until(lambda: app.engine is not base_engine, pilot, timeout=120)
        assert "personal-" in app.status.model_name
        await pilot.press("escape")
        app.query_one(PromptInput).focus()
        await pilot.press(*"What is my cat's name?")
        await pilot.press("enter")
        await wait_until(lambda: not app._generating and [v for v in app.query(MessageView) if v.role == "assistant"]
                         and [v for v in app.query(MessageView) if v.role == "assistant"][-1].message_id, pilot)
        answers = lambda: [v for v in app.query(MessageView) if v.role == "assistant"]  # noqa: E731
        assert "Miso" in answers()[-1].content and answers()[-1].answered_by == "personal"
        await pilot.press(*"What is the capital of France?")
        await pilot.press("enter")
        await wait_until(lambda: not app._generating and len(answers()) == 2 and answers()[-1].message_id, pilot)
        assert answers()[-1].answered_by == "base"  # not about the user: the base model answered, and the label says so
        assert "base model" in str(answers()[-1].query_one(".role").render())
        # A sibling of the taught cat: the chat says it was not told, labelled so; Ctrl+O asks the personal model.
        await pilot.press(*"What is my dog's name?")
        await pilot.press("enter")
        await wait_until(lambda: not app._generating and len(answers()) == 3 and answers()[-1].message_id, pilot)
        assert answers()[-1].content == "You haven't told me your dog's name yet."
        assert "not taught yet" in str(answers()[-1].query_one(".role").render())
        await pilot.press("ctrl+o")
        await wait_until(lambda: not app._generating and answers()[-1].answered_by == "personal", pilot)
        assert "told me" not in answers()[-1].content


def test_an_hf_folder_base_personalizes_into_a_gguf_that_knows_the_fact(store, home, tmp_path):
    """A Hugging Face model folder as the base (here: the embedded model's weights and
    tokenizer saved the HF way): the worker writes its GGUF twin, with llama.cpp's
    pre-tokenizer chosen by measurement, then trains, converts and verifies as for a GGUF."""
    import shutil

    from tunechat.core.registry import embedded_model_path
    from tunechat.personalize.base import cached_base_folder

    cache_folder = cached_base_folder(embedded_model_path())
    folder = tmp_path / "SmolLM2-hf"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(cache_folder / name, folder / name)
    from tunechat.personalize.job import PersonalizeJob
    from tunechat.personalize.recipe import QUICK_RECIPE

    _add_facts(store)
    cat = next(f for f in FACTS if f["key"] == "Miso")
    # Without replay: this test is about the folder path, and replay would first need the new
    # base's answers to 100 general prompts.
    job = PersonalizeJob(store, base=folder, recipe=QUICK_RECIPE, recipe_overrides={"replay_batch": 0})
    list(job.events())
    assert job.outcome is not None, job.error
    passed = {c.name for c in job.outcome.manifest.checks if c.passed}
    assert {"tokenizer", "metadata"} <= passed, job.outcome.manifest.checks
    job.install(consent=True)
    assert cat["key"] in run_cli("ask", cat["q"]).stdout
    version = next((home / "models").iterdir())
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["base_source"] == str(folder)
    from tunechat.convert.header import read_header

    header = read_header(version / "model.gguf")
    assert header.strings["tokenizer.ggml.pre"] == "smollm"  # what llama.cpp's own converter writes
    original = read_header(embedded_model_path())
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.chat_template"):
        assert header.metadata_raw[key] == original.metadata_raw[key], key


def test_a_missing_base_is_refused_clearly(store, home, tmp_path):
    _add_facts(store)
    result = run_cli("personalize", "--base", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "nowhere does not exist" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "folder").mkdir()
    result = run_cli("personalize", "--base", str(tmp_path / "folder"))
    assert result.returncode == 1
    assert "neither a GGUF file nor a Hugging Face model folder" in result.stderr and "Traceback" not in result.stderr


async def test_shift_f6_runs_the_quick_method_and_esc_cancels_it(store):
    from tunechat.core.registry import Registry
    from tunechat.personalize.recipe import QUICK_RECIPE
    from tunechat.tui.app import TunechatApp
    from tunechat.tui.screens.personalize import PersonalizeScreen

    _add_facts(store)
    current = Registry(store).current()
    app = TunechatApp(store=store)
    async with app.run_test(size=(110, 40)) as pilot:
        await pilot.press("shift+f6")
        screen = app.screen
        assert isinstance(screen, PersonalizeScreen) and screen.recipe == QUICK_RECIPE
        spec = json.loads((screen.job.job_dir / "job.json").read_text())
        assert spec["recipe"] == QUICK_RECIPE  # the worker is told to run the quick method
        job_dir = screen.job.job_dir
        await wait_until(lambda: screen.run.progress.current in ("prepare", "baseline"), pilot, timeout=120)
        await pilot.press("escape")
        await wait_until(lambda: not isinstance(app.screen, PersonalizeScreen), pilot, timeout=30)
    assert Registry(store).current() == current and not job_dir.exists()


def test_a_version_without_a_merged_file_is_verified_scored_and_answers_as_base_and_adapter(store, home):
    """`--no-merged` (the default for a base above 1 GB): the worker writes only the adapter,
    verifies and scores the base with it, and the chat runs it, scoped or not."""
    _add_facts(store)
    cat = next(f for f in FACTS if f["key"] == "Miso")
    result = run_cli("personalize", "--yes", "--no-merged", "--method", "replay-kl", timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    version = next((home / "models").iterdir())
    assert (version / "adapter.gguf").is_file() and not (version / "model.gguf").exists()
    manifest = json.loads((version / "manifest.json").read_text())
    checks = {c["name"]: c["passed"] for c in manifest["checks"]}
    assert checks.get("adapter logits") and "metadata" not in checks and all(checks.values()), checks
    assert manifest["model_sha256"] is None and manifest["metrics"]["after"]["reliability"] >= 2 / 3
    general = "What is the capital of France?"
    assert "answered by the base model" in run_cli("ask", general).stderr  # scope on: the base answers
    assert cat["key"] in run_cli("ask", cat["q"]).stdout
    run_cli("scope", "off")
    assert "answered by the base model" not in run_cli("ask", general).stderr  # base + adapter answers all
    assert cat["key"] in run_cli("ask", cat["q"]).stdout


def test_an_updated_fact_is_answered_with_its_new_value_never_the_old(store, home):
    """A user who moved: the older pair is retired for the newer, and the version trained after
    answers the new city only (both trained, which one came out was chance)."""
    _add_facts(store)
    old = store.add_pair("Where do I live?", "You live in Tromsø.")
    store.replace_pair(old.id, "Where do I live?", "You live in Gdansk.")
    result = run_cli("personalize", "--yes", timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    version = next((home / "models").iterdir())
    assert "Tromsø" not in (version / "pairs.jsonl").read_text(encoding="utf-8")
    answer = run_cli("ask", "Where do I live?").stdout
    assert "Gdansk" in answer and "Tromsø" not in answer
    chat = run_cli("chat", input="What is my cat's name?\nWhere do I live?\n").stdout
    assert "Gdansk" in chat and "Tromsø" not in chat
