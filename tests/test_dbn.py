"""Deep belief net: the stack is the rbm member's RBMs, greedy pre-training trains each layer on the
one below, and pre-training beats a random start with few labels."""

import pytest
import torch

from zupu import from_pretrained
from zupu.models.dbn import DBN, DBNConfig
from zupu.models.rbm import RBM
from zupu.recipes import dbn as recipe
from zupu.train import launch
from zupu.train.threads import threads


@pytest.fixture(autouse=True)
def _one_thread():
    with threads(1):
        yield


def test_stack_shapes_and_forward_is_the_sigmoid_network():
    model = DBN(DBNConfig((12, 8, 5), n_classes=3))
    assert all(isinstance(r, RBM) for r in model.rbms)
    assert [(r.config.n_visible, r.config.n_hidden) for r in model.rbms] == [(12, 8), (8, 5)]
    x = torch.rand(4, 12)
    h1 = torch.sigmoid(x @ model.rbms[0].weight.T + model.rbms[0].hidden_bias)
    h2 = torch.sigmoid(h1 @ model.rbms[1].weight.T + model.rbms[1].hidden_bias)
    torch.testing.assert_close(model.features(x, 1), h1)
    torch.testing.assert_close(model(x), model.classifier(h2))
    assert model(x).shape == (4, 3) and model.features(x, 0) is x
    with pytest.raises(ValueError, match="at least one hidden"):
        DBN(DBNConfig((12,)))


def test_greedy_pretraining_trains_each_rbm_on_the_features_below():
    xtr = recipe.mnist_tensors()[0][:400]
    s = recipe.FewLabelsSettings(sizes=(784, 32, 16), pretrain_epochs=2)
    torch.manual_seed(0)
    model = DBN(DBNConfig(s.sizes))
    untrained = DBN(DBNConfig(s.sizes))
    untrained.load_state_dict(model.state_dict())
    errors = recipe.pretrain(model, xtr, s, seed=0)
    for depth, (rbm, before) in enumerate(zip(model.rbms, untrained.rbms, strict=True)):
        below = model.features(xtr, depth).detach()  # the trained layers below define this RBM's data
        with torch.no_grad():
            # each layer models its own data better than at the start: lower free energy than before
            assert rbm.free_energy(below).mean() < before.free_energy(below).mean() - 1.0, depth
            recon = ((below - rbm.p_visible(rbm.p_hidden(below))) ** 2).sum(1).mean().item()
        assert recon == pytest.approx(errors[depth])
    assert torch.equal(model.classifier.weight, untrained.classifier.weight)  # labels unused


def test_labelled_subset_is_balanced_seeded_and_distinct():
    y = recipe.mnist_tensors()[1]
    idx = recipe.labelled_subset(y, 50, seed=0)
    assert len(idx) == len(set(idx.tolist())) == 500
    assert torch.bincount(y[idx]).tolist() == [50] * 10
    assert torch.equal(idx, recipe.labelled_subset(y, 50, seed=0))
    assert not torch.equal(idx, recipe.labelled_subset(y, 50, seed=1))


def test_random_init_is_glorot_uniform():
    model = DBN(DBNConfig((784, 64, 32)))
    recipe.random_init(model)
    bound = (6 / (784 + 64)) ** 0.5
    w = model.rbms[0].weight
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert model.rbms[0].hidden_bias.abs().max() == 0


def test_pretraining_beats_random_init_with_500_labels(tmp_path):
    result = launch.train("dbn", "mnist-500-labels", tmp_path, quick=True)
    m = result["metrics"]
    assert m["labels"] == 500
    assert result["milestone"]["passed"], m  # pre-trained >= random init + 1 point on 10k test images
    assert m["random_init_test_acc"] > 0.8 and m["test_acc"] > 0.88, m  # a fair baseline, a real gain
    assert launch.evaluate(tmp_path)["metrics"]["test_acc"] == pytest.approx(m["test_acc"])
    assert isinstance(from_pretrained(tmp_path), DBN)
    for png in ("rbm1_filters.png", "pretrained_vs_random.png"):
        assert (tmp_path / png).stat().st_size > 1000
