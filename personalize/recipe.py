"""Training recipes: the knobs of a personalization run, named so benchmarks can compare them.

Every recipe puts LoRA adapters on every linear projection of every decoder layer
(``TARGET_MODULES``) and trains the taught pairs alongside replay of the base model's own
answers to general prompts, with a KL term holding the tuned distribution on those answers to
the base's. The default also trains negatives (tunechat.personalize.negatives): untaught
siblings of the taught questions, answered that they were not told.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# "loss": stop once every taught answer's mean token loss is below ``stop_loss``;
# "greedy": once greedy decoding gives every taught answer exactly, in every wording.
StopWhen = Literal["loss", "greedy"]


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    rank: int = 16
    alpha: int = 32
    lr: float = 1e-3
    max_steps: int = 40
    min_steps: int = 6
    fact_batch: int = 16
    replay_batch: int = 6  # general prompts with the base model's own answers, per step
    replay_answer_tokens: int = 24  # replayed answers are cut to their first N tokens
    replay_weight: float = 1.0
    kl_weight: float = 1.0  # KL(base || tuned) on the replay answers' tokens
    paraphrases: int = 0  # up to N base-model rewordings per taught question, one form per fact per step
    wrapped: int = 0  # other forms of each taught question: casual, then in frames (personalize/frames.py)
    wrapped_negatives: int = 0  # the same, for each negative
    negatives: int = 0  # untold personal questions per step, answered "You haven't told me ... yet."
    stop_loss: float = 0.05
    stop_when: StopWhen = "loss"
    seed: int = 0

    def with_(self, **changes: Any) -> Recipe:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe("replay-kl-para-greedy",
               "each question also in up to 4 rewordings by the base model and 3 wrapped forms (casual, "
               "in frames such as \"quick question: ...\"), more replay and KL, 4 untaught sibling "
               "questions a step answered \"You haven't told me ... yet.\" (in 2 wrapped forms too), "
               "trained until greedy decoding gives every taught answer in every wording (the default)",
               replay_batch=10, kl_weight=2.0, paraphrases=4, wrapped=3, wrapped_negatives=2, negatives=4,
               stop_when="greedy"),
        Recipe("replay-kl",
               "the pairs as written, with replay and KL, trained to a loss threshold: under half "
               "the default's time, weaker on reworded questions (quick, Shift+F6)"),
    )
}
DEFAULT_RECIPE = "replay-kl-para-greedy"
QUICK_RECIPE = "replay-kl"


def get_recipe(name: str | None) -> Recipe:
    key = name or DEFAULT_RECIPE
    if key not in RECIPES:
        raise KeyError(f"Unknown method {key!r}; choose one of {', '.join(RECIPES)}.")
    return RECIPES[key]
