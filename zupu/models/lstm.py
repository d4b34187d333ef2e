"""Long Short-Term Memory (1997): a gated memory cell that carries information across long gaps.

S. Hochreiter, J. Schmidhuber, "Long Short-Term Memory", Neural Computation 9(8) (1997).
https://doi.org/10.1162/neco.1997.9.8.1735 — with the forget gate of F. Gers, J. Schmidhuber,
F. Cummins, "Learning to Forget: Continual Prediction with LSTM" (2000).

    i, f, o = sigma(W_{i,f,o} [x_t; h_{t-1}] + b),   g = tanh(W_g [x_t; h_{t-1}] + b_g)
    c_t = f * c_{t-1} + i * g                        (the constant error carousel, gated)
    h_t = o * tanh(c_t)

The cell itself is written out once in `zupu.nn.recurrent` (shared with the seq2seq member); this
file is the member's model: a sequence reader whose last hidden state feeds a linear read-out, with
the recurrent core switchable between the LSTM and the plain tanh RNN it is compared against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zupu.nn.recurrent import LSTM as LSTMLayer
from zupu.nn.recurrent import ElmanRNN


@dataclass
class LSTMConfig:
    input_size: int = 2
    hidden_size: int = 64
    output_size: int = 1
    cell: str = "lstm"  # "lstm" or "rnn" (the plain tanh RNN baseline)
    forget_bias: float = 1.0  # added to the forget gate's bias at init, so the cell starts by remembering


class LSTM(nn.Module):
    """Read a sequence (B, T, input_size), answer from the last hidden state: (B, output_size)."""

    config_class = LSTMConfig

    def __init__(self, config: LSTMConfig):
        super().__init__()
        if config.cell not in ("lstm", "rnn"):
            raise ValueError(f"cell must be 'lstm' or 'rnn', got {config.cell!r}")
        self.config = config
        if config.cell == "lstm":
            self.rnn = LSTMLayer(config.input_size, config.hidden_size, forget_bias=config.forget_bias)
        else:
            self.rnn = ElmanRNN(config.input_size, config.hidden_size)
        self.head = nn.Linear(config.hidden_size, config.output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, state = self.rnn(x)
        h = state[0] if isinstance(state, tuple) else state  # (B, H)
        return self.head(h)


PRESETS = {
    "adding": LSTMConfig(2, 64, 1, "lstm"),
    "adding-rnn": LSTMConfig(2, 64, 1, "rnn"),
    "tiny": LSTMConfig(2, 8, 1, "lstm"),
}
