"""LSTM: the written-out cell against torch.nn.LSTM (forward and gradients, float64), the forget gate's
memory, the adding problem's data, and the LSTM-beats-RNN learning curve."""

import pytest
import torch

from zupu.models.lstm import LSTM, LSTMConfig
from zupu.nn.recurrent import LSTM as LSTMLayer
from zupu.nn.recurrent import ElmanRNN
from zupu.recipes import lstm as recipe
from zupu.train import launch


def _compare(ours, theirs, x, state_ours, state_theirs):
    out, last = ours(x, state_ours)
    ref, ref_last = theirs(x, state_theirs)
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    loss, ref_loss = (out**2).sum() + last[0].sum() * 3, (ref**2).sum() + ref_last[0].sum() * 3
    if isinstance(last, tuple):  # the LSTM's cell state too
        assert torch.allclose(last[1], ref_last[1][0], atol=1e-12, rtol=0)
        loss, ref_loss = loss + last[1].sum(), ref_loss + ref_last[1][0].sum()
    grads = torch.autograd.grad(loss, [x, *ours.parameters()])
    ref_grads = torch.autograd.grad(ref_loss, [x, *theirs.parameters()])
    for g, r in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g, r, atol=1e-12, rtol=0)


def test_lstm_matches_torch_forward_and_gradients():
    torch.manual_seed(0)
    ours = LSTMLayer(3, 5, forget_bias=1.0).double()
    theirs = torch.nn.LSTM(3, 5, batch_first=True).double()
    theirs.load_state_dict({f"{k}_l0": v for k, v in ours.state_dict().items()})  # same names, same gate order
    x = torch.randn(4, 9, 3, dtype=torch.float64, requires_grad=True)
    h0, c0 = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    _compare(ours, theirs, x, (h0, c0), (h0[None], c0[None]))
    _compare(ours, theirs, x, None, None)


def test_rnn_matches_torch_forward_and_gradients():
    torch.manual_seed(1)
    ours = ElmanRNN(3, 6).double()
    theirs = torch.nn.RNN(3, 6, batch_first=True).double()
    theirs.load_state_dict({f"{k}_l0": v for k, v in ours.state_dict().items()})
    x = torch.randn(2, 7, 3, dtype=torch.float64, requires_grad=True)
    out, h = ours(x)
    ref, ref_h = theirs(x)
    assert torch.allclose(out, ref, atol=1e-12, rtol=0) and torch.allclose(h, ref_h[0], atol=1e-12, rtol=0)
    g = torch.autograd.grad((out**3).sum(), [x, *ours.parameters()])
    r = torch.autograd.grad((ref**3).sum(), [x, *theirs.parameters()])
    assert all(torch.allclose(a, b, atol=1e-12, rtol=0) for a, b in zip(g, r, strict=True))


def test_open_forget_gate_and_closed_input_gate_hold_the_cell():
    """c_t = f * c_{t-1} + i * g: with f = 1 and i = 0 the cell carries c_0 unchanged over 200 steps."""
    cell = LSTMLayer(2, 4).double()
    with torch.no_grad():
        cell.weight_ih.zero_()
        cell.weight_hh.zero_()
        cell.bias_hh.zero_()
        cell.bias_ih.copy_(torch.tensor([-50.0] * 4 + [50.0] * 4 + [0.0] * 8, dtype=torch.float64))  # i, f, g, o
    c0 = torch.randn(3, 4, dtype=torch.float64)
    _, (h, c) = cell(torch.randn(3, 200, 2, dtype=torch.float64), (torch.zeros(3, 4, dtype=torch.float64), c0))
    assert torch.allclose(c, c0, atol=1e-12)
    assert torch.allclose(h, torch.sigmoid(torch.tensor(0.0)) * torch.tanh(c0))  # o = sigma(0) = 1/2


def test_forget_bias_initialisation_touches_only_the_forget_gate():
    torch.manual_seed(2)
    plain = LSTMLayer(2, 3)
    torch.manual_seed(2)
    biased = LSTMLayer(2, 3, forget_bias=1.0)
    assert torch.allclose(biased.bias_ih - plain.bias_ih, torch.tensor([0.0] * 3 + [1.0] * 3 + [0.0] * 6))


def test_adding_problem_data():
    x, y = recipe.adding_batch(500, 20, torch.Generator().manual_seed(0))
    assert x.shape == (500, 20, 2) and y.shape == (500, 1)
    markers = x[..., 1]
    assert (markers.sum(1) == 2).all()
    assert (markers[:, :10].sum(1) == 1).all() and (markers[:, 10:].sum(1) == 1).all()  # one in each half
    assert torch.allclose(y[:, 0], (x[..., 0] * markers).sum(1))
    batches = recipe.AddingBatches(20, 8, seed=3)
    assert torch.equal(batches(5)[0], batches(5)[0]) and not torch.equal(batches(5)[0], batches(6)[0])


def test_model_switches_cells():
    x = torch.randn(2, 5, 2)
    assert LSTM(LSTMConfig(cell="lstm", hidden_size=4))(x).shape == (2, 1)
    assert isinstance(LSTM(LSTMConfig(cell="rnn", hidden_size=4)).rnn, ElmanRNN)
    with pytest.raises(ValueError, match="cell must be"):
        LSTM(LSTMConfig(cell="gru"))


@pytest.mark.slow
def test_lstm_learns_the_adding_problem_where_the_rnn_fails(tmp_path):
    result = launch.train("lstm", quick=True, out=tmp_path, seed=0)
    m = result["metrics"]
    assert result["milestone"]["passed"], m  # the LSTM: test MSE <= 0.01
    assert m["rnn_test_mse"] > 0.1, m  # the plain RNN stays near the mean-guess 0.167
    assert (tmp_path / "lstm_vs_rnn.png").stat().st_size > 0
