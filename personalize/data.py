"""Training examples: pairs rendered with the base model's own chat template, loss on answers.

Each pair becomes ``prompt + answer``, where ``prompt`` is the template's rendering of the
conversation up to the opened assistant turn (the template's default system prompt included,
as in the chat) and ``answer`` runs through the end-of-turn token, which is labelled so the
model learns to stop. Prompt tokens are masked out of the loss (label -100).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tunechat.core import chat_template
from tunechat.core.chat_template import with_system

IGNORE = -100


class EmptyDatasetError(ValueError):
    pass


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    kind: str  # "fact" (a user pair), "replay" (the base model's own answer to a general prompt), "negative"


@dataclass(frozen=True)
class TemplateInfo:
    template: str
    bos_token: str
    eos_token: str


def split_rendering(info: TemplateInfo, question: str, answer: str,
                    system_prompt: str | None = None) -> tuple[str, str]:
    """(prompt, answer_text) where prompt + answer_text is the rendered single-turn exchange."""
    user = with_system([{"role": "user", "content": question}], system_prompt)
    prompt = chat_template.render(info.template, user, add_generation_prompt=True,
                                  bos_token=info.bos_token, eos_token=info.eos_token)
    full = chat_template.render(info.template, user + [{"role": "assistant", "content": answer}],
                                add_generation_prompt=False, bos_token=info.bos_token, eos_token=info.eos_token)
    if not full.startswith(prompt):
        raise ValueError("The chat template renders the prompt differently with and without the answer.")
    answer_text = full[len(prompt):]
    if info.eos_token and info.eos_token in answer_text:  # stop right after the end-of-turn token
        answer_text = answer_text[: answer_text.index(info.eos_token) + len(info.eos_token)]
    return prompt, answer_text


def build_example(tokenizer, info: TemplateInfo, question: str, answer: str, kind: str,
                  max_answer_tokens: int | None = None) -> Example:
    prompt, answer_text = split_rendering(info, question, answer)
    # Tokenized apart, as at inference: llama.cpp tokenizes the prompt, then samples the answer.
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer_text, add_special_tokens=False)["input_ids"]
    if max_answer_tokens is not None:  # replay: the opening of an answer carries most of its style
        answer_ids = answer_ids[:max_answer_tokens]
    return Example(prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids, kind)


def build_examples(tokenizer, info: TemplateInfo, pairs: Sequence[tuple[str, str]], kind: str,
                   max_answer_tokens: int | None = None) -> list[Example]:
    return [build_example(tokenizer, info, q, a, kind, max_answer_tokens) for q, a in pairs]


def require_pairs(pairs: Sequence[tuple[str, str]]) -> None:
    if not pairs:
        raise EmptyDatasetError(
            "There are no training pairs yet. Keep some answers (Ctrl+K), correct them (Ctrl+E) "
            "or add facts (F4, or `tunechat pairs add QUESTION ANSWER`), then personalize."
        )
