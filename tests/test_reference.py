"""The embedded model's KL references ship with the package: every built-in replay example's,
for that base only, and what the base model itself gives (personalize/reference.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tunechat.personalize.reference import SHIPPED_FILE, ReferenceCache, shipped_for  # noqa: E402


@pytest.fixture(scope="module")
def prepared(base_model):
    """A job on the embedded model with its examples rendered as training renders them."""
    from tunechat.personalize.shipped_references import replay_job

    return replay_job(base_model)


def test_every_replay_example_of_the_embedded_model_has_its_shipped_reference(prepared, tmp_path):
    job, loaded = prepared
    assert shipped_for(SHIPPED_FILE) == job.fingerprint
    reference = ReferenceCache(tmp_path / "cache.safetensors", job.fingerprint)
    assert len(loaded.replay) > 50 and all(reference.get(e) is not None for e in loaded.replay)
    assert len(ReferenceCache(tmp_path / "cache.safetensors", "0" * 64)) == 0  # another base: none of them
    # The user's cache file keeps what it computed, not the shipped references again.
    reference.put(loaded.facts[0][0], torch.randn(3, loaded.model.config.vocab_size))
    reference.save()
    assert len(ReferenceCache(tmp_path / "cache.safetensors")) == 1


def test_a_sample_of_the_shipped_references_is_what_the_base_model_gives(prepared):
    """Each example alone through the base model (adapter off): the same top tokens and, to the
    float16 the file stores, the same log-probabilities."""
    from tunechat.personalize.data import IGNORE

    job, loaded = prepared
    shipped = ReferenceCache(None, job.fingerprint)
    model = loaded.model
    for example in [loaded.replay[0], loaded.replay[len(loaded.replay) // 2], loaded.replay[-1]]:
        ids = torch.tensor([example.input_ids])
        with torch.no_grad(), model.disable_adapter():
            logits = model(input_ids=ids).logits[0]
        rows = [t for t, label in enumerate(example.labels[1:]) if label != IGNORE]
        logprobs = torch.log_softmax(logits[rows].float(), -1)
        idx, lp = shipped.get(example)
        assert idx.shape == (len(rows), 64)
        assert torch.equal(idx[:, 0], logprobs.argmax(-1))  # each position's top token
        torch.testing.assert_close(logprobs.gather(-1, idx), lp, atol=2e-2, rtol=2e-3)
