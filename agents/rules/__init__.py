"""Rule policies: declarative baselines and production rules, evaluated safely (docs/rules.md).

A rule file lists conditions over the raw named state and the action to take where one
holds. The first matching rule wins; where none matches, ``default`` is taken::

    _target_: agents.rules.RulePolicy
    rules:
      - when: 'sentiment < -0.5 and intent == "billing"'
        action: empathize
      - when: 'turn >= 3 or tier in ["enterprise"]'
        action: escalate_human
    default: direct_answer
    epsilon: 0.0        # optional uniform exploration, so propensities stay > 0

Conditions are read by a hand-written tokenizer and recursive-descent parser -- never by
``eval`` -- into a small immutable tree, then evaluated column-wise over a state batch. The
grammar, lowest precedence first::

    condition  := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | primary
    primary    := "(" condition ")" | value [compare value]
    compare    := "<" | "<=" | ">" | ">=" | "==" | "!=" | "in" | "not" "in"
    value      := NAME | ["-"] NUMBER | STRING | "true" | "false" | list
    list       := "[" [literal ("," literal)* [","]] "]"      (one type of literal)

Strings are single- or double-quoted; a backslash escapes only a quote or a backslash. A
value on its own is a condition only when it is boolean (``true``, ``false`` or a boolean
state variable). Everything else -- attribute access, calls, subscripts, arithmetic,
lambdas, names starting with ``__`` -- is a :class:`RuleSyntaxError` that quotes the
expression and points at the offending column.

Types are checked when a batch is evaluated: numeric columns (int/float dtype) compare with
numbers; categorical columns (str or object dtype) compare with strings by ``==``, ``!=``,
``in`` and ``not in`` only; boolean columns compare with ``true``/``false``.
"""

from supportrl.agents.rules.evaluation import evaluate
from supportrl.agents.rules.loading import load_rule_panel, load_rule_policy, rule_policy_from_dict
from supportrl.agents.rules.parser import MAX_EXPRESSION_DEPTH, parse_expression
from supportrl.agents.rules.policy import RULE_POLICY_TARGET, RULE_POLICY_TARGETS, Rule, RulePolicy
from supportrl.agents.rules.syntax import (
    And,
    Compare,
    Const,
    Expr,
    ListLiteral,
    Not,
    Or,
    RuleSyntaxError,
    Scalar,
    Var,
    expression_variables,
)

__all__ = [
    "RULE_POLICY_TARGET",
    "RULE_POLICY_TARGETS",
    "And",
    "Compare",
    "Const",
    "Expr",
    "MAX_EXPRESSION_DEPTH",
    "ListLiteral",
    "Not",
    "Or",
    "Rule",
    "RulePolicy",
    "RuleSyntaxError",
    "Scalar",
    "Var",
    "evaluate",
    "load_rule_panel",
    "expression_variables",
    "load_rule_policy",
    "parse_expression",
    "rule_policy_from_dict",
]
