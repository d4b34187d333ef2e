"""zupu.sampling: sampled generation draws the very tokens `transformers` draws from the same seed (temperature,
top-k and top-p filters equal to its logits warpers)."""

import pytest
import torch
from reference import need

import zupu
from zupu.sampling import generate

transformers = need("transformers")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=101, n_positions=64, n_embd=48, n_layer=2, n_head=4, bos_token_id=None, eos_token_id=None)).eval()
    path = tmp_path_factory.mktemp("hf")
    hf.save_pretrained(path)
    return zupu.from_pretrained(path), hf


@pytest.mark.parametrize("options", [dict(temperature=1.0, top_k=0, top_p=1.0), dict(temperature=0.7, top_k=12),
                                     dict(temperature=1.3, top_k=0, top_p=0.8),
                                     dict(temperature=0.9, top_k=30, top_p=0.9)])
def test_sampled_tokens_equal_transformers(pair, options):
    ours, hf = pair
    prompt = torch.randint(0, 101, (2, 5), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(7)  # both draw from the global generator, one torch.multinomial per step
    theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, max_new_tokens=24,
                         min_new_tokens=24, pad_token_id=0, **options)[:, 5:]
    torch.manual_seed(7)
    top_k = options.get("top_k") or None  # transformers' 0 is no top-k filter, ours is None
    got = torch.stack(list(generate(ours, prompt, 24, temperature=options["temperature"], top_k=top_k,
                                    top_p=options.get("top_p"))), 1)
    assert torch.equal(got, theirs)
