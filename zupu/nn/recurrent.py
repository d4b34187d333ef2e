"""Recurrent layers written out: the LSTM cell (Hochreiter & Schmidhuber 1997, with the forget gate of
Gers, Schmidhuber & Cummins 2000) and the plain (Elman 1990) tanh RNN it replaced.

LSTM, one step (sigma = logistic sigmoid, * = elementwise):

    i_t = sigma(W_ii x_t + W_hi h_{t-1} + b_i)      input gate: how much of the candidate to write
    f_t = sigma(W_if x_t + W_hf h_{t-1} + b_f)      forget gate: how much of the old cell to keep
    g_t = tanh (W_ig x_t + W_hg h_{t-1} + b_g)      candidate cell content
    o_t = sigma(W_io x_t + W_ho h_{t-1} + b_o)      output gate: how much of the cell to show
    c_t = f_t * c_{t-1} + i_t * g_t                 the cell: an additive path, so dc_t/dc_{t-1} = f_t
    h_t = o_t * tanh(c_t)

Plain RNN: h_t = tanh(W_ih x_t + W_hh h_{t-1} + b). Its gradient through time is a product of
W_hh^T diag(1 - h^2) factors, which shrinks (or explodes) geometrically with the gap; the LSTM's
cell path multiplies only by f_t, which the net can hold near 1.

Parameters are named and laid out as in `torch.nn.LSTM` / `torch.nn.RNN` (one layer, one direction:
`weight_ih` (4H, I) with gate rows in the order i, f, g, o; `weight_hh` (4H, H); `bias_ih`,
`bias_hh`), so weights copy across and a test compares both forward and gradients with torch's.

Speed: the input half of every gate, W_i* x_t + b, does not depend on h, so it is computed for all
time steps in one matmul (`project`); the Python loop over time then does one (B, H) x (H, 4H)
matmul and the elementwise cell per step (`step`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (B, H)


class LSTM(nn.Module):
    """A one-layer, one-direction LSTM over batch-first sequences."""

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 0.0):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        bound = 1 / math.sqrt(hidden_size)  # torch.nn.LSTM's initialisation
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        if forget_bias:  # start by remembering (Gers et al. 2000; Jozefowicz et al. 2015)
            with torch.no_grad():
                self.bias_ih[hidden_size : 2 * hidden_size] += forget_bias

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The input half of the four gates for every step at once: (B, T, I) -> (B, T, 4H)."""
        return torch.addmm(self.bias_ih + self.bias_hh, x.reshape(-1, x.shape[-1]), self.weight_ih.T).view(
            *x.shape[:-1], -1)

    def step(self, gates_x: torch.Tensor, state: State) -> State:
        """One time step from the projected input (B, 4H) and the previous (h, c)."""
        h, c = state
        gates = torch.addmm(gates_x, h, self.weight_hh.T)  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=1)  # each (B, H)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    def initial_state(self, x: torch.Tensor) -> State:
        zeros = x.new_zeros(x.shape[0], self.hidden_size)
        return zeros, zeros

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """x (B, T, I) -> all hidden states (B, T, H) and the last (h, c)."""
        gates_x = self.project(x)
        state = self.initial_state(x) if state is None else state
        hs = []
        for t in range(x.shape[1]):
            state = self.step(gates_x[:, t], state)
            hs.append(state[0])
        return torch.stack(hs, dim=1), state


class ElmanRNN(nn.Module):
    """The plain tanh RNN, laid out as `torch.nn.RNN` (one layer, one direction)."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(hidden_size))
        bound = 1 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, I) -> all hidden states (B, T, H) and the last h."""
        xs = torch.addmm(self.bias_ih + self.bias_hh, x.reshape(-1, x.shape[-1]), self.weight_ih.T)
        xs = xs.view(*x.shape[:-1], -1)  # (B, T, H)
        h = x.new_zeros(x.shape[0], self.hidden_size) if h is None else h
        hs = []
        for t in range(x.shape[1]):
            h = torch.tanh(torch.addmm(xs[:, t], h, self.weight_hh.T))
            hs.append(h)
        return torch.stack(hs, dim=1), h
