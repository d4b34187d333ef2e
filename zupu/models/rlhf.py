"""RLHF: a reward model learned from human preferences, PPO against it with a KL leash, and DPO.

L. Ouyang et al., "Training language models to follow instructions with human feedback" (InstructGPT,
2022), https://arxiv.org/abs/2203.02155; D. Ziegler et al., "Fine-Tuning Language Models from Human
Preferences" (2019), https://arxiv.org/abs/1909.08593; J. Schulman et al., "Proximal Policy Optimization
Algorithms" (2017), https://arxiv.org/abs/1707.06347; J. Schulman et al., "High-Dimensional Continuous
Control Using Generalized Advantage Estimation" (2015), https://arxiv.org/abs/1506.02438; R. Rafailov et
al., "Direct Preference Optimization: Your Language Model is Secretly a Reward Model" (2023),
https://arxiv.org/abs/2305.18290.

Reward model (InstructGPT eq. 1, Bradley-Terry): for a prompt x and responses y_w preferred to y_l,

    loss(r) = -E log sigmoid(r(x, y_w) - r(x, y_l))

PPO (InstructGPT eq. 2, Ziegler et al. sec. 2.2): the policy pi maximises r(x, y) - beta log(pi(y|x) / rho(y|x)),
rho the frozen reference. Per token t of a response of T tokens:

    R_t = -beta (log pi(y_t) - log rho(y_t)) + [t = T] r(x, y)      the KL penalty on every token, the score at the end
    delta_t = R_t + gamma V_{t+1} - V_t,  A_t = delta_t + gamma lambda A_{t+1}     GAE, V_{T+1} = 0
    L_pi = -E min(q_t A_t, clip(q_t, 1 - eps, 1 + eps) A_t),  q_t = pi(y_t) / pi_old(y_t)     clipped surrogate
    L_V = 1/2 E max((V_t - G_t)^2, (clip(V_t, V_old - eps_v, V_old + eps_v) - G_t)^2),  G_t = A_t + V_old,t
    beta <- beta (1 + clip(KL / KL_target - 1, -0.2, 0.2) n / horizon)      the adaptive KL controller

DPO (Rafailov et al. eq. 7): the same objective solved in closed form, trained on the preference pairs:

    loss(pi) = -E log sigmoid(beta (log pi(y_w)/rho(y_w) - log pi(y_l)/rho(y_l)))

The policy is any causal language model whose forward maps input_ids (B, T) to logits (B, T, V); the reward
and value models are such a model's body with its `lm_head` swapped for a scalar head (`RewardModel`), or a
linear reward on a frozen encoder's features (`FeatureReward`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from zupu.errors import ZupuError
from zupu.models.gpt import GPT, GPTConfig


class PreferenceError(ZupuError):
    """A preference pair or chat that cannot be trained on: a missing side, a template that does not render."""


class DialogueMismatch(PreferenceError):
    """The two sides of a pair continue different dialogues (5 of the 2,312 HH-RLHF harmless test pairs do:
    a reply with a "Human:" turn run into it), so there is no one prompt they answer."""


@dataclass
class RewardModelConfig:
    lm: GPTConfig = field(default_factory=GPTConfig)  # the body: a causal LM whose lm_head becomes the score


class RewardModel(nn.Module):
    """r(x, y): a causal LM's last hidden state, projected to a scalar (HF's `...ForSequenceClassification`
    layout: `score` is a bias-free Linear, read at the last real token of each row)."""

    config_class = RewardModelConfig

    def __init__(self, config: RewardModelConfig, body: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.body = body if body is not None else GPT(config.lm)
        width = self.body.lm_head.in_features
        self.body.lm_head = nn.Identity()  # the body now returns its last hidden state (B, T, C)
        self.score = nn.Linear(width, 1, bias=False)

    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The head at every position, (B, T): PPO's value V_t of the sequence up to token t."""
        return self.score(self.body(input_ids, attention_mask)).squeeze(-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Right-padded input_ids (B, T) -> rewards (B,), read at each row's last real token."""
        v = self.values(input_ids, attention_mask)  # (B, T)
        if attention_mask is None:
            return v[:, -1]
        last = attention_mask.long().sum(-1).clamp(min=1) - 1  # (B,)
        return v.gather(1, last[:, None]).squeeze(1)


@dataclass
class FeatureRewardConfig:
    n_features: int = 577  # a SmolLM2-135M block's hidden state (576) and the reply's log-length
    layer: int | None = None  # the block of the frozen language model the features are read from


class FeatureReward(nn.Module):
    """r(x, y) = w . phi(x, y) + b on a frozen encoder's features phi (a linear probe of a pretrained encoder)."""

    config_class = FeatureRewardConfig

    def __init__(self, config: FeatureRewardConfig):
        super().__init__()
        self.config = config
        self.score = nn.Linear(config.n_features, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.score(features).squeeze(-1)  # (B, n_features) -> (B,)


PRESETS = {"tiny": RewardModelConfig(GPTConfig(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))}


def split_dialogue(text: object, where: str) -> tuple[str, str]:
    """An Anthropic HH transcript ("\n\nHuman: ... \n\nAssistant: ...") -> (the dialogue before the last
    assistant turn, that turn's reply)."""
    if not isinstance(text, str) or not text.strip():
        raise PreferenceError(f"{where} is missing or empty; a preference pair needs both a chosen and a "
                              f"rejected transcript")
    head, sep, reply = text.rpartition("\n\nAssistant:")
    if not sep:
        raise PreferenceError(f"{where} has no '\\n\\nAssistant:' turn to judge: {text[:80]!r}")
    return head, reply.strip()


def preference_pair(row: object, where: str) -> tuple[str, str, str]:
    """One {"chosen", "rejected"} record -> (prompt, chosen reply, rejected reply); both sides must share the
    dialogue before the reply, as in the HH-RLHF files."""
    if not isinstance(row, dict):
        raise PreferenceError(f"{where}: expected an object with 'chosen' and 'rejected', got {type(row).__name__}")
    prompt, chosen = split_dialogue(row.get("chosen"), f"{where}: 'chosen'")
    other, rejected = split_dialogue(row.get("rejected"), f"{where}: 'rejected'")
    if prompt != other:
        raise DialogueMismatch(f"{where}: 'chosen' and 'rejected' continue different dialogues")
    return prompt, chosen, rejected


# Log-probabilities ---------------------------------------------------------------------------------------------


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(x_{t+1} | x_<=t) for t = 0..T-2: logits (B, T, V), input_ids (B, T) -> (B, T-1)."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def sequence_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """log pi(y | x), the sum over the tokens where `completion_mask` (B, T) is 1 (the response, not the prompt
    or padding), as trl's DPOTrainer sums them: (B,)."""
    return (token_logprobs(logits, input_ids) * completion_mask[:, 1:]).sum(-1)


# Losses on preferences -----------------------------------------------------------------------------------------


def reward_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None) -> torch.Tensor:
    """Bradley-Terry: -mean log sigmoid(r_w - r_l [- margin]) over pairs; chosen, rejected (N,) -> scalar."""
    diff = chosen - rejected if margin is None else chosen - rejected - margin
    return -F.logsigmoid(diff).mean()


def dpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO's sigmoid loss over N pairs of summed log-probs (N,): (loss, chosen rewards, rejected rewards), the
    implicit rewards beta log pi(y)/rho(y) (detached), whose order is the model's preference."""
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    loss = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio)).mean()
    return loss, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


# PPO's pieces --------------------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries (population variance); `shift_mean=False` keeps the mean, as
    for rewards, whose level carries meaning."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    return out if shift_mean else out + mean


def kl_penalised_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                         mask: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards R_t = -beta (log pi - log rho), plus the sequence score on the last real token.
    scores (B,), logprobs/ref_logprobs/mask (B, T) -> (rewards (B, T), per-sequence KL estimate (B,))."""
    kl = (logprobs - ref_logprobs) * mask  # (B, T): the k1 estimator of KL(pi || rho), per token
    rewards = -kl_coef * kl
    last = mask.long().sum(-1).clamp(min=1) - 1  # (B,)
    rewards = rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))
    return rewards, kl.sum(-1)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns, (B, T) each, for right-padded responses: positions past
    a row's end have no value (V = 0) and no advantage."""
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.size(1))):
        next_value = values[:, t + 1] if t + 1 < rewards.size(1) else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    return advantages, advantages + values


def ppo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped surrogate, as a loss to minimise, and the fraction of tokens where the clip was active."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask).detach()


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   clip: float = 0.2) -> torch.Tensor:
    """1/2 max of the squared errors of the new values and of the values clipped to old +- clip."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


class AdaptiveKLController:
    """Ziegler et al. (2019) sec. 2.2: beta follows a target KL with a proportional controller,
    e = clip(KL / target - 1, -0.2, 0.2), beta <- beta (1 + e n / horizon) after n more samples."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, kl: float, n_samples: int) -> float:
        error = min(max(kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_samples / self.horizon
        return self.value
