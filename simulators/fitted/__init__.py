"""Customer simulators fitted from logged conversations.

:func:`fit_customer_model` turns :class:`~supportrl.envs.conversations.LoggedConversations`
into a :class:`FittedCustomerModel`, a :class:`~supportrl.envs.model.CustomerModel`: the
env, the collector and ``policy_value(policy, n, model=simulator)`` (its *simulated*
value) run on it exactly as on the ground-truth world.

Modules: :mod:`~supportrl.simulators.fitted.config` (settings),
:mod:`~supportrl.simulators.fitted.features` (state basis, support counts),
:mod:`~supportrl.simulators.fitted.dynamics` (response models),
:mod:`~supportrl.simulators.fitted.csat` (CSAT and its imputation),
:mod:`~supportrl.simulators.fitted.behaviour` (behaviour cloning),
:mod:`~supportrl.simulators.fitted.weights` (confounding weights),
:mod:`~supportrl.simulators.fitted.model` (the model), :mod:`~supportrl.simulators.fitted.io`
(files), and :mod:`~supportrl.simulators.fitted.fit` (the fit). Every public name is
importable from here.

What is fitted
--------------
* **Initial state**: logged first-turn tuples (context features, intent, sentiment) are
  resampled uniformly; nothing is generated.
* **Response model** for (state, action): the outcome distribution (continue / resolved
  / escalated / abandoned), the next sentiment (Gaussian, clipped to [-1, 1]) and the
  handle time (log-normal on ``log1p`` seconds). Two families:

  - ``glm``: multinomial logit and linear-Gaussian regressions on ``phi(s)`` (see
    :class:`~simulators.fitted.features.Basis`) with shared effects plus one block of
    action-specific effects per action (``one_hot(action) (x) phi(s)``), L2-regularised;
  - ``ensemble``: K torch networks (:mod:`simulators.fitted.ensemble`), each the glm's
    linear design plus an MLP, on bootstrap resamples; their disagreement is the
    uncertainty of each (state, action).
* **Intent evolution**: the detected intent at the next turn given (intent, action) is a
  categorical transition counted on consecutive logged turns (plus one pseudo-count of
  "unchanged"); unseen pairs keep their intent.
* **CSAT** at the end, given the last state, action and outcome, corrected for surveys
  missing not at random (:mod:`simulators.fitted.csat`); :meth:`FittedCustomerModel.
  csat_imputation` fills the logs' missing CSAT for OPE. It is fitted without the
  confounding weights (it conditions on the final state and outcome, and imputation
  needs the observational conditional of the logged rows).

Confounding
-----------
The logging policy saw variables the logs do not record (e.g. how hard a case is) and
chose actions by them; a naive fit then learns that the actions it picked for easy cases
work well for everyone. The logged propensity carries that hidden influence, so
``weighting`` reweights the logged decisions:

* ``propensity``: each decision by ``1 / propensity``, divided by the mean of those
  weights over the decisions with the same action (stabilised), clipped at
  ``weight_clip``. This makes the *current* choice look random given the logged state.
* ``sequential``: each decision by the product over its conversation so far of
  ``pi_hat(a | s) / propensity``, normalised to mean 1 and clipped, where ``pi_hat`` is
  a behaviour-cloned logger that sees only the logged state (stabilised weights of a
  marginal structural model). The hidden variable persists through the conversation, so
  which conversations reach turn ``t`` in a given state also depends on the logger's
  earlier, confounded choices; the product undoes those too, and the cloned numerator
  keeps the weights' variance down. On the synthetic world with confounding this is what
  brings policy values close to the truth (``benchmarks/bench_fidelity.py``).

Missing propensities are estimated by a behaviour-cloned logging policy (recorded in
``warnings``; such estimates carry no unlogged confounders).

Pessimism
---------
* ``penalty`` (lambda): every step reports ``Transition.penalty = lambda * u(s, a)``, to
  be subtracted from the reward. ``u`` is the ensemble's disagreement (square root of
  the summed variance of the outcome probabilities across members) for ``ensemble`` and
  ``1 / sqrt(1 + n(s, a))`` for ``glm``, where ``n(s, a)`` is the support count below.
* ``min_support``: the support count ``n(s, a)`` is the fewest logged decisions taking
  ``a`` in the state's cell over each support key (every categorical state variable,
  binned turn, binned sentiment). Pairs with ``n(s, a) < min_support`` are masked:
  :meth:`FittedCustomerModel.action_mask` returns False there, and if a policy takes a
  masked action anyway the customer **abandons** the conversation with CSAT 1 (the worst
  outcome the reward knows), plus the penalty.

Files
-----
:meth:`FittedCustomerModel.save` writes a directory with ``simulator.json`` (format
version, family, schema and reward versions, actions, feature spec, hyperparameters,
warnings, fit diagnostics, and the name, shape and dtype of every array) and
``params.npz`` (every fitted array, including the initial-state pool as codes into the
feature spec's levels and raw numeric values; ensemble weights as plain arrays).
No pickle anywhere: :func:`load_customer_model` reads the npz with
``allow_pickle=False``; a corrupt or foreign file raises ValueError naming it.
"""

from __future__ import annotations

from supportrl.simulators.fitted.behaviour import BehaviourPolicy, fit_behaviour_policy
from supportrl.simulators.fitted.config import (
    FAMILIES,
    WEIGHTINGS,
    FitConfig,
    FitWarning,
    GLMParams,
    fit_settings,
)
from supportrl.simulators.fitted.dynamics import EnsembleDynamics, GLMDynamics, Prediction
from supportrl.simulators.fitted.ensemble import EnsembleParams
from supportrl.simulators.fitted.features import FittedState
from supportrl.simulators.fitted.fit import fit_customer_model, impute_csat
from supportrl.simulators.fitted.io import FORMAT_VERSION
from supportrl.simulators.fitted.load import load_customer_model
from supportrl.simulators.fitted.model import FittedCustomerModel
from supportrl.simulators.fitted.weights import propensity_weights

__all__ = [
    "FAMILIES",
    "FORMAT_VERSION",
    "WEIGHTINGS",
    "BehaviourPolicy",
    "EnsembleDynamics",
    "EnsembleParams",
    "FitConfig",
    "FitWarning",
    "FittedCustomerModel",
    "FittedState",
    "GLMDynamics",
    "GLMParams",
    "Prediction",
    "fit_behaviour_policy",
    "fit_customer_model",
    "fit_settings",
    "impute_csat",
    "load_customer_model",
    "propensity_weights",
]
