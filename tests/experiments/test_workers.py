"""Work moved to worker processes (issue 23) gives the numbers of the plain path, bit for bit."""

from __future__ import annotations

import os

import numpy as np
import pytest
from supportrl.envs.rewards import RewardSpec
from supportrl.simulators.synthetic import GeneratedLogs

from supportrl.workers import AUTO_MIN_TURNS, map_calls, n_workers, submit


def _square_plus(offset: float, x: float) -> float:
    return x * x + offset


def test_map_calls_and_submit_give_the_results_of_this_process_in_order() -> None:
    args = [(float(x),) for x in range(5)]
    assert map_calls(_square_plus, args, (0.5,), workers=2) == [x * x + 0.5 for x in range(5)]
    assert map_calls(_square_plus, args, (0.5,), workers=0) == [x * x + 0.5 for x in range(5)]
    assert submit(_square_plus, (1.0, 3.0), workers=2).get() == 10.0
    assert submit(_square_plus, (1.0, 3.0), workers=0).get() == 10.0


def _die(code: int) -> None:
    os._exit(code)


def test_a_worker_that_dies_fails_the_call_and_the_next_call_gets_a_new_pool() -> None:
    """A worker killed mid-call (e.g. out of memory) raises, naming what to do, instead of
    hanging the command."""
    with pytest.raises(RuntimeError, match=r"a worker process died .*ope\.workers=0"):
        map_calls(_die, [(3,), (3,)], workers=2)
    assert map_calls(_square_plus, [(1.0,), (2.0,)], (0.0,), workers=2) == [1.0, 4.0]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "all"])
def test_workers_is_auto_or_a_count(bad: object) -> None:
    with pytest.raises(ValueError, match="workers must be 'auto' or an int >= 0"):
        n_workers(bad)  # type: ignore[arg-type]
    assert n_workers(3) == 3 and n_workers("auto") in (0, *range(2, 1025))
    # auto starts no worker for fits on small logs (starting them costs what they save)
    assert n_workers("auto", turns=AUTO_MIN_TURNS - 1) == 0
    assert n_workers("auto", turns=AUTO_MIN_TURNS) == n_workers("auto")
    assert n_workers(2, turns=10) == 2


@pytest.mark.parametrize("workers", [0, 2])
def test_ope_csat_fitted_on_a_worker_gives_the_same_rewards(
    small_generated: GeneratedLogs, workers: int
) -> None:
    """learn() starts OPE's CSAT fit (the simulator fitted on part of the logs cannot serve)
    on a worker while the simulator is fitted: the prepared rewards and the CSAT model are
    those prepare_for_ope fits itself."""
    from supportrl.experiments.stages import prepare_for_ope, split_conversations, start_csat_fit
    from supportrl.simulators.fitted import fit_customer_model

    logs = small_generated.logs
    train, _ = split_conversations(logs, 0.2, seed=0)
    model = fit_customer_model(train, "glm", seed=0, max_iter=30)
    reward = RewardSpec()
    job = start_csat_fit(logs, reward, workers=workers)
    assert job is not None and np.isnan(logs.csat).any()
    plain = prepare_for_ope(logs, reward, seed=0, model=model, fitted_on_all=False)
    early = prepare_for_ope(logs, reward, seed=0, model=model, fitted_on_all=False, csat_fit=job)
    np.testing.assert_array_equal(early.reward, plain.reward)
    np.testing.assert_array_equal(early.csat_model.model.fit.coef, plain.csat_model.model.fit.coef)
    np.testing.assert_array_equal(early.csat_model.psi, plain.csat_model.psi)
    assert start_csat_fit(logs, RewardSpec(csat_weight=0.0), workers=workers) is None


def test_a_simulator_fitted_with_a_worker_is_the_one_fitted_in_process(
    small_generated: GeneratedLogs,
) -> None:
    """``fit.workers``: the CSAT model is fitted on a worker while the response models are
    fitted here; every coefficient, note and statistic is the in-process fit's."""
    from supportrl.simulators.fitted import fit_customer_model

    logs = small_generated.logs
    weights = np.linspace(0.5, 1.5, logs.n_conversations)  # sampling weights reach the CSAT fit
    here, there = (
        fit_customer_model(
            logs, "glm", seed=0, max_iter=30, conversation_weights=weights, workers=w
        )
        for w in (0, 2)
    )
    np.testing.assert_array_equal(here.csat.fit.coef, there.csat.fit.coef)
    np.testing.assert_array_equal(here.csat.response, there.csat.response)
    np.testing.assert_array_equal(here.dynamics.outcome.coef, there.dynamics.outcome.coef)
    assert here.warnings == there.warnings and here.info == there.info
    with pytest.raises(ValueError, match="workers must be 'auto' or an int >= 0"):
        fit_customer_model(logs, "glm", seed=0, workers=-1)
