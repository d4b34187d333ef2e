"""BERT pre-training data (masking, next-sentence pairs) and the pre-train-then-fine-tune recipe."""

import pytest
import torch

from zupu.data import load
from zupu.errors import ZupuError
from zupu.models.bert import IGNORE, BertForPreTraining, masked_lm_loss
from zupu.recipes.bert import (
    POOL_PER_TOPIC,
    SPEAKERS,
    TEST_PER_TOPIC,
    TOPICS,
    PretrainBatches,
    SpeakerID,
    TangTopics,
    corpus,
    draw_labels,
    halves,
    held_out_docs,
    mask_tokens,
    nsp_examples,
    pack_pairs,
    speeches,
    tang_corpus,
    topic_classifier,
)
from zupu.train import launch

VOCAB = 1000


def data():
    return corpus(40, VOCAB)


def test_speeches_split_text_into_speaker_and_lines():
    text = "First Citizen:\nBefore we proceed.\nHear me.\n\nAll:\nSpeak, speak.\n\nnot a speech\n"
    assert speeches(text) == [("First Citizen", ["Before we proceed.", "Hear me."]), ("All", ["Speak, speak."])]


def test_masking_statistics_and_loss_positions():
    tok, docs, _, _ = data()
    specials = sorted(tok.special_tokens.values())
    batch = PretrainBatches(tok, docs, batch_size=512, max_length=48, seed=3)
    clean = pack_pairs(tok, [(a, b) for a, b, *_ in nsp_examples(docs, 512, torch.Generator().manual_seed(3))], 48)
    # many tokens: 80 batches' worth of masking on the same clean rows
    ids = clean["input_ids"].repeat(80, 1)
    g = torch.Generator().manual_seed(0)
    masked, labels = mask_tokens(ids, specials, tok.vocab_size, tok.vocab["[MASK]"], g)
    special = torch.isin(ids, torch.tensor(specials))
    selected = labels != IGNORE
    n_ordinary = (~special).sum().item()
    assert n_ordinary > 500_000
    assert abs(selected.sum().item() / n_ordinary - 0.15) < 0.005
    assert not (selected & special).any()  # [CLS], [SEP], [PAD] are never selected
    assert torch.equal(labels[selected], ids[selected])  # labels are the original tokens
    assert torch.equal(masked[~selected], ids[~selected])  # nothing outside the selection changes
    sel_in, sel_orig = masked[selected], ids[selected]
    is_mask = sel_in == tok.vocab["[MASK]"]
    kept = sel_in == sel_orig
    rand = ~is_mask & ~kept
    n = selected.sum().item()
    assert abs(is_mask.sum().item() / n - 0.8) < 0.01
    # a random replacement may by chance draw the original token (1 in ~1000): counted as kept
    assert abs(rand.sum().item() / n - 0.1) < 0.01
    assert abs(kept.sum().item() / n - 0.1) < 0.01
    assert not torch.isin(sel_in[rand], torch.tensor(specials)).any()  # random tokens are ordinary ones
    assert len(sel_in[rand].unique()) > 0.5 * tok.vocab_size  # spread over the vocabulary
    # the batch source does the same, and the loss ignores unselected positions
    b = batch(0)
    assert not ((b["mlm_labels"] != IGNORE) & torch.isin(b["input_ids"], torch.tensor(specials[:4]))
                & (b["input_ids"] != tok.vocab["[MASK]"])).any()
    assert torch.equal(batch(0)["input_ids"], b["input_ids"])  # a pure function of the step


def test_nsp_negatives_come_from_other_documents():
    tok, docs, _, _ = data()
    ex = nsp_examples(docs, 4000, torch.Generator().manual_seed(1))
    labels = torch.tensor([e[2] for e in ex], dtype=torch.float)
    assert abs(labels.mean().item() - 0.5) < 0.03
    for a, b, label, da, db in ex:
        assert a in docs[da] and b in docs[db]
        if label == 0:  # b follows a in the same document
            i = next(i for i, line in enumerate(docs[da][:-1]) if line == a and docs[da][i + 1] == b)
            assert docs[da][i + 1] == b
            assert da == db
        else:
            assert da != db
    assert len({db for *_, label, _, db in ex if label == 1}) > 1000  # negatives drawn widely


def test_pair_shapes_and_segments():
    tok, docs, _, _ = data()
    b = PretrainBatches(tok, docs, batch_size=16, max_length=24, seed=0)(5)
    ids, types, mask = b["input_ids"], b["token_type_ids"], b["attention_mask"]
    assert ids.shape == types.shape == mask.shape == b["mlm_labels"].shape and ids.shape[0] == 16
    assert ids.shape[1] <= 24 and b["nsp_labels"].shape == (16,)
    cls, sep = tok.cls_id, tok.sep_id
    assert (ids[:, 0] == cls).all()
    for r in range(16):
        n = mask[r].sum().item()
        seps = (ids[r, :n] == sep).nonzero().flatten().tolist()
        assert len(seps) == 2 and seps[1] == n - 1
        assert (types[r, :seps[0] + 1] == 0).all() and (types[r, seps[0] + 1:n] == 1).all()
        assert (mask[r, n:] == 0).all() and (ids[r, n:] == tok.pad_id).all()
    model = BertForPreTraining(SpeakerID().config(SpeakerID().settings(True, {"hidden_size": 32}), tok.vocab_size))
    mlm, nsp = model(ids, mask, types)
    assert mlm.shape == (*ids.shape, tok.vocab_size) and nsp.shape == (16, 2)


def test_labelled_task_is_held_out_of_pretraining():
    tok, docs, train, test = data()
    assert len(train) == 40 * len(SPEAKERS) and len(test) > 300
    assert sorted({label for _, label in train}) == list(range(len(SPEAKERS)))
    all_speeches = speeches(load("tinyshakespeare"))
    assert len(docs) == len(all_speeches) - len(test)  # exactly the test speeches are held out
    # each speaker's training speeches come before its test speeches; none is a pre-training document
    doc_texts = {tuple(x for line in doc for x in line) for doc in docs}
    leaked = [t for t, _ in test if tuple(tok.tokenize_ids(t)) in doc_texts]
    assert len(leaked) <= 0.02 * len(test)  # only speeches repeated verbatim in the text ("Ay, my lord.")


def test_short_pretraining_lowers_the_masked_lm_loss():
    """150 pre-training steps: masked-LM loss well below uniform guessing over the vocabulary."""
    torch.manual_seed(0)
    recipe = SpeakerID()
    s = recipe.settings(overrides={"pretrain_steps": 150, "threads": 1})
    pre = recipe.pretrain(s, seed=0)
    tok, docs, _, _ = data()
    b = PretrainBatches(tok, docs, 256, s.max_length, seed=99)(0)
    pre.eval()
    with torch.no_grad():
        out = pre.loss(b["input_ids"], b["attention_mask"], b["token_type_ids"], b["mlm_labels"], b["nsp_labels"])
    assert out["mlm_loss"].item() < 0.8 * torch.log(torch.tensor(float(tok.vocab_size))).item()


def test_pretraining_loss_on_selected_positions_equals_the_full_logits_loss():
    """`loss` computes vocabulary logits at the selected positions only; loss and accuracies must match the
    (B, T, V) logits of `forward` scored with `masked_lm_loss`."""
    tok, docs, _, _ = data()
    b = PretrainBatches(tok, docs, batch_size=64, max_length=32, seed=4)(0)
    torch.manual_seed(0)
    model = BertForPreTraining(SpeakerID().config(SpeakerID().settings(), tok.vocab_size)).eval()
    args = b["input_ids"], b["attention_mask"], b["token_type_ids"]
    out = model.loss(*args, b["mlm_labels"], b["nsp_labels"])
    mlm_logits, nsp_logits = model(*args)
    picked = b["mlm_labels"] != IGNORE
    assert 0 < picked.sum() < picked.numel()
    torch.testing.assert_close(out["mlm_loss"], masked_lm_loss(mlm_logits, b["mlm_labels"]))
    torch.testing.assert_close(out["nsp_loss"], torch.nn.functional.cross_entropy(nsp_logits, b["nsp_labels"]))
    assert out["mlm_acc"] == (mlm_logits[picked].argmax(-1) == b["mlm_labels"][picked]).float().mean()
    assert out["nsp_acc"] == (nsp_logits.argmax(-1) == b["nsp_labels"]).float().mean()


@pytest.mark.slow
def test_recipe_fine_tunes_both_arms_per_seed_and_saves_the_first(tmp_path):
    """A short run of the recipe: per-seed accuracies for both arms, the gain of their means, the pre-trained
    model's MLM/NSP accuracy, the comparison figure, and a saved model that scores what seed 0 scored."""
    result = launch.train("bert", "shakespeare-speakers", tmp_path,
                          overrides={"pretrain_steps": 30, "finetune_steps": 10, "finetune_seeds": 2})
    m = result["metrics"]
    assert len(m["pretrained_accs"]) == len(m["scratch_accs"]) == 2
    assert m["gain"] == pytest.approx(sum(m["pretrained_accs"]) / 2 - sum(m["scratch_accs"]) / 2)
    assert 0 < m["pretrain_mlm_acc"] < 1 and 0 < m["pretrain_nsp_acc"] < 1
    assert launch.evaluate(tmp_path)["metrics"]["test_acc"] == pytest.approx(m["test_acc"]) == m["pretrained_accs"][0]
    assert (tmp_path / "pretrained_vs_scratch.png").stat().st_size > 1000


def test_tang_topics_hold_the_test_poems_out_of_pretraining():
    tok, docs, pool, test = tang_corpus()
    for examples, per_topic in ((pool, POOL_PER_TOPIC), (test, TEST_PER_TOPIC)):
        assert [sum(y == t for _, y in examples) for t in range(len(TOPICS))] == [per_topic] * len(TOPICS)
    assert not {text for text, _ in pool} & {text for text, _ in test}
    assert len(docs) > 50000 and all(len(d) == 2 and d[0] and d[1] for d in docs)
    pretraining = {tuple(d[0] + d[1]) for d in docs}
    assert not any(tuple(tok.tokenize_ids(text)) in pretraining for text, _ in test)  # no test poem, however written
    # every character of a poem is one token, so a poem's two halves are its whole text
    assert halves([[1, 2], [3], [4, 5]]) == [[1, 2], [3, 4, 5]]


def test_label_draws_are_balanced_reproducible_and_differ():
    pool = tang_corpus()[2]
    a, b = draw_labels(pool, 5, 0), draw_labels(pool, 5, 1)
    assert [y for _, y in a] == [t for t in range(len(TOPICS)) for _ in range(5)]
    assert a == draw_labels(pool, 5, 0) and a != b


def test_topic_classifier_arms_share_the_classifier_layer_and_differ_in_the_encoder():
    s = TangTopics().settings(overrides={"hidden_size": 16, "intermediate_size": 32})
    config = TangTopics().config(s, 50)
    pretrained = topic_classifier(config, seed=9).bert.state_dict()  # stands in for a pre-trained encoder
    tuned, scratch = topic_classifier(config, pretrained, seed=3), topic_classifier(config, None, seed=3)
    torch.testing.assert_close(tuned.classifier.weight, scratch.classifier.weight)
    embeddings = "embeddings.word_embeddings.weight"
    torch.testing.assert_close(tuned.bert.state_dict()[embeddings], pretrained[embeddings])
    assert not torch.equal(tuned.bert.state_dict()[embeddings], scratch.bert.state_dict()[embeddings])
    ids, mask = torch.randint(5, 50, (3, 7)), torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    tuned.eval()
    h = tuned.bert(ids, mask)
    by_hand = tuned.classifier(torch.stack([h[i, :int(mask[i].sum())].mean(0) for i in range(3)]))
    torch.testing.assert_close(tuned(ids, mask), by_hand)  # the mean of the real tokens only


def test_cls_pooling_reads_the_nsp_pooler_and_other_poolings_are_refused():
    s = TangTopics().settings(overrides={"hidden_size": 16, "intermediate_size": 32})
    config = TangTopics().config(s, 50)
    model = topic_classifier(config, seed=3, pooling="cls").eval()
    ids, mask = torch.randint(5, 50, (3, 7)), torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    h = model.bert(ids, mask)
    torch.testing.assert_close(model(ids, mask), model.classifier(model.bert.pool(h)))  # [CLS] through the pooler
    assert not torch.allclose(model(ids, mask), topic_classifier(config, seed=3).eval()(ids, mask))
    with pytest.raises(ZupuError, match="pooling='max'"):
        TangTopics().check(TangTopics.Settings(pooling="max"))


def test_held_out_documents_are_the_test_poems_pretraining_never_saw():
    tok, docs, _, test = tang_corpus()
    held = held_out_docs()
    assert 900 < len(held) <= len(test) and all(len(d) == 2 and d[0] and d[1] for d in held)
    pretraining = {tuple(d[0] + d[1]) for d in docs}
    assert not any(tuple(d[0] + d[1]) in pretraining for d in held)
    assert {tuple(d[0] + d[1]) for d in held} <= {tuple(tok.tokenize_ids(text)) for text, _ in test}


@pytest.mark.slow
def test_tang_topics_recipe_chooses_each_arms_lr_on_its_own_labels(tmp_path):
    """A short run: per-draw accuracies of both arms at the lr each chose by cross-validation, the gain of
    the means, the bag-of-characters reference, and a saved model that scores what draw 0's pre-trained arm did."""
    result = launch.train("bert", "tang-topics", tmp_path, overrides={
        "pretrain_steps": 20, "finetune_steps": 4, "draws": 2, "labels_per_topic": 3, "hidden_size": 32,
        "intermediate_size": 64})
    m = result["metrics"]
    assert len(m["pretrained_accs"]) == len(m["scratch_accs"]) == len(m["pretrained_lrs"]) == 2
    assert set(m["pretrained_lrs"] + m["scratch_lrs"]) <= {1e-3, 3e-3}
    assert m["gain"] == pytest.approx(sum(m["pretrained_accs"]) / 2 - sum(m["scratch_accs"]) / 2)
    assert 0 < m["bag_of_chars_acc"] <= 1 and m["labelled_train"] == 12 and m["labelled_test"] == 1000
    assert launch.evaluate(tmp_path)["metrics"]["test_acc"] == pytest.approx(m["test_acc"]) == m["pretrained_accs"][0]
    assert (tmp_path / "pretrained_vs_scratch.png").stat().st_size > 1000


def test_tang_topics_validation_is_the_pool_a_draw_left_never_the_test_set():
    """Design choices are scored on the labelled-pool poems a draw did not take, disjoint from its labels
    and from the 1,000 test poems."""
    from zupu.recipes.bert import POOL_PER_TOPIC, TOPICS, draw_labels, tang_corpus

    _, _, pool, test = tang_corpus()
    s = TangTopics.Settings(labels_per_topic=20, scored_on="validation")
    train = draw_labels(pool, 20, draw=0)
    val = TangTopics().scored(s, pool, train)
    assert len(val) == (POOL_PER_TOPIC - 20) * len(TOPICS)
    assert not {text for text, _ in val} & {text for text, _ in train}
    assert not {text for text, _ in val} & {text for text, _ in test}
    assert TangTopics().scored(TangTopics.Settings(), pool, train) == test
    with pytest.raises(ZupuError, match="scored_on='dev'"):
        TangTopics().check(TangTopics.Settings(scored_on="dev"))


def test_tang_topics_refuses_more_labels_than_the_pool_before_pre_training(tmp_path, monkeypatch):
    def pretrain(*args, **kwargs):
        raise AssertionError("pre-trained before checking the settings")

    monkeypatch.setattr(TangTopics, "pretrain", pretrain)
    with pytest.raises(ZupuError, match="labels_per_topic=60"):
        launch.train("bert", "tang-topics", tmp_path, overrides={"labels_per_topic": 60})
