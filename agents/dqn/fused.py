"""The DQN update of a :class:`QNetwork` written out in numpy: forward, backward, clip, Adam.

For the small MLPs DQN trains here (2x64 on a ~25-column observation, batches of 32-256),
torch's per-operator dispatch and autograd bookkeeping cost far more than the arithmetic:
one autograd update takes ~0.6-1.4 ms on 2 cores, the same maths in numpy ~0.1 ms. This
module does the whole update on numpy views of the network's own parameters and of the
torch Adam optimizer's state tensors, so the torch module (what acts, evaluates and is
exported) and the optimizer (what checkpoints save and load) always hold the current
numbers; nothing is copied back.

The maths is the autograd path's (tests compare updated weights with torch autograd +
``torch.optim.Adam`` after several updates): Double-DQN n-step targets, importance-weighted
mean Huber loss, global-norm gradient clipping as ``clip_grad_norm_`` (scale by
``max_norm / (norm + 1e-6)`` when below 1), and Adam as ``torch.optim.Adam``
(bias-corrected, ``eps`` added after the square root, no weight decay). Only float32
rounding differs (different summation order in the matrix products).

The online network runs once on ``[obs; next_obs]`` (the Double-DQN action choice needs
it on ``next_obs``; only the ``obs`` half is differentiated), the target network once on
``next_obs``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from supportrl.agents.dqn.network import QNetwork


@dataclass(frozen=True)
class FusedStats:
    """One update's statistics (plain floats) and the |TD errors| for prioritized replay."""

    loss: float
    q_mean: float
    target_mean: float
    td_abs_mean: float
    grad_norm: float
    td_abs: np.ndarray
    """(B,) float32."""


def flatten_parameters(network: QNetwork) -> torch.Tensor:
    """Move every parameter of ``network`` into one contiguous float32 buffer; returns it.

    The parameters become views of the buffer (same objects, same values), laid out as the
    trunk's (weight, bias) pairs, then the heads' weights stacked, then their biases (dueling:
    value before advantage), so the heads run as one matrix product and Adam runs over one
    array. Idempotent.
    """
    order = [p for layer in network.trunk for p in (layer.weight, layer.bias)]
    heads = (network.value, network.advantage) if network.dueling else (network.q,)
    order += [h.weight for h in heads] + [h.bias for h in heads]
    flat = torch.zeros(sum(p.numel() for p in order), dtype=torch.float32)
    offset = 0
    for p in order:
        n = p.numel()
        flat[offset : offset + n] = p.detach().reshape(-1)
        p.data = flat[offset : offset + n].view(p.shape)
        offset += n
    return flat


class NumpyMLP:
    """A :class:`QNetwork`'s forward and backward in numpy, on its own (flattened) weights."""

    def __init__(self, network: QNetwork) -> None:
        self.network = network
        self.dueling = network.dueling
        self.flat = flatten_parameters(network).numpy()
        """Every weight, one float32 array (:func:`flatten_parameters` layout); shares memory."""
        self.trunk = [
            (layer.weight.detach().numpy(), layer.bias.detach().numpy()) for layer in network.trunk
        ]
        width, offset = self.trunk[-1][0].shape[0], sum(w.size + b.size for w, b in self.trunk)
        n_out = network.n_actions + (1 if self.dueling else 0)
        self.head_w = self.flat[offset : offset + n_out * width].reshape(n_out, width)
        self.head_b = self.flat[offset + n_out * width : offset + n_out * (width + 1)]
        """Heads stacked: rows (value, advantages...) when dueling, else the Q row per action."""

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Q-values (n, n_actions) float32 and the activations [x, h1, ..., hL] for backward."""
        acts = [x]
        h = x
        for w, b in self.trunk:
            h = h @ w.T
            h += b
            np.maximum(h, 0.0, out=h)
            acts.append(h)
        out = h @ self.head_w.T
        out += self.head_b
        if not self.dueling:
            return out, acts
        v, a = out[:, :1], out[:, 1:]
        # sum / k: np.mean's Python-level overhead costs more than the sum on arrays this small
        return v + (a - a.sum(axis=1, keepdims=True) / np.float32(a.shape[1])), acts

    def backward(self, d_q: np.ndarray, acts: list[np.ndarray], grad: np.ndarray) -> None:
        """Gradients given dLoss/dQ (n, n_actions), written into ``grad`` (the ``flat`` layout)."""
        h = acts[-1]
        if self.dueling:
            d_out = np.empty((len(d_q), d_q.shape[1] + 1), dtype=np.float32)
            d_out[:, :1] = d_q.sum(axis=1, keepdims=True)
            d_out[:, 1:] = d_q - d_q.sum(axis=1, keepdims=True) / np.float32(d_q.shape[1])
        else:
            d_out = d_q
        offset = sum(w.size + b.size for w, b in self.trunk)
        n_w = self.head_w.size
        np.matmul(d_out.T, h, out=grad[offset : offset + n_w].reshape(self.head_w.shape))
        d_out.sum(axis=0, out=grad[offset + n_w : offset + n_w + self.head_b.size])
        d_h = d_out @ self.head_w
        for k in range(len(self.trunk) - 1, -1, -1):
            w, b = self.trunk[k]
            offset -= w.size + b.size
            d_pre = d_h * (acts[k + 1] > 0)
            np.matmul(d_pre.T, acts[k], out=grad[offset : offset + w.size].reshape(w.shape))
            d_pre.sum(axis=0, out=grad[offset + w.size : offset + w.size + b.size])
            if k:
                d_h = d_pre @ w


class FusedDQNUpdate:
    """One DQN gradient step in numpy on ``network``'s weights and ``optimizer``'s Adam state.

    ``optimizer`` is the learner's ``torch.optim.Adam`` over ``network.parameters()`` (one
    parameter group); it is never stepped, only its hyperparameters and state tensors are
    used, so its ``state_dict`` stays what checkpoints save. Call :meth:`bind` again after
    ``optimizer.load_state_dict`` (it replaces the state tensors).
    """

    def __init__(
        self,
        network: QNetwork,
        target: QNetwork,
        optimizer: torch.optim.Adam,
        *,
        huber_delta: float,
        max_grad_norm: float | None,
        double_q: bool,
    ) -> None:
        if len(optimizer.param_groups) != 1:
            raise ValueError("optimizer: expected one parameter group")
        self.online = NumpyMLP(network)
        self.target = NumpyMLP(target)
        self.optimizer = optimizer
        self.huber_delta = float(huber_delta)
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.double_q = bool(double_q)
        self.bind()

    def bind(self) -> None:
        """Put the Adam state (step, first and second moments) of every parameter in flat
        buffers laid out like the weights, and register views of them with the optimizer."""
        flat = self.online.flat
        self.grad = np.zeros_like(flat)
        self.exp_avg = torch.zeros(len(flat), dtype=torch.float32)
        self.exp_avg_sq = torch.zeros(len(flat), dtype=torch.float32)
        base = flat.ctypes.data
        steps = []
        for p in self.optimizer.param_groups[0]["params"]:
            offset = (p.data_ptr() - base) // flat.itemsize
            sl = slice(offset, offset + p.numel())
            s = self.optimizer.state[p]
            step = s.get("step", torch.zeros((), dtype=torch.float32))
            for key, buf in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
                view = buf[sl].view(p.shape)
                if key in s:
                    view.copy_(s[key])
                s[key] = view
            # what torch's Adam creates on its first step (fused: a float32 step)
            s["step"] = torch.as_tensor(step, dtype=torch.float32).reshape(()).clone()
            steps.append(s["step"].numpy())
        if len({float(t) for t in steps}) > 1:
            raise ValueError("optimizer: parameters at different Adam steps")
        self.steps = steps
        self.m, self.v = self.exp_avg.numpy(), self.exp_avg_sq.numpy()

    def targets(
        self,
        q_next_online: np.ndarray | None,
        next_obs: np.ndarray,
        returns: np.ndarray,
        discounts: np.ndarray,
        next_mask: np.ndarray,
    ) -> np.ndarray:
        """``returns + discounts * Q_target(s', argmax_a' Q(s', a'))`` over allowed ``a'``, (B,)."""
        q_target, _ = self.target.forward(next_obs)
        chooser = q_target if q_next_online is None else q_next_online
        best = np.where(next_mask, chooser, -np.inf).argmax(axis=1)
        return returns + discounts * q_target[np.arange(len(best)), best]

    def step(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        returns: np.ndarray,
        discounts: np.ndarray,
        next_obs: np.ndarray,
        next_mask: np.ndarray,
        weights: np.ndarray | None,
    ) -> FusedStats:
        """One update on a replay batch (float32 arrays of B rows); returns its statistics."""
        n = len(obs)
        rows = np.arange(n)
        if self.double_q:
            q_all, acts = self.online.forward(np.concatenate([obs, next_obs]))
            q_obs, q_next_online = q_all[:n], q_all[n:]
            acts = [a[:n] for a in acts]
        else:
            (q_obs, acts), q_next_online = self.online.forward(obs), None
        targets = self.targets(q_next_online, next_obs, returns, discounts, next_mask)
        q = q_obs[rows, actions]
        diff = q - targets
        td_abs = np.abs(diff)
        delta = self.huber_delta
        huber = np.where(td_abs <= delta, 0.5 * diff * diff, delta * (td_abs - 0.5 * delta))
        d_loss = np.clip(diff, -delta, delta) / np.float32(n)
        if weights is not None:
            huber = huber * weights
            d_loss = d_loss * weights
        d_q = np.zeros_like(q_obs)
        d_q[rows, actions] = d_loss
        grad = self.grad
        self.online.backward(d_q, acts, grad)
        grad_norm = float("nan")
        if self.max_grad_norm is not None:
            # clip_grad_norm_'s norm of the per-tensor norms is the norm of all gradients
            grad_norm = float(np.linalg.norm(grad))
            coef = min(self.max_grad_norm / (grad_norm + 1e-6), 1.0)
            if coef < 1.0:
                grad *= np.float32(coef)
        self._adam(grad)
        return FusedStats(
            loss=float(huber.sum()) / n,
            q_mean=float(q.sum()) / n,
            target_mean=float(targets.sum()) / n,
            td_abs_mean=float(td_abs.sum()) / n,
            grad_norm=grad_norm,
            td_abs=td_abs,
        )

    def _adam(self, grad: np.ndarray) -> None:
        """``torch.optim.Adam``'s step (no weight decay, no amsgrad) on the flat weights."""
        group = self.optimizer.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        t = float(self.steps[0]) + 1.0
        for step in self.steps:
            step[...] = t
        m, v = self.m, self.v
        m += (grad - m) * np.float32(1.0 - beta1)
        v *= np.float32(beta2)
        v += np.float32(1.0 - beta2) * grad * grad
        denom = np.sqrt(v)
        denom /= np.float32((1.0 - beta2**t) ** 0.5)
        denom += np.float32(eps)
        self.online.flat -= np.float32(lr / (1.0 - beta1**t)) * (m / denom)
