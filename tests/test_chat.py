"""zupu chat: the context window drops the oldest turns (never the system prompt) and says so; replies stop
at the end-of-turn token. The tokenizer and chat template are SmolLM2's real ones; the model is a small
random Llama over the same vocabulary, so the window logic is tested in seconds."""

import dataclasses

import pytest
import torch

from zupu.apps.chat import Chat
from zupu.errors import SettingError
from zupu.models.llama import PRESETS, Llama


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer):
    return smollm2_tokenizer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Llama(dataclasses.replace(PRESETS["tiny"], vocab_size=49152, max_position_embeddings=256)).eval()


def test_window_drops_oldest_turns_but_keeps_the_system_prompt(model, tokenizer):
    chat = Chat(model, tokenizer, system="Answer in one word.", context=80, max_new_tokens=10)
    assert chat.ask("What is the capital of France?") == 0
    chat.turns.append({"role": "assistant", "content": "Paris."})
    assert chat.ask("And the capital of Italy, the one with the Colosseum?") == 0
    chat.turns.append({"role": "assistant", "content": "Rome."})
    used = len(chat.prompt_ids())
    dropped = chat.ask("And Spain's, the city on the plateau in the middle of the country?")
    assert dropped == 2  # the first question and its answer, together
    assert chat.turns[0]["content"].startswith("And the capital of Italy")
    assert chat.messages()[0] == {"role": "system", "content": "Answer in one word."}
    assert len(chat.prompt_ids()) + 10 <= 80 < used + 10 + 25
    with pytest.raises(SettingError, match="exceeds the 80-token window"):
        Chat(model, tokenizer, context=80, max_new_tokens=10).ask("word " * 200)


class Scripted:
    """A stand-in model whose generate streams fixed tokens (ending in the end-of-turn token) then noise."""

    def __init__(self, ids):
        self.ids = ids

    def generate(self, input_ids, max_new_tokens, **kw):
        for i in [*self.ids, 999, 999][:max_new_tokens]:
            yield torch.tensor([i])


def test_reply_streams_until_end_of_turn_and_joins_the_conversation(model, tokenizer):
    said = tokenizer.encode("Bonjour !")
    chat = Chat(Scripted([*said, tokenizer.eos_token_id]), tokenizer, context=200, max_new_tokens=12)
    chat.ask("Hi")
    assert "".join(chat.reply(temperature=0)) == "Bonjour !"
    assert chat.turns[-1] == {"role": "assistant", "content": "Bonjour !"}
    assert tokenizer.apply_chat_template(chat.messages(), False).endswith("Bonjour !<|im_end|>\n")
    chat = Chat(model, tokenizer, context=200, max_new_tokens=5)  # the real loop: stops at the budget
    chat.ask("Hi")
    pieces = list(chat.reply(temperature=0))
    assert chat.turns[-1]["content"] == "".join(pieces)


def test_prompt_arms_score_each_label_as_a_plain_forward_would(model, tokenizer):
    """The recipe runs the prompts' shared opening once and rewinds its KV cache for each prompt: the label
    log-probabilities must equal log_softmax of one uncached forward over each whole prompt."""
    from zupu.recipes import chat as recipe

    prompts = [tokenizer.apply_chat_template(recipe.messages(arm, name, recipe.shots(1, 0)), True)
               for arm in recipe.ARMS for name in ("dog face", "red apple", "bullet train")]
    got = recipe.label_scores(model, tokenizer, prompts)  # (9, 4)
    for row, prompt in zip(got, prompts, strict=True):
        with torch.no_grad():
            logp = model(torch.tensor([tokenizer.encode(prompt)]))[0, -1].log_softmax(-1)
        want = [logp[sorted({tokenizer.encode(w)[0] for w in (label, label.capitalize())})].logsumexp(0)
                for label in recipe.LABELS]
        assert torch.allclose(row, torch.stack(want), atol=1e-5)


def test_the_answer_key_is_balanced_and_apart_from_the_shots():
    from zupu.recipes import chat as recipe

    pool, key = recipe.emoji_task()
    assert len(key) == 266 and not set(pool) & set(key)
    assert recipe.answer_key(40) == recipe.answer_key(40) and len(recipe.answer_key(40)) == 40
    assert [k for _, k in recipe.answer_key(40)].count("plant") == 10
    assert ("dog face", "animal") in pool + key and ("automobile", "vehicle") in pool + key
    assert recipe.shots(2, 0) != recipe.shots(2, 1) and {x for s in (0, 1) for x in recipe.shots(2, s)} <= set(pool)


def test_the_window_figure_counts_every_token_of_the_prompt(model, tokenizer):
    from zupu.recipes import chat as recipe

    chat = Chat(model, tokenizer, system="Be brief.", context=200, max_new_tokens=5)
    chat.ask("Hi")
    chat.turns.append({"role": "assistant", "content": "Hello there"})
    chat.ask("How are you?")
    held = recipe.message_tokens(chat)
    assert [r for r, _ in held] == ["system", "user", "assistant", "user"]
    assert sum(n for _, n in held) == len(tokenizer.encode(tokenizer.apply_chat_template(chat.messages(), False)))


@pytest.mark.parametrize("command", ["chat", "serve"])
def test_quantize_is_opt_in_and_checked(command, tmp_path, capsys):
    from zupu.cli import main

    assert main([command, str(tmp_path / "m.gguf"), "--quantize", "int8"]) == 2
    assert "quantize='int8' is not a GGUF load option" in capsys.readouterr().err
    assert main([command, str(tmp_path / "m.gguf")]) == 2  # without it the exact path reads the (missing) file
    err = capsys.readouterr().err
    assert "m.gguf is missing" in err
