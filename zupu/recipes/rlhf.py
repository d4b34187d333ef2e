"""RLHF recipes: PPO and DPO where the truth is known; a reward model and DPO on real human preferences.

ppo: a character-level GPT pre-trained on tiny Shakespeare is the base policy (in InstructGPT, the SFT
model). A gold reward that a program computes stands in for human judgement: the number of distinct real
words (words of the play text) in a 24-character continuation. Pairs of the base policy's continuations are
labelled from it with noise (Bradley-Terry: the first wins with probability sigmoid((g_1 - g_2) / noise)),
a reward model initialised from the base's body learns from those labels, and PPO optimises the learned
reward with a per-token KL penalty to the base (adaptive beta). The same PPO without the KL term shows
reward hacking: the learned reward keeps rising while the gold reward falls, as the policy leaves the
texts the reward model was fit on. DPO trains on the same labelled pairs; both arms go on one gold-reward
vs KL figure. The run saves the PPO (with KL) policy; `zupu eval` re-scores its samples with the gold
reward.

dpo: the same base and labelled pairs, DPO alone; the run saves the DPO policy.

reward-model: REAL human preferences, the HH-RLHF harmless pairs. The reward model is InstructGPT's, a scalar
head on a language model's hidden state, with the body frozen: a linear Bradley-Terry head on one block of
SmolLM2-135M-Instruct at the reply's last token (and the reply's log-length). The body runs once per reply and
its features are cached, so fitting is seconds; the block and weight decay are chosen on validation pairs
carved from the training split. Held-out pair accuracy is reported with its 95% interval against chance and
against the better length rule ("the shorter reply wins") on the same pairs.

dpo-smollm2: DPO on the same real pairs with SmolLM2-135M-Instruct as the policy's start and its frozen copy as
the reference. Only the top blocks train; the output of the frozen ones below is the same for policy and
reference, so it is computed once (a backward pass through a 135M model is what costs on a CPU; LoRA would cut
the optimiser's memory, not that). Reported: held-out implicit-reward accuracy before (every margin 0) and
after, how far log pi/rho moved on chosen and rejected replies, and KL(policy || reference) on the policy's own
samples. Minutes of CPU: a benchmark, not in the tour.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F

from zupu import data
from zupu.atomic import write_bytes
from zupu.checkpoint import from_pretrained
from zupu.data.download import cache_dir
from zupu.models.gpt import GPT, GPTConfig
from zupu.models.llama import Llama
from zupu.models.rlhf import (
    AdaptiveKLController,
    DialogueMismatch,
    FeatureReward,
    FeatureRewardConfig,
    RewardModel,
    RewardModelConfig,
    dpo_loss,
    gae,
    kl_penalised_rewards,
    ppo_policy_loss,
    ppo_value_loss,
    preference_pair,
    reward_loss,
    token_logprobs,
    whiten,
)
from zupu.nn import decoder_mask
from zupu.progress import progress
from zupu.recipe import Milestone, Recipe
from zupu.recipes.llama import tokenizer as llama_tokenizer
from zupu.tokenizers import CharTokenizer, chat
from zupu.train.batches import RandomWindows, TensorBatches
from zupu.train.device import of, to_device
from zupu.train.plots import plt, save
from zupu.train.trainer import Trainer


@dataclass
class KnownTruthSettings:
    # the base policy: a character GPT pre-trained on tiny Shakespeare
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    prompt_len: int = 16
    response_len: int = 24
    pretrain_steps: int = 1000
    pretrain_lr: float = 3e-3
    batch_size: int = 32
    # preferences: pairs of the base's continuations labelled by the gold reward with Bradley-Terry noise
    pairs: int = 2048
    label_noise: float = 0.5  # temperature of the labeller: P(first wins) = sigmoid((g1 - g2) / label_noise)
    rm_steps: int = 300
    rm_lr: float = 5e-4
    # PPO
    ppo_iters: int = 40
    rollouts: int = 64  # prompts per PPO iteration
    ppo_epochs: int = 2
    minibatch: int = 32
    policy_lr: float = 3e-4
    value_lr: float = 1e-3
    kl_coef: float = 0.2  # initial beta
    kl_target: float = 1.5  # nats per response, for the adaptive controller
    kl_horizon: int = 2000
    clip: float = 0.2
    value_clip: float = 0.2
    gamma: float = 1.0
    lam: float = 0.95
    hack_iters: int = 40  # PPO iterations without the KL term (0: skip the hacking arm)
    # DPO
    dpo_steps: int = 80
    dpo_lr: float = 3e-4
    dpo_beta: float = 0.1
    # evaluation
    eval_prompts: int = 256
    log_every: int = 4
    threads: int = 1


# -- the text, its words, and the gold reward ------------------------------------------------------------------

_WORD = re.compile(r"[a-z]+")


@cache
def _text() -> str:
    return data.load("tinyshakespeare")


@cache
def vocabulary(min_count: int = 3) -> frozenset[str]:
    """The words of tiny Shakespeare seen at least `min_count` times, lower-cased (two letters or more)."""
    counts: dict[str, int] = {}
    for w in _WORD.findall(_text().lower()):
        counts[w] = counts.get(w, 0) + 1
    return frozenset(w for w, n in counts.items() if n >= min_count and len(w) >= 2)


def gold_reward(text: str) -> float:
    """The number of distinct real words in `text` whose ends both fall inside it: a word cut off by the
    window's edge does not count, nor does the same word twice."""
    words = _WORD.findall(text.lower())
    inner = words[1:-1] if len(words) > 2 else []  # the first and last may be cut off by the window's edges
    return float(len({w for w in inner if w in vocabulary()}))


# -- data -------------------------------------------------------------------------------------------------------


@cache
def _tokenizer() -> CharTokenizer:
    return CharTokenizer.from_text(_text())


def _stream() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor(_tokenizer().encode(_text()), dtype=torch.long)
    n = int(len(ids) * 0.9)
    return ids[:n], ids[n:]


def prompts(ids: torch.Tensor, n: int, length: int, seed: int) -> torch.Tensor:
    """`n` windows of `length` tokens from `ids`, each starting after a space (so a word begins the response
    only by the policy's choice): (n, length)."""
    g = torch.Generator().manual_seed(seed)
    space = _tokenizer().encode(" ")[0]
    starts = (ids[:-length] == space).nonzero().squeeze(1) + 1
    pick = starts[torch.randint(len(starts), (n,), generator=g)]
    return ids[pick[:, None] + torch.arange(length)]


@torch.no_grad()
def sample(policy: torch.nn.Module, prompt: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    """Continuations at temperature 1, (B, length)."""
    policy.eval()
    return torch.stack(list(policy.generate(prompt, length, generator=generator)), 1)


def gold(response: torch.Tensor) -> torch.Tensor:
    """Gold rewards (B,) of responses (B, R)."""
    tok = _tokenizer()
    return torch.tensor([gold_reward(tok.decode(r.tolist())) for r in response])


def response_logprobs(model: torch.nn.Module, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """log pi(y_t | x, y_<t) of each response token: (B, R), on the model's device."""
    device = of(model)
    full = torch.cat([prompt.to(device), response.to(device)], 1)  # (B, P + R)
    return token_logprobs(model(full), full)[:, prompt.size(1) - 1:]


def clone(model: torch.nn.Module) -> torch.nn.Module:
    """A fresh copy with the same weights (deepcopy would also copy decoding's packed weight caches)."""
    twin = type(model)(model.config).to(of(model))
    twin.load_state_dict(model.state_dict())
    return twin.train(model.training)


# -- the stages -------------------------------------------------------------------------------------------------


def build_policy(s: KnownTruthSettings) -> GPT:
    return GPT(GPTConfig(vocab_size=_tokenizer().vocab_size, n_positions=s.prompt_len + s.response_len,
                         n_embd=s.n_embd, n_layer=s.n_layer, n_head=s.n_head, activation_function="gelu",
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def pretrain(model: GPT, s: KnownTruthSettings, seed: int) -> GPT:
    """The base policy: `model` trained in place on next-character prediction over the training 90% of the text."""
    train_ids, _ = _stream()
    block = s.prompt_len + s.response_len
    opt = torch.optim.AdamW(model.parameters(), lr=s.pretrain_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / max(1, s.pretrain_steps))
    Trainer(model, lambda b: {"loss": model.loss(*b)}, RandomWindows(train_ids, block, s.batch_size, seed=seed),
            opt, s.pretrain_steps, scheduler=sched, log_every=10**9, desc="rlhf pre-train").fit()
    return model.eval()


@dataclass
class Preferences:
    prompt: torch.Tensor  # (N, P)
    chosen: torch.Tensor  # (N, R)
    rejected: torch.Tensor  # (N, R)
    gold_chosen: torch.Tensor  # (N,)
    gold_rejected: torch.Tensor  # (N,)


def label_pairs(base: GPT, s: KnownTruthSettings, seed: int) -> Preferences:
    """Two continuations of each prompt by the base policy, ordered by a noisy labeller of the gold reward."""
    train_ids, _ = _stream()
    g = torch.Generator().manual_seed(seed)
    x = prompts(train_ids, s.pairs, s.prompt_len, seed)
    a, b = sample(base, x, s.response_len, g).cpu(), sample(base, x, s.response_len, g).cpu()  # pairs on the host
    ga, gb = gold(a), gold(b)
    first_wins = torch.rand(s.pairs, generator=g) < torch.sigmoid((ga - gb) / s.label_noise)
    w = first_wins[:, None]
    return Preferences(x, torch.where(w, a, b), torch.where(w, b, a), torch.where(first_wins, ga, gb),
                       torch.where(first_wins, gb, ga))


def fit_reward_model(base: GPT, prefs: Preferences, s: KnownTruthSettings, seed: int) -> tuple[RewardModel, dict]:
    """A reward model from the base's body (InstructGPT initialises it from the SFT model), Bradley-Terry loss on
    the labelled pairs; its accuracy is measured on a held-out eighth of them against the gold order."""
    rm = RewardModel(RewardModelConfig(base.config), body=clone(base)).to(of(base))
    n_val = len(prefs.prompt) // 8
    full_w = torch.cat([prefs.prompt, prefs.chosen], 1).to(of(base))
    full_l = torch.cat([prefs.prompt, prefs.rejected], 1).to(of(base))
    opt = torch.optim.AdamW(rm.parameters(), lr=s.rm_lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    rm.train()
    for _ in progress(iterable=range(s.rm_steps), desc="rlhf reward model"):
        i = n_val + torch.randint(len(full_w) - n_val, (s.batch_size,), generator=g)
        loss = reward_loss(rm(full_w[i]), rm(full_l[i]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    rm.eval()
    with torch.no_grad():
        rw, rl = rm(full_w[:n_val]).cpu(), rm(full_l[:n_val]).cpu()  # against the gold order on the host
    gw, gl = prefs.gold_chosen[:n_val], prefs.gold_rejected[:n_val]
    differ = gw != gl
    right = ((rw > rl) == (gw > gl))[differ].float().mean().item()
    return rm, {"rm_gold_pair_acc": right, "rm_label_acc": (rw > rl).float().mean().item()}


EVAL_SEED = 10_000  # the evaluation's prompts (from the validation text) and samples: the same for every run


def eval_prompts(s: KnownTruthSettings) -> torch.Tensor:
    return prompts(_stream()[1], s.eval_prompts, s.prompt_len, EVAL_SEED)


@torch.no_grad()
def measure(policy: GPT, ref: GPT, rm: RewardModel | None, x: torch.Tensor, s: KnownTruthSettings,
            seed: int = EVAL_SEED) -> dict[str, float]:
    """Mean gold reward, learned reward and KL(policy || ref) (summed over the response, the k1 estimate on the
    policy's own samples) of continuations of the prompts `x`."""
    y = sample(policy, x, s.response_len, torch.Generator().manual_seed(seed))
    kl = (response_logprobs(policy, x, y) - response_logprobs(ref, x, y)).sum(-1).mean().item()
    out = {"gold": gold(y).mean().item(), "kl": kl}
    if rm is not None:
        out["learned"] = rm(torch.cat([x.to(y.device), y], 1)).mean().item()
    return out


def ppo(base: GPT, rm: RewardModel, s: KnownTruthSettings, seed: int, iters: int, use_kl: bool,
        log: Callable[[int, dict], None]) -> GPT:
    """InstructGPT's PPO against the learned reward; the value model starts as a copy of the reward model."""
    train_ids, _ = _stream()
    policy, value = clone(base), clone(rm)
    opt_pi = torch.optim.Adam(policy.parameters(), lr=s.policy_lr)
    opt_v = torch.optim.Adam(value.parameters(), lr=s.value_lr)
    beta = AdaptiveKLController(s.kl_coef if use_kl else 0.0, s.kl_target, s.kl_horizon)
    x_eval = eval_prompts(s)
    g = torch.Generator().manual_seed(seed)
    log(0, measure(policy, base, rm, x_eval, s))
    p = s.prompt_len
    for it in progress(iterable=range(1, iters + 1), desc=f"rlhf ppo{'' if use_kl else ' without KL'}"):
        x = prompts(train_ids, s.rollouts, s.prompt_len, seed * 1_000_003 + it).to(of(policy))
        y = sample(policy, x, s.response_len, g)
        full = torch.cat([x, y], 1)  # (B, P + R)
        mask = torch.ones_like(y, dtype=torch.float)
        with torch.no_grad():
            old_logp = response_logprobs(policy, x, y)
            ref_logp = response_logprobs(base, x, y)
            old_values = value.values(full)[:, p - 1:-1]  # V of the state before each response token
            score = rm(full)
            rewards, kl = kl_penalised_rewards(score, old_logp, ref_logp, mask, beta.value)
            adv, returns = gae(rewards, old_values, mask, s.gamma, s.lam)
            adv = whiten(adv, mask)
        policy.train()
        value.train()
        for _ in range(s.ppo_epochs):
            for i in torch.randperm(len(x), generator=g).split(s.minibatch):
                pi_loss, _ = ppo_policy_loss(response_logprobs(policy, x[i], y[i]), old_logp[i], adv[i], mask[i],
                                             s.clip)
                v_loss = ppo_value_loss(value.values(full[i])[:, p - 1:-1], old_values[i], returns[i], mask[i],
                                        s.value_clip)
                opt_pi.zero_grad(set_to_none=True)
                opt_v.zero_grad(set_to_none=True)
                (pi_loss + v_loss).backward()
                opt_pi.step()
                opt_v.step()
        if use_kl:
            beta.update(kl.mean().item(), len(x))
        if it % s.log_every == 0 or it == iters:
            log(it, {**measure(policy, base, rm, x_eval, s), "beta": beta.value,
                     "train_score": score.mean().item()})
    return policy.eval()


def dpo(base: GPT, prefs: Preferences, s: KnownTruthSettings, seed: int, log: Callable[[int, dict], None]) -> GPT:
    """DPO on the labelled pairs, the base as the reference."""
    policy = clone(base)
    opt = torch.optim.Adam(policy.parameters(), lr=s.dpo_lr)
    x_eval = eval_prompts(s)
    with torch.no_grad():
        ref_w = response_logprobs(base, prefs.prompt, prefs.chosen).sum(-1)
        ref_l = response_logprobs(base, prefs.prompt, prefs.rejected).sum(-1)
    g = torch.Generator().manual_seed(seed)
    log(0, measure(policy, base, None, x_eval, s))
    for step in progress(iterable=range(1, s.dpo_steps + 1), desc="rlhf dpo"):
        policy.train()
        i = torch.randint(len(prefs.prompt), (s.batch_size,), generator=g)
        lw = response_logprobs(policy, prefs.prompt[i], prefs.chosen[i]).sum(-1)
        ll = response_logprobs(policy, prefs.prompt[i], prefs.rejected[i]).sum(-1)
        loss, rw, rl = dpo_loss(lw, ll, ref_w[i], ref_l[i], s.dpo_beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % (s.log_every * 2) == 0 or step == s.dpo_steps:
            log(step, {**measure(policy, base, None, x_eval, s), "loss": loss.item(),
                       "implicit_acc": (rw > rl).float().mean().item()})
    return policy.eval()


# -- the recipes ------------------------------------------------------------------------------------------------


class Curves:
    """Each arm's evaluations, kept for the metrics and logged to the run as `<arm>_<name>`."""

    def __init__(self, run):
        self.run, self.arms = run, {}

    def logger(self, arm: str) -> Callable[[int, dict], None]:
        self.arms[arm] = []

        def log(step: int, values: dict) -> None:
            self.arms[arm].append({"step": step, **values})
            self.run.log(step, **{f"{arm}_{k}": v for k, v in values.items()})
        return log


def read_arms(history: list[dict]) -> dict[str, list[dict]]:
    """metrics.jsonl's `<arm>_<name>` columns back into one list of points per arm."""
    arms: dict[str, list[dict]] = {}
    for row in history:
        for arm in ("ppo", "nokl", "dpo"):
            point = {k[len(arm) + 1:]: v for k, v in row.items() if k.startswith(arm + "_")}
            if point:
                arms.setdefault(arm, []).append({"step": row["step"], **point})
    return arms


def hacking_metrics(points: list[dict]) -> dict[str, float]:
    """From the arm without KL: its best gold reward, where it ended, and how the learned reward moved meanwhile."""
    peak = max(points, key=lambda p: p["gold"])
    last = points[-1]
    return {"nokl_peak_gold": peak["gold"], "nokl_final_gold": last["gold"], "nokl_final_kl": last["kl"],
            "nokl_gold_drop": peak["gold"] - last["gold"], "nokl_learned_rise": last["learned"] - peak["learned"]}


_ARMS = {"ppo": ("PPO with KL penalty", "tab:blue"), "nokl": ("PPO without KL", "tab:red"), "dpo": ("DPO", "tab:green")}


def frontier_figure(arms: dict[str, list[dict]], path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, points in arms.items():
        label, color = _ARMS[arm]
        ax.plot([p["kl"] for p in points], [p["gold"] for p in points], "o-", color=color, label=label, ms=3)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("KL(policy || base), nats per response")
    ax.set_ylabel("gold reward (distinct real words)")
    ax.set_title(title)
    ax.legend()
    save(fig, path)


def hacking_figure(points: list[dict], path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [p["step"] for p in points]
    ax.plot(steps, [p["gold"] for p in points], "o-", color="tab:orange", label="gold reward", ms=3)
    ax.set_xlabel("PPO iteration (no KL term)")
    ax.set_ylabel("gold reward")
    twin = ax.twinx()
    twin.plot(steps, [p["learned"] for p in points], "s--", color="tab:purple", label="learned reward", ms=3)
    twin.set_ylabel("learned reward")
    lines = ax.get_lines() + twin.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="lower left")
    ax.set_title(title)
    save(fig, path)


def reward_kl_figure(points: list[dict], path, title: str) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    steps = [p["step"] for p in points]
    for ax, key in zip(axes, ("learned", "gold", "kl"), strict=True):
        ax.plot(steps, [p[key] for p in points], "o-", ms=3)
        ax.set_xlabel("PPO iteration")
        ax.set_title({"learned": "learned reward", "gold": "gold reward", "kl": "KL to the base (nats)"}[key])
    fig.suptitle(title)
    save(fig, path)


@torch.no_grad()
def gold_of(policy: GPT, s: KnownTruthSettings) -> float:
    """The mean gold reward of the policy's continuations of the fixed evaluation prompts."""
    x = eval_prompts(s)
    return gold(sample(policy, x, s.response_len, torch.Generator().manual_seed(EVAL_SEED))).mean().item()


_TINY = {"n_embd": 32, "n_layer": 1, "n_head": 2, "pretrain_steps": 3, "pairs": 16, "rm_steps": 2, "ppo_iters": 2,
         "hack_iters": 1, "dpo_steps": 2, "rollouts": 8, "minibatch": 4, "eval_prompts": 8, "log_every": 1,
         "batch_size": 8}


class KnownTruth(Recipe):
    Settings = KnownTruthSettings
    tiny = _TINY

    def build(self, s: KnownTruthSettings) -> GPT:
        return build_policy(s)

    def evaluate(self, model: GPT, s: KnownTruthSettings) -> dict:
        return {"gold_reward": gold_of(model, s)}

    def example(self, s: KnownTruthSettings) -> tuple[torch.Tensor]:
        return (eval_prompts(s)[:2],)


class Ppo(KnownTruth):
    name = "ppo"
    summary = ("PPO with a KL leash against a reward model learned from noisy preferences of a known gold reward "
               "(real words in a Shakespeare continuation); without the leash the learned reward is gamed")
    # the gold reward lost, from its peak, by PPO without the KL term while the learned reward kept rising
    # full: 2.25 / 1.86 / 2.28 at seeds 0 / 1 / 2 (PPO with KL meanwhile gains +1.68 / +1.54 / +1.25 gold at KL 5-6)
    milestone = Milestone("nokl_gold_drop", 1.0, paper="Stiennon et al. 2020, fig. 5: optimising a learned reward "
                          "without the KL leash raises it while the true (human) preference falls")
    quick = {"pretrain_steps": 300, "pairs": 1024, "rm_steps": 150, "ppo_iters": 16, "hack_iters": 40,
             "dpo_steps": 40}
    # measured 0.84 / 0.64 / 0.14 at seeds 0 / 1 / 2 (seed 2's reward model is the weakest: 0.52 on gold pairs)
    quick_milestone = Milestone("nokl_gold_drop", 0.1)
    quick_seconds = 45.0  # 52 s measured at load ~5 on the 2 cores (178-302 s at load 20-35)

    def train(self, model: GPT, s: KnownTruthSettings, run) -> dict:
        start = time.perf_counter()
        base = pretrain(model, s, run.seed)
        prefs = label_pairs(base, s, run.seed)
        rm, rm_metrics = fit_reward_model(base, prefs, s, run.seed)
        curves = Curves(run)
        policy = ppo(base, rm, s, run.seed, s.ppo_iters, True, curves.logger("ppo"))
        extra = {}
        if s.hack_iters:
            ppo(base, rm, s, run.seed, s.hack_iters, False, curves.logger("nokl"))
            extra.update(hacking_metrics(curves.arms["nokl"]))
        if s.dpo_steps:
            dpo(base, prefs, s, run.seed, curves.logger("dpo"))
            extra.update(dpo_gold=curves.arms["dpo"][-1]["gold"], dpo_kl=curves.arms["dpo"][-1]["kl"])
        model.load_state_dict(policy.state_dict())
        first, last = curves.arms["ppo"][0], curves.arms["ppo"][-1]
        return {"gold_reward": last["gold"], "base_gold_reward": first["gold"],
                "gold_gain": last["gold"] - first["gold"], "kl": last["kl"], "learned_reward": last["learned"],
                "base_learned_reward": first["learned"], **rm_metrics, **extra,
                "train_seconds": time.perf_counter() - start}

    def figures(self, model: GPT, s: KnownTruthSettings, run) -> None:
        arms = read_arms(run.history())
        frontier_figure(arms, run.path("frontier.png"), "gold reward against KL to the base")
        reward_kl_figure(arms["ppo"], run.path("reward_kl.png"), "PPO with the KL penalty")
        if "nokl" in arms:
            hacking_figure(arms["nokl"], run.path("hacking.png"),
                           "without the KL term the learned reward is gamed")


class Dpo(KnownTruth):
    name = "dpo"
    summary = "DPO on the same noisy preferences of the known gold reward, no reward model, no sampling"
    # full: +1.41 / +1.49 / +1.25 at seeds 0 / 1 / 2 (KL 11-14 nats)
    milestone = Milestone("gold_gain", 1.0, paper="Rafailov et al. 2023: DPO reaches PPO's reward-KL frontier")
    quick = {"pretrain_steps": 300, "pairs": 1024, "dpo_steps": 40}
    quick_milestone = Milestone("gold_gain", 0.2)  # measured +0.46 / +0.76 / +0.26 at seeds 0 / 1 / 2
    quick_seconds = 15.0  # 18 s measured at load ~5 on the 2 cores

    def train(self, model: GPT, s: KnownTruthSettings, run) -> dict:
        start = time.perf_counter()
        base = pretrain(model, s, run.seed)
        prefs = label_pairs(base, s, run.seed)
        curves = Curves(run)
        policy = dpo(base, prefs, s, run.seed, curves.logger("dpo"))
        model.load_state_dict(policy.state_dict())
        first, last = curves.arms["dpo"][0], curves.arms["dpo"][-1]
        return {"gold_reward": last["gold"], "base_gold_reward": first["gold"],
                "gold_gain": last["gold"] - first["gold"], "kl": last["kl"], "implicit_acc": last["implicit_acc"],
                "train_seconds": time.perf_counter() - start}

    def figures(self, model: GPT, s: KnownTruthSettings, run) -> None:
        frontier_figure(read_arms(run.history()), run.path("frontier.png"), "DPO: gold reward against KL to the base")



# -- reward-model: real human preferences, on SmolLM2's features --------------------------------------------------


@dataclass
class HHSettings:
    weights: str = "smollm2"  # the frozen body: a weights-registry name or a .gguf path
    pairs: int = 2312  # the first N pairs of the file
    reply_tokens: int = 32  # the reply's first tokens the body reads
    layers: tuple[int, ...] = (8, 16, 24)  # the blocks whose output may be the features, chosen on validation
    test_fraction: float = 0.25  # held out, the same pairs for every run
    val_fraction: float = 0.2  # of the training pairs, to choose the block and the weight decay
    weight_decays: tuple[float, ...] = (0.1, 1.0, 10.0)
    steps: int = 300
    lr: float = 0.05
    batch_size: int = 16  # replies per forward of the body


def hh_pairs(n: int) -> list[tuple[str, str, str]]:
    """(prompt, chosen reply, rejected reply) of the first `n` HH-RLHF harmless-base test pairs, less those whose
    two sides continue different dialogues (5 of the 2,312: there is no one prompt they answer)."""
    path = data.load("hh-rlhf")["harmless-base-test.jsonl.gz"]
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()][:n]
    pairs = []
    for i, row in enumerate(rows):
        try:
            pairs.append(preference_pair(row, f"{path.name} line {i + 1}"))
        except DialogueMismatch:
            continue
    return pairs


@cache
def frozen_lm(weights: str) -> Llama:
    """The pretrained model, frozen: the reward model's body and DPO's reference (loaded once per process)."""
    return from_pretrained(weights).eval().requires_grad_(False)


def run_blocks(model: Llama, x: torch.Tensor, attention_mask: torch.Tensor,
               blocks: Iterable[torch.nn.Module]) -> Iterator[torch.Tensor]:
    """Yield the hidden state (B, T, C) after each of `blocks` of `model`, run on hidden states x (B, T, C) of
    right-padded rows from position 0: Llama.forward's loop, without caches, entered and left at any block."""
    t = x.size(1)
    rope = model.rotary(torch.arange(t, device=x.device), x.dtype)
    mask = decoder_mask(attention_mask.to(x.device), 0, t)  # (B, 1, T, T)
    for block in blocks:
        x = block(x, mask, causal=True, rope=rope)
        yield x


def right_padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> input_ids and attention_mask (B, T), padded on the right with zeros."""
    lengths = torch.tensor([len(r) for r in rows])
    ids = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, :len(r)] = torch.tensor(r)
    return ids, (torch.arange(ids.size(1)) < lengths[:, None]).long()


@torch.no_grad()
def reply_features(replies: list[str], weights: str, reply_tokens: int, layers: tuple[int, ...],
                   batch_size: int) -> torch.Tensor:
    """(N, len(layers), C): each listed block's output at the last of the reply's first `reply_tokens` tokens
    (the one position where a causal model has read all it reads of the reply). Replies are batched by length,
    so little of a batch is padding."""
    tok = llama_tokenizer(weights)
    ids = [tok.encode(r)[:reply_tokens] or [tok.eos_token_id] for r in replies]  # an empty reply: its end only
    model = frozen_lm(weights)
    out = torch.zeros(len(ids), len(layers), model.config.hidden_size)
    order = torch.tensor(sorted(range(len(ids)), key=lambda i: len(ids[i])))
    for rows in progress(iterable=order.split(batch_size), desc="rlhf reward model: SmolLM2 features"):
        x, mask = to_device(right_padded([ids[i] for i in rows.tolist()]), of(model))
        hidden = list(run_blocks(model, model.embed_tokens(x), mask, model.layers[:max(layers)]))
        last = torch.arange(len(rows), device=x.device), mask.sum(1) - 1
        out[rows] = torch.stack([hidden[i - 1][last] for i in layers], 1).cpu()  # (B, L, C), kept on the host
    return out


def hh_features(s: HHSettings) -> dict[str, torch.Tensor]:
    """{"chosen", "rejected"}: (N, L, C) reply features; {"chosen_chars", "rejected_chars"}: (N,) reply lengths.
    Computed once per body, pair count, reply length and blocks, then read from zupu's cache."""
    layers = tuple(int(i) for i in s.layers)
    key = f"{Path(s.weights).stem}-{s.pairs}-{s.reply_tokens}-{'_'.join(map(str, layers))}"
    return _hh_features(cache_dir() / "features" / f"rlhf-hh-{key}.safetensors", s.weights, s.pairs,
                        s.reply_tokens, layers, s.batch_size)


@cache
def _hh_features(path: Path, weights: str, n: int, reply_tokens: int, layers: tuple[int, ...],
                 batch_size: int) -> dict[str, torch.Tensor]:
    if path.exists():
        return safetensors.torch.load_file(path)
    pairs = hh_pairs(n)
    feats = reply_features([p[1] for p in pairs] + [p[2] for p in pairs], weights, reply_tokens, layers, batch_size)
    out = {"chosen": feats[:len(pairs)], "rejected": feats[len(pairs):],
           "chosen_chars": torch.tensor([float(len(p[1])) for p in pairs]),
           "rejected_chars": torch.tensor([float(len(p[2])) for p in pairs])}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, safetensors.torch.save(out))
    return out


def design(f: dict[str, torch.Tensor], side: str, layer: int, s: HHSettings) -> torch.Tensor:
    """The reward model's input: block `layer`'s features and the reply's log-length (the body reads only the
    reply's first tokens), (N, C + 1)."""
    return torch.cat([f[side][:, s.layers.index(layer)], torch.log1p(f[f"{side}_chars"])[:, None]], 1)


def hh_split(n: int, test_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test indices: a fixed permutation (seed 0), the same for every run and for `zupu eval`."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_test = int(n * test_fraction)
    return order[n_test:], order[:n_test]


def fit_linear_reward(fw: torch.Tensor, fl: torch.Tensor, weight_decay: float, s: HHSettings,
                      seed: int) -> FeatureReward:
    """A Bradley-Terry linear reward on the pairs' features (N, D), trained full-batch on standardised features
    (the hidden states' scales differ by orders of magnitude from dimension to dimension); the standardisation
    is folded into the returned head, which reads the raw features."""
    both = torch.cat([fw, fl])
    mean, std = both.mean(0), both.std(0).clamp(min=1e-6)
    torch.manual_seed(seed)
    head = FeatureReward(FeatureRewardConfig(fw.size(1)))
    opt = torch.optim.AdamW(head.parameters(), lr=s.lr, weight_decay=weight_decay)
    zw, zl = (fw - mean) / std, (fl - mean) / std
    for _ in range(s.steps):  # full batch: a few thousand pairs of a few hundred numbers
        loss = reward_loss(head(zw), head(zl))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():  # w.(x - m)/s + b = (w/s).x + (b - w.(m/s))
        w = head.score.weight / std
        head.score.bias -= (w * mean).sum()
        head.score.weight.copy_(w)
    return head.eval()


@torch.no_grad()
def pair_correct(head: FeatureReward, fw: torch.Tensor, fl: torch.Tensor) -> torch.Tensor:
    """1 where the head scores the chosen reply above the rejected one, (N,), on the host."""
    fw, fl = to_device((fw, fl), of(head))
    return (head(fw) > head(fl)).float().cpu()


def length_rule_correct(train_w, train_l, test_w, test_l) -> tuple[torch.Tensor, str]:
    """Per held-out pair (N,): 1 where "the longer reply wins" or "the shorter reply wins" (whichever is right more
    often on the training pairs) picks the chosen reply; ties count half."""
    def longer_wins(w, lo):
        return (w > lo).float() + 0.5 * (w == lo).float()
    if longer_wins(train_w, train_l).mean() >= 0.5:
        return longer_wins(test_w, test_l), "longer wins"
    return longer_wins(test_l, test_w), "shorter wins"


def interval(x: torch.Tensor) -> tuple[float, float]:
    """The normal-approximation 95% interval of the mean of `x` (N,): for a pair accuracy, or for the paired
    difference of two rules' per-pair scores on the same pairs."""
    half = 1.96 * x.std().item() / len(x) ** 0.5
    return x.mean().item() - half, x.mean().item() + half


class HHRewardModel(Recipe):
    name = "reward-model"
    summary = ("Bradley-Terry reward on frozen SmolLM2-135M-Instruct features of real human preferences (HH-RLHF "
               "harmless): held-out pair accuracy against chance and the response-length rule")
    Settings = HHSettings
    # full: the target is the validation pair accuracy of the block and weight decay the run chooses (block 16, weight
    # decay 10: 0.613 on the 346 validation pairs carved from the training split), rounded down; it replaces 0.56,
    # which an exploration's test score had set. Measured (seed 0, 2026-12-05): 0.5625 [0.522, 0.603] on the 576
    # held-out pairs, the length rule 0.548: MISSED. The validation number is the best of 9 (block x weight decay)
    # and has its own interval (+-0.051; low end 0.561, which the test does reach): the miss is that optimism.
    milestone = Milestone("test_pair_acc", 0.61, paper="Bai et al. 2022 (HH-RLHF): 13M-52B preference models "
                          "reach about 0.6-0.7 on harmlessness pairs")
    quick = {"pairs": 400, "layers": (12,), "weight_decays": (1.0, 10.0)}
    # 0.59 / 0.57 / 0.58 at seeds 0-2 on 100 held-out pairs (95% interval about +-0.1), "the shorter reply wins"
    # 0.61 on the same pairs: above chance, NOT above the length rule
    quick_milestone = Milestone("test_pair_acc", 0.54)
    # 33 s of CPU at 1 thread measured cold (SmolLM2 loaded, 800 replies through 12 blocks), 8 s with the features
    # cached
    quick_seconds = 33.0
    tiny = {"pairs": 40, "reply_tokens": 8, "layers": (2,), "steps": 5, "weight_decays": (0.01,)}

    def build(self, s: HHSettings) -> FeatureReward:
        return FeatureReward(FeatureRewardConfig(frozen_lm(s.weights).config.hidden_size + 1))

    def train(self, model: FeatureReward, s: HHSettings, run) -> dict:
        f = hh_features(s)
        train, test = hh_split(len(f["chosen"]), s.test_fraction)
        n_val = int(len(train) * s.val_fraction)
        val, fit = train[:n_val], train[n_val:]
        val_acc = {}
        for layer in s.layers:  # the block and weight decay chosen on validation pairs carved from the training split
            fw, fl = design(f, "chosen", layer, s), design(f, "rejected", layer, s)
            for wd in s.weight_decays:
                head = fit_linear_reward(fw[fit], fl[fit], float(wd), s, run.seed)
                val_acc[layer, wd] = pair_correct(head, fw[val], fl[val]).mean().item()
                run.log(len(val_acc), layer=layer, weight_decay=float(wd), val_pair_acc=val_acc[layer, wd])
        layer, wd = max(val_acc, key=val_acc.get)
        fw, fl = design(f, "chosen", layer, s), design(f, "rejected", layer, s)
        model.load_state_dict(fit_linear_reward(fw[train], fl[train], float(wd), s, run.seed).state_dict())
        model.config.layer = layer
        length, rule = length_rule_correct(f["chosen_chars"][train], f["rejected_chars"][train],
                                           f["chosen_chars"][test], f["rejected_chars"][test])
        metrics = self.evaluate(model, s)
        ours = pair_correct(model, fw[test], fl[test])
        low, high = interval(ours - length)
        return {**metrics, "val_pair_acc": val_acc[layer, wd], "layer": layer, "weight_decay": float(wd),
                "length_rule_acc": length.mean().item(), "length_rule": rule, "chance": 0.5,
                "minus_length_rule": (ours - length).mean().item(), "minus_length_rule_ci95": [low, high]}

    def evaluate(self, model: FeatureReward, s: HHSettings) -> dict:
        f = hh_features(s)
        _, test = hh_split(len(f["chosen"]), s.test_fraction)
        layer = model.config.layer
        right = pair_correct(model, design(f, "chosen", layer, s)[test], design(f, "rejected", layer, s)[test])
        return {"test_pair_acc": right.mean().item(), "test_pair_acc_ci95": list(interval(right)),
                "test_pairs": len(test)}

    def example(self, s: HHSettings) -> tuple[torch.Tensor]:
        return (design(hh_features(s), "chosen", s.layers[0], s)[:4],)

    def figures(self, model: FeatureReward, s: HHSettings, run) -> None:
        metrics = json.loads(run.path("metrics.json").read_text())["metrics"]
        f = hh_features(s)
        _, test = hh_split(len(f["chosen"]), s.test_fraction)
        layer = model.config.layer
        with torch.no_grad():
            margin = (model(design(f, "chosen", layer, s)[test]) - model(design(f, "rejected", layer, s)[test]))
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
        names = ["chance", f"length ({metrics['length_rule']})", "reward model"]
        values = [0.5, metrics["length_rule_acc"], metrics["test_pair_acc"]]
        low, high = metrics["test_pair_acc_ci95"]
        a.bar(names, values, color=["grey", "tab:orange", "tab:blue"])
        a.errorbar([2], [values[2]], yerr=[[values[2] - low], [high - values[2]]], color="k", capsize=4)
        a.set_ylim(0.4, max(values + [high]) + 0.05)
        a.set_ylabel(f"held-out pair accuracy ({len(test)} pairs)")
        b.hist(margin.numpy(), bins=30)
        b.axvline(0, color="k", lw=0.8)
        b.set_xlabel("r(chosen) - r(rejected), held-out pairs")
        fig.suptitle(f"a reward model from real human preferences (HH-RLHF harmless), SmolLM2 block {layer}")
        save(fig, run.path("reward_model.png"))


# -- dpo-smollm2: DPO on real human preferences, SmolLM2 as policy and reference -----------------------------------


@dataclass
class SmolDPOSettings:
    weights: str = "smollm2"  # the policy's start and the frozen reference
    pairs: int = 2312  # the file's pairs; train/test split as reward-model's (the same held-out pairs)
    train_pairs: int = 160  # the first of the training split
    test_pairs: int = 100  # the first of the held-out split
    prompt_tokens: int = 24  # the last tokens of the last human turn, rendered with the model's chat template
    reply_tokens: int = 24  # the reply's first tokens (the end of turn follows a reply that fits)
    trainable_layers: int = 3  # the top blocks DPO trains; those below stay frozen, so their output is computed once
    epochs: int = 2
    batch_size: int = 8
    lr: float = 5e-5
    beta: float = 0.1
    kl_prompts: int = 16  # held-out prompts sampled from, to measure KL(policy || reference)
    kl_tokens: int = 24
    log_every: int = 4


@dataclass
class EncodedPairs:
    ids: torch.Tensor  # (2N, T): the N chosen rows, then the N rejected ones, right-padded
    mask: torch.Tensor  # (2N, T): 1 on real tokens
    completion: torch.Tensor  # (2N, T): 1 on the reply's tokens (what DPO's log-probabilities sum over)
    prompts: list[list[int]]  # the N rendered prompts


def encode_pairs(pairs: list[tuple[str, str, str]], s: SmolDPOSettings) -> EncodedPairs:
    """Each pair as two token rows: the chat-rendered prompt (the last human turn, its last `prompt_tokens` tokens)
    and a reply (its first `reply_tokens`, and the end-of-turn token when the whole reply fits)."""
    tok = llama_tokenizer(s.weights)
    prompts, rows, spans = [], [], []
    for side in (1, 2):
        for pair in pairs:
            question = pair[0].rpartition("\n\nHuman:")[2].strip()
            question = tok.decode(tok.encode(question)[-s.prompt_tokens:])
            prompt = tok.encode(tok.apply_chat_template([{"role": "user", "content": question}]))
            reply = tok.encode(pair[side])
            reply = reply[:s.reply_tokens] if len(reply) >= s.reply_tokens else reply + [tok.eos_token_id]
            prompts.append(prompt)
            rows.append(prompt + reply)
            spans.append((len(prompt), len(prompt) + len(reply)))
    ids, mask = right_padded(rows)
    positions = torch.arange(ids.size(1))
    completion = torch.stack([(positions >= a) & (positions < b) for a, b in spans]).long()
    return EncodedPairs(ids, mask, completion, prompts[:len(pairs)])


def reply_logprobs(model: Llama, hidden: torch.Tensor, ids: torch.Tensor, completion: torch.Tensor) -> torch.Tensor:
    """log pi(reply | prompt), summed over the reply's tokens (as trl's DPOTrainer sums them), from the last
    block's hidden states (B, T, C): (B,). The output layer (49,152 wide) runs at the reply's positions only."""
    ids, completion = to_device((ids, completion), hidden.device)
    at = completion[:, 1:].bool()  # (B, T - 1): position t predicts token t + 1
    logits = model.lm_head(model.norm(hidden[:, :-1][at]))  # (M, V)
    logp = F.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:][at][:, None]).squeeze(-1)  # (M,)
    return torch.zeros(len(ids), device=logp.device).index_add(0, at.nonzero()[:, 0], logp)


@torch.no_grad()
def frozen_bottom(model: Llama, enc: EncodedPairs, s: SmolDPOSettings) -> torch.Tensor:
    """The output of the frozen blocks under the trained ones, (2N, T, C): the same for policy and reference."""
    bottom = model.layers[:len(model.layers) - s.trainable_layers]
    out = []
    for i in progress(iterable=torch.arange(len(enc.ids)).split(s.batch_size), desc="rlhf dpo: frozen blocks"):
        x = model.embed_tokens(enc.ids[i].to(of(model)))
        out.append(x if not len(bottom) else list(run_blocks(model, x, enc.mask[i], bottom))[-1])
    return torch.cat(out)


def top_logprobs(model: Llama, bottom: torch.Tensor, enc: EncodedPairs, rows: torch.Tensor,
                 s: SmolDPOSettings) -> torch.Tensor:
    """log pi(reply | prompt) of `rows` (B,) through the model's trainable top blocks: (B,)."""
    top = model.layers[len(model.layers) - s.trainable_layers:]
    hidden = list(run_blocks(model, bottom[rows], enc.mask[rows], top))[-1]
    return reply_logprobs(model, hidden, enc.ids[rows], enc.completion[rows])


@torch.no_grad()
def all_logprobs(model: Llama, bottom: torch.Tensor, enc: EncodedPairs, s: SmolDPOSettings) -> torch.Tensor:
    return torch.cat([top_logprobs(model, bottom, enc, i, s) for i in torch.arange(len(enc.ids)).split(16)])


@torch.no_grad()
def sampled_kl(policy: Llama, ref: Llama, prompts: list[list[int]], s: SmolDPOSettings) -> float:
    """KL(policy || reference) in nats per reply: the mean over the policy's own samples (temperature 1, up to
    `kl_tokens` tokens or the end of turn) of log pi(y|x) - log rho(y|x), one prompt at a time (no padding)."""
    eos = llama_tokenizer(s.weights).eos_token_id
    g = torch.Generator().manual_seed(EVAL_SEED)
    kl = []
    for prompt in prompts[:s.kl_prompts]:
        x = torch.tensor([prompt], device=of(policy))
        y = torch.stack(list(policy.generate(x, s.kl_tokens, eos_token_id=eos, generator=g)), 1)  # (1, R)
        ends = (y[0] == eos).nonzero()
        y = y[:, :int(ends[0]) + 1] if len(ends) else y
        full = torch.cat([x, y], 1)
        diff = token_logprobs(policy(full), full) - token_logprobs(ref(full), full)  # (1, P + R - 1)
        kl.append(diff[0, x.size(1) - 1:].sum().item())
    return sum(kl) / len(kl)


def dpo_data(s: SmolDPOSettings) -> tuple[EncodedPairs, EncodedPairs, dict[str, torch.Tensor]]:
    """The training and held-out pairs, encoded; and the replies' lengths in characters (for the length rule)."""
    pairs = hh_pairs(s.pairs)
    train, test = hh_split(len(pairs), HHSettings.test_fraction)
    train, test = [pairs[i] for i in train[:s.train_pairs].tolist()], [pairs[i] for i in test[:s.test_pairs].tolist()]
    chars = {f"{name}_{side}": torch.tensor([float(len(p[i])) for p in rows])
             for name, rows in (("train", train), ("test", test)) for side, i in (("chosen", 1), ("rejected", 2))}
    return encode_pairs(train, s), encode_pairs(test, s), chars


class SmolDPO(Recipe):
    name = "dpo-smollm2"
    summary = ("DPO on real human preferences (HH-RLHF harmless) with SmolLM2-135M-Instruct as the policy's start and "
               "the frozen reference: held-out implicit-reward accuracy and KL to the reference")
    Settings = SmolDPOSettings
    # measured at seed 0 (34 min at load 20 on the 2 cores; benchmark, not CI): 0.55 [0.45, 0.65] on 100 held-out
    # pairs after 40 steps (0.5 before: every margin 0), training batches at 0.75-1.0; log pi/rho of the held-out
    # chosen replies +0.88, rejected +0.52; KL 0.28 nats per sampled reply. The base's own likelihood prefers the
    # chosen reply on 0.60 of them and "the shorter reply wins" on 0.61: DPO here has not beaten either
    milestone = Milestone("implicit_acc", 0.55, paper="Rafailov et al. 2023: DPO on Anthropic HH (Pythia-2.8B) "
                          "beats the preferred completions' win rate of the SFT model")
    in_tour = False  # minutes of a 135M-parameter model's backward passes: a benchmark, not CI
    tiny = {"pairs": 60, "train_pairs": 4, "test_pairs": 4, "prompt_tokens": 4, "reply_tokens": 4,
            "trainable_layers": 1, "epochs": 1, "batch_size": 4, "kl_prompts": 1, "kl_tokens": 2}

    def build(self, s: SmolDPOSettings) -> Llama:
        return from_pretrained(s.weights)

    def train(self, model: Llama, s: SmolDPOSettings, run) -> dict:
        start = time.perf_counter()
        train, _, chars = dpo_data(s)
        ref = frozen_lm(s.weights).to(of(model))  # the reference beside the policy
        model.requires_grad_(False)
        top = model.layers[len(model.layers) - s.trainable_layers:]
        top.requires_grad_(True)
        bottom = frozen_bottom(ref, train, s)
        ref_logp = all_logprobs(ref, bottom, train, s)  # (2N,): chosen rows, then rejected
        n = len(train.prompts)
        # before training the policy is the reference: every log-ratio, implicit margin and the KL are 0
        run.log(0, test_implicit_acc=0.5, test_kl=0.0)
        opt = torch.optim.AdamW(top.parameters(), lr=s.lr, weight_decay=0.0)
        g = torch.Generator().manual_seed(run.seed)
        steps = 0
        for _ in range(s.epochs):
            for i in progress(iterable=torch.randperm(n, generator=g).split(s.batch_size), desc="rlhf dpo-smollm2"):
                model.train()
                logp = top_logprobs(model, bottom, train, torch.cat([i, i + n]), s)  # (2B,)
                loss, rw, rl = dpo_loss(logp[:len(i)], logp[len(i):], ref_logp[i], ref_logp[i + n], s.beta)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                if steps % s.log_every == 0:
                    run.log(steps, loss=loss.item(), train_implicit_acc=(rw > rl).float().mean().item(),
                            train_margin=(rw - rl).mean().item())
        model.eval().requires_grad_(False)
        after = self.evaluate(model, s)
        run.log(steps, **{f"test_{k}": v for k, v in after.items() if isinstance(v, float)})
        rule = length_rule_correct(*(chars[k] for k in ("train_chosen", "train_rejected", "test_chosen",
                                                         "test_rejected")))[1]
        return {**after, "length_rule": rule, "steps": steps, "train_seconds": time.perf_counter() - start}

    def evaluate(self, model: Llama, s: SmolDPOSettings) -> dict:
        _, test, chars = dpo_data(s)
        ref = frozen_lm(s.weights).to(of(model))
        bottom = frozen_bottom(ref, test, s)
        n = len(test.prompts)
        ref_logp = all_logprobs(ref, bottom, test, s)
        logp = all_logprobs(model.eval(), bottom, test, s)
        ratio = logp - ref_logp  # (2N,): log pi/rho of each held-out reply
        margin = s.beta * (ratio[:n] - ratio[n:])  # implicit reward of the chosen minus the rejected
        right = (margin > 0).float() + 0.5 * (margin == 0).float()  # before training every margin is 0: a tie
        length, _ = length_rule_correct(chars["train_chosen"], chars["train_rejected"], chars["test_chosen"],
                                        chars["test_rejected"])
        return {"implicit_acc": right.mean().item(), "implicit_acc_ci95": list(interval(right)),
                "implicit_margin": margin.mean().item(), "chosen_log_ratio": ratio[:n].mean().item(),
                "rejected_log_ratio": ratio[n:].mean().item(),
                "base_prefers_chosen": (ref_logp[:n] > ref_logp[n:]).float().mean().item(),
                "length_rule_acc": length.mean().item(), "kl": sampled_kl(model, ref, test.prompts, s), "test_pairs": n}

    def example(self, s: SmolDPOSettings) -> tuple[torch.Tensor]:
        return (torch.tensor([dpo_data(s)[1].prompts[0]]),)

    def figures(self, model: Llama, s: SmolDPOSettings, run) -> None:
        history = run.history()
        train = [r for r in history if "loss" in r]
        test = [r for r in history if "test_implicit_acc" in r]
        fig, (a, b, c) = plt.subplots(1, 3, figsize=(12, 3.4))
        a.plot([r["step"] for r in train], [r["loss"] for r in train], "o-", ms=3)
        a.set_xlabel("DPO step")
        a.set_title("DPO loss (training batches)")
        b.plot([r["step"] for r in train], [r["train_implicit_acc"] for r in train], "o-", ms=3, label="training")
        b.plot([r["step"] for r in test], [r["test_implicit_acc"] for r in test], "s--", ms=5, label="held-out")
        b.axhline(0.5, color="grey", lw=0.8)
        b.set_xlabel("DPO step")
        b.set_title("implicit-reward pair accuracy")
        b.legend()
        c.plot([r["test_kl"] for r in test], [r["test_implicit_acc"] for r in test], "o-")
        c.set_xlabel("KL(policy || reference), nats per reply")
        c.set_ylabel("held-out implicit-reward accuracy")
        c.set_title("accuracy against KL")
        fig.suptitle("DPO on SmolLM2-135M-Instruct with HH-RLHF harmless pairs")
        save(fig, run.path("dpo_smollm2.png"))


# -- sft: chat-formatted demonstrations, the loss on the assistant's tokens ---------------------------------------

EOT = "\x03"  # the end-of-turn character: in no training text, so only fine-tuning can teach it


@dataclass
class SFTSettings:
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 96
    block_size: int = 256
    pretrain_steps: int = 600
    pretrain_lr: float = 3e-3
    sft_steps: int = 300
    sft_lr: float = 1e-3
    batch_size: int = 16
    held_out: int = 25  # tasks kept for evaluation (the first of a fixed permutation)
    max_new_tokens: int = 200
    temperature: float = 0.7
    threads: int = 1


def alpaca_conversations() -> list[list[dict]]:
    """Each seed task's first instance as (user: instruction [+ input], assistant: output)."""
    path = data.load("alpaca-seed")["seed_tasks.jsonl"]
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for row in rows:
        inst = row["instances"][0]
        user = row["instruction"] + (f"\n\n{inst['input']}" if inst["input"] else "")
        out.append([{"role": "user", "content": user}, {"role": "assistant", "content": inst["output"]}])
    return out


@cache
def sft_tokenizer() -> CharTokenizer:
    texts = [_text(), EOT] + [m["content"] for c in alpaca_conversations() for m in c]
    return CharTokenizer.from_text(texts + [chat.PLAIN_TEMPLATE])


def sft_split(held_out: int) -> tuple[list, list]:
    convs = alpaca_conversations()
    order = torch.randperm(len(convs), generator=torch.Generator().manual_seed(0)).tolist()
    return [convs[i] for i in order[held_out:]], [convs[i] for i in order[:held_out]]


def sft_tensors(convs: list[list[dict]], block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (N, block): targets are -100 on the prompt and on padding, so the loss is the
    assistant's. A window holds at most the prompt's last `block // 2` characters (as generation reads them)
    and then the reply, cut where the window ends."""
    tok = sft_tokenizer()
    xs, ys = [], []
    for conv in convs:
        text, start = chat.assistant_span(chat.PLAIN_TEMPLATE, conv, EOT)
        begin = max(0, start - block // 2)
        start -= begin
        ids = torch.tensor(tok.encode(text)[begin:begin + block + 1])
        x = torch.zeros(block, dtype=torch.long)
        y = torch.full((block,), -100, dtype=torch.long)
        x[:len(ids) - 1] = ids[:-1]
        y[:len(ids) - 1] = ids[1:]
        y[:max(start - 1, 0)] = -100  # predicting the prompt's own characters is not the task
        xs.append(x)
        ys.append(y)
    return torch.stack(xs), torch.stack(ys)


@torch.no_grad()
def stop_rate(model: GPT, convs: list[list[dict]], s: SFTSettings) -> float:
    """The fraction of held-out prompts whose sampled reply ends with the end-of-turn within the window."""
    tok = sft_tokenizer()
    eot = tok.encode(EOT)[0]
    g = torch.Generator().manual_seed(EVAL_SEED)
    model.eval()
    stopped = 0
    for conv in convs:
        prompt = chat.render(chat.PLAIN_TEMPLATE, conv[:-1], add_generation_prompt=True, eos_token=EOT)
        ids = torch.tensor([tok.encode(prompt)[-(s.block_size // 2):]])  # (1, P): room left for the reply
        room = min(s.max_new_tokens, s.block_size - ids.size(1))
        out = torch.stack(list(model.generate(ids, room, temperature=s.temperature, eos_token_id=eot,
                                              generator=g)), 1)
        stopped += int((out == eot).any())
    return stopped / len(convs)


@torch.no_grad()
def assistant_loss(model: GPT, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    x, y = to_device((x, y), of(model))
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100).item()


class SFT(Recipe):
    name = "sft"
    summary = ("supervised fine-tuning on the 175 Alpaca seed tasks, chat-formatted, loss on the assistant's "
               "characters: generation learns to stop")
    Settings = SFTSettings
    milestone = Milestone("stop_rate", 0.8, paper="InstructGPT step 1: fine-tune on demonstrations of the "
                          "desired behaviour (here: answer, then end the turn)")
    quick = {"pretrain_steps": 100, "sft_steps": 250, "sft_lr": 3e-3, "batch_size": 8, "block_size": 192,
             "held_out": 15}
    # the quick budget teaches a small model to stop on some replies only: 0.20 / 0.27 / 0.33 at seeds 0-2 (base 0)
    quick_milestone = Milestone("stop_rate", 0.1)
    quick_seconds = 18.0  # 22 s measured at load ~5 on the 2 cores
    tiny = {"n_embd": 32, "n_layer": 1, "n_head": 2, "block_size": 64, "pretrain_steps": 2, "sft_steps": 2,
            "held_out": 3, "max_new_tokens": 8, "batch_size": 4}

    def build(self, s: SFTSettings) -> GPT:
        return GPT(GPTConfig(vocab_size=sft_tokenizer().vocab_size, n_positions=s.block_size, n_embd=s.n_embd,
                             n_layer=s.n_layer, n_head=s.n_head, activation_function="gelu", resid_pdrop=0.0,
                             embd_pdrop=0.0, attn_pdrop=0.0))

    def train(self, model: GPT, s: SFTSettings, run) -> dict:
        tok = sft_tokenizer()
        text = torch.tensor(tok.encode(_text()), dtype=torch.long)
        opt = torch.optim.AdamW(model.parameters(), lr=s.pretrain_lr, weight_decay=0.0)
        Trainer(model, lambda b: {"loss": model.loss(*b)},
                RandomWindows(text, s.block_size, s.batch_size, seed=run.seed), opt, s.pretrain_steps,
                log_every=10**9, desc="rlhf sft: pre-train").fit()
        train, held = sft_split(s.held_out)
        xh, yh = sft_tensors(held, s.block_size)
        before = {"base_stop_rate": stop_rate(model, held, s), "base_assistant_loss": assistant_loss(model, xh, yh)}
        xt, yt = sft_tensors(train, s.block_size)
        opt = torch.optim.AdamW(model.parameters(), lr=s.sft_lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / max(1, s.sft_steps))
        Trainer(model, lambda b: {"loss": model.loss(*b)},  # the assistant-token loss
                TensorBatches(xt, yt, batch_size=s.batch_size, seed=run.seed), opt, s.sft_steps, run=run,
                scheduler=sched, log_every=max(1, s.sft_steps // 10), desc="rlhf sft").fit()
        return {**self.evaluate(model, s), **before}

    def evaluate(self, model: GPT, s: SFTSettings) -> dict:
        _, held = sft_split(s.held_out)
        xh, yh = sft_tensors(held, s.block_size)
        return {"stop_rate": stop_rate(model, held, s), "assistant_loss": assistant_loss(model, xh, yh)}

    def example(self, s: SFTSettings) -> tuple[torch.Tensor]:
        return (sft_tensors(sft_split(s.held_out)[1][:2], s.block_size)[0],)

    def figures(self, model: GPT, s: SFTSettings, run) -> None:
        tok = sft_tokenizer()
        _, held = sft_split(s.held_out)
        g = torch.Generator().manual_seed(EVAL_SEED)
        lines = []
        for conv in held[:4]:
            prompt = chat.render(chat.PLAIN_TEMPLATE, conv[:-1], add_generation_prompt=True, eos_token=EOT)
            ids = torch.tensor([tok.encode(prompt)[-(s.block_size // 2):]])
            room = min(s.max_new_tokens, s.block_size - ids.size(1))
            out = torch.stack(list(model.generate(ids, room, temperature=s.temperature,
                                                  eos_token_id=tok.encode(EOT)[0], generator=g)), 1)
            reply = tok.decode(out[0].tolist())
            lines.append(prompt + reply.replace(EOT, " <end of turn>") + "\n----")
        write_bytes(run.path("samples.txt"), ("\n".join(lines) + "\n").encode())


RECIPES = [Ppo(), Dpo(), HHRewardModel(), SFT(), SmolDPO()]
