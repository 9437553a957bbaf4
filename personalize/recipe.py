"""Training recipes: the knobs of a personalization run, named so benchmarks can compare them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Recipe:
    name: str
    rank: int = 16
    alpha: int = 32
    target_modules: tuple[str, ...] = ALL_LINEAR
    top_layers: int | None = 10  # LoRA on the top N decoder layers only (None: all); halves step time
    lr: float = 1e-3
    average: float = 0.0  # keep an exponential moving average of the adapter (this decay) and use it, not the last step's
    warmup_steps: int = 0  # learning rate ramps up linearly over the first N steps (Adam's first steps are full-size)
    max_steps: int = 40
    min_steps: int = 6
    fact_batch: int = 16
    replay_batch: int = 0  # general prompts with the base model's own answers, per step
    replay_answer_tokens: int = 24  # replayed answers are cut to their first N tokens
    replay_weight: float = 1.0
    replay_priority: float = 0.0  # share of each replay batch given to the examples that drifted most (train.choose_replay)
    neighbour_replay: int = 0  # of each replay batch, drawn from the prompts nearest the facts (tunechat.personalize.neighbours)
    neighbours_per_fact: int = 3  # how many nearest general prompts each taught fact contributes
    kl_weight: float = 0.0  # KL(base || tuned) on the replay answers' tokens
    paraphrases: int = 0  # up to N base-model rewordings per taught question, one form per fact per step
    wording_priority: bool = False  # ask each fact in the wording it knew worst when last asked (train.pick_wording)
    # Early stopping on held-out rewordings: the last N rewordings of each fact are not trained;
    # the greedy stop confirms on the user's wording and those instead of every trained wording.
    holdout_stop: int = 0
    stop_loss: float = 0.05  # stop_when="loss": stop once every taught answer's mean token loss is below this
    # "loss": on stop_loss; "greedy": once greedy decoding gives every taught answer exactly, in every wording
    stop_when: str = "loss"
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def with_(self, **changes) -> "Recipe":
        return replace(self, **changes)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d


RECIPES: dict[str, Recipe] = {
    # Plain LoRA on the pairs alone, every layer: the FIELD-NOTES baseline that forgets.
    "naive": Recipe("naive", top_layers=None),
    # The base model's own answers to built-in general prompts trained alongside the facts,
    # LoRA on the top 10 layers only (half the step time).
    "replay-top10": Recipe("replay-top10", replay_batch=6),
    # The same plus a KL term pulling the tuned distribution on those answers to the base's.
    "replay-kl-top10": Recipe("replay-kl-top10", replay_batch=6, kl_weight=1.0),
    # Replay + KL with LoRA on every layer.
    "replay-kl": Recipe("replay-kl", replay_batch=6, kl_weight=1.0, top_layers=None),
    # replay-kl with each question also asked in up to 4 rewordings written by the base model
    # (personalize/paraphrase.py).
    "replay-kl-para-light": Recipe("replay-kl-para-light", replay_batch=6, kl_weight=1.0, top_layers=None,
                                   paraphrases=4),
    # Rewordings, with more replay (10 general answers per step) and twice the KL weight to
    # hold the rest of the model in place (the default until the greedy stop beat it).
    "replay-kl-para": Recipe("replay-kl-para", replay_batch=10, kl_weight=2.0, top_layers=None, paraphrases=4),
    # replay-kl-para trained until greedy decoding gives every taught answer in every wording
    # (not until a loss threshold on a random wording per fact): the default, chosen by
    # bench/quality.py on three personas (README).
    "replay-kl-para-greedy": Recipe("replay-kl-para-greedy", replay_batch=10, kl_weight=2.0, top_layers=None,
                                    paraphrases=4, stop_when="greedy"),
    # replay-kl-para-greedy with 4 of each step's 10 replayed prompts drawn from those nearest
    # the taught facts (tunechat.personalize.neighbours): replay where a fact bleeds into general answers.
    "replay-kl-para-near": Recipe("replay-kl-para-near", replay_batch=10, kl_weight=2.0, top_layers=None,
                                  paraphrases=4, stop_when="greedy", neighbour_replay=4),
}
DEFAULT_RECIPE = "replay-kl-para-greedy"
# Shift+F6 in the chat: about half the default's time (no rewordings, fewer steps), at lower
# generalization to reworded questions (README, "Remember without forgetting").
QUICK_RECIPE = "replay-kl"


def get_recipe(name: str | None) -> Recipe:
    key = name or DEFAULT_RECIPE
    if key not in RECIPES:
        raise KeyError(f"Unknown method {key!r}; choose one of {', '.join(RECIPES)}.")
    return RECIPES[key]
