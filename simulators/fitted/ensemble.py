"""An ensemble of K small networks for the response model, trained with torch, run with numpy.

Each member maps a (state, action) pair to seven numbers: the logits of resolved /
escalated / abandoned against continue, the mean and log-sd of the next sentiment, and
the mean and log-sd of ``log1p(handle_time_s)`` (standardised). A member is *wide and
deep*: a linear part on ``phi(s) (x) one_hot(action)`` (the glm family's design, so a
member can express everything the glm does) plus an MLP on ``[phi(s), one_hot(action)]``
for the interactions the basis lacks. Members differ by their initial weights and, with
``bootstrap``, by Poisson(1) weights per conversation (a bootstrap over conversations);
all K train together in one batched network. Their disagreement on the outcome
distribution is the model's uncertainty.

Training is deterministic given the seed and ``torch_threads``: initial weights and
batches come from a numpy generator, and the torch thread count is set for the fit and
restored afterwards. Weights are kept as numpy arrays, so simulation needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from supportrl.simulators.fitted.glm import softmax, torch_threads

N_OUTPUTS = 7
_LOG_SD_MIN, _LOG_SD_MAX = -6.0, 2.0


@dataclass(frozen=True)
class EnsembleParams:
    """Hyperparameters of the ``ensemble`` family."""

    n_members: int = 5
    """Number of MLPs (K)."""
    hidden: int = 64
    """Units per hidden layer."""
    n_layers: int = 2
    """Hidden layers per MLP."""
    epochs: int = 8
    """Passes over the logged decisions (more on small logs, see ``min_steps``)."""
    min_steps: int = 1500
    """At least this many gradient steps: small logs get more passes."""
    batch_size: int = 1024
    """Decisions per gradient step (shared by all members)."""
    lr: float = 3e-3
    """Adam learning rate (decays linearly to 0)."""
    weight_decay: float = 1e-4
    """Decoupled weight decay (AdamW)."""
    bootstrap: bool = True
    """Poisson(1) bootstrap weights per conversation and member."""
    torch_threads: int = 1
    """torch intra-op threads during the fit."""
    l2: float = 1.0
    """Prior precision of the CSAT model (a GLM shared with the ``glm`` family)."""

    def __post_init__(self) -> None:
        for name in (
            "n_members",
            "hidden",
            "n_layers",
            "epochs",
            "min_steps",
            "batch_size",
            "torch_threads",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.l2 < 0:
            raise ValueError("lr must be > 0, weight_decay and l2 >= 0")


@dataclass(frozen=True)
class EnsembleNet:
    """Weights of K members.

    ``linear`` (K, n_actions, p, 7) is the wide part; ``weights[l]`` (K, d_in, d_out) and
    ``biases[l]`` (K, d_out) the MLP on ``[phi, one_hot(action)]`` (d_in = p + n_actions).
    """

    linear: np.ndarray
    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    handle_center: float
    handle_scale: float

    @property
    def n_members(self) -> int:
        return self.linear.shape[0]

    @property
    def n_actions(self) -> int:
        return self.linear.shape[1]

    def forward(self, phi: np.ndarray, action: np.ndarray) -> np.ndarray:
        """Raw outputs of every member, shape (K, n, 7), for ``phi`` (n, p) and ``action`` (n,)."""
        n = len(action)
        x = np.zeros((n, phi.shape[1] + self.n_actions), dtype=np.float32)
        x[:, : phi.shape[1]] = phi
        x[np.arange(n), phi.shape[1] + action] = 1.0
        h = x[None]
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = np.matmul(h, w) + b[:, None, :]
            if i < last:
                h = np.maximum(h, 0.0)
        out = h.astype(np.float64)
        phi32 = phi.astype(np.float32)
        for a in range(self.n_actions):
            rows = np.flatnonzero(action == a)
            if len(rows):
                out[:, rows] += np.matmul(phi32[rows][None], self.linear[:, a])
        return out

    def predict(self, phi: np.ndarray, action: np.ndarray) -> dict[str, np.ndarray]:
        """Ensemble prediction for (state, action) pairs: ``phi`` (n, p), ``action`` (n,).

        Returns ``outcome_probs`` (n, 4) (mean of the members' distributions),
        ``member_probs`` (K, n, 4), the mixture mean and sd of the next sentiment and of
        ``log1p(handle_time_s)`` (n,) each, and ``uncertainty`` (n,): the square root of
        the summed (over outcomes) variance across members of the outcome probabilities.
        """
        out = self.forward(phi, action)
        k, n, _ = out.shape
        logits = np.concatenate([np.zeros((k, n, 1)), out[..., :3]], axis=2)
        member = softmax(logits.reshape(k * n, 4)).reshape(k, n, 4)
        probs = member.mean(axis=0)
        uncertainty = np.sqrt(member.var(axis=0).sum(axis=1))

        def mixture(mean: np.ndarray, log_sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            sd = np.exp(np.clip(log_sd, _LOG_SD_MIN, _LOG_SD_MAX))
            m = mean.mean(axis=0)
            var = (sd**2).mean(axis=0) + mean.var(axis=0)
            return m, np.sqrt(var)

        s_mean, s_sd = mixture(out[..., 3], out[..., 4])
        h_mean, h_sd = mixture(out[..., 5], out[..., 6])
        return {
            "outcome_probs": probs,
            "member_probs": member,
            "sentiment_mean": s_mean,
            "sentiment_sd": s_sd,
            "log_handle_mean": h_mean * self.handle_scale + self.handle_center,
            "log_handle_sd": h_sd * self.handle_scale,
            "uncertainty": uncertainty,
        }


def _init_weights(
    rng: np.random.Generator, sizes: list[int], k: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    weights, biases = [], []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        bound = np.sqrt(6.0 / d_in) if i < len(sizes) - 2 else 0.1 / np.sqrt(d_in)
        weights.append(rng.uniform(-bound, bound, size=(k, d_in, d_out)).astype(np.float32))
        biases.append(np.zeros((k, d_out), dtype=np.float32))
    return weights, biases


def _forward(x_phi: Any, a_onehot: Any, ws: list, bs: list, lin_a: Any, k: int) -> Any:
    """Outputs of the ``k`` members for a batch, torch (k, batch, 7): MLP plus the wide part.

    ``x_phi`` (batch, p), ``a_onehot`` (batch, n_actions), ``lin_a`` the linear weights of
    each row's action (k, batch, p, 7).
    """
    import torch

    h = torch.cat([x_phi, a_onehot], dim=1).unsqueeze(0).expand(k, -1, -1)
    for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
        h = torch.baddbmm(b.unsqueeze(1), h, w)
        if i < len(ws) - 1:
            h = torch.relu(h)
    # wide part: phi_i @ linear[k, a_i]  -> (k, batch, 7)
    return h + torch.einsum("bp,kbpo->kbo", x_phi, lin_a)


def _nll(h: Any, y: Any, s: Any, has_s: Any, hh: Any, has_h: Any) -> Any:
    """Per-member, per-row negative log-likelihood, torch (k, batch).

    Outcome (softmax over continue + 3 logits), next sentiment and standardised log
    handle time (Gaussians with clamped log-sd); ``has_s``/``has_h`` mask missing targets.
    """
    import torch

    k = h.shape[0]
    logits = torch.cat([torch.zeros_like(h[..., :1]), h[..., :3]], dim=2)
    nll_o = torch.nn.functional.cross_entropy(
        logits.reshape(-1, 4), y.repeat(k), reduction="none"
    ).reshape(k, -1)
    ls = h[..., 4].clamp(_LOG_SD_MIN, _LOG_SD_MAX)
    nll_s = (0.5 * ((s - h[..., 3]) * torch.exp(-ls)) ** 2 + ls) * has_s
    lh = h[..., 6].clamp(_LOG_SD_MIN, _LOG_SD_MAX)
    nll_h = (0.5 * ((hh - h[..., 5]) * torch.exp(-lh)) ** 2 + lh) * has_h
    return nll_o + nll_s + nll_h


def _member_weights(
    rng: np.random.Generator, conversation: np.ndarray, weights: np.ndarray, k: int, bootstrap: bool
) -> np.ndarray:
    """Row weights of each member, shape (k, n) float32: ``weights`` (n,) times a Poisson(1)
    bootstrap count per conversation (``conversation`` (n,) its index) when ``bootstrap``."""
    n = len(conversation)
    n_conv = int(conversation.max()) + 1 if n else 0
    if bootstrap:
        boot = rng.poisson(1.0, size=(k, n_conv)).astype(np.float32)[:, conversation]
    else:
        boot = np.ones((k, n), dtype=np.float32)
    return boot * weights.astype(np.float32)[None, :]


def _standardised(log_handle: np.ndarray, has_h: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``log_handle`` (n,) centred and scaled on its known rows (``has_h``), missing rows at
    the centre; and the centre and scale."""
    h_center = float(log_handle[has_h].mean()) if has_h.any() else 0.0
    h_scale = float(log_handle[has_h].std()) if has_h.sum() > 1 else 1.0
    h_scale = h_scale if h_scale > 0 else 1.0
    return (np.nan_to_num(log_handle, nan=h_center) - h_center) / h_scale, h_center, h_scale


def fit_ensemble(
    phi: np.ndarray,
    action: np.ndarray,
    outcome: np.ndarray,
    next_sentiment: np.ndarray,
    log_handle: np.ndarray,
    conversation: np.ndarray,
    *,
    n_actions: int,
    weights: np.ndarray,
    params: EnsembleParams,
    seed: int,
) -> EnsembleNet:
    """Train the ensemble on logged decisions.

    Args:
        phi: state design rows, shape (n, p); action: action index per row, (n,).
        outcome: outcome codes, shape (n,).
        next_sentiment: sentiment at the next decision, NaN where there is none, (n,).
        log_handle: ``log1p(handle_time_s)``, NaN where missing, (n,).
        conversation: conversation index of each row (for the bootstrap), (n,).
        n_actions: size of the action catalogue.
        weights: row weights (e.g. stabilised inverse propensities), (n,).
        params: hyperparameters; seed: drives initial weights, bootstrap and batches.
    """
    import torch

    rng = np.random.default_rng(seed)
    n, p = phi.shape
    k = params.n_members
    sizes = [p + n_actions] + [params.hidden] * params.n_layers + [N_OUTPUTS]
    w0, b0 = _init_weights(rng, sizes, k)
    lin0 = np.zeros((k, n_actions, p, N_OUTPUTS), dtype=np.float32)
    row_w = _member_weights(rng, conversation, weights, k, params.bootstrap)
    has_s = ~np.isnan(next_sentiment)
    has_h = ~np.isnan(log_handle)
    h_std, h_center, h_scale = _standardised(log_handle, has_h)

    with torch_threads(params.torch_threads):
        phi_t = torch.from_numpy(phi.astype(np.float32))
        act_t = torch.from_numpy(action.astype(np.int64))
        eye = torch.eye(n_actions, dtype=torch.float32)
        yt = torch.from_numpy(outcome.astype(np.int64))
        st = torch.from_numpy(np.nan_to_num(next_sentiment).astype(np.float32))
        ht = torch.from_numpy(h_std.astype(np.float32))
        ms = torch.from_numpy(has_s.astype(np.float32))
        mh = torch.from_numpy(has_h.astype(np.float32))
        wt = torch.from_numpy(row_w)
        lin = torch.nn.Parameter(torch.from_numpy(lin0))
        ws = [torch.nn.Parameter(torch.from_numpy(w)) for w in w0]
        bs = [torch.nn.Parameter(torch.from_numpy(b)) for b in b0]
        opt = torch.optim.AdamW([lin, *ws, *bs], lr=params.lr, weight_decay=params.weight_decay)
        steps_per_epoch = max(1, -(-n // params.batch_size))
        epochs = max(params.epochs, -(-params.min_steps // steps_per_epoch))
        total = steps_per_epoch * epochs
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / total)
        for _ in range(epochs):
            perm = rng.permutation(n)
            for start in range(0, n, params.batch_size):
                idx = torch.from_numpy(perm[start : start + params.batch_size])
                x_phi, a = phi_t[idx], act_t[idx]
                h = _forward(x_phi, eye[a], ws, bs, lin[:, a], k)
                nll = _nll(h, yt[idx], st[idx], ms[idx], ht[idx], mh[idx])
                wb = wt[:, idx]
                loss = (nll * wb).sum(dim=1) / wb.sum(dim=1).clamp_min(1e-6)
                opt.zero_grad()
                loss.sum().backward()
                opt.step()
                sched.step()
        linear_out = lin.detach().numpy().copy()
        weights_out = tuple(w.detach().numpy().copy() for w in ws)
        biases_out = tuple(b.detach().numpy().copy() for b in bs)
    return EnsembleNet(
        linear=linear_out,
        weights=weights_out,
        biases=biases_out,
        handle_center=h_center,
        handle_scale=h_scale,
    )
