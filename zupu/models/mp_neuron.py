"""The McCulloch-Pitts neuron (1943): binary threshold logic with absolute inhibition.

W. McCulloch, W. Pitts, "A Logical Calculus of the Ideas Immanent in Nervous Activity",
Bulletin of Mathematical Biophysics 5 (1943). https://doi.org/10.1007/BF02478259

A unit reads binary inputs. If any *inhibitory* input is active it is silent (absolute
inhibition); otherwise it fires when the number of active *excitatory* inputs reaches its
threshold theta:

    y = [sum_i e_i x_i >= theta] * prod_j (1 - h_j x_j)      e, h in {0, 1}

Nothing is learned: the weights are wired by hand, and a network of such units computes any
logical function, XOR included, given two layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# A unit: (excitatory input indices, inhibitory input indices, threshold)
Unit = tuple[tuple[int, ...], tuple[int, ...], int]


@dataclass
class MPConfig:
    n_inputs: int = 2
    layers: tuple[tuple[Unit, ...], ...] = ()


class MPNetwork(nn.Module):
    """Layers of M-P units; each layer reads the previous layer's outputs."""

    config_class = MPConfig

    def __init__(self, config: MPConfig):
        super().__init__()
        self.config = config
        width = config.n_inputs
        for i, layer in enumerate(config.layers):
            exc = torch.zeros(len(layer), width)
            inh = torch.zeros(len(layer), width)
            theta = torch.zeros(len(layer))
            for u, (e, h, t) in enumerate(layer):
                if any(not 0 <= k < width for k in (*e, *h)):
                    raise ValueError(f"layer {i} unit {u} reads an input outside 0..{width - 1}")
                exc[u, list(e)] = 1
                inh[u, list(h)] = 1
                theta[u] = t
            self.register_buffer(f"excitatory_{i}", exc)
            self.register_buffer(f"inhibitory_{i}", inh)
            self.register_buffer(f"threshold_{i}", theta)
            width = len(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, n_inputs) of 0/1 -> (N, width of the last layer) of 0/1."""
        for i in range(len(self.config.layers)):
            exc, inh, theta = (getattr(self, f"{n}_{i}") for n in ("excitatory", "inhibitory", "threshold"))
            fires = (x @ exc.T) >= theta  # (N, units)
            vetoed = (x @ inh.T) > 0  # absolute inhibition: one active inhibitory input silences the unit
            x = (fires & ~vetoed).float()
        return x


def _gate(n_inputs: int, *layers: tuple[Unit, ...]) -> MPConfig:
    return MPConfig(n_inputs=n_inputs, layers=tuple(layers))


# Hand-wired networks. NOT uses a threshold of 0 (fires by default) and its input as inhibitor.
PRESETS = {
    "and": _gate(2, (((0, 1), (), 2),)),
    "or": _gate(2, (((0, 1), (), 1),)),
    "not": _gate(1, (((), (0,), 0),)),
    "nand": _gate(2, (((), (0,), 0), ((), (1,), 0)), (((0, 1), (), 1),)),  # NOT a OR NOT b
    # XOR = (x0 AND NOT x1) OR (x1 AND NOT x0): the inhibitory synapses do the NOTs.
    "xor": _gate(2, (((0,), (1,), 1), ((1,), (0,), 1)), (((0, 1), (), 1),)),
}
PRESETS["tiny"] = PRESETS["xor"]
