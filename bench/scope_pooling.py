"""Which representation the scope probe reads, chosen on its bank alone (no persona): for each
pooling of the embedded model's last hidden state (mean or last token; the message alone or as
a user turn in the chat template), the probe is fitted on 4 of 5 folds of the bank and the
built-in general prompts and scored on the fifth; printed: the share of personal messages found
and of general messages taken, at a few thresholds.

    python bench/scope_pooling.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import llama_cpp  # noqa: E402

from tunechat.core import scope_probe  # noqa: E402
from tunechat.core.engine import _without_extra_buffer_types  # noqa: E402
from tunechat.core.registry import embedded_model_path  # noqa: E402
from tunechat.personalize.general import general_prompts  # noqa: E402

POOLING = {"mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN, "last": llama_cpp.LLAMA_POOLING_TYPE_LAST}


def main() -> int:
    personal, general = scope_probe.bank()
    texts = personal + general + general_prompts()
    y = np.r_[np.ones(len(personal)), np.zeros(len(texts) - len(personal))]
    for pooling, templated in (("mean", False), ("last", False), ("mean", True), ("last", True)):
        with _without_extra_buffer_types():
            llm = llama_cpp.Llama(str(embedded_model_path()), embedding=True, n_ctx=512, verbose=False,
                                  pooling_type=POOLING[pooling])
        shown = [f"<|im_start|>user\n{t}<|im_end|>\n<|im_start|>assistant\n" if templated else t for t in texts]
        x = np.stack([np.asarray(llm.embed(t)) for t in shown])
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        fold = np.random.default_rng(0).integers(0, scope_probe.FOLDS, len(x))
        scores = np.zeros(len(x))
        for k in range(scope_probe.FOLDS):
            held = fold == k
            scores[held] = scope_probe.fit(x[~held], y[~held], np.ones(int((~held).sum()))).scores(x[held])
        for t in (0.0, 1.0, 1.5, 2.0):
            print(f"{pooling:4} {'template' if templated else 'message ':8} threshold {t:3}: personal found "
                  f"{(scores[y == 1] > t).mean():.2f}, general taken {(scores[y == 0] > t).mean():.3f}")
        llm.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
