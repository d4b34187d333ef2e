"""Chat templates: a model's own Jinja template turns a conversation into the one string it was trained on.

    [{"role": "system", "content": ...}, {"role": "user", ...}, ...]  ->  "<|im_start|>system\\n...<|im_end|>\\n..."

Rendered as transformers' `apply_chat_template` renders it (a sandboxed Jinja environment with
`trim_blocks` and `lstrip_blocks`, `raise_exception` and a `tojson` that does not escape HTML), so the
model sees exactly what it saw in fine-tuning. Templates are code from the model's publisher: the sandbox
keeps them from reaching anything but the messages. `assistant_span` finds the last reply in a rendered
conversation, where supervised fine-tuning takes its loss.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from zupu.tokenizers.char import TokenizerError

ROLES = ("system", "user", "assistant")

# "### user:\n...\n### assistant:\n...<eos>": plain text, so that a character-level model can learn it
# (the blank line after `else` is trim_blocks': it eats the first newline after a block tag)
PLAIN_TEMPLATE = ("{% for m in messages %}### {{ m['role'] }}:\n{{ m['content'] }}"
                  "{% if m['role'] == 'assistant' %}{{ eos_token }}{% else %}\n\n{% endif %}{% endfor %}"
                  "{% if add_generation_prompt %}### assistant:\n{% endif %}")


class ChatTemplateError(TokenizerError):
    """A chat template that does not parse or does not render the conversation given."""


@lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda f: datetime.now().strftime(f))
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ChatTemplateError(f"the chat template {template[:60]!r}... is not valid Jinja: "
                                f"TemplateSyntaxError: {e}") from None


def check_messages(messages: Sequence[dict[str, Any]]) -> None:
    """Every message a {"role": system|user|assistant, "content": str}; else a ChatTemplateError naming it."""
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ChatTemplateError(f"the chat template does not render message {i}: it must be "
                                    f"{{'role': one of {', '.join(ROLES)}, 'content': text}}; got {m!r}")


def render(template: str, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True,
           **special: Any) -> str:
    """The conversation as the template writes it; `add_generation_prompt` opens the assistant's turn."""
    import jinja2

    check_messages(messages)
    try:
        return _compile(template).render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                         **special)
    except jinja2.exceptions.TemplateError as e:
        raise ChatTemplateError(f"the chat template refused this conversation: {e}") from None


def assistant_span(template: str, messages: Sequence[dict[str, Any]], eos_token: str) -> tuple[str, int]:
    """(the whole conversation rendered, where the last assistant reply begins): the text before that index is
    the prompt, as rendered with a generation prompt; the reply runs to the end, its end-of-turn included."""
    if not messages or messages[-1].get("role") != "assistant":
        raise ChatTemplateError("a training conversation must end with an assistant message")
    prompt = render(template, messages[:-1], add_generation_prompt=True, eos_token=eos_token)
    full = render(template, messages, add_generation_prompt=False, eos_token=eos_token)
    if not full.startswith(prompt):
        raise ChatTemplateError("the chat template renders the conversation without the last reply as something "
                                "other than a prefix of the whole, so the reply's tokens cannot be found")
    return full, len(prompt)
