"""A base too large for the machine's free memory is refused before any worker starts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from tunechat.core import memory
from tunechat.core.faults import EXIT_DATA_PROBLEMS, EXIT_NOT_ENOUGH_MEMORY


def _tensors(hidden: int, ff: int, layers: int, vocab: int) -> dict[str, np.ndarray]:
    """A llama-shaped set of tensors (zeros: only their shapes matter here)."""
    out = {"token_embd.weight": np.zeros((vocab, hidden), np.float16),
           "output_norm.weight": np.zeros(hidden, np.float32)}
    for i in range(layers):
        for name, shape in (("attn_q", (hidden, hidden)), ("attn_k", (hidden, hidden)),
                            ("attn_v", (hidden, hidden)), ("attn_output", (hidden, hidden)),
                            ("ffn_gate", (ff, hidden)), ("ffn_up", (ff, hidden)), ("ffn_down", (hidden, ff))):
            out[f"blk.{i}.{name}.weight"] = np.zeros(shape, np.float16)
        out[f"blk.{i}.attn_norm.weight"] = np.zeros(hidden, np.float32)
    return out


def _write_gguf(path: Path, hidden: int, ff: int, layers: int, vocab: int) -> int:
    """A GGUF header and tensors of this shape; returns the number of parameters written."""
    import gguf

    tensors = _tensors(hidden, ff, layers, vocab)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ff)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sum(a.size for a in tensors.values())


def test_the_estimate_grows_with_the_parameters_counted_from_the_file(tmp_path):
    small_n = _write_gguf(tmp_path / "small.gguf", 64, 176, 2, 512)
    large_n = _write_gguf(tmp_path / "large.gguf", 128, 352, 4, 512)
    small, large = memory.shape_of(tmp_path / "small.gguf"), memory.shape_of(tmp_path / "large.gguf")
    assert (small.parameters, large.parameters) == (small_n, large_n)
    assert (large.hidden, large.intermediate, large.layers, large.vocab) == (128, 352, 4, 512)
    a, b = memory.estimate(small), memory.estimate(large)
    assert a.cpu < b.cpu and a.cuda_device < b.cuda_device and a.cuda_host < b.cuda_host
    assert a.cpu_half < b.cpu_half and b.cpu_half < b.cpu
    # Four more bytes of float32 weights for every parameter more, at least; two in float16.
    assert b.cpu - a.cpu >= memory.FP32 * (large_n - small_n)
    assert b.cpu_half - a.cpu_half >= memory.HALF * (large_n - small_n)


def test_a_folder_is_counted_from_its_safetensors_headers(tmp_path):
    from safetensors.numpy import save_file

    folder = tmp_path / "hf"
    folder.mkdir()
    tensors = {"model.embed_tokens.weight": np.zeros((300, 32), np.float16),
               "model.layers.0.mlp.up_proj.weight": np.zeros((96, 32), np.float16)}
    save_file(dict(list(tensors.items())[:1]), str(folder / "model-00001-of-00002.safetensors"))
    save_file(dict(list(tensors.items())[1:]), str(folder / "model-00002-of-00002.safetensors"))
    (folder / "config.json").write_text(json.dumps({"hidden_size": 32, "intermediate_size": 96,
                                                    "num_hidden_layers": 1, "vocab_size": 300}))
    shape = memory.shape_of(folder)
    assert shape == memory.Shape(300 * 32 + 96 * 32, 32, 96, 1, 300)


def test_the_embedded_model_estimate_is_near_its_measured_peak(base_model):
    """SmolLM2-135M's train phase peaked at 2260 MiB (docs/benchmarks.md): the factors were
    taken from it, so the estimate at its shape must come back near it."""
    shape = memory.shape_of(base_model)
    assert (shape.hidden, shape.intermediate, shape.layers, shape.vocab) == (576, 1536, 30, 49152)
    assert math.isclose(shape.parameters, 134.5e6, rel_tol=0.01)
    assert math.isclose(memory.estimate(shape).cpu / 2**20, 2260, rel_tol=0.1)


def test_meminfo_is_read_from_the_real_file():
    available = memory.meminfo_available()
    total = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                 if line.startswith("MemTotal:"))
    assert available is not None and 0 < available <= total
    assert memory.meminfo_available(Path("/nonexistent/meminfo")) is None
    headroom = memory.cgroup_headroom()  # whatever this machine's cgroups say, read without failing
    assert headroom is None or headroom > 0


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_a_cgroup_limit_lowers_what_is_available(tmp_path, version):
    root = tmp_path / "cgroup"
    if version == "v2":
        proc = "0::/user/app\n"
        leaf, names = root / "user" / "app", ("memory.max", "memory.current", "inactive_file")
        (root / "user").mkdir(parents=True)
        (root / "user" / "memory.max").write_text("max\n")
    else:
        proc = "4:memory:/user/app\n1:cpu:/\n"
        leaf, names = root / "memory" / "user" / "app", ("memory.limit_in_bytes", "memory.usage_in_bytes",
                                                          "total_inactive_file")
    leaf.mkdir(parents=True)
    (leaf / names[0]).write_text(str(8 * 2**30))
    (leaf / names[1]).write_text(str(3 * 2**30))
    (leaf / "memory.stat").write_text(f"anon 1\n{names[2]} {2**30}\n")
    (tmp_path / "cgroup-of-self").write_text(proc)
    assert memory.cgroup_headroom(tmp_path / "cgroup-of-self", root) == 6 * 2**30


def test_sizes_and_the_override_of_what_is_available(monkeypatch):
    assert memory.parse_size("21G") == 21 * 2**30 and memory.parse_size("512MiB") == 512 * 2**20
    assert memory.parse_size("1000") == 1000
    monkeypatch.setenv(memory.AVAILABLE_ENV, "3G")
    assert memory.available_memory() == 3 * 2**30


def test_the_refusal_says_how_much_is_needed_and_what_to_do(base_model):
    told = memory.refusal(base_model, "run again with --ignore-memory to try anyway", available=4 * 10**8, gpu=False)
    assert told is not None
    assert "needs about 1.0 GB of memory to personalize on the CPU; this machine has 0.4 GB available" in told
    assert "Use a GPU with at least 1.8 GB" in told and "close other programs" in told and "--ignore-memory" in told
    assert memory.refusal(base_model, "-", available=64 * 10**9, gpu=False) is None
    assert memory.refusal(base_model, "-", available=2 * 10**9, gpu=True) is not None  # the host copy on CUDA


def test_a_base_float32_does_not_fit_trains_in_float16_instead_of_being_refused(base_model):
    """SmolLM2-135M needs about 2.3 GB in float32 and about 1.0 GB in float16 (the
    measurements in docs/design.md, "Memory")."""
    estimate = memory.estimate(memory.shape_of(base_model))
    assert estimate.cpu_half < 0.6 * estimate.cpu
    spared = math.ceil(estimate.cpu * memory.FLOAT32_HEADROOM)
    assert memory.training_form(base_model, available=spared, gpu=False) == "float32"
    assert memory.training_form(base_model, available=estimate.cpu, gpu=False) == "float16"  # nothing to spare
    between = (estimate.cpu + estimate.cpu_half) // 2
    assert memory.training_form(base_model, available=between, gpu=False) == "float16"
    assert memory.training_form(base_model, available=between, gpu=True) == "float32"  # CUDA keeps float32
    assert memory.refusal(base_model, "-", available=between, gpu=False) is None
    assert memory.refusal(base_model, "-", available=estimate.cpu_half - 1, gpu=False) is not None


def test_personalize_refuses_before_any_worker_and_the_override_goes_on(home, monkeypatch):
    from tunechat.core import paths

    assert run_cli("pairs", "add", "Where do I live?", "You live in Oslo.").returncode == 0
    assert run_cli("pairs", "add", "gym membership", "You're a member of the gym on Gloucester Road.").returncode == 0
    monkeypatch.setenv(memory.AVAILABLE_ENV, "400M")
    refused = run_cli("personalize", "--max-steps", "1")
    assert refused.returncode == EXIT_NOT_ENOUGH_MEMORY, refused.stderr
    assert "needs about 1.0 GB of memory to personalize" in refused.stderr and "0.4 GB available" in refused.stderr
    assert "--ignore-memory" in refused.stderr and "Traceback" not in refused.stderr
    assert not list(paths.jobs_dir().glob("job-*"))  # no job folder, no worker
    # Past the memory check, the next one speaks: the pairs' problems (no training here).
    going_on = run_cli("personalize", "--max-steps", "1", "--ignore-memory")
    assert going_on.returncode == EXIT_DATA_PROBLEMS, going_on.stderr


def test_the_worker_checks_again_unless_told_not_to(base_model, monkeypatch):
    from tunechat.personalize import phases
    from tunechat.personalize.spec import JobSpec
    from tunechat.personalize.worker import told

    spec = JobSpec(pairs=[("q", "a")], base_path=base_model, ignore_memory=True)
    assert JobSpec.from_dict(spec.to_dict()).ignore_memory
    monkeypatch.setenv(memory.AVAILABLE_ENV, "400M")
    with pytest.raises(memory.NotEnoughMemory) as caught:
        phases.require_memory(base_model, "cpu")
    assert told(caught.value) == {"message": str(caught.value), "code": EXIT_NOT_ENOUGH_MEMORY}
    monkeypatch.setenv(memory.AVAILABLE_ENV, "64G")
    phases.require_memory(base_model, "cpu")


async def test_f6_says_the_base_is_too_large_and_starts_nothing_unless_asked(store, monkeypatch):
    from tests.helpers import wait_until
    from tunechat.core.engine import GenerationSettings
    from tunechat.tui.app import TunechatApp
    from tunechat.tui.screens.confirm import Confirm
    from tunechat.tui.screens.pairs import PairsScreen

    store.add_pair("Where do I live?", "You live in Oslo.")
    store.add_pair("gym membership", "You're a member of the gym on Gloucester Road.")
    monkeypatch.setenv(memory.AVAILABLE_ENV, "400M")
    app = TunechatApp(store=store, settings=GenerationSettings(temperature=0.0, max_tokens=8))
    async with app.run_test(size=(110, 40)) as pilot:
        await pilot.press("f6")
        await wait_until(lambda: isinstance(app.screen, Confirm), pilot)
        said = str(app.screen.query_one(".dialog-text").render())
        assert "needs about 1.0 GB of memory" in said and "Try anyway" in said
        await pilot.press("n")
        await pilot.pause()
        assert app.screen is app.chat_screen and app.personalize_run is None
        await pilot.press("f6")
        await wait_until(lambda: isinstance(app.screen, Confirm), pilot)
        await pilot.press("y")  # try anyway: the pairs' problems are said next
        await wait_until(lambda: isinstance(app.screen, Confirm) and "asks nothing" in str(
            app.screen.query_one(".dialog-text").render()), pilot)
        await pilot.press("n")
        await wait_until(lambda: isinstance(app.screen, PairsScreen), pilot)
        assert app.personalize_run is None


def test_the_worker_check_on_cuda_reads_the_device_memory(base_model):
    need = memory.estimate(memory.shape_of(base_model)).cuda_device
    told = memory.device_refusal(base_model, need - 1, 80 * 10**9, "tunechat personalize --ignore-memory")
    assert told is not None and "of GPU memory" in told and "free of 80 GB" in told and "--ignore-memory" in told
    assert memory.device_refusal(base_model, need, 80 * 10**9, "-") is None


async def test_try_anyway_hands_the_override_to_the_run(store, monkeypatch):
    from tests.helpers import wait_until
    from tunechat.core.engine import GenerationSettings
    from tunechat.tui.app import TunechatApp
    from tunechat.tui.screens import personalize as screen_mod
    from tunechat.tui.screens.confirm import Confirm

    asked: list[bool] = []

    def job(store, recipe=None, ignore_memory=False):  # stands in for the worker: none starts
        asked.append(ignore_memory)
        raise ValueError("stopped here")

    monkeypatch.setattr(screen_mod, "PersonalizeJob", job)
    store.add_pair("What is my name?", "Ada.")
    monkeypatch.setenv(memory.AVAILABLE_ENV, "400M")
    app = TunechatApp(store=store, settings=GenerationSettings(temperature=0.0, max_tokens=8))
    async with app.run_test(size=(110, 40)) as pilot:
        await pilot.press("f6")
        await wait_until(lambda: isinstance(app.screen, Confirm), pilot)
        await pilot.press("y")
        await wait_until(lambda: asked or isinstance(app.screen, Confirm) and "This will take" in str(
            app.screen.query_one(".dialog-text").render()), pilot)
        if not asked:  # a long-run warning came next: train anyway
            await pilot.press("y")
        await wait_until(lambda: asked, pilot)
    assert asked == [True]
