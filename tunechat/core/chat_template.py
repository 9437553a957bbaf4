"""Render conversations with a model's own Jinja chat template.

The chat (llama.cpp) and the trainer (transformers) both render through this one function,
so the text a personal model is trained on is exactly the text it will see when chatting.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import lru_cache

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
from jinja2.ext import Extension
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


def _tojson(value: object, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # transformers' filter: plain json.dumps, no HTML escaping (jinja's own escapes <, >, &, ')
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _GenerationTag(Extension):
    """``{% generation %}...{% endgeneration %}``: transformers marks the assistant's tokens with
    it; rendering keeps the body as it is."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Callable[[], str]) -> str:
        return caller()


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    """The template in the environment transformers' ``apply_chat_template`` gives it (same
    options, extensions, filters and globals), so both render the same text."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = dict
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"The chat template cannot be read (line {exc.lineno}: {exc.message}).") from None


def render(
    template: str,
    messages: Sequence[ChatMessage],
    *,
    add_generation_prompt: bool,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    """Render ``messages`` as the model expects them, optionally opening the assistant turn.
    No tools or documents are passed (None, as transformers passes them)."""
    return _compile(template).render(
        messages=[dict(m) for m in messages],
        tools=None,
        documents=None,
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token,
        eos_token=eos_token,
    )


# Conversations every chat template must render: what the chat and the trainer send.
_PROBES: tuple[tuple[ChatMessage, ...], ...] = (
    ({"role": "user", "content": "PROBE-Q1"},),
    ({"role": "system", "content": "PROBE-S"}, {"role": "user", "content": "PROBE-Q1"}),
    ({"role": "user", "content": "PROBE-Q1"}, {"role": "assistant", "content": "PROBE-A1"},
     {"role": "user", "content": "PROBE-Q2"}),
)


def check_template(template: str, bos_token: str = "", eos_token: str = "") -> None:
    """Raise TemplateError unless ``render`` reproduces ``template`` as transformers would: it
    compiles here, and renders the conversations the chat sends (a user turn, after a system
    prompt, after an earlier exchange), each message's text in the output, with nothing it
    needs missing. A template may refuse a system prompt by raise_exception (Gemma's does);
    it must render the others."""
    _compile(template)
    rendered = 0
    for probe in _PROBES:
        for add_generation_prompt in (True, False):
            try:
                text = render(template, probe, add_generation_prompt=add_generation_prompt,
                              bos_token=bos_token, eos_token=eos_token)
            except TemplateError:
                if any(m["role"] == "system" for m in probe):
                    continue  # the template's own refusal of a system prompt
                raise TemplateError("The chat template refuses a plain conversation of user and assistant "
                                    "turns.") from None
            except Exception as exc:  # whatever the template hits, the chat could not render it
                raise TemplateError(f"The chat template needs something the chat cannot provide "
                                    f"({type(exc).__name__}: {exc}).") from None
            missing = [m["content"] for m in probe if m["content"] not in text]
            if missing:
                raise TemplateError(f"The chat template drops message text ({', '.join(missing)} not in what it "
                                    "renders): it expects messages in another form than plain text.")
            rendered += 1
    if rendered == 0:
        raise TemplateError("The chat template renders none of the conversations the chat sends.")


def with_system(messages: Sequence[ChatMessage], system_prompt: str | None) -> list[ChatMessage]:
    """Prepend the system prompt when one is set; otherwise leave the template's default."""
    out = [m for m in messages if m["role"] != "system"]
    if system_prompt and system_prompt.strip():
        out.insert(0, {"role": "system", "content": system_prompt.strip()})
    return out
