"""The first-match :class:`RulePolicy` and the checks of its parts."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from supportrl.agents.base import BasePolicy, States, batch_size, epsilon_mix, one_hot
from supportrl.agents.rules.evaluation import _mask
from supportrl.agents.rules.parser import parse_expression
from supportrl.agents.rules.syntax import (
    Expr,
    RuleSyntaxError,
    expression_variables,
    string_comparisons,
)

from supportrl.files import brief

RULE_POLICY_TARGET = "supportrl.agents.rules.RulePolicy"
"""The ``_target_`` written into rule files (Hydra can instantiate it where supportrl is installed)."""

RULE_POLICY_TARGETS = frozenset({RULE_POLICY_TARGET, "agents.rules.RulePolicy"})
"""The only ``_target_`` values a rule file may name: the installed path, and the v1 spelling
``agents.rules.RulePolicy`` from the rule-policy contract, which stays readable."""

_FILE_KEYS = frozenset({"_target_", "rules", "default", "epsilon"})
_RULE_KEYS = frozenset({"when", "action"})


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class Rule:
    """Take ``action`` in the states where the condition ``when`` holds."""

    when: str
    """A condition in the rule language, e.g. ``'turn >= 3 or tier == "enterprise"'``."""
    action: str
    """An action name from the catalogue."""

    def __post_init__(self) -> None:
        if not isinstance(self.when, str):
            raise TypeError(
                f"when: expected a string expression, got {type(self.when).__name__} "
                f"{brief(self.when)} (quote the expression in YAML)"
            )
        if not isinstance(self.action, str):
            raise TypeError(f"action: expected an action name, got {brief(self.action)}")


class RulePolicy(BasePolicy):
    """First-match rules over the raw named state, with optional uniform exploration.

    For a batch of ``n`` states the chosen action is that of the first rule whose ``when``
    holds, else ``default`` (:meth:`decide`, shape (n,)). :meth:`action_probs` returns
    ``(1 - epsilon) * one_hot(chosen) + epsilon / n_actions``, shape (n, n_actions), so every
    propensity is at least ``epsilon / n_actions``.

    Args:
        actions: the action catalogue; column ``j`` of :meth:`action_probs` is ``actions[j]``.
        rules: :class:`Rule` objects (or ``{"when": ..., "action": ...}`` mappings), in order.
        default: the action where no rule matches.
        epsilon: weight of the uniform distribution mixed in, in [0, 1].
        name: the policy's name in reports (a rule file's stem).
        source: where the rules came from (a file path), named in error messages.
    """

    def __init__(
        self,
        actions: Sequence[str],
        rules: Sequence[Rule | Mapping[str, str]],
        default: str,
        epsilon: float = 0.0,
        *,
        name: str = "rules",
        source: str | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.actions = _check_actions(actions)
        if isinstance(rules, str | bytes | Mapping) or not isinstance(rules, Iterable):
            raise TypeError(f"{self._where}: rules must be a sequence of rules, got {brief(rules)}")
        self.rules = tuple(_as_rule(rule, i, self._where) for i, rule in enumerate(rules))
        self.default = self._check_action(default, "default")
        self.epsilon = _check_epsilon(epsilon, self._where)
        self._default_index = self.actions.index(self.default)
        self._action_indices = tuple(
            self.actions.index(self._check_action(rule.action, f"rules[{i}].action"))
            for i, rule in enumerate(self.rules)
        )
        self._conditions = tuple(self._parse(i, rule) for i, rule in enumerate(self.rules))
        self._reads = tuple(expression_variables(c) for c in self._conditions)

    @property
    def _where(self) -> str:
        return f"rule policy {self.name!r}" + (f" ({self.source})" if self.source else "")

    def _check_action(self, action: object, field: str) -> str:
        if not isinstance(action, str) or action not in self.actions:
            raise ValueError(
                f"{self._where}: {field}: unknown action {brief(action)}; "
                f"the catalogue is {list(self.actions)}"
            )
        return action

    def _parse(self, index: int, rule: Rule) -> Expr:
        try:
            return parse_expression(rule.when)
        except RuleSyntaxError as err:
            raise err.within(f"{self._where}: rules[{index}] (action {rule.action})") from None

    @property
    def variables(self) -> frozenset[str]:
        """Names of the state variables the rules read."""
        return frozenset().union(*self._reads)

    def check_variables(self, available: Iterable[str]) -> None:
        """Raise ``ValueError`` naming every rule that reads a variable not in ``available``."""
        available = set(available)
        problems = [
            f"rules[{i}] ({brief(rule.when)}) reads {', '.join(map(repr, sorted(reads - available)))}"
            for i, (rule, reads) in enumerate(zip(self.rules, self._reads, strict=True))
            if reads - available
        ]
        if problems:
            raise ValueError(
                f"{self._where}: rules on features the data does not have: "
                f"{'; '.join(problems)}. Available variables: {sorted(map(str, available))}"
            )

    def check_literals(self, vocabulary: Mapping[str, Iterable[str]]) -> list[str]:
        """Compare every string literal with the values ``vocabulary`` gives its variable.

        A literal that is not a value of its variable never matches. Raises ``ValueError``
        naming the rule when the literal is close to a known value (a typo: ``"othr"`` for
        ``"other"``); returns notes for the other unknown literals (a value the logs do
        not hold, which the rule may still mean).
        """
        import difflib

        typos, notes = [], []
        for i, (rule, condition) in enumerate(zip(self.rules, self._conditions, strict=True)):
            for name, literal in string_comparisons(condition):
                if name not in vocabulary:
                    continue
                known = sorted({str(v) for v in vocabulary[name]})
                if literal in known:
                    continue
                close = difflib.get_close_matches(literal, known, n=1, cutoff=0.6)
                text = f"rules[{i}] ({brief(rule.when)}): {literal!r} is not a value of {name}"
                if close:
                    typos.append(f"{text}; did you mean {close[0]!r}?")
                else:
                    notes.append(f"{text} in the data (values: {known[:20]}); it never matches")
        if typos:
            raise ValueError(f"{self._where}: {'; '.join(typos)}")
        return [f"{self._where}: {n}" for n in notes]

    def decide(self, states: States) -> np.ndarray:
        """Index of the chosen action for each state, shape (n,), dtype int64 (no exploration)."""
        self.check_variables(states.keys())
        n = batch_size(states)
        chosen = np.full(n, self._default_index, dtype=np.int64)
        undecided = np.ones(n, dtype=bool)
        # Every rule is evaluated, even once all rows are decided, so that a type error in a
        # late rule shows on every batch rather than only on some.
        for i, (rule, condition, action_index) in enumerate(
            zip(self.rules, self._conditions, self._action_indices, strict=True)
        ):
            try:
                holds = _mask(condition, states, n)
            except TypeError as err:
                raise TypeError(f"{self._where}: rules[{i}] {brief(rule.when)}: {err}") from None
            except ValueError as err:
                raise ValueError(f"{self._where}: rules[{i}] {brief(rule.when)}: {err}") from None
            chosen[holds & undecided] = action_index
            undecided &= ~holds
        return chosen

    def action_probs(self, states: States) -> np.ndarray:
        """Action probabilities, shape (n, n_actions), rows summing to 1."""
        return epsilon_mix(one_hot(self.decide(states), len(self.actions)), self.epsilon)

    def to_dict(self) -> dict[str, Any]:
        """The rule-file mapping (docs/rules.md); :func:`rule_policy_from_dict` reads it back."""
        return {
            "_target_": RULE_POLICY_TARGET,
            "rules": [{"when": rule.when, "action": rule.action} for rule in self.rules],
            "default": self.default,
            "epsilon": self.epsilon,
        }

    def __repr__(self) -> str:
        return (
            f"RulePolicy(name={self.name!r}, rules={len(self.rules)}, "
            f"default={self.default!r}, epsilon={self.epsilon})"
        )


def _check_actions(actions: Sequence[str]) -> tuple[str, ...]:
    if isinstance(actions, str | bytes) or not isinstance(actions, Iterable):
        raise TypeError(f"actions: expected a sequence of action names, got {brief(actions)}")
    catalogue = tuple(actions)
    if not catalogue:
        raise ValueError("actions: the action catalogue is empty")
    if not all(isinstance(a, str) for a in catalogue):
        raise TypeError(f"actions: action names must be strings, got {brief(list(catalogue))}")
    if len(set(catalogue)) != len(catalogue):
        raise ValueError(f"actions: duplicate action names in {list(catalogue)}")
    return catalogue


def _check_epsilon(epsilon: object, where: str) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise TypeError(f"{where}: epsilon must be a number in [0, 1], got {brief(epsilon)}")
    if not (math.isfinite(epsilon) and 0.0 <= epsilon <= 1.0):
        raise ValueError(f"{where}: epsilon must be in [0, 1], got {epsilon}")
    return float(epsilon)


def _as_rule(rule: object, index: int, where: str) -> Rule:
    if isinstance(rule, Rule):
        return rule
    if not isinstance(rule, Mapping):
        raise TypeError(
            f"{where}: rules[{index}] must be a mapping with keys 'when' and 'action', got {brief(rule)}"
        )
    keys = set(map(str, rule))
    if keys != _RULE_KEYS:
        unknown = sorted(keys - _RULE_KEYS)
        missing = sorted(_RULE_KEYS - keys)
        detail = "; ".join(
            part
            for part in (
                f"unknown keys {unknown}" if unknown else "",
                f"missing keys {missing}" if missing else "",
            )
            if part
        )
        raise ValueError(
            f"{where}: rules[{index}] must have exactly the keys 'when' and 'action' ({detail})"
        )
    try:
        return Rule(when=rule["when"], action=rule["action"])
    except TypeError as err:
        raise TypeError(f"{where}: rules[{index}].{err}") from None
