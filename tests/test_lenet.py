"""LeNet: the 1998 C3 connection table, subsampling, RBF output and loss; the 1989 net; quick learning."""

import pytest
import torch
import torch.nn.functional as F

from zupu import create
from zupu.checkpoint import load_model, save_model
from zupu.models.lenet import (
    C3_TABLE,
    H2_TABLE,
    LeNet5,
    LeNet5Config,
    LeNet1989,
    LeNet1989Config,
    connection_mask,
    squash,
)
from zupu.train import launch

# Table I of LeCun et al. (1998), as printed: rows are S2 maps 0-5, columns C3 maps 0-15, X = connected.
TABLE_I = """
X...XXX..XXXX.XX
XX...XXX..XXXX.X
XXX...XXX..X.XXX
.XXX..XXXX..X.XX
..XXX..XXXX.XX.X
...XXX..XXXX.XXX
"""


def test_c3_table_is_table_one():
    rows = TABLE_I.split()
    printed = torch.tensor([[c == "X" for c in row] for row in rows], dtype=torch.float32)  # (6, 16)
    assert torch.equal(connection_mask(C3_TABLE, 6).T, printed)
    assert printed.sum().item() == 60  # 60 connections: 1,500 C3 weights + 16 biases = the paper's 1,516


def test_masked_c3_connections_have_zero_weight_and_no_effect():
    torch.manual_seed(0)
    model = LeNet5(LeNet5Config())
    mask = model.c3.mask.expand_as(model.c3.weight).bool()
    assert (model.c3.weight[~mask] == 0).all()
    x = torch.randn(4, 1, 32, 32)
    model(x).square().sum().backward()
    grad = model.c3.weight.grad
    assert (grad[~mask] == 0).all() and (grad[mask] != 0).any()
    # Writing anything into a masked connection leaves the output unchanged.
    before = model(x)
    with torch.no_grad():
        model.c3.weight[~mask] = torch.randn(int((~mask).sum()))
    assert torch.equal(model(x), before)
    # ...and after an SGD step with momentum and weight decay a masked weight is still what it was.
    kept = model.c3.weight.detach()[~mask].clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.0)
    for _ in range(2):
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()
    assert torch.equal(model.c3.weight.detach()[~mask], kept)


def test_full_table_connects_everything():
    model = LeNet5(LeNet5Config(c3_table="full"))
    assert model.c3.mask.all()


def test_lenet5_shapes_and_subsampling():
    model = LeNet5(LeNet5Config())
    x = torch.randn(2, 1, 32, 32)
    assert model.c1(x).shape == (2, 6, 28, 28)
    s2 = model.s2(model.c1(x))
    assert s2.shape == (2, 6, 14, 14)
    # S2 = (sum of each 2x2 window) * coefficient + bias, per map
    with torch.no_grad():
        model.s2.coef.copy_(torch.arange(1.0, 7.0))
        model.s2.bias.copy_(torch.linspace(-1, 1, 6))
    a = torch.randn(1, 6, 4, 4)
    window_sum = a[:, :, 0::2, 0::2] + a[:, :, 1::2, 0::2] + a[:, :, 0::2, 1::2] + a[:, :, 1::2, 1::2]
    expected = window_sum * torch.arange(1.0, 7.0)[:, None, None] + torch.linspace(-1, 1, 6)[:, None, None]
    assert torch.allclose(model.s2(a), expected, atol=1e-6)
    assert model(x).shape == (2, 10) and model.features(x).shape == (2, 84)
    free = sum(p.numel() for p in model.parameters()) - int((model.c3.mask == 0).sum()) * 25
    assert free == 60_000  # the paper: "60,000 trainable parameters" (the RBF codes are fixed buffers)


def test_squash_is_papers_scaled_tanh():
    assert abs(squash(torch.tensor(1.0)).item() - 1.0) < 1e-3  # f(1) = 1 by construction
    assert abs(squash(torch.tensor(100.0)).item() - 1.7159) < 1e-4


def test_rbf_output_is_euclidean_distance_and_loss_is_eq9():
    torch.manual_seed(0)
    model = LeNet5(LeNet5Config(rubbish_j=2.0))
    codes = model.rbf_codes
    assert codes.shape == (10, 84) and set(codes.unique().tolist()) == {-1.0, 1.0}
    x, y = torch.randn(3, 1, 32, 32), torch.tensor([1, 4, 7])
    h = model.features(x)
    dist = ((h[:, None, :] - codes[None]) ** 2).sum(-1)  # (3, 10): y_i = sum_j (x_j - w_ij)^2
    assert torch.allclose(model(x), -dist, atol=1e-4)
    eq9 = dist[torch.arange(3), y] + torch.log(torch.exp(torch.tensor(-2.0)) + torch.exp(-dist).sum(1))
    assert torch.allclose(model.loss(model(x), y), eq9.mean(), atol=1e-4)
    assert "rbf_codes" not in dict(model.named_parameters())  # fixed, not trained


def test_lenet1989_shapes_free_parameters_and_mse():
    model = LeNet1989(LeNet1989Config())
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    out = model(x)
    assert out.shape == (5, 10)
    free = sum(p.numel() for p in model.parameters()) - int((model.h2.mask == 0).sum()) * 25
    assert free == 9760  # LeCun et al. (1989): "9760 free parameters"
    assert all(len(ins) == 8 for ins in H2_TABLE)
    y = torch.tensor([0, 1, 2, 3, 4])
    target = -torch.ones(5, 10)
    target[torch.arange(5), y] = 1
    assert torch.allclose(model.loss(out, y), F.mse_loss(out, target))


def test_lenet1989_save_load_roundtrip(tmp_path):
    model = LeNet1989(LeNet1989Config())
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert isinstance(loaded, LeNet1989)
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(loaded(x), model.eval()(x))


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="C3 table"):
        LeNet5(LeNet5Config(c3_maps=8))
    with pytest.raises(ValueError, match="output"):
        LeNet5(LeNet5Config(output="softmax"))
    with pytest.raises(ValueError, match="multiple of 4"):
        LeNet1989(LeNet1989Config(image_size=18))


def test_registry_default_is_lenet5():
    assert isinstance(create("lenet", "lenet5"), LeNet5)


@pytest.mark.slow
def test_quick_lenet_runs_learn(tmp_path):
    # quick settings (3 and 4 epochs on the 5k digits) reach their quick milestones (>= 94%, <= 8% error);
    # the full recipes' are 97% and <= 5% error
    r5 = launch.train("lenet", "lenet5-mnist", tmp_path / "l5", quick=True)
    assert r5["milestone"]["passed"] and r5["milestone"]["target"] == 0.94, r5["metrics"]
    r89 = launch.train("lenet", "lenet1989-mnist16", tmp_path / "l89", quick=True)
    assert r89["milestone"]["passed"] and r89["milestone"]["target"] == 0.08, r89["metrics"]
