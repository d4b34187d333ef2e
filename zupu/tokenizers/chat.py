"""Chat templates: a model's own Jinja template turns a conversation into the one string it was trained on.

    [{"role": "system", "content": ...}, {"role": "user", ...}, ...]  ->  "<|im_start|>system\\n...<|im_end|>\\n..."

Rendered as transformers' `apply_chat_template` renders it (a sandboxed Jinja environment with
`trim_blocks` and `lstrip_blocks`, `raise_exception` and a `tojson` that does not escape HTML), so the
model sees exactly what it saw in fine-tuning. Templates are code from the model's publisher: the sandbox
keeps them from reaching anything but the messages.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from zupu.tokenizers.char import TokenizerError

ROLES = ("system", "user", "assistant")


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
        raise TokenizerError(f"the chat template is not valid Jinja: {e}") from None


def check_messages(messages: list[dict[str, Any]]) -> None:
    """Every message a {"role": system|user|assistant, "content": str}; else a TokenizerError naming it."""
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise TokenizerError(f"message {i} must be {{'role': one of {', '.join(ROLES)}, 'content': text}}; "
                                 f"got {m!r}")


def render(template: str, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
           **special: Any) -> str:
    """The conversation as the template writes it; `add_generation_prompt` opens the assistant's turn."""
    import jinja2

    check_messages(messages)
    try:
        return _compile(template).render(messages=messages, add_generation_prompt=add_generation_prompt, **special)
    except jinja2.exceptions.TemplateError as e:
        raise TokenizerError(f"the chat template refused this conversation: {e}") from None
