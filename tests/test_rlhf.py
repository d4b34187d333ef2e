"""rlhf: DPO's and the reward model's losses against trl's trainers on the same batch and weights; PPO's
pieces against the formulas of the papers on cases small enough to work by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from reference import need

from zupu.models import rlhf
from zupu.models.rlhf import RewardModel, RewardModelConfig


def _char_tokenizer():
    """A character-level HF tokenizer over printable ASCII: '~' pads, '}' ends a sequence."""
    tokenizers = need("tokenizers")
    transformers = need("transformers")
    tk = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab={chr(i): i - 32 for i in range(32, 127)},
                                                          unk_token=" "))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.Split("", "isolated")
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="~", eos_token="}")


def _hf_gpt2(seed: int):
    """A tiny HF GPT-2 with random weights, LayerNorm gains and biases included, and no dropout."""
    transformers = need("transformers")
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=95, n_positions=64, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
                                     embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=94, eos_token_id=93,
                                     bos_token_id=93)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name:
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith("weight") else 0.0))
    return model


def _as_zupu(hf_model, tmp_path, name: str):
    from zupu.hf.gpt import from_pretrained
    hf_model.save_pretrained(tmp_path / name)
    return from_pretrained(tmp_path / name).eval()


PAIRS = [{"prompt": "To be, ", "chosen": "or not", "rejected": "xq"},
         {"prompt": "Friends, Romans", "chosen": ", countrymen", "rejected": "!!"},
         {"prompt": "O", "chosen": " Romeo", "rejected": " zzzzzz"}]


def test_dpo_loss_equals_trls_dpo_trainer(tmp_path):
    trl = need("trl")
    datasets = need("datasets")
    policy = _hf_gpt2(0)
    ref = copy.deepcopy(policy)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    args = trl.DPOConfig(output_dir=str(tmp_path / "out"), beta=0.3, report_to=[], use_cpu=True,
                         per_device_train_batch_size=len(PAIRS), bf16=False)
    trainer = trl.DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=datasets.Dataset.from_list(PAIRS),
                             processing_class=_char_tokenizer())
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])  # chosen rows, then rejected
    with torch.no_grad():
        expected = trainer.compute_loss(policy.eval(), batch)

    ids, mask, completion = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    ours = [rlhf.sequence_logprobs(_as_zupu(m, tmp_path, n)(ids, mask), ids, completion)
            for m, n in ((policy, "policy"), (ref, "ref"))]
    (chosen, rejected), (ref_chosen, ref_rejected) = (x.chunk(2) for x in ours)
    loss, chosen_rewards, rejected_rewards = rlhf.dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.3)
    assert abs(expected.item() - math.log(2)) > 1e-3  # the two models differ, so the loss is not log 2
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chosen_rewards, 0.3 * (chosen - ref_chosen))


def test_reward_loss_equals_trls_reward_trainer(tmp_path):
    trl = need("trl")
    datasets = need("datasets")
    transformers = need("transformers")
    lm = _hf_gpt2(1)
    scorer = transformers.GPT2ForSequenceClassification(copy.copy(lm.config).__class__(**{**lm.config.to_dict(),
                                                                                        "num_labels": 1})).eval()
    scorer.transformer.load_state_dict(lm.transformer.state_dict())
    with torch.no_grad():
        scorer.score.weight.normal_(0, 0.5)
    args = trl.RewardConfig(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True,
                            per_device_train_batch_size=len(PAIRS), center_rewards_coefficient=None,
                            bf16=False)
    trainer = trl.RewardTrainer(model=scorer, args=args, train_dataset=datasets.Dataset.from_list(PAIRS),
                                processing_class=_char_tokenizer())
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])  # chosen rows, then rejected
    with torch.no_grad():
        expected = trainer.compute_loss(scorer, batch)

    gpt = _as_zupu(lm, tmp_path, "lm")
    model = RewardModel(RewardModelConfig(gpt.config), body=gpt).eval()
    with torch.no_grad():
        model.score.weight.copy_(scorer.score.weight)
        rewards = model(batch["input_ids"], batch["attention_mask"])
        torch.testing.assert_close(rewards, scorer(batch["input_ids"], attention_mask=batch["attention_mask"])
                                   .logits.squeeze(-1), rtol=1e-5, atol=1e-5)
    loss = rlhf.reward_loss(*rewards.chunk(2))
    assert abs(expected.item() - math.log(2)) > 1e-3
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_kl_penalty_is_on_every_token_and_the_score_on_the_last():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # three response tokens, then padding
    rewards, kl = rlhf.kl_penalised_rewards(torch.tensor([2.0]), logprobs, ref, mask, kl_coef=0.1)
    # R_t = -0.1 (logpi - logrho): -0.05, +0.1, 0; the score 2 joins the last real token; padding gets nothing
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.1, 2.0, 0.0]]))
    torch.testing.assert_close(kl, torch.tensor([-0.5]))


def test_gae_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 2.0, 5.0]])
    values = torch.tensor([[0.5, 1.0, 1.5, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    gamma, lam = 0.9, 0.5
    adv, ret = rlhf.gae(rewards, values, mask, gamma, lam)
    d2 = 2.0 - 1.5  # the last real token: no next value
    d1 = 0.0 + 0.9 * 1.5 - 1.0
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    a2, a1 = d2, d1 + gamma * lam * d2
    a0 = d0 + gamma * lam * a1
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, a2, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[a0 + 0.5, a1 + 1.0, a2 + 1.5, 0.0]]))
    # lambda = 1, gamma = 1: the advantage is the sum of the rewards to come minus the value (Monte Carlo)
    adv, _ = rlhf.gae(rewards, values, mask, 1.0, 1.0)
    torch.testing.assert_close(adv, torch.tensor([[3.0 - 0.5, 2.0 - 1.0, 2.0 - 1.5, 0.0]]))


def test_whiten_uses_the_masked_entries_only():
    x = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    out = rlhf.whiten(x, mask)
    torch.testing.assert_close(out[0, :2], torch.tensor([-1.0, 1.0]), atol=1e-6, rtol=0)  # mean 2, std 1
    torch.testing.assert_close(rlhf.whiten(x, mask, shift_mean=False)[0, :2], torch.tensor([1.0, 3.0]),
                               atol=1e-6, rtol=0)


def test_clipped_policy_loss_takes_the_pessimistic_side():
    old = torch.zeros(1, 4)
    logprobs = torch.log(torch.tensor([[1.5, 1.5, 0.5, 1.1]]))  # ratios 1.5, 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, -1.0, -2.0, 3.0]])
    loss, clipfrac = rlhf.ppo_policy_loss(logprobs, old, adv, torch.ones(1, 4), clip=0.2)
    # min(q A, clip(q) A) per token: min(1.5, 1.2) = 1.2; min(-1.5, -1.2) = -1.5; min(-1, -1.6) = -1.6; 3.3
    torch.testing.assert_close(loss, -torch.tensor((1.2 - 1.5 - 1.6 + 3.3) / 4))
    torch.testing.assert_close(clipfrac, torch.tensor(0.5))  # tokens 0 and 2 are clipped


def test_clipped_value_loss():
    old = torch.tensor([[0.0, 0.0]])
    values = torch.tensor([[1.0, 0.1]])
    returns = torch.tensor([[1.0, -1.0]])
    loss = rlhf.ppo_value_loss(values, old, returns, torch.ones(1, 2), clip=0.2)
    # token 0: max((1-1)^2, (0.2-1)^2) = 0.64; token 1: max((0.1+1)^2, (0.1+1)^2) = 1.21
    torch.testing.assert_close(loss, torch.tensor(0.5 * (0.64 + 1.21) / 2))


def test_adaptive_kl_controller():
    c = rlhf.AdaptiveKLController(0.1, target=6.0, horizon=10000)
    assert c.update(6.0, 256) == pytest.approx(0.1)  # on target: unchanged
    assert c.update(60.0, 1000) == pytest.approx(0.1 * (1 + 0.2 * 0.1))  # the error is clipped to +0.2
    assert c.update(3.0, 1000) == pytest.approx(0.1 * 1.02 * (1 - 0.02))  # KL 3 of 6: -0.5, clipped to -0.2


def test_reward_model_reads_the_last_real_token():
    torch.manual_seed(0)
    model = RewardModel(rlhf.PRESETS["tiny"]).eval()
    ids = torch.randint(0, 96, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        r = model(ids, mask)
        torch.testing.assert_close(r[1], model(ids[1:, :3])[0])
        torch.testing.assert_close(r[0], model(ids[:1])[0])


def test_a_pair_with_a_missing_side_is_one_clear_error():
    dialogue = "\n\nHuman: hello\n\nAssistant: "
    assert rlhf.preference_pair({"chosen": dialogue + "hi", "rejected": dialogue + "go away"}, "row 1") == (
        "\n\nHuman: hello", "hi", "go away")
    with pytest.raises(rlhf.PreferenceError, match="row 1: 'rejected' is missing"):
        rlhf.preference_pair({"chosen": dialogue + "hi"}, "row 1")
    with pytest.raises(rlhf.PreferenceError, match="'chosen' is missing or empty"):
        rlhf.preference_pair({"chosen": "  ", "rejected": dialogue + "hi"}, "row 2")
    with pytest.raises(rlhf.PreferenceError, match="no '.*Assistant:' turn"):
        rlhf.preference_pair({"chosen": "just text", "rejected": dialogue + "hi"}, "row 3")
    with pytest.raises(rlhf.PreferenceError, match="different dialogues"):
        rlhf.preference_pair({"chosen": dialogue + "hi", "rejected": "\n\nHuman: bye\n\nAssistant: ok"}, "row 4")


def test_gold_reward_counts_distinct_whole_real_words():
    from zupu.recipes.rlhf import gold_reward
    assert gold_reward("ng the king, the king qzx") == 2  # 'ng' and 'qzx' are cut off by the window's edges
    assert gold_reward("a the the the the b") == 1  # the same word again earns nothing
    assert gold_reward("xx qzxv blorp yy") == 0


def test_dpo_learns_a_preference():
    """DPO on a tiny GPT: after a few steps the policy ranks each chosen reply above its rejected one."""
    from zupu.models.gpt import GPT, PRESETS
    torch.manual_seed(0)
    policy, ref = GPT(PRESETS["tiny"]), GPT(PRESETS["tiny"])
    ref.load_state_dict(policy.state_dict())
    prompt = torch.randint(0, 96, (16, 6))
    chosen = torch.cat([prompt, torch.full((16, 4), 5)], 1)  # replies of token 5 are preferred to token 7
    rejected = torch.cat([prompt, torch.full((16, 4), 7)], 1)
    mask = torch.cat([torch.zeros(16, 6), torch.ones(16, 4)], 1)
    with torch.no_grad():
        ref_w, ref_l = (rlhf.sequence_logprobs(ref(x), x, mask) for x in (chosen, rejected))
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    for _ in range(20):
        loss, rw, rl = rlhf.dpo_loss(rlhf.sequence_logprobs(policy(chosen), chosen, mask),
                                     rlhf.sequence_logprobs(policy(rejected), rejected, mask), ref_w, ref_l, 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 < math.log(2)
    assert bool((rw > rl).all())


def test_a_chat_template_that_does_not_render_is_one_clear_error():
    from zupu.tokenizers import chat
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert chat.assistant_span(chat.PLAIN_TEMPLATE, conv, "|") == ("### user:\nhi\n### assistant:\nhello|", 28)
    with pytest.raises(chat.ChatTemplateError, match="does not render.*'content'"):
        chat.render(chat.PLAIN_TEMPLATE, [{"role": "user"}])
    with pytest.raises(chat.ChatTemplateError, match="TemplateSyntaxError"):
        chat.render("{% for m in messages %}", conv)
    with pytest.raises(chat.ChatTemplateError, match="end with an assistant message"):
        chat.assistant_span(chat.PLAIN_TEMPLATE, conv[:1], "|")


def test_sft_takes_the_loss_on_the_reply_and_generation_learns_to_stop():
    from zupu.models.gpt import GPT, GPTConfig
    from zupu.recipes.rlhf import EOT, SFTSettings, alpaca_conversations, sft_tensors, sft_tokenizer, stop_rate
    convs = sorted(alpaca_conversations(), key=lambda c: len(c[0]["content"]) + len(c[1]["content"]))[:4]
    x, y = sft_tensors(convs, 96)
    tok = sft_tokenizer()
    for conv, row in zip(convs, y, strict=True):  # the targets are exactly the reply and its end of turn
        assert tok.decode(row[row != -100].tolist()) == conv[1]["content"] + EOT
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_positions=96, n_embd=48, n_layer=2, n_head=4,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    s = SFTSettings(block_size=96, max_new_tokens=60, temperature=0.5)
    assert stop_rate(model, convs, s) == 0.0
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss = model.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert stop_rate(model, convs, s) == 1.0


def _tiny_llama(seed: int):
    """zupu's Llama at its tiny preset, random weights, RMSNorm gains randomised."""
    from zupu.models.llama import PRESETS, Llama
    torch.manual_seed(seed)
    model = Llama(PRESETS["tiny"]).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name or name.startswith("norm"):
                p.copy_(torch.randn_like(p) * 0.3 + 1.0)
    return model


def test_blocks_entered_and_left_midway_give_the_models_logits():
    # the reward model reads a middle block's output and DPO runs the top blocks on cached lower ones: both must
    # be Llama.forward's computation, padding included
    from zupu.recipes.rlhf import right_padded, run_blocks
    model = _tiny_llama(0)
    ids, mask = right_padded([[5, 9, 3, 7, 1], [4, 2, 8]])
    with torch.no_grad():
        low = list(run_blocks(model, model.embed_tokens(ids), mask, model.layers[:1]))[-1]
        high = list(run_blocks(model, low, mask, model.layers[1:]))[-1]
        logits = model.lm_head(model.norm(high))
        expected = model(ids, attention_mask=mask)
    torch.testing.assert_close(logits[0], expected[0])
    torch.testing.assert_close(logits[1, :3], expected[1, :3])


def test_reply_logprobs_sum_the_reply_tokens_as_trl_does():
    # the output layer runs at the reply's positions only; the sum must equal sequence_logprobs over all logits
    # (which test_dpo_loss_equals_trls_dpo_trainer holds to trl's)
    from zupu.recipes.rlhf import reply_logprobs, right_padded, run_blocks
    model = _tiny_llama(1)
    ids, mask = right_padded([[5, 9, 3, 7, 1, 6], [4, 2, 8, 11]])
    completion = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 1, 1, 0, 0, 0]])  # prompt, reply, padding
    with torch.no_grad():
        hidden = list(run_blocks(model, model.embed_tokens(ids), mask, model.layers))[-1]
        got = reply_logprobs(model, hidden, ids, completion)
        expected = rlhf.sequence_logprobs(model(ids, attention_mask=mask), ids, completion)
    torch.testing.assert_close(got, expected)


def test_hh_pairs_leave_out_the_pairs_whose_sides_continue_different_dialogues():
    from zupu.recipes.rlhf import hh_pairs
    pairs = hh_pairs(2312)
    assert len(pairs) == 2307  # 5 of the file's pairs run a "Human:" turn into a reply
    assert all(prompt.startswith("\n\nHuman:") for prompt, _, _ in pairs)


def test_the_linear_reward_reads_raw_features_after_standardising_them():
    # one feature on a scale of 1000 decides the preference; another, on a scale of 1, is noise
    from zupu.recipes.rlhf import HHSettings, fit_linear_reward, pair_correct
    g = torch.Generator().manual_seed(0)
    fw, fl = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g)
    fw[:, 0] = 1000 * (fw[:, 0].abs() + 0.1)
    fl[:, 0] = -1000 * (fl[:, 0].abs() + 0.1)
    head = fit_linear_reward(fw, fl, 0.01, HHSettings(steps=50), seed=0)
    assert pair_correct(head, fw, fl).mean() == 1.0
    assert head.score.weight[0, 0].abs() > 0 and head.score.weight[0, 0] > 0
