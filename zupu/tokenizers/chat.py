"""Chat templates: a conversation (a list of {"role", "content"} messages) rendered to one string by a Jinja
template, as Hugging Face tokenizers' `chat_template` does (`apply_chat_template`), and the span of each
assistant reply, on which supervised fine-tuning takes its loss."""

from __future__ import annotations

from collections.abc import Sequence

import jinja2
import jinja2.sandbox

from zupu.errors import ZupuError

# "### user:\n...\n### assistant:\n...<eos>": plain text, so that a character-level model can learn it
PLAIN_TEMPLATE = ("{% for m in messages %}### {{ m['role'] }}:\n{{ m['content'] }}"
                  "{% if m['role'] == 'assistant' %}{{ eos_token }}{% else %}\n{% endif %}{% endfor %}"
                  "{% if add_generation_prompt %}### assistant:\n{% endif %}")


class ChatTemplateError(ZupuError):
    """A chat template that does not parse or does not render the conversation given."""


def render(template: str, messages: Sequence[dict], add_generation_prompt: bool = False, eos_token: str = "") -> str:
    """The conversation as one string; any failure of the template is one ChatTemplateError naming it."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    try:
        return env.from_string(template).render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                                eos_token=eos_token)
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"the chat template {template[:60]!r}... does not render these {len(messages)} "
                                f"messages: {type(e).__name__}: {e}; each message needs 'role' and 'content', "
                                f"and the template must be valid Jinja") from None


def assistant_span(template: str, messages: Sequence[dict], eos_token: str) -> tuple[str, int]:
    """(the whole conversation rendered, where the last assistant reply begins): the text before that index is
    the prompt, as rendered with a generation prompt; the reply runs to the end, its end-of-turn included."""
    if not messages or messages[-1].get("role") != "assistant":
        raise ChatTemplateError("a training conversation must end with an assistant message")
    prompt = render(template, messages[:-1], add_generation_prompt=True, eos_token=eos_token)
    full = render(template, messages, eos_token=eos_token)
    if not full.startswith(prompt):
        raise ChatTemplateError("the chat template renders the conversation without the last reply as something "
                                "other than a prefix of the whole, so the reply's tokens cannot be found")
    return full, len(prompt)
