"""RBM: the energy model checked by brute-force enumeration, CD against the exact gradient, parity
with scikit-learn's BernoulliRBM, and the digits milestone."""

import itertools

import numpy as np
import pytest
import torch

from zupu import data, from_pretrained
from zupu.data.transforms import split_indices
from zupu.models.rbm import RBM, RBMConfig
from zupu.recipes import rbm as recipe
from zupu.train import launch
from zupu.train.threads import threads


@pytest.fixture(autouse=True)
def _one_thread():
    with threads(1):  # these matrices are tiny; a second thread only adds waiting
        yield


def tiny_rbm(n_visible: int = 5, n_hidden: int = 3, seed: int = 0) -> RBM:
    """A float64 RBM with weights large enough that the distribution is far from uniform."""
    torch.manual_seed(seed)
    model = RBM(RBMConfig(n_visible, n_hidden)).double()
    with torch.no_grad():
        model.weight.normal_(0, 1.0)
        model.visible_bias.normal_(0, 0.5)
        model.hidden_bias.normal_(0, 0.5)
    return model


def all_states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)), dtype=torch.float64)  # (2^n, n)


def joint_log_p(model: RBM) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log p(v, h) over every (v, h) pair, by enumeration: (2^V, 2^H), plus the states."""
    vs, hs = all_states(model.config.n_visible), all_states(model.config.n_hidden)
    v = vs[:, None].expand(-1, len(hs), -1).reshape(-1, vs.shape[1])  # (2^V * 2^H, V)
    h = hs[None].expand(len(vs), -1, -1).reshape(-1, hs.shape[1])  # (2^V * 2^H, H)
    neg_e = -model.energy(v, h).reshape(len(vs), len(hs))
    return neg_e - torch.logsumexp(neg_e.flatten(), 0), vs, hs


def exact_log_likelihood(model: RBM, data: torch.Tensor) -> torch.Tensor:
    """mean log p(v) = -F(v) - log Z, with Z summed over every visible state."""
    log_z = torch.logsumexp(-model.free_energy(all_states(model.config.n_visible)), 0)
    return (-model.free_energy(data) - log_z).mean()


def test_free_energy_is_the_energy_with_h_summed_out():
    model = tiny_rbm()
    log_p, vs, _ = joint_log_p(model)  # log p(v, h) = -E(v, h) - log Z
    log_z = torch.logsumexp(-model.free_energy(vs), 0)
    brute = -(torch.logsumexp(log_p, 1) + log_z)  # -log sum_h exp(-E(v, h))
    torch.testing.assert_close(model.free_energy(vs), brute, rtol=1e-12, atol=1e-12)
    # and Z itself agrees both ways: sum over v of exp(-F) = sum over (v, h) of exp(-E)
    torch.testing.assert_close(torch.logsumexp(log_p.flatten(), 0), torch.tensor(0.0, dtype=torch.float64))


def test_conditionals_factorise_and_match_the_joint():
    model = tiny_rbm()
    log_p, vs, hs = joint_log_p(model)
    p = log_p.exp()  # (2^V, 2^H)
    p_h_given_v = p / p.sum(1, keepdim=True)
    torch.testing.assert_close(p_h_given_v @ hs, model.p_hidden(vs), rtol=1e-10, atol=1e-12)  # P(h_j=1|v)
    p_v_given_h = p / p.sum(0, keepdim=True)
    torch.testing.assert_close(p_v_given_h.T @ vs, model.p_visible(hs), rtol=1e-10, atol=1e-12)
    # factorised: p(h|v) is the product of the per-unit marginals
    prod = torch.where(hs[None] == 1, model.p_hidden(vs)[:, None], 1 - model.p_hidden(vs)[:, None]).prod(-1)
    torch.testing.assert_close(p_h_given_v, prod, rtol=1e-10, atol=1e-12)


def exact_gradient(model: RBM, data: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    exact_log_likelihood(model, data).backward()
    grads = [p.grad.clone() for p in (model.weight, model.visible_bias, model.hidden_bias)]
    model.zero_grad()
    return grads


DATA = torch.tensor([[1, 1, 0, 0, 1], [1, 0, 0, 0, 1], [0, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.float64)


@pytest.mark.parametrize("persistent", [False, True])
def test_cd_with_a_long_chain_estimates_the_exact_log_likelihood_gradient(persistent):
    """With k large the chain reaches the model distribution, so CD-k's update is the exact
    gradient of log-likelihood (enumerated) up to Monte-Carlo noise: sign and size both."""
    model = tiny_rbm()
    exact = exact_gradient(model, DATA)
    v0 = DATA.repeat(5_000, 1)  # 20,000 chains, 5,000 per data vector
    g = torch.Generator().manual_seed(1)
    chain = torch.bernoulli(torch.full((len(v0), 3), 0.5, dtype=torch.float64), generator=g) if persistent else None
    model.contrastive_divergence(v0, k=25, chain=chain, generator=g)
    cd = [-p.grad for p in (model.weight, model.visible_bias, model.hidden_bias)]  # .grad holds the descent
    for a, b in zip(cd, exact, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0.02)  # noise: std <= 0.5 / sqrt(20,000) = 0.0035
    flat = torch.cat([t.flatten() for t in exact])
    assert flat.abs().max() > 0.1  # the gradient is far from zero, so the comparison has teeth


def test_cd1_steps_climb_the_exact_likelihood():
    model = tiny_rbm(seed=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    before = exact_log_likelihood(model, DATA).item()
    for _ in range(200):
        opt.zero_grad()
        model.contrastive_divergence(DATA, k=1, generator=g)
        opt.step()
    assert exact_log_likelihood(model, DATA).item() > before + 0.5


def test_positive_phase_uses_probabilities():
    """The data term of CD's weight update is p(h|v0) v0^T exactly, which is -dF(v0)/dW."""
    model = tiny_rbm()
    v0 = DATA
    model.zero_grad()
    model.free_energy(v0).mean().backward()
    dfree = model.weight.grad.clone()  # dF/dW = -p(h|v) v^T
    torch.testing.assert_close(-dfree, model.p_hidden(v0).T @ v0 / len(v0))


def test_parity_with_scikit_learn_bernoulli_rbm():
    from sklearn.neural_network import BernoulliRBM

    model = tiny_rbm(n_visible=8, n_hidden=6)
    v = torch.bernoulli(torch.full((50, 8), 0.4, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    sk = BernoulliRBM(n_components=6, random_state=7).fit(v.numpy())  # fitted only to set its shapes
    sk.components_ = model.weight.detach().numpy().copy()
    sk.intercept_hidden_ = model.hidden_bias.detach().numpy().copy()
    sk.intercept_visible_ = model.visible_bias.detach().numpy().copy()
    np.testing.assert_allclose(sk.transform(v.numpy()), model(v).detach().numpy(), rtol=1e-12)
    # score_samples is the pseudo-likelihood: one random bit flipped per row, through the free energy
    idx = np.random.RandomState(7).randint(0, 8, len(v))
    flipped = v.clone()
    flipped[torch.arange(len(v)), torch.from_numpy(idx)] = 1 - flipped[torch.arange(len(v)), torch.from_numpy(idx)]
    ours = 8 * torch.nn.functional.logsigmoid(model.free_energy(flipped) - model.free_energy(v))
    np.testing.assert_allclose(sk.score_samples(v.numpy()), ours.detach().numpy(), rtol=1e-10)


def test_shapes_and_bad_input():
    model = RBM(RBMConfig(6, 4))
    v = torch.rand(3, 6)
    assert model(v).shape == (3, 4) and model.p_visible(model(v)).shape == (3, 6)
    assert model.free_energy(v).shape == (3,) and model.gibbs(v, 2).shape == (3, 6)
    error, h = model.contrastive_divergence(v, k=2)
    assert error.shape == () and h.shape == (3, 4) and model.weight.grad.shape == (4, 6)
    with pytest.raises(ValueError, match=r"shape \(N, 6\), got \(3, 8\)"):
        model.contrastive_divergence(torch.rand(3, 8))
    with pytest.raises(ValueError, match="k >= 1"):
        model.contrastive_divergence(v, k=0)


def test_nudge_shifts_by_one_pixel_and_the_split_comes_first():
    x = torch.zeros(1, 8, 8)
    x[0, 3, 4] = 1.0
    shifted, y = recipe.nudge(x, torch.tensor([7]))
    where = [tuple(s.nonzero()[0].tolist()) for s in shifted]
    assert where == [(3, 4), (4, 4), (2, 4), (3, 5), (3, 3)] and y.tolist() == [7] * 5
    xtr, ytr, xte, yte = recipe.digits_split(0.2, 0)
    assert len(xte) == 359 and len(xtr) == 5 * (1797 - 359) and xtr.shape[1] == xte.shape[1] == 64
    # split first: the test part is untouched originals; training is the other originals and their shifts
    d = data.load("digits")["all"]
    x = torch.tensor(d.x, dtype=torch.float32) / 16
    train_idx, test_idx = split_indices(1797, 0.2, 0)
    assert torch.equal(xte, x[test_idx].flatten(1)) and torch.equal(yte, torch.from_numpy(d.y)[test_idx])
    assert torch.equal(xtr, recipe.nudge(x[train_idx], torch.from_numpy(d.y)[train_idx])[0].flatten(1))


def test_digits_milestone_beside_scikit_learn(tmp_path):
    result = launch.train("rbm", "digits", tmp_path, quick=True)
    m = result["metrics"]
    assert result["milestone"]["passed"], m  # within 1 point of BernoulliRBM + logistic regression
    assert m["acc_minus_raw"] >= 0.04, m  # clearly above logistic regression on raw pixels
    assert m["sklearn_rbm_test_acc"] > 0.9
    assert launch.evaluate(tmp_path)["metrics"]["test_acc"] == pytest.approx(m["test_acc"])
    assert isinstance(from_pretrained(tmp_path), RBM)
    for png in ("filters.png", "gibbs_samples.png"):
        assert (tmp_path / png).stat().st_size > 1000
