"""The Q-network: an MLP from encoded observations to one Q-value per action."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class QNetwork(nn.Module):
    """MLP ``obs (n, obs_dim) -> Q (n, n_actions)`` with ReLU after every ``trunk`` layer.

    With ``dueling`` the last hidden layer feeds two linear heads, a state value ``V`` and
    advantages ``A``, combined as ``Q = V + A - mean(A)`` (Wang et al. 2016, eq. 9). The
    layout (``trunk``, then ``value``/``advantage`` or ``q``) is RLlib's default DQN
    module with ``fcnet_hiddens=hidden_sizes`` and ``head_fcnet_hiddens=[]``, so the two
    backends train the same network.
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden_sizes: Sequence[int] = (64, 64),
        dueling: bool = True,
    ) -> None:
        super().__init__()
        if obs_dim < 1 or n_actions < 1:
            raise ValueError(f"obs_dim and n_actions must be >= 1, got {obs_dim}, {n_actions}")
        self.obs_dim = int(obs_dim)
        self.n_actions = int(n_actions)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.dueling = bool(dueling)
        widths = (self.obs_dim, *self.hidden_sizes)
        self.trunk = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        width = widths[-1]
        if self.dueling:
            self.value = nn.Linear(width, 1)
            self.advantage = nn.Linear(width, self.n_actions)
        else:
            self.q = nn.Linear(width, self.n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # F.linear on the layers' parameters: the same maths as calling the modules, without
        # their per-call dispatch, which dominates for batches this small.
        h = obs
        for layer in self.trunk:
            h = torch.relu(F.linear(h, layer.weight, layer.bias))
        if not self.dueling:
            return F.linear(h, self.q.weight, self.q.bias)
        a = F.linear(h, self.advantage.weight, self.advantage.bias)
        v = F.linear(h, self.value.weight, self.value.bias)
        return v + (a - a.mean(dim=-1, keepdim=True))

    def architecture(self) -> dict[str, Any]:
        """Constructor arguments, JSON-ready (written next to the weights in checkpoints)."""
        return {
            "obs_dim": self.obs_dim,
            "n_actions": self.n_actions,
            "hidden_sizes": list(self.hidden_sizes),
            "dueling": self.dueling,
        }


def build_q_network(
    obs_dim: int,
    n_actions: int,
    hidden_sizes: Sequence[int],
    dueling: bool,
    *,
    seed: int,
) -> QNetwork:
    """A freshly initialised :class:`QNetwork`; weights depend on ``seed`` only.

    Torch's global generator is forked, so building a network neither reads nor changes
    the caller's torch random state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return QNetwork(obs_dim, n_actions, hidden_sizes, dueling)
