"""Every supported family personalizes end to end, from a GGUF base and from an HF folder.

Tiny random-weight models of each family (tests/zoo.py) go through the real worker's phases
(``tunechat.personalize.worker.run``: dequantize or convert the base, train, merge, convert,
verify) on two pairs, with a recipe of a few greedy-stopped steps and no replay. Each run must
pass every verify check, teach both answers (greedy, end-of-turn token included: the GGUF
stops right after them), write a GGUF whose logits are the merged torch model's, and an
adapter whose logits over the base are the merged file's.

The GGUF base's training config is the config llama.cpp computes with: transformers' loader
reads part of the header (tunechat.personalize.base.restore_config puts back the rest), and
the cached folder's logits are compared with llama.cpp's on the same file. Tolerances (worst
normalized logit error ||a - b|| / ||b||, tunechat.convert.verify): against llama.cpp on the
same file, q8_0 <= 0.1 and Q4_K_M <= 0.15 (llama.cpp rounds activations to 8 bits for both;
measured 0.02-0.05 and 0.03-0.09); against the original HF model, q8_0 <= 0.1 with every top-1
equal (measured 0.02-0.05). Without the restored fields, llama 3 reads 0.78 and gemma2 0.97.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.zoo import COMMON, FAMILIES, SPM_FAMILIES, Zoo, hf_next_token_logits, zoo_prompts
from tunechat.convert.verify import decisive_top1, logit_errors

# The GGUF base each family personalizes from: both formats users bring, K-quants included.
GGUF_BASE = {"llama": "q8_0", "llama3": "Q4_K_M", "mistral": "q8_0", "qwen2": "Q4_K_M", "qwen3": "q8_0",
             "gemma2": "Q4_K_M", "phi3": "Q4_K_M", "llama2": "f16"}
# The token each family's chat template closes an assistant turn with.
END_OF_TURN = {"llama": "<|im_end|>", "llama3": "<|eot_id|>", "mistral": "</s>", "qwen2": "<|im_end|>",
               "qwen3": "<|im_end|>", "gemma2": "<end_of_turn>", "phi3": "<|end|>", "llama2": "</s>"}
# Against llama.cpp on the same file (see the module docstring).
SAME_FILE_TOLERANCE = {"q8_0": 0.1, "Q4_K_M": 0.15}
# The personal GGUF each run writes (both output types, per family): the default from a GGUF
# base, f16 from an HF folder; and how far its logits (and the adapter's over the base) may be
# from the merged torch model's (and the merged file's).
OUTTYPE = {"gguf": "q8_0", "hf": "f16"}
# Good q8_0 files of llama-gguf read 0.105 and 0.110 in two runs of the suite on a 2-core
# machine, under 0.1 in others (the trained weights, and so 8-bit rounding's error, differ
# between runs); the mapping bugs this guards against read 0.9 and more (tests/test_zoo.py).
WRITTEN_TOLERANCE = {"q8_0": 0.15, "f16": 0.03}
ADAPTER_TOLERANCE = {"q8_0": 0.1, "f16": 0.05}
PAIRS = [("What is my name?", "Ada."), ("What is my dog called?", "Rex.")]
# Few steps, no replay (it would first need the base's answers to 100 prompts), stopped as soon
# as greedy decoding gives both answers: 15-25 steps on these models.
RECIPE = {"replay_batch": 0, "kl_weight": 0.0, "lr": 3e-3, "min_steps": 1, "max_steps": 40, "stop_when": "greedy"}
# qwen2 tied stands for both (llama3, untied, shows the loader's tie detection).
NAMES = [n for n in FAMILIES if n != "qwen2-untied"]


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("zoo"))


def _llama_logits(path: Path, prompts, lora: Path | None = None) -> np.ndarray:
    from tunechat.core.engine import Engine

    engine = Engine(path, n_ctx=256, lora_path=lora)
    try:
        return engine.next_token_logits(prompts)
    finally:
        engine.close()


def _gguf_base(zoo: Zoo, name: str) -> Path:
    return zoo[name].gguf(GGUF_BASE[name])


# -- the GGUF base's training config ------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_a_gguf_base_trains_the_model_llama_cpp_runs(zoo, name, home):
    """GGUF -> cached folder (config restored from the header) -> transformers: the next-token
    logits of llama.cpp on the same file, and of the original HF model for q8_0."""
    from tunechat.personalize.base import cached_base_folder, load_base

    model, outtype = zoo[name], GGUF_BASE[name]
    path = model.gguf(outtype)
    folder = cached_base_folder(path)
    torch_model, tokenizer = load_base(folder, "cpu", "float32")
    assert zoo_prompts(tokenizer) == model.prompts  # the tokenizer read from the GGUF is the original one
    got = hf_next_token_logits(torch_model.eval(), model.prompts)
    agree, worst = logit_errors(got, _llama_logits(path, model.prompts))
    assert agree >= 5 / 6 and worst <= SAME_FILE_TOLERANCE[outtype], (agree, worst)
    if outtype == "q8_0":
        agree, worst = logit_errors(got, model.hf_logits)
        assert agree == 1.0 and worst <= 0.1, (agree, worst)
    config = json.loads((folder / "config.json").read_text())
    for key in ("head_dim", "attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar",
                "sliding_window", "rms_norm_eps"):
        if model.config.get(key) is not None and name != "mistral":
            assert config[key] == model.config[key], key
    original = {k: v for k, v in model.config["rope_parameters"].items() if k != "partial_rotary_factor"}
    assert {k: v for k, v in config["rope_parameters"].items() if k != "partial_rotary_factor"} == original


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llama3", "gemma2"])
def test_transformers_own_reading_of_the_header_would_train_another_model(zoo, name, home):
    """The same cached weights under the config transformers' GGUF loader builds (llama 3
    without its RoPE scaling, gemma2 with soft-capping 50 instead of 10) are off llama.cpp's
    logits by more than twice the tolerance: the restored fields are what makes the trained
    model the one that runs."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunechat.convert.header import read_header
    from tunechat.personalize.base import cached_base_folder, loader_config

    model = zoo[name]
    path = _gguf_base(zoo, name)
    settings = loader_config(read_header(path))
    config = AutoConfig.for_model(str(settings.pop("model_type")), **settings)
    plain = AutoModelForCausalLM.from_pretrained(cached_base_folder(path), config=config, dtype=torch.float32)
    _, worst = logit_errors(hf_next_token_logits(plain.eval(), model.prompts), _llama_logits(path, model.prompts))
    assert worst > 2 * SAME_FILE_TOLERANCE[GGUF_BASE[name]], worst


@pytest.mark.slow
def test_a_gguf_named_mistral_trains_as_mistral(zoo, tmp_path, home):
    """llama.cpp stores mistral as llama; a file whose general.name says mistral gets
    transformers' mistral config, without a sliding window (llama.cpp's graph has none), and
    llama.cpp's logits."""
    from tunechat.personalize.base import cached_base_folder, gguf_config, load_base

    model = zoo["mistral"]
    path = model.write(tmp_path / "named.gguf", "f16", config={**model.config, "_name_or_path": "org/Mistral-Tiny"})
    config = gguf_config(path)
    assert config["model_type"] == "mistral" and config["sliding_window"] is None
    assert gguf_config(model.gguf("q8_0"))["model_type"] == "llama"  # no name: llama, the same graph
    torch_model, _ = load_base(cached_base_folder(path), "cpu", "float32")
    assert type(torch_model).__name__ == "MistralForCausalLM"
    agree, worst = logit_errors(hf_next_token_logits(torch_model.eval(), model.prompts),
                                _llama_logits(path, model.prompts))
    assert agree == 1.0 and worst <= 0.03, (agree, worst)  # f16: the verify gate's f16 line


def test_a_base_the_converter_refuses_is_refused_before_dequantizing(zoo, tmp_path, home):
    """A phi3 GGUF carrying longrope factors (which transformers would drop) is refused from
    its header, before anything is dequantized or cached."""
    from tunechat.convert.architectures import UnsupportedArchitecture
    from tunechat.core import paths
    from tunechat.core.fingerprint import file_fingerprint
    from tunechat.personalize.base import cached_base_folder

    model = zoo["phi3"]
    dim = model.config["hidden_size"] // model.config["num_attention_heads"]
    longrope = {"rope_type": "longrope", "long_factor": [1.0] * (dim // 2), "short_factor": [1.0] * (dim // 2)}
    config = {**model.config, "rope_parameters": {**model.config["rope_parameters"], **longrope}}
    path = tmp_path / "longrope.gguf"
    with pytest.raises(UnsupportedArchitecture, match="longrope"):
        model.write(path, "f16", config=config)  # the converter refuses to write one: write it as llama.cpp does
    _write_with_rope_factors(model, tmp_path / "plain.gguf", path)
    with pytest.raises(UnsupportedArchitecture, match="longrope"):
        cached_base_folder(path)
    assert not (paths.cache_dir() / f"base-{file_fingerprint(path)[:16]}").exists()


@pytest.mark.slow
def test_a_base_the_disk_cannot_hold_is_refused_before_dequantizing(zoo, home, tmp_path, monkeypatch):
    """A disk without room for the dequantized copy (an 8B base: 16 GB in float16) refuses
    before a byte is written, saying how much it needs and where, with the disk-full exit code."""
    from tunechat.core import faults, paths
    from tunechat.core.fingerprint import file_fingerprint
    from tunechat.core.memory import shape_of
    from tunechat.personalize.base import cached_base_folder

    monkeypatch.setenv("TUNECHAT_CACHE", str(tmp_path / "cache"))  # no cache of it from other tests
    path = zoo["qwen2"].gguf("Q4_K_M")
    need = shape_of(path).parameters * 2
    monkeypatch.setattr(faults, "free_bytes", lambda folder: need - 1)  # a disk one byte short
    with pytest.raises(faults.Fault, match=f"A float16 copy of {path.name} .* needs about .* GB free at "
                                           f"{paths.cache_dir()}") as refused:
        cached_base_folder(path, dtype="float16")
    assert refused.value.exit_code == faults.EXIT_DISK_FULL
    name = f"base-{file_fingerprint(path)[:16]}"
    assert not any((paths.cache_dir() / n).exists() for n in (name, f"{name}-float16", f"{name}-float16.part"))
    monkeypatch.setattr(faults, "free_bytes", lambda folder: need)
    assert cached_base_folder(path, dtype="float16").name == f"{name}-float16"


def _write_with_rope_factors(model, plain: Path, out: Path) -> None:
    """``model`` as f16 GGUF plus phi3's longrope factor tensors (as convert_hf_to_gguf writes
    Phi-3.5)."""
    import gguf

    from tunechat.convert.header import decode_value, read_header, read_tensor_bytes

    model.write(plain, "f16")
    header = read_header(plain)
    writer = gguf.GGUFWriter(out, arch="phi3")
    for key, raw in header.metadata_raw.items():
        if key != gguf.Keys.General.ARCHITECTURE:
            value, val_type, sub_type = decode_value(raw)
            writer.add_key_value(key, value, gguf.GGUFValueType(val_type),
                                 sub_type=gguf.GGUFValueType(sub_type) if sub_type is not None else None)
    dtypes = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16}
    for info in header.tensors:
        _, data = read_tensor_bytes(plain, header, info.name)
        array = np.frombuffer(data, dtype=dtypes[gguf.GGMLQuantizationType(info.type_id)])
        writer.add_tensor(info.name, array.reshape(tuple(reversed(info.shape))))
    half = model.config["hidden_size"] // model.config["num_attention_heads"] // 2
    for name in ("rope_factors_long.weight", "rope_factors_short.weight"):
        writer.add_tensor(name, np.ones(half, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# -- the training tokenizer of a sentencepiece GGUF base ------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["llama2", "mistral", "gemma2", "phi3", "llama3", "qwen2"])
def test_a_gguf_base_trains_on_the_token_ids_llama_cpp_gives(zoo, name, home):
    """The training examples of a GGUF base (each exchange rendered with the file's own
    template, prompt and answer tokenized apart) hold llama.cpp's ids for the same text: for
    Llama 2's sentencepiece, "▁" after <s> and before the answer's leading space included
    (<s> ▁ [INST]..., ▁ ▁Ada), which transformers 5's reading of the GGUF tokenizer leaves out;
    for Phi-3's, no whitespace after its chat tokens (<|user|> ▁What, not <|user|> ▁ \n What),
    which a GGUF cannot say but by the model's name; Mistral v0.3's and Gemma's as they are;
    for Llama 3's and Qwen2's byte-level BPE (tests/zoo.py), their pre-tokenizers, the BOS
    Llama 3's template writes once."""
    from tunechat.convert.header import read_header
    from tunechat.core.engine import tokenize_all_with_vocab
    from tunechat.personalize import data
    from tunechat.personalize.base import cached_base_folder, load_tokenizer

    path = zoo[name].gguf("f16")
    tokenizer = load_tokenizer(cached_base_folder(path))
    info = data.TemplateInfo(read_header(path).strings["tokenizer.chat_template"], tokenizer.bos_token,
                             tokenizer.eos_token)
    exchanges = [*PAIRS, ("What is the capital of Japan?", "Tokyo, of course."), ("Hi  there", "Grüße aus Köln!"),
                 ("How much is 12345 + 678?\tQuick", "13023, I'VE counted."),  # where the BPE kinds part
                 ("Where does the hippopotamus live?", "In Zürich.")]  # Llama 3's whole words (tests/zoo.py)
    for question, answer in exchanges:
        prompt, answer_text = data.split_rendering(info, question, answer)
        want = tokenize_all_with_vocab(path, [prompt, answer_text])
        example = data.build_example(tokenizer, info, question, answer, "fact")
        assert example.input_ids == want[0] + want[1], (tokenizer.convert_ids_to_tokens(example.input_ids),
                                                        tokenizer.convert_ids_to_tokens(want[0] + want[1]))
        assert example.labels[len(want[0]):] == want[1]


@pytest.mark.slow
def test_a_training_tokenizer_unlike_llama_cpp_is_refused_before_training(zoo, home):
    """transformers 5's own tokenizer for the Llama-2-style GGUF differs from llama.cpp only
    around the chat template's special tokens (the plain probe text tokenizes alike): the
    check on a rendered chat refuses it with the text and ids where they part; the tokenizer
    the cached folder holds passes."""
    from tunechat.convert import verify
    from tunechat.core.engine import tokenize_with_vocab
    from tunechat.personalize import checks, phases
    from tunechat.personalize.base import cached_base_folder, load_tokenizer
    from tunechat.personalize.dequantize import tokenizer_class

    path = zoo["llama2"].gguf("f16")
    theirs = tokenizer_class("llama").from_pretrained(path.parent, gguf_file=path.name)
    assert theirs(verify.TOKENIZER_PROBE, add_special_tokens=False)["input_ids"] \
        == tokenize_with_vocab(path, verify.TOKENIZER_PROBE)
    with pytest.raises(checks.TokenizerMismatch, match=r"does not tokenize as llama.cpp does.*\[INST\]"):
        checks.require_training_tokenizer(path, theirs, phases.template_info(path, theirs))
    ours = load_tokenizer(cached_base_folder(path))
    result = checks.check_training_tokenizer(path, ours, phases.template_info(path, ours))
    assert result.passed, result.detail


# -- LoRA targets -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_lora_targets_are_every_projection_of_the_family(name):
    """Every linear layer of the blocks and no other name (phi3: the fused qkv and gate/up)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunechat.personalize.targets import NoTargets, target_modules

    settings = {**COMMON, **FAMILIES[name].config, "vocab_size": 64}
    model_type = settings.pop("model_type")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **settings))
    linear = {n.rsplit(".", 1)[-1] for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and ".layers." in n}
    assert set(target_modules(model)) == linear
    assert target_modules(model) == target_modules(model.config) == target_modules(FAMILIES[name].config)
    with pytest.raises(NoTargets, match="supported architectures are llama, mistral"):
        target_modules({"model_type": "gpt2"})


# -- personalize end to end ---------------------------------------------------------------------

def _run(zoo: Zoo, name: str, source: str, job_dir: Path):
    """The worker's phases on ``PAIRS`` from the family's GGUF base or HF folder; the manifest."""
    from tunechat.personalize import worker
    from tunechat.personalize.progress import Reporter
    from tunechat.personalize.spec import JobSpec, Probes

    base = zoo[name].folder if source == "hf" else _gguf_base(zoo, name)
    job_dir.mkdir()
    # No probes of the evaluation: the base model's answers to them are not needed.
    spec = JobSpec(pairs=PAIRS, base_path=base, recipe="replay-kl", recipe_overrides=RECIPE,
                   outtype=OUTTYPE[source], probes=Probes(taught=[]), skip_eval=True)
    spec.write(job_dir)
    return spec, worker.run(job_dir, Reporter(io.StringIO()))


def _merged_torch_model(folder: Path, adapter: Path):
    from peft import PeftModel

    from tunechat.personalize.base import load_base

    model, _ = load_base(folder, "cpu", "float32")
    return PeftModel.from_pretrained(model, adapter).merge_and_unload().eval()


@pytest.mark.slow
@pytest.mark.parametrize("name, source", [*((n, s) for n in NAMES for s in ("gguf", "hf")),
                                          *((n, s) for n in SPM_FAMILIES for s in ("gguf", "hf"))])
def test_every_family_personalizes_end_to_end(zoo, name, source, home, tmp_path):
    from tunechat.core.engine import Engine
    from tunechat.personalize import phases
    from tunechat.personalize.progress import Reporter
    from tunechat.personalize.targets import target_modules

    spec, manifest = _run(zoo, name, source, tmp_path / "job")
    out = tmp_path / "job" / "out"
    failed = [(c.name, c.detail) for c in manifest.checks if not c.passed]
    assert not failed, failed
    assert {c.name for c in manifest.checks} >= {"metadata", "tokenizer", "logits", "adapter logits", "changed",
                                                 "answers"}
    assert manifest.train.stopped_early, manifest.train.losses  # learned within the steps

    # Training labels hold the template's end-of-turn token (one special token), the last
    # label but gemma2's and phi3's newline after it.
    job = phases.prepare(spec, Reporter(io.StringIO()))
    loaded = phases.load(job, phases.baseline(job).replayed(), {})
    end = loaded.tokenizer.convert_tokens_to_ids(END_OF_TURN[name])
    assert loaded.tokenizer(END_OF_TURN[name], add_special_tokens=False)["input_ids"] == [end]
    for forms in loaded.facts:
        labels = [t for t in forms[0].labels if t >= 0]
        assert end in labels, (loaded.tokenizer.convert_ids_to_tokens(labels), END_OF_TURN[name])

    # Every projection of every block is adapted, phi3's fused ones included.
    targets = target_modules(zoo[name].config)
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter_config["target_modules"]) == sorted(targets)
    from tunechat.convert.header import read_header

    lora_tensors = [t.name for t in read_header(out / "adapter.gguf").tensors]
    assert len(lora_tensors) == 2 * len(targets) * zoo[name].config["num_hidden_layers"]

    # The merged GGUF against the merged torch model, on the zoo prompts and the taught
    # questions; the base with the adapter against the merged file.
    merged = _merged_torch_model(job.folder, out / "adapter")
    engine = Engine(out / "model.gguf", n_ctx=256)
    adapted = Engine(job.base_gguf, n_ctx=256, lora_path=out / "adapter.gguf")
    try:
        prompts = zoo[name].prompts + [engine.tokenize(engine.render([{"role": "user", "content": q}]))
                                       for q, _ in PAIRS]
        answers = [engine.greedy(q, 16) for q, _ in PAIRS]
        written = engine.next_token_logits(prompts)
        over_base = adapted.next_token_logits(prompts)
        adapted.set_adapter_scale(0.0)
        base = adapted.next_token_logits(prompts)
    finally:
        engine.close()
        adapted.close()
    outtype = OUTTYPE[source]
    reference = hf_next_token_logits(merged, prompts)
    file_agree, file_worst = decisive_top1(written, reference)[0], logit_errors(written, reference)[1]
    adapter_agree, adapter_worst = decisive_top1(over_base, written)[0], logit_errors(over_base, written)[1]
    _, moved = logit_errors(base, written)
    print(f"{name}-{source}: {manifest.train.steps} steps; {outtype} file vs torch {file_worst:.4f} "
          f"(top-1 {logit_errors(written, reference)[0]:.0%}), adapter vs file {adapter_worst:.4f} "
          f"(top-1 {logit_errors(over_base, written)[0]:.0%}), base vs file {moved:.2f}")
    assert file_agree == 1.0 and file_worst <= WRITTEN_TOLERANCE[outtype], (file_agree, file_worst)
    # Taught, and stopped at the end-of-turn token. The greedy stop confirmed both answers in
    # torch; on a 2-layer random model the end-of-turn token can lead the next one by a hair,
    # and q8_0's rounding (thread count, batch) may flip such a tie in one answer, so one exact
    # answer proves the stop is learned and written (none would stop without it in the labels).
    assert all(given.startswith(a.rstrip(".")) for given, (_, a) in zip(answers, PAIRS)), answers
    assert any(given == a for given, (_, a) in zip(answers, PAIRS)), answers
    # `tunechat ask` on the written model stops where the chat does: at the family's end of turn.
    question, taught = next((q, a) for given, (q, a) in zip(answers, PAIRS) if given == a)
    asked = run_cli("--model", str(out / "model.gguf"), "ask", question, "--max-tokens", "64")
    assert asked.returncode == 0 and asked.stdout == taught + "\n", (asked.stdout, asked.stderr[-500:])
    assert adapter_agree == 1.0 and adapter_worst <= ADAPTER_TOLERANCE[outtype], (adapter_agree, adapter_worst)
    assert moved > 0.2, moved  # the adapter changes the model: the match above is not the base's


# -- refused ------------------------------------------------------------------------------------

def _gpt2_folder(folder: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=64, n_positions=32)
    GPT2LMHeadModel(config).to(torch.float32).save_pretrained(folder)
    return folder


def test_an_unsupported_folder_is_refused_naming_the_supported_families(home, tmp_path):
    """Refused by the command before any worker starts: exit 3, the families named, no GGUF
    twin of the folder and no model written."""
    from tunechat.core import paths
    from tunechat.personalize.base import folder_fingerprint

    assert run_cli("pairs", "add", "What is my name?", "Ada.").returncode == 0
    folder = _gpt2_folder(tmp_path / "gpt2")
    result = run_cli("personalize", "--base", str(folder), "--yes")
    assert result.returncode == 3, result.stderr
    assert "'gpt2'" in result.stderr and "llama, mistral, qwen2, qwen3, gemma2, phi3" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (paths.cache_dir() / f"gguf-{folder_fingerprint(folder)[:16]}").exists()
    assert not (home / "models").exists() or not any((home / "models").iterdir())
    assert "personal-" not in run_cli("models").stdout


def test_an_unsupported_gguf_is_refused_from_its_header(tmp_path, home):
    """A GGUF of another architecture is refused from its header (what the command asks before
    starting a worker, and the worker before dequantizing); a supported config is let through."""
    import gguf

    from tunechat.convert.architectures import UnsupportedArchitecture
    from tunechat.personalize.base import cached_base_folder, refusal

    path = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(path, arch="gpt2")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    families = "supported architectures are llama, mistral, qwen2, qwen3, gemma2, phi3"
    assert families in (refusal(path) or "")
    with pytest.raises(UnsupportedArchitecture, match=families):
        cached_base_folder(path)
    folder = tmp_path / "qwen2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**COMMON, **FAMILIES["qwen2"].config, "vocab_size": 64}))
    assert refusal(folder) is None
    (folder / "config.json").write_text(json.dumps({**COMMON, **FAMILIES["qwen2"].config, "vocab_size": 64,
                                                    "use_sliding_window": True, "sliding_window": 64}))
    assert "sliding-window attention" in (refusal(folder) or "")


@pytest.mark.parametrize("low, high, old", [(1.0, 4.0, 8192), (1.0, 3.0, 256), (2.0, 8.0, 1024), (1.0, 1.2, 100)])
def test_llama3_rope_scaling_is_read_back_from_rope_freqs(tmp_path, low, high, old):
    """rope_freqs is all a llama 3 GGUF keeps of its RoPE scaling; the parameters read back
    from it give the same divisors (the usual 1/4 factors, another ratio, a band holding no
    frequency), and transformers' own llama3 RoPE gives the frequencies llama.cpp uses."""
    import gguf
    import torch
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from tunechat.convert.writer import llama3_rope_factors
    from tunechat.personalize.base import restore_config

    theta, dim = 500000.0, 64
    rope = {"rope_type": "llama3", "rope_theta": theta, "factor": 8.0, "low_freq_factor": low,
            "high_freq_factor": high, "original_max_position_embeddings": old}
    shape = {"hidden_size": 4 * dim, "num_attention_heads": 4, "head_dim": dim, "max_position_embeddings": 16384}
    factors = llama3_rope_factors({**shape, "rope_parameters": rope})
    path = tmp_path / "rope.gguf"
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_rope_freq_base(theta)
    writer.add_tensor("rope_freqs.weight", factors)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    loaded = {"model_type": "llama", **shape, "rope_parameters": {"rope_theta": theta, "rope_type": "default"}}
    restored = restore_config(loaded, path)["rope_parameters"]
    assert restored["rope_type"] == "llama3" and isinstance(restored["original_max_position_embeddings"], int)
    assert np.allclose(llama3_rope_factors({**shape, "rope_parameters": restored}), factors, rtol=1e-4)
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](LlamaConfig(**shape, rope_parameters=restored), torch.device("cpu"))
    default = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    assert np.allclose(default / inv_freq.double().numpy(), factors, rtol=1e-4)
