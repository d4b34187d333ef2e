"""Chat recipe: what happens between a message and ChatGPT's reply, measured on the real SmolLM2-135M-Instruct.

No training: the weights are SmolLM2's (read from its GGUF, as the llama recipe reads them). Three steps of the
way a chat model answers, each made a number or a figure:

1. the embedding: a token is a row of a (49152, 576) table; a 2-D PCA map of the rows of everyday nouns
   (`embedding_map.png`) shows the table already keeping animals, plants, foods and vehicles apart;
2. the context window: a conversation under a small token budget (the user turns are Stanford Alpaca's
   human-written seed instructions, the replies SmolLM2's own, greedy); as it outgrows the window the oldest
   turns are dropped, a question with its answer, and the system prompt is kept (`context_window.png`);
3. prompt engineering, measured: one question (is this emoji an animal, a plant, a food or a vehicle?) asked
   zero-shot, few-shot (solved examples as earlier turns of the conversation) and under a task-specific system
   prompt, on emoji names, with Unicode's own categories as the held-out answer key (emoji-data's emoji.json:
   subcategories animal-*, plant-*, food-* and drink, transport-ground/air/water). The reply is read by rank
   classification: the label whose first token ("animal" or "Animal") the model finds likeliest to open its
   answer. Accuracy with a 95% Wilson interval per arm (`prompt_arms.png`); chance is 1/4. Decoding is greedy,
   so the run's seed only picks the few-shot examples (from a pool that the answer key does not contain).
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from functools import cache
from typing import Any

import matplotlib.pyplot as plt
import torch

from zupu import data
from zupu.apps.chat import Chat
from zupu.checkpoint import from_pretrained
from zupu.data.download import fetch_file
from zupu.models.llama import Llama
from zupu.recipe import Milestone, Recipe
from zupu.recipes.llama import tokenizer
from zupu.train.device import of
from zupu.train.metrics import wilson_interval
from zupu.train.plots import save

LABELS = ("animal", "plant", "food", "vehicle")
SUBCATEGORY = {"drink": "food", "transport-ground": "vehicle", "transport-air": "vehicle",
               "transport-water": "vehicle"}
QUESTION = "Is this emoji an animal, a plant, a food or a vehicle? Answer with one word.\nEmoji: {name}"
# chosen on the shot pool (32 emoji, never the answer key) over "You sort emoji into four kinds by their names.
# Reply with exactly one word: animal, plant, food or vehicle." (0.28), "You are an expert on emoji..." (0.31)
# and a definition of each kind (0.34): every system prompt that replaces SmolLM2's own default makes it answer
# "animal" to nearly everything; this one did least harm (0.41)
TASK_SYSTEM = "You are a helpful assistant that answers with a single word."
WINDOW_SYSTEM = "You are a helpful assistant. Keep every answer short."
ARMS = ("zero_shot", "few_shot", "system")


@dataclass
class Settings:
    weights: str = "smollm2"  # a weights-registry name or a .gguf path
    test_limit: int = 0  # answer-key emoji asked per arm, as many of each kind; 0: the whole key (266)
    shots_per_kind: int = 2  # few-shot examples of each kind, in an order the seed shuffles
    shots_seed: int | None = None  # None: the run's --seed (recorded in the run's settings)
    window: int = 256  # the context-window demonstration's token budget: prompt plus reply
    reply_tokens: int = 32  # the longest reply in that conversation
    turns: int = 7  # user turns in it


def kind_of(subcategory: str) -> str | None:
    head = subcategory.split("-")[0]
    return head if head in ("animal", "plant", "food") else SUBCATEGORY.get(subcategory)


@cache
def emoji_task() -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """(shot pool, answer key): (name, kind) of every base emoji of the four kinds, in emoji.json's order; every
    fourth goes to the pool the few-shot examples come from, the rest is the answer key."""
    listing = next(f for f in data.get("emoji-noto-64").files if f.path.endswith("/emoji.json"))
    entries = json.loads(fetch_file("emoji-noto-64", listing).read_text(encoding="utf-8"))  # not the 3,786 images
    items = [(e["name"].lower(), kind) for e in entries
             if e.get("has_img_google") and e.get("name") and (kind := kind_of(e["subcategory"]))]
    return tuple(items[::4]), tuple(x for i, x in enumerate(items) if i % 4)


def answer_key(limit: int) -> list[tuple[str, str]]:
    """The first `limit` // 4 of each kind, spread evenly over the kind's list (its subcategories), or all."""
    key = emoji_task()[1]
    if not limit:
        return list(key)
    per = limit // len(LABELS)
    out = []
    for label in LABELS:
        items = [x for x in key if x[1] == label]
        out += [items[i * len(items) // per] for i in range(min(per, len(items)))]
    return out


def shots(per_kind: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pool = emoji_task()[0]
    chosen = [x for label in LABELS for x in rng.sample([p for p in pool if p[1] == label], per_kind)]
    rng.shuffle(chosen)
    return chosen


def messages(arm: str, name: str, examples: list[tuple[str, str]]) -> list[dict[str, str]]:
    ask = {"role": "user", "content": QUESTION.format(name=name)}
    if arm == "zero_shot":  # SmolLM2's template adds its own default system prompt
        return [ask]
    if arm == "system":
        return [{"role": "system", "content": TASK_SYSTEM}, ask]
    solved = [[{"role": "user", "content": QUESTION.format(name=n)}, {"role": "assistant", "content": k}]
              for n, k in examples]
    return [m for pair in solved for m in pair] + [ask]


@torch.no_grad()
def label_scores(model: Llama, tok: Any, prompts: list[str]) -> torch.Tensor:
    """(N, 4): the log-probability that each prompt's reply opens with each label (either case). The prompts'
    common opening is run once and its KV cache reused: each prompt then costs only its own last tokens."""
    ids = [tok.encode(p) for p in prompts]
    common = 0
    while common < min(map(len, ids)) - 1 and len({x[common] for x in ids}) == 1:
        common += 1
    firsts = [sorted({tok.encode(w)[0] for w in (label, label.capitalize())}) for label in LABELS]
    caches = model.new_caches(max(map(len, ids)))
    device = of(model)
    model(torch.tensor([ids[0][:common]], device=device), caches=caches)
    out = []
    for x in ids:
        for c in caches:
            c.length = common  # rewind to the shared opening: the next forward overwrites the rest in place
        logits = model(torch.tensor([x[common:]], device=device), caches=caches, last_only=True)
        logp = logits[0, -1].float().log_softmax(-1)
        out.append(torch.stack([logp[f].logsumexp(0) for f in firsts]))
    return torch.stack(out).cpu()  # scored against the answer key on the host


def prompt_arms(model: Llama, tok: Any, s: Settings) -> dict[str, Any]:
    key = answer_key(s.test_limit)
    truth = torch.tensor([LABELS.index(k) for _, k in key])
    examples = shots(s.shots_per_kind, s.shots_seed or 0)
    out: dict[str, Any] = {"test_items": len(key), "chance_acc": 1 / len(LABELS)}
    for arm in ARMS:
        prompts = [tok.apply_chat_template(messages(arm, name, examples), True) for name, _ in key]
        hits = int((label_scores(model, tok, prompts).argmax(1) == truth).sum())
        low, high = wilson_interval(hits, len(key))
        out.update({f"{arm}_acc": round(hits / len(key), 4), f"{arm}_acc_low": round(low, 4),
                    f"{arm}_acc_high": round(high, 4)})
    # the measurement, whichever arm wins: how many arms beat guessing beyond doubt (95% interval above 1/4)
    out["arms_above_chance"] = sum(out[f"{arm}_acc_low"] > out["chance_acc"] for arm in ARMS)
    return out


def user_turns(n: int) -> list[str]:
    """The first `n` Alpaca seed instructions that need no input and fit a line."""
    path = data.load("alpaca-seed")["seed_tasks.jsonl"]
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["instruction"] for r in rows if not r["instances"][0]["input"] and len(r["instruction"]) < 100][:n]


def message_tokens(chat: Chat) -> list[tuple[str, int]]:
    """(role, tokens) of each message the window holds, as the chat template writes it out."""
    msgs, tok = chat.messages(), chat.tokenizer
    ends = [len(tok.encode(tok.apply_chat_template(msgs[:i + 1], False))) for i in range(len(msgs))]
    return [(m["role"], e - b) for m, b, e in zip(msgs, [0, *ends[:-1]], ends, strict=True)]


def conversation(model: Llama, tok: Any, s: Settings) -> list[dict[str, Any]]:
    """Each turn: the messages the window holds when the reply starts (role, tokens), how many were dropped,
    whether the prompt still opens with the system prompt, and the reply's length."""
    chat = Chat(model, tok, WINDOW_SYSTEM, s.window, s.reply_tokens)
    system = tok.encode(tok.apply_chat_template(chat.messages(), False))
    log = []
    for text in user_turns(s.turns):
        dropped = chat.ask(text)
        held = message_tokens(chat)
        kept = chat.prompt_ids()[:len(system)] == system
        reply = "".join(chat.reply(temperature=0, top_p=None))
        log.append({"dropped": dropped, "held": held, "system_kept": kept, "reply_tokens": len(tok.encode(reply))})
    return log


class ContextAndPrompts(Recipe):
    name = "smollm2-window-prompts"
    summary = ("SmolLM2-135M-Instruct's context window dropping turns, its embedding map, and zero-shot vs few-shot "
               "vs system prompt on emoji kinds")
    Settings = Settings
    # the measurement, not a winner: at 135M few-shot did not beat zero-shot, and it swings with the examples
    # drawn. Full, seed 0 (266 emoji): zero-shot 0.699, few-shot 0.617, system prompt 0.673, all three above
    # chance (97 s of CPU at 1 thread). Quick (32 emoji): zero-shot 0.594 and system 0.594 at every seed, few-shot
    # 0.656 / 0.656 / 0.313 at seeds 0 / 1 / 2: 3 / 3 / 2 arms above chance
    milestone = Milestone("arms_above_chance", 2, paper="GPT-3 (Brown et al. 2020): few-shot beats zero-shot at "
                                                         "175B parameters, and the gap grows with size")
    quick = {"test_limit": 32, "turns": 4, "reply_tokens": 16, "window": 128}
    quick_milestone = Milestone("arms_above_chance", 2)
    # measured 27.4-27.8 s of CPU time at 1 thread (seeds 0-2, load 25), the GGUF's dequantisation about half
    quick_seconds = 28.0
    tiny = {"test_limit": 8, "turns": 2, "reply_tokens": 4, "window": 96}

    def __init__(self) -> None:
        self.last: tuple[Any, ...] | None = None  # (model, settings, conversation) of the last evaluation

    def build(self, s: Settings) -> Llama:
        return from_pretrained(s.weights)

    def train(self, model: Llama, s: Settings, run) -> dict:
        if s.shots_seed is None:  # the seed picks the shots; recorded so that `zupu eval` asks the same
            s = run.settings = dataclasses.replace(s, shots_seed=run.seed)
        tokenizer(s.weights).save(run.out)
        return self.evaluate(model, s)

    def evaluate(self, model: Llama, s: Settings) -> dict:
        tok = tokenizer(s.weights)
        model.eval()
        log = conversation(model, tok, s)
        self.last = (model, s, log)
        return {**prompt_arms(model, tok, s), "window_dropped": sum(t["dropped"] for t in log),
                "window_system_kept": float(all(t["system_kept"] for t in log))}

    def example(self, s: Settings) -> tuple:
        tok = tokenizer(s.weights)
        return (torch.tensor([tok.encode(tok.apply_chat_template(messages("zero_shot", "dog face", []), True))]),)

    def figures(self, model: Llama, s: Settings, run) -> None:
        if self.last is None or self.last[0] is not model:
            self.evaluate(model, s)
        s, log = self.last[1], self.last[2]
        window_figure(log, s, run.path("context_window.png"))
        embedding_figure(model, tokenizer(s.weights), run.path("embedding_map.png"))
        metrics = json.loads(run.path("metrics.json").read_text())["metrics"]
        arms_figure(metrics, run.path("prompt_arms.png"))


COLOURS = {"system": "tab:grey", "user": "tab:blue", "assistant": "tab:orange"}


def window_figure(log: list[dict[str, Any]], s: Settings, path) -> None:
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(log) + 1.5))
    for k, turn in enumerate(log):
        left = 0
        for role, n in turn["held"]:
            ax.barh(k, n, left=left, color=COLOURS[role], edgecolor="white")
            left += n
        ax.barh(k, turn["reply_tokens"], left=left, color=COLOURS["assistant"], alpha=0.4, hatch="//")
        if turn["dropped"]:
            ax.text(s.window + 4, k, f"dropped {turn['dropped']} oldest", va="center", fontsize=8)
    ax.axvline(s.window, color="k", ls="--")
    ax.set_yticks(range(len(log)), [f"turn {k + 1}" for k in range(len(log))])
    ax.invert_yaxis()
    ax.set_xlim(0, s.window * 1.45)
    ax.set_xlabel(f"tokens in the window (budget {s.window}, dashed; hatched: the reply being written)")
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()], labels=list(COLOURS),
              loc="upper right", fontsize=8)
    ax.set_title("SmolLM2's context window: the oldest turns go, the system prompt stays")
    save(fig, path)


def embedding_figure(model: Llama, tok: Any, path, per_kind: int = 20) -> None:
    """PCA of the embedding rows of one-token emoji name words (" dog", " apple"), coloured by kind."""
    words: dict[str, str] = {}
    for name, kind in emoji_task()[0] + emoji_task()[1]:
        word = name.split()[-1]
        if len(tok.encode(" " + word)) == 1 and sum(v == kind for v in words.values()) < per_kind:
            words.setdefault(word, kind)
    ids = torch.tensor([tok.encode(" " + w)[0] for w in words])
    rows = model.embed_tokens.weight[ids].detach().float()
    rows = rows - rows.mean(0)
    xy = rows @ torch.linalg.svd(rows, full_matrices=False).Vh[:2].T  # (N, 2): the two main directions
    fig, ax = plt.subplots(figsize=(7, 6))
    for kind, colour in zip(LABELS, ("tab:brown", "tab:green", "tab:orange", "tab:blue"), strict=True):
        pick = [i for i, k in enumerate(words.values()) if k == kind]
        ax.scatter(xy[pick, 0], xy[pick, 1], color=colour, label=kind, s=14)
        for i in pick:
            ax.annotate(list(words)[i], xy[i].tolist(), fontsize=7, color=colour)
    ax.legend()
    ax.set_title("SmolLM2's token embeddings (576-d), first two principal components")
    save(fig, path)


def arms_figure(metrics: dict[str, Any], path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    acc = [metrics[f"{a}_acc"] for a in ARMS]
    err = [[a - metrics[f"{n}_acc_low"] for a, n in zip(acc, ARMS, strict=True)],
           [metrics[f"{n}_acc_high"] - a for a, n in zip(acc, ARMS, strict=True)]]
    ax.bar([a.replace("_", "-") for a in ARMS], acc, yerr=err, capsize=6, color="tab:blue")
    ax.axhline(metrics["chance_acc"], color="k", ls="--", label="chance")
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"accuracy on {metrics['test_items']} emoji (95% Wilson)")
    ax.legend()
    ax.set_title("Prompt engineering on SmolLM2-135M")
    save(fig, path)


RECIPES = [ContextAndPrompts()]
