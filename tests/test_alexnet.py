"""AlexNet's ingredients: LRN's equation, overlapping pooling, dropout, augmentation, a quick learning run."""

import pytest
import torch
import torch.nn.functional as F

from zupu.data.transforms import shift_and_flip
from zupu.models.alexnet import AlexNet, AlexNetConfig, local_response_norm
from zupu.train import launch
from zupu.train.batches import AugmentedBatches, TensorBatches


def lrn_written_out(a: torch.Tensor, n: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """Section 3.3 of the paper, channel by channel."""
    channels = a.shape[1]
    out = torch.empty_like(a)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        out[:, i] = a[:, i] / (k + alpha * (a[:, lo:hi + 1] ** 2).sum(1)) ** beta
    return out


def test_lrn_is_the_papers_equation_and_matches_torch():
    a = torch.randn(3, 9, 4, 5, dtype=torch.float64) * 5
    for n, alpha, beta, k in ((5, 1e-4, 0.75, 2.0), (3, 0.1, 0.5, 1.0)):
        ours = local_response_norm(a, n, alpha, beta, k)
        assert torch.allclose(ours, lrn_written_out(a, n, alpha, beta, k), atol=1e-12)
        # torch's F.local_response_norm divides alpha by n
        assert torch.allclose(ours, F.local_response_norm(a, n, alpha=alpha * n, beta=beta, k=k), atol=1e-12)


def test_lrn_gradient_matches_autograd_of_the_loop():
    a = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    g1, = torch.autograd.grad(local_response_norm(a, 5, 0.3, 0.75, 2.0).sin().sum(), a)
    g2, = torch.autograd.grad(lrn_written_out(a, 5, 0.3, 0.75, 2.0).sin().sum(), a)
    assert torch.allclose(g1, g2, atol=1e-12)


def test_shapes_overlapping_pool_and_switches():
    x = torch.randn(2, 1, 28, 28)
    model = AlexNet(AlexNetConfig())
    assert model(x).shape == (2, 10)
    assert model.fc1.in_features == 32 * 6 * 6  # 28 -> 13 -> 6 with 3x3 windows at stride 2, then no pool
    assert AlexNet(AlexNetConfig(pool_kernel=2)).fc1.in_features == 32 * 7 * 7  # 28 -> 14 -> 7
    assert AlexNet(AlexNetConfig(pooled=3)).fc1.in_features == 32 * 2 * 2  # a third pool: 6 -> 2
    with pytest.raises(ValueError, match="pooled"):
        AlexNet(AlexNetConfig(pooled=4))
    tanh = AlexNet(AlexNetConfig(activation="tanh"))
    assert tanh.act is torch.tanh and model.act is torch.relu
    with pytest.raises(ValueError, match="activation"):
        AlexNet(AlexNetConfig(activation="sigmoid"))
    with pytest.raises(ValueError, match="nothing"):
        AlexNet(AlexNetConfig(image_size=8, channels=(4, 4, 4), pooled=3))  # 8 -> 3 -> 1 -> nothing


def test_lrn_switch_changes_the_output():
    torch.manual_seed(0)
    model = AlexNet(AlexNetConfig(dropout=0.0, lrn_alpha=1.0)).eval()
    x = torch.randn(2, 1, 28, 28)
    with_lrn = model(x)
    model.config.lrn = False
    assert not torch.allclose(with_lrn, model(x))


def test_dropout_only_in_training():
    torch.manual_seed(0)
    model = AlexNet(AlexNetConfig())
    x = torch.randn(4, 1, 28, 28)
    assert not torch.equal(model.train()(x), model(x))  # two dropout masks
    model.eval()
    assert torch.equal(model(x), model(x))
    plain = AlexNet(AlexNetConfig(dropout=0.0))
    assert torch.equal(plain.train()(x), plain.eval()(x))


def test_augmentation_translates_and_mirrors():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(shift_and_flip(x, 0, False, g), x)
    out = shift_and_flip(x, 1, True, torch.Generator().manual_seed(3), fill=-0.5)
    for n in range(2):
        candidates = []
        for img in (x[n], x[n].flip(2)):
            padded = F.pad(img, (1, 1, 1, 1), value=-0.5)
            candidates += [padded[:, dy:dy + 6, dx:dx + 6] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(out[n], c) for c in candidates)


def test_augmented_batches_are_a_function_of_the_step():
    x, y = torch.randn(20, 1, 8, 8), torch.arange(20)
    def aug(x, g):
        return shift_and_flip(x, 2, True, g)

    a = AugmentedBatches(TensorBatches(x, y, batch_size=5, seed=1), aug, seed=1)
    b = AugmentedBatches(TensorBatches(x, y, batch_size=5, seed=1), aug, seed=1)
    assert torch.equal(a(7)[0], b(7)[0]) and torch.equal(a(7)[1], b(7)[1])
    assert not torch.equal(a(7)[0], a(8)[0])


@pytest.mark.slow
def test_quick_run_learns(tmp_path):
    # quick settings: 3 epochs on 5,000 images, 117 steps: its quick milestone, >= 74% (chance is 10%). The
    # full recipe's milestone is 91% on all 60,000; dropout and augmentation make the first epochs slow.
    result = launch.train("alexnet", "fashion-mnist", tmp_path, quick=True)
    assert result["milestone"]["passed"] and result["milestone"]["target"] == 0.74, result["metrics"]
    assert (tmp_path / "conv1_kernels.png").exists()


def test_validation_split_is_carved_from_the_training_images():
    from zupu.errors import SettingError
    from zupu.recipes.alexnet import validation_split

    x, y = torch.arange(100.0).view(100, 1), torch.arange(100)
    xtr, ytr, xval, yval = validation_split(x, y, 20)
    assert len(ytr) == 80 and yval.tolist() == list(range(80, 100))  # the last 20, disjoint from training
    with pytest.raises(SettingError, match="validation=100"):
        validation_split(x, y, 100)

