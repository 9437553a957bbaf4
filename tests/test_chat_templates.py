"""The chat's renderer and transformers' apply_chat_template give the same text for the
templates the supported families ship; a template the renderer cannot reproduce is refused.

(The templates carried through a GGUF and rendered by the engine: tests/test_zoo.py.)
"""

from __future__ import annotations

import pytest

from tests.zoo_templates import TEMPLATES
from tunechat.core import chat_template
from tunechat.core.chat_template import TemplateError, check_template

TOKENS = {"qwen2": ("<|im_start|>", "<|im_end|>"), "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
          "mistral": ("<s>", "</s>"), "llama2": ("<s>", "</s>"), "gemma": ("<bos>", "<eos>"),
          "phi3": ("<s>", "<|endoftext|>"), "chatml": ("", "<|im_end|>")}
ALL = {**TEMPLATES, "chatml": chat_template.CHATML_TEMPLATE}
CONVERSATIONS = [
    [{"role": "user", "content": "Où est la gare ? 東京"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": " b "}, {"role": "user", "content": "c\n"}],
]


def _transformers_render(template: str, messages, add_generation_prompt: bool, bos: str, eos: str) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                        add_generation_prompt=add_generation_prompt, bos_token=bos, eos_token=eos)
    return rendered[0]


@pytest.mark.parametrize("name", sorted(ALL))
def test_each_family_template_renders_as_in_transformers(name):
    import jinja2

    template, (bos, eos) = ALL[name], TOKENS[name]
    check_template(template, bos, eos)
    for messages in CONVERSATIONS:
        for add_generation_prompt in (True, False):
            try:
                want = _transformers_render(template, messages, add_generation_prompt, bos, eos)
            except jinja2.TemplateError:
                with pytest.raises(TemplateError):
                    chat_template.render(template, messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=bos, eos_token=eos)
                continue
            got = chat_template.render(template, messages, add_generation_prompt=add_generation_prompt,
                                       bos_token=bos, eos_token=eos)
            assert got == want, (name, messages, add_generation_prompt)


def test_transformers_only_features_render_the_same():
    """loopcontrols, the generation tag, tojson without HTML escaping, namespace."""
    template = ("{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}"
                "{% generation %}{{ m | tojson }}{% endgeneration %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}")
    messages = [{"role": "user", "content": "<b> & 'q'"}] * 3
    assert chat_template.render(template, messages, add_generation_prompt=False) == \
        _transformers_render(template, messages, False, "", "")


@pytest.mark.parametrize("template, message", [
    ("{% for m in messages %}{{ m.content }", "cannot be read"),
    ("{% for m in messages %}{{ format_tools(m) }}{% endfor %}", "needs something the chat cannot provide"),
    ("{% for m in messages %}{{ m.content[0].text }}{% endfor %}", "drops message text"),
    ("{{ raise_exception('no') }}", "refuses a plain conversation"),
    ("{% for m in messages %}{{ m.role }}{% endfor %}", "drops message text"),
])
def test_a_template_the_renderer_cannot_reproduce_is_refused(template, message):
    with pytest.raises(TemplateError, match=message):
        check_template(template)
