"""The numpy DQN update (agents/dqn/fused.py) computes what torch autograd + Adam compute."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from supportrl.agents.dqn import build_q_network, dqn_targets, td_loss
from supportrl.agents.dqn.fused import FusedDQNUpdate

OBS_DIM, N_ACTIONS, BATCH = 23, 6, 32
LR = 3e-3
ATOL = 2e-5
"""Weights may differ by float32 rounding that Adam's normalisation amplifies where the
second moment is tiny; a wrong gradient moves weights by about LR per update."""


def batch(rng: np.random.Generator) -> dict[str, np.ndarray]:
    mask = rng.random((BATCH, N_ACTIONS)) < 0.7
    mask[:, 0] = True
    return {
        "obs": rng.normal(size=(BATCH, OBS_DIM)).astype(np.float32),
        "actions": rng.integers(0, N_ACTIONS, BATCH),
        "returns": rng.normal(size=BATCH).astype(np.float32) * 3,
        "discounts": np.where(rng.random(BATCH) < 0.3, 0.0, 0.97).astype(np.float32),
        "next_obs": rng.normal(size=(BATCH, OBS_DIM)).astype(np.float32),
        "next_mask": mask,
        "weights": rng.random(BATCH).astype(np.float32),
    }


def autograd_update(net, target, optimizer, b, *, double_q, weighted, delta, max_norm) -> float:
    """The reference: the learner's update as it was written in torch (autograd, Adam)."""
    t = {k: torch.from_numpy(v) for k, v in b.items()}
    with torch.no_grad():
        targets = dqn_targets(
            target(t["next_obs"]),
            t["returns"],
            t["discounts"],
            t["next_mask"],
            net(t["next_obs"]) if double_q else None,
        )
    q = net(t["obs"]).gather(1, t["actions"][:, None]).squeeze(1)
    loss = td_loss(q, targets, t["weights"] if weighted else None, delta)
    optimizer.zero_grad()
    loss.backward()
    norm = float("nan")
    if max_norm is not None:
        norm = float(torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm))
    optimizer.step()
    return norm


@pytest.mark.parametrize(
    ("dueling", "double_q", "weighted", "max_norm", "hidden"),
    [
        (True, True, False, 10.0, (64, 64)),
        (True, True, True, 0.5, (64, 64)),  # a small max norm: clipping acts
        (False, False, True, None, (32,)),
        (True, False, False, None, (16, 16, 16)),
    ],
)
def test_numpy_update_equals_torch_autograd_and_adam(
    dueling: bool, double_q: bool, weighted: bool, max_norm: float | None, hidden: tuple
) -> None:
    delta = 1.0
    ref = build_q_network(OBS_DIM, N_ACTIONS, hidden, dueling, seed=3)
    ref_target = copy.deepcopy(ref)
    with torch.no_grad():  # a target network that differs from the online one
        for p in ref_target.parameters():
            p.add_(0.05)
    ours, ours_target = copy.deepcopy(ref), copy.deepcopy(ref_target)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=LR, eps=1e-8)
    ours_opt = torch.optim.Adam(ours.parameters(), lr=LR, eps=1e-8, fused=True)
    fused = FusedDQNUpdate(
        ours, ours_target, ours_opt, huber_delta=delta, max_grad_norm=max_norm, double_q=double_q
    )
    rng = np.random.default_rng(0)
    clipped = 0
    for _ in range(6):
        b = batch(rng)
        norm = autograd_update(
            ref, ref_target, ref_opt, b,
            double_q=double_q, weighted=weighted, delta=delta, max_norm=max_norm,
        )  # fmt: skip
        stats = fused.step(
            b["obs"], b["actions"], b["returns"], b["discounts"], b["next_obs"],
            b["next_mask"], b["weights"] if weighted else None,
        )  # fmt: skip
        if max_norm is None:
            assert np.isnan(stats.grad_norm)
        else:
            np.testing.assert_allclose(stats.grad_norm, norm, rtol=1e-5)
            clipped += norm > max_norm
        for x, y in zip(ours.parameters(), ref.parameters(), strict=True):
            np.testing.assert_allclose(x.detach().numpy(), y.detach().numpy(), rtol=1e-4, atol=ATOL)
    if max_norm == 0.5:
        assert clipped > 0  # the case really exercised clipping
    # the optimizer's state is Adam's: checkpoints save and load it unchanged
    for p_ours, p_ref in zip(ours.parameters(), ref.parameters(), strict=True):
        s, r = ours_opt.state[p_ours], ref_opt.state[p_ref]
        assert float(s["step"]) == float(r["step"]) == 6
        np.testing.assert_allclose(s["exp_avg"], r["exp_avg"], rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(s["exp_avg_sq"], r["exp_avg_sq"], rtol=1e-4, atol=1e-9)


def test_a_wrong_gradient_would_be_caught() -> None:
    """The comparison above is sharp: one update with the Huber slope halved is visible."""
    ref = build_q_network(OBS_DIM, N_ACTIONS, (64, 64), True, seed=3)
    ours = copy.deepcopy(ref)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=LR)
    fused = FusedDQNUpdate(
        ours, copy.deepcopy(ref), torch.optim.Adam(ours.parameters(), lr=LR),
        huber_delta=0.5, max_grad_norm=None, double_q=True,
    )  # fmt: skip
    b = batch(np.random.default_rng(1))
    autograd_update(
        ref, copy.deepcopy(ref), ref_opt, b, double_q=True, weighted=False, delta=1.0, max_norm=None
    )
    fused.step(
        b["obs"], b["actions"], b["returns"], b["discounts"], b["next_obs"], b["next_mask"], None
    )
    differs = [
        not np.allclose(x.detach().numpy(), y.detach().numpy(), rtol=1e-4, atol=ATOL)
        for x, y in zip(ours.parameters(), ref.parameters(), strict=True)
    ]
    assert any(differs)
