"""Render conversations with a model's own Jinja chat template.

The chat (llama.cpp) and the trainer (transformers) both render through this one function,
so the text a personal model is trained on is exactly the text it will see when chatting.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

ChatMessage = dict[str, str]

# Used only when a GGUF carries no template (llama-cpp-python would silently fall back to a
# llama-2 format; we prefer ChatML, which most small instruct models use).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class TemplateError(Exception):
    pass


def _raise(message: str) -> None:
    raise TemplateError(message)


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def render(
    template: str,
    messages: Sequence[ChatMessage],
    *,
    add_generation_prompt: bool,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    """Render ``messages`` as the model expects them, optionally opening the assistant turn."""
    return _compile(template).render(
        messages=list(messages),
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token,
        eos_token=eos_token,
    )


def with_system(messages: Sequence[ChatMessage], system_prompt: str | None) -> list[ChatMessage]:
    """Prepend the system prompt when one is set; otherwise leave the template's default."""
    out = [m for m in messages if m["role"] != "system"]
    if system_prompt and system_prompt.strip():
        out.insert(0, {"role": "system", "content": system_prompt.strip()})
    return out
