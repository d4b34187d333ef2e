"""RLHF recipes: PPO and DPO where the truth is known.

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
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F

from zupu import data, weights
from zupu.atomic import write_bytes
from zupu.models.gpt import GPT, GPTConfig
from zupu.models.rlhf import (
    AdaptiveKLController,
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
from zupu.progress import progress
from zupu.recipe import Milestone, Recipe
from zupu.tokenizers import CharTokenizer, chat
from zupu.train.batches import RandomWindows, TensorBatches
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
    """log pi(y_t | x, y_<t) of each response token: (B, R)."""
    full = torch.cat([prompt, response], 1)  # (B, P + R)
    return token_logprobs(model(full), full)[:, prompt.size(1) - 1:]


def clone(model: torch.nn.Module) -> torch.nn.Module:
    """A fresh copy with the same weights (deepcopy would also copy decoding's packed weight caches)."""
    twin = type(model)(model.config)
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
    a, b = sample(base, x, s.response_len, g), sample(base, x, s.response_len, g)
    ga, gb = gold(a), gold(b)
    first_wins = torch.rand(s.pairs, generator=g) < torch.sigmoid((ga - gb) / s.label_noise)
    w = first_wins[:, None]
    return Preferences(x, torch.where(w, a, b), torch.where(w, b, a), torch.where(first_wins, ga, gb),
                       torch.where(first_wins, gb, ga))


def fit_reward_model(base: GPT, prefs: Preferences, s: KnownTruthSettings, seed: int) -> tuple[RewardModel, dict]:
    """A reward model from the base's body (InstructGPT initialises it from the SFT model), Bradley-Terry loss on
    the labelled pairs; its accuracy is measured on a held-out eighth of them against the gold order."""
    rm = RewardModel(RewardModelConfig(base.config), body=clone(base))
    n_val = len(prefs.prompt) // 8
    full_w = torch.cat([prefs.prompt, prefs.chosen], 1)
    full_l = torch.cat([prefs.prompt, prefs.rejected], 1)
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
        rw, rl = rm(full_w[:n_val]), rm(full_l[:n_val])
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
        out["learned"] = rm(torch.cat([x, y], 1)).mean().item()
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
        x = prompts(train_ids, s.rollouts, s.prompt_len, seed * 1_000_003 + it)
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



# -- reward-model: real human preferences ------------------------------------------------------------------------


@dataclass
class HHSettings:
    pairs: int = 2312  # the first N pairs of the file
    max_length: int = 64  # reply tokens the encoder reads
    test_fraction: float = 0.25  # held out, the same pairs for every run
    val_fraction: float = 0.2  # of the training pairs, to choose the weight decay
    weight_decays: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
    steps: int = 300
    lr: float = 0.05
    threads: int = 2


def hh_pairs(n: int) -> list[tuple[str, str, str]]:
    """(prompt, chosen reply, rejected reply) of the first `n` HH-RLHF harmless-base test pairs."""
    path = data.load("hh-rlhf")["harmless-base-test.jsonl.gz"]
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()][:n]
    return [preference_pair(row, f"{path.name} line {i + 1}") for i, row in enumerate(rows)]


@cache
def _encoder(max_length: int):
    from zupu.apps.embed import load_tokenizer
    from zupu.checkpoint import from_pretrained
    folder = weights.fetch("all-minilm-l6-v2")
    return from_pretrained(folder), load_tokenizer(folder, max_length)


@cache
def hh_features(n: int, max_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features of the chosen and rejected replies, (N, 385) each: the encoder's sentence vector (384) and
    log(1 + characters), since the encoder reads only the first `max_length` tokens; and the lengths (N,)."""
    from zupu.apps.embed import embed
    model, encode = _encoder(max_length)
    pairs = hh_pairs(n)
    lengths = [torch.tensor([float(len(p[i])) for p in pairs]) for i in (1, 2)]
    chosen, rejected = (torch.cat([embed(model, encode, [p[i] for p in pairs]), torch.log1p(length)[:, None]], 1)
                        for i, length in zip((1, 2), lengths, strict=True))
    return chosen, rejected, *lengths


def hh_split(n: int, test_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test indices: a fixed permutation (seed 0), the same for every run and for `zupu eval`."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_test = int(n * test_fraction)
    return order[n_test:], order[:n_test]


def fit_linear_reward(fw: torch.Tensor, fl: torch.Tensor, weight_decay: float, s: HHSettings,
                      seed: int) -> FeatureReward:
    torch.manual_seed(seed)
    head = FeatureReward(FeatureRewardConfig(fw.size(1)))
    opt = torch.optim.AdamW(head.parameters(), lr=s.lr, weight_decay=weight_decay)
    for _ in range(s.steps):  # full batch: a few thousand pairs of 384 numbers
        loss = reward_loss(head(fw), head(fl))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head.eval()


@torch.no_grad()
def pair_accuracy(head: FeatureReward, fw: torch.Tensor, fl: torch.Tensor) -> float:
    return (head(fw) > head(fl)).float().mean().item()


def length_rule_accuracy(train_w, train_l, test_w, test_l) -> tuple[float, str]:
    """The better of "the longer reply wins" and "the shorter reply wins", chosen on the training pairs; ties
    count half."""
    def longer_wins(w, lo):
        return ((w > lo).float() + 0.5 * (w == lo).float()).mean().item()
    if longer_wins(train_w, train_l) >= 0.5:
        return longer_wins(test_w, test_l), "longer wins"
    return longer_wins(test_l, test_w), "shorter wins"


class HHRewardModel(Recipe):
    name = "reward-model"
    summary = ("Bradley-Terry reward on all-MiniLM-L6-v2 features of real human preferences (HH-RLHF harmless): "
               "held-out pair accuracy against chance and the response-length rule")
    Settings = HHSettings
    milestone = Milestone("test_pair_acc", 0.58, paper="Bai et al. 2022 (HH-RLHF): 13M-52B preference models "
                          "reach about 0.6-0.7 on harmlessness pairs")
    quick = {"pairs": 400, "max_length": 32}
    # above chance only: 0.54 / 0.59 / 0.59 at seeds 0-2 on 100 held-out pairs; "the shorter reply wins" scores 0.61
    quick_milestone = Milestone("test_pair_acc", 0.52)
    quick_seconds = 32.0  # 39 s measured at load ~5 on the 2 cores, most of it the encoder
    tiny = {"pairs": 40, "max_length": 16, "steps": 5, "weight_decays": (0.01,)}

    def build(self, s: HHSettings) -> FeatureReward:
        return FeatureReward(FeatureRewardConfig(385))

    def train(self, model: FeatureReward, s: HHSettings, run) -> dict:
        fw, fl, lw, ll = hh_features(s.pairs, s.max_length)
        train, test = hh_split(s.pairs, s.test_fraction)
        n_val = int(len(train) * s.val_fraction)
        val, fit = train[:n_val], train[n_val:]
        val_acc = {}
        for wd in s.weight_decays:  # chosen on validation pairs carved from the training split
            val_acc[wd] = pair_accuracy(fit_linear_reward(fw[fit], fl[fit], wd, s, run.seed), fw[val], fl[val])
            run.log(len(val_acc), weight_decay=wd, val_pair_acc=val_acc[wd])
        best = max(val_acc, key=val_acc.get)
        model.load_state_dict(fit_linear_reward(fw[train], fl[train], best, s, run.seed).state_dict())
        length_acc, rule = length_rule_accuracy(lw[train], ll[train], lw[test], ll[test])
        return {**self.evaluate(model, s), "val_pair_acc": val_acc[best], "weight_decay": best,
                "length_rule_acc": length_acc, "length_rule": rule, "chance": 0.5, "test_pairs": len(test)}

    def evaluate(self, model: FeatureReward, s: HHSettings) -> dict:
        fw, fl, _, _ = hh_features(s.pairs, s.max_length)
        _, test = hh_split(s.pairs, s.test_fraction)
        return {"test_pair_acc": pair_accuracy(model, fw[test], fl[test])}

    def example(self, s: HHSettings) -> tuple[torch.Tensor]:
        return (hh_features(s.pairs, s.max_length)[0][:4],)

    def figures(self, model: FeatureReward, s: HHSettings, run) -> None:
        metrics = json.loads(run.path("metrics.json").read_text())["metrics"]
        fw, fl, _, _ = hh_features(s.pairs, s.max_length)
        _, test = hh_split(s.pairs, s.test_fraction)
        with torch.no_grad():
            margin = (model(fw[test]) - model(fl[test])).numpy()
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
        names = ["chance", f"length ({metrics['length_rule']})", "reward model"]
        values = [0.5, metrics["length_rule_acc"], metrics["test_pair_acc"]]
        a.bar(names, values, color=["grey", "tab:orange", "tab:blue"])
        a.set_ylim(0.4, max(values) + 0.05)
        a.set_ylabel("held-out pair accuracy")
        b.hist(margin, bins=30)
        b.axvline(0, color="k", lw=0.8)
        b.set_xlabel("r(chosen) - r(rejected), held-out pairs")
        fig.suptitle("a reward model from real human preferences (HH-RLHF harmless)")
        save(fig, run.path("reward_model.png"))


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


RECIPES = [Ppo(), Dpo(), HHRewardModel(), SFT()]
