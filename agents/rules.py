"""Rule policies: declarative baselines and production rules, evaluated safely (DESIGN.md §5).

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

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from supportrl.agents.base import BasePolicy, States, batch_size, epsilon_mix, one_hot

__all__ = [
    "RULE_POLICY_TARGET",
    "RULE_POLICY_TARGETS",
    "And",
    "Compare",
    "Const",
    "Expr",
    "ListLiteral",
    "Not",
    "Or",
    "Rule",
    "RulePolicy",
    "RuleSyntaxError",
    "Var",
    "evaluate",
    "expression_variables",
    "load_rule_policy",
    "parse_expression",
    "rule_policy_from_dict",
]

RULE_POLICY_TARGET = "supportrl.agents.rules.RulePolicy"
"""The ``_target_`` written into rule files (Hydra can instantiate it where supportrl is installed)."""

RULE_POLICY_TARGETS = frozenset({RULE_POLICY_TARGET, "agents.rules.RulePolicy"})
"""The only ``_target_`` values a rule file may name: the installed path, and the v1 spelling
``agents.rules.RulePolicy`` from the rule-policy contract, which stays readable."""

_FILE_KEYS = frozenset({"_target_", "rules", "default", "epsilon"})
_RULE_KEYS = frozenset({"when", "action"})


# --------------------------------------------------------------------------- errors


class RuleSyntaxError(ValueError):
    """A rule expression outside the grammar; the message quotes it and marks the column.

    ``position`` is the 0-based offset into ``expression`` (the message says column
    ``position + 1``); ``context`` names where the expression came from, e.g. a rule file.
    """

    def __init__(self, reason: str, expression: str, position: int, context: str = "") -> None:
        self.reason = reason
        self.expression = expression
        self.position = position
        self.context = context
        prefix = f"{context}: " if context else ""
        # Newlines/tabs would break the caret's alignment under the expression.
        shown = expression.replace("\n", " ").replace("\t", " ")
        super().__init__(
            f"{prefix}{reason} at column {position + 1} of rule expression {expression!r}\n"
            f"    {shown}\n    {' ' * position}^"
        )

    def within(self, context: str) -> RuleSyntaxError:
        """The same error, its message prefixed by ``context`` (e.g. the file and rule)."""
        outer = f"{context}: {self.context}" if self.context else context
        return RuleSyntaxError(self.reason, self.expression, self.position, outer)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the error picklable (e.g. across Ray workers) despite the custom __init__.
        return (RuleSyntaxError, (self.reason, self.expression, self.position, self.context))


# --------------------------------------------------------------------------- tree


Scalar = str | int | float | bool
"""A literal value: a string, a number or a boolean."""


@dataclass(frozen=True)
class Var:
    """A state variable, read from the batch by name."""

    name: str


@dataclass(frozen=True)
class Const:
    """A string, number or boolean literal."""

    value: Scalar


@dataclass(frozen=True)
class ListLiteral:
    """A list of literals of one type; only allowed on the right of ``in`` / ``not in``."""

    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Compare:
    """``left op right`` with ``op`` one of ``< <= > >= == != in`` or ``not in``."""

    op: str
    left: Var | Const
    right: Var | Const | ListLiteral


@dataclass(frozen=True)
class Not:
    """Logical negation of a condition."""

    operand: Expr


@dataclass(frozen=True)
class And:
    """Holds where every operand holds (two or more operands)."""

    operands: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    """Holds where any operand holds (two or more operands)."""

    operands: tuple[Expr, ...]


Expr = Var | Const | Compare | Not | And | Or
"""A parsed condition. A bare ``Var`` or ``Const`` is a condition only if it is boolean."""


def expression_variables(expr: Expr | ListLiteral) -> frozenset[str]:
    """Names of the state variables that ``expr`` reads."""
    match expr:
        case Var(name):
            return frozenset({name})
        case Compare(_, left, right):
            return expression_variables(left) | expression_variables(right)
        case Not(operand):
            return expression_variables(operand)
        case And(operands) | Or(operands):
            return frozenset().union(*(expression_variables(o) for o in operands))
        case _:
            return frozenset()


# --------------------------------------------------------------------------- tokenizer


@dataclass(frozen=True)
class _Token:
    kind: str
    """One of: name number string bool and or not in compare - ( ) [ ] , end."""
    text: str
    position: int
    value: Scalar | None = None


_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORDS = {"and": "and", "or": "or", "not": "not", "in": "in"}
_BOOLS = {"true": True, "false": False, "True": True, "False": False}
_RESERVED_HINTS = {
    "is": "; use '==' or '!='",
    "None": '; compare with a string such as "none"',
    "lambda": "",
}
_RESERVED = (set(keyword.kwlist) | set(_RESERVED_HINTS)) - set(_WORDS) - set(_BOOLS)
_OPERATOR_HINTS = {
    "&&": "; use 'and'",
    "||": "; use 'or'",
    "&": "; use 'and'",
    "|": "; use 'or'",
    "!": "; use 'not'",
    "=": "; use '==' to compare",
    "~": "; use 'not'",
    "^": "",
    "@": "",
}


def _tokenize(text: str) -> list[_Token]:
    """Split ``text`` into tokens, ending with an ``end`` token at ``len(text)``."""
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        two = text[i : i + 2]
        if ch.isspace():
            i += 1
        elif ch in "()[],":
            tokens.append(_Token(ch, ch, i))
            i += 1
        elif two in ("<=", ">=", "==", "!="):
            tokens.append(_Token("compare", two, i))
            i += 2
        elif ch in "<>":
            tokens.append(_Token("compare", ch, i))
            i += 1
        elif ch in "'\"":
            token, i = _read_string(text, i)
            tokens.append(token)
        elif ch in "0123456789" or (ch == "." and text[i + 1 : i + 2].isdigit()):
            token, i = _read_number(text, i)
            tokens.append(token)
        elif ch == ".":
            raise RuleSyntaxError("attribute access ('.') is not supported", text, i)
        elif ch == "-":
            tokens.append(_Token("-", ch, i))
            i += 1
        elif ch in "+*/%":
            raise RuleSyntaxError(f"arithmetic ({ch!r}) is not supported", text, i)
        elif two in _OPERATOR_HINTS or ch in _OPERATOR_HINTS:
            op = two if two in _OPERATOR_HINTS else ch
            raise RuleSyntaxError(f"unknown operator {op!r}{_OPERATOR_HINTS[op]}", text, i)
        elif _NAME.match(text, i):
            token, i = _read_name(text, i)
            tokens.append(token)
        else:
            raise RuleSyntaxError(f"unexpected character {ch!r}", text, i)
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _read_string(text: str, start: int) -> tuple[_Token, int]:
    quote = text[start]
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            value = "".join(chars)
            return _Token("string", text[start : i + 1], start, value), i + 1
        if ch == "\\":
            escaped = text[i + 1 : i + 2]
            if escaped not in ("\\", "'", '"'):
                raise RuleSyntaxError(
                    "unsupported escape in string (only \\\\, \\' and \\\" are allowed)", text, i
                )
            chars.append(escaped)
            i += 2
        else:
            chars.append(ch)
            i += 1
    raise RuleSyntaxError(f"unterminated string (missing closing {quote})", text, start)


def _read_number(text: str, start: int) -> tuple[_Token, int]:
    match = _NUMBER.match(text, start)
    assert match is not None  # the caller saw a digit or ".digit"
    end = match.end()
    if end < len(text) and (text[end].isalnum() or text[end] in "._"):
        raise RuleSyntaxError("malformed number", text, start)
    literal = match.group()
    value: int | float = int(literal) if literal.isdigit() else float(literal)
    return _Token("number", literal, start, value), end


def _read_name(text: str, start: int) -> tuple[_Token, int]:
    match = _NAME.match(text, start)
    assert match is not None  # the caller checked
    name = match.group()
    if name.startswith("__"):
        raise RuleSyntaxError(f"names starting with '__' are not allowed ({name!r})", text, start)
    if name in _RESERVED:
        hint = _RESERVED_HINTS.get(name, "")
        raise RuleSyntaxError(f"{name!r} is not part of the rule language{hint}", text, start)
    if name in _WORDS:
        return _Token(_WORDS[name], name, start), match.end()
    if name in _BOOLS:
        return _Token("bool", name, start, _BOOLS[name]), match.end()
    return _Token("name", name, start), match.end()


# --------------------------------------------------------------------------- parser


def parse_expression(text: str) -> Expr:
    """Parse a rule condition into an immutable tree; :class:`RuleSyntaxError` if invalid."""
    if not isinstance(text, str):
        raise TypeError(f"rule expression must be a string, got {type(text).__name__} {text!r}")
    return _Parser(text).parse()


class _Parser:
    """Recursive descent over the grammar in the module docstring, one method per rule."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.peek()
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def error(self, reason: str, token: _Token) -> RuleSyntaxError:
        return RuleSyntaxError(reason, self.text, token.position)

    def unexpected(self, token: _Token, expected: str) -> RuleSyntaxError:
        if token.kind == "end":
            return self.error(f"expected {expected}, found the end of the expression", token)
        if token.kind == "-":
            return self.error("arithmetic ('-') is not supported", token)
        return self.error(f"expected {expected}, found {token.text!r}", token)

    def parse(self) -> Expr:
        if self.peek().kind == "end":
            raise self.error("empty expression", self.peek())
        expr = self.parse_or()
        if self.peek().kind != "end":
            raise self.unexpected(self.peek(), "'and', 'or' or the end of the expression")
        return expr

    def parse_or(self) -> Expr:
        operands = [self.parse_and()]
        while self.peek().kind == "or":
            self.advance()
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def parse_and(self) -> Expr:
        operands = [self.parse_not()]
        while self.peek().kind == "and":
            self.advance()
            operands.append(self.parse_not())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def parse_not(self) -> Expr:
        if self.peek().kind == "not":
            self.advance()
            return Not(self.parse_not())
        return self.parse_primary()

    def parse_primary(self) -> Expr:
        if self.peek().kind == "(":
            opening = self.advance()
            inner = self.parse_or()
            if self.peek().kind != ")":
                column = opening.position + 1
                raise self.unexpected(self.peek(), f"')' to close the '(' at column {column}")
            self.advance()
            return inner

        left_token = self.peek()
        left = self.parse_value("a condition")
        op = self.parse_compare_op()
        if op is None:
            if isinstance(left, Var) or (isinstance(left, Const) and isinstance(left.value, bool)):
                return left
            raise self.error(
                f"{_describe(left)} is not a condition; compare it, e.g. 'turn >= 3'", left_token
            )
        if isinstance(left, ListLiteral):
            raise self.error("a list may only stand on the right of 'in' / 'not in'", left_token)

        right_token = self.peek()
        right = self.parse_value(f"a value after {op!r}")
        if op in ("in", "not in") and not isinstance(right, ListLiteral):
            raise self.error(
                f'{op!r} needs a list of literals on its right, e.g. intent in ["billing"]',
                right_token,
            )
        if op not in ("in", "not in") and isinstance(right, ListLiteral):
            raise self.error("a list may only follow 'in' / 'not in'", right_token)
        if self.peek().kind == "compare" or self.peek().kind == "in":
            raise self.error(
                "chained comparisons are not supported; join them with 'and'", self.peek()
            )
        return Compare(op, left, right)

    def parse_compare_op(self) -> str | None:
        token = self.peek()
        if token.kind in ("compare", "in"):
            self.advance()
            return token.text
        if token.kind == "not":
            if self.peek(1).kind != "in":
                raise self.unexpected(self.peek(1), "'in' after 'not'")
            self.advance()
            self.advance()
            return "not in"
        if token.kind == "-":
            raise self.error("arithmetic ('-') is not supported", token)
        return None

    def parse_value(self, expected: str) -> Var | Const | ListLiteral:
        token = self.advance()
        if token.kind == "name":
            follower = self.peek()
            if follower.kind == "(":
                raise self.error("function calls are not supported", follower)
            if follower.kind == "[":
                raise self.error("subscripts are not supported", follower)
            return Var(token.text)
        if token.kind in ("number", "string", "bool"):
            assert token.value is not None
            return Const(token.value)
        if token.kind == "-":
            if self.peek().kind != "number":
                raise self.error(
                    "'-' is only allowed in front of a number (arithmetic is not supported)",
                    token,
                )
            number = self.advance().value
            assert isinstance(number, int | float)
            return Const(-number)
        if token.kind == "[":
            return self.parse_list(token)
        raise self.unexpected(token, expected)

    def parse_list(self, opening: _Token) -> ListLiteral:
        values: list[Scalar] = []
        if self.peek().kind == "]":
            self.advance()
            return ListLiteral(())
        while True:
            item_token = self.peek()
            if item_token.kind == "[":
                raise self.error("lists may not be nested", item_token)
            item = self.parse_value("a literal in the list")
            if not isinstance(item, Const):
                raise self.error(
                    f"lists may hold only literals, found {_describe(item)}", item_token
                )
            values.append(item.value)
            separator = self.advance()
            if separator.kind == "]":
                break
            if separator.kind != ",":
                column = opening.position + 1
                raise self.unexpected(
                    separator, f"',' or ']' in the list opened at column {column}"
                )
            if self.peek().kind == "]":  # trailing comma
                self.advance()
                break
        kinds = sorted({_literal_kind(v) for v in values})
        if len(kinds) > 1:
            raise self.error(
                f"a list must hold literals of one type, found {' and '.join(kinds)}", opening
            )
        return ListLiteral(tuple(values))


def _literal_kind(value: Scalar) -> str:
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "bool"
    if isinstance(value, str):
        return "string"
    return "number"


def _describe(node: Var | Const | ListLiteral) -> str:
    match node:
        case Var(name):
            return f"variable {name!r}"
        case Const(value):
            return f"{_literal_kind(value)} {value!r}"
        case _:
            return "a list"


# --------------------------------------------------------------------------- evaluation


def evaluate(expr: Expr, states: States) -> np.ndarray:
    """Where ``expr`` holds over a state batch: boolean mask, shape (n,).

    ``states`` maps variable names to arrays of shape (n,). A variable missing from the batch
    is a ``ValueError``; mismatched types (a string column against a number, an ordering
    comparison on strings, a non-boolean used as a condition) are a ``TypeError``.
    """
    return _mask(expr, states, batch_size(states))


def _mask(expr: Expr, states: States, n: int) -> np.ndarray:
    match expr:
        case Or(operands):
            return np.logical_or.reduce([_mask(o, states, n) for o in operands])
        case And(operands):
            return np.logical_and.reduce([_mask(o, states, n) for o in operands])
        case Not(operand):
            return ~_mask(operand, states, n)
        case Compare():
            return _compare(expr, states, n)
        case Const(value) if isinstance(value, bool):
            return np.full(n, value)
        case Var(name):
            values, kind = _column(name, states)
            if kind != "bool":
                raise TypeError(
                    f"variable {name!r} ({kind}) is not a condition; compare it, "
                    f"e.g. '{name} == ...'"
                )
            return values.astype(bool)
        case _:
            raise TypeError(f"{_describe(expr)} is not a condition")


def _column(name: str, states: States) -> tuple[np.ndarray, str]:
    """A state variable's values, shape (n,), and kind: "number", "string" or "bool"."""
    if name not in states:
        raise ValueError(
            f"unknown state variable {name!r}; the states have {sorted(map(str, states))}"
        )
    values = np.asarray(states[name])
    if values.ndim != 1:
        raise ValueError(f"state variable {name!r} must have shape (n,), got {values.shape}")
    dtype_kind = values.dtype.kind
    if dtype_kind == "b":
        return values, "bool"
    if dtype_kind in "iuf":
        return values, "number"
    if dtype_kind in "UO":
        return values, "string"
    raise TypeError(f"state variable {name!r} has unsupported dtype {values.dtype}")


def _operand(node: Var | Const, states: States) -> tuple[np.ndarray | Scalar, str, str]:
    """Values (array of shape (n,) or a scalar), kind and a label for error messages."""
    if isinstance(node, Var):
        values, kind = _column(node.name, states)
        return values, kind, f"variable {node.name!r} ({kind}, dtype {values.dtype})"
    return node.value, _literal_kind(node.value), _describe(node)


_ORDERING = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}
_EQUALITY = {"==": np.equal, "!=": np.not_equal}


def _compare(expr: Compare, states: States, n: int) -> np.ndarray:
    left, left_kind, left_label = _operand(expr.left, states)
    if isinstance(expr.right, ListLiteral):
        items = expr.right.values
        items_kind = _literal_kind(items[0]) if items else left_kind
        if items_kind != left_kind:
            raise TypeError(
                f"cannot test {left_label} {expr.op!r} a list of {items_kind}s; "
                f"the types must match"
            )
        hits = _isin(left, items)
        result = ~hits if expr.op == "not in" else hits
    else:
        right, right_kind, right_label = _operand(expr.right, states)
        if left_kind != right_kind:
            raise TypeError(
                f"cannot compare {left_label} with {right_label} using {expr.op!r}; "
                f"the types must match"
            )
        if expr.op in _ORDERING:
            if left_kind != "number":
                raise TypeError(
                    f"ordering comparison {expr.op!r} is not defined for {left_kind}s "
                    f"({left_label}); use ==, !=, in or not in"
                )
            result = _ORDERING[expr.op](left, right)
        else:
            result = _EQUALITY[expr.op](left, right)
    result = np.asarray(result, dtype=bool)
    return np.full(n, bool(result)) if result.ndim == 0 else result


def _isin(values: np.ndarray | Scalar, items: tuple[Scalar, ...]) -> np.ndarray:
    """Membership of each value in ``items``; shape of ``values``."""
    if not items:
        return np.zeros(np.shape(values), dtype=bool)
    if isinstance(values, np.ndarray) and values.dtype == object:
        # np.isin may sort object arrays, which fails on mixed contents (e.g. None);
        # equality per listed item stays vectorised over the rows.
        return np.logical_or.reduce([values == item for item in items])
    return np.isin(values, list(items))


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
                f"{self.when!r} (quote the expression in YAML)"
            )
        if not isinstance(self.action, str):
            raise TypeError(
                f"action: expected an action name, got {type(self.action).__name__} {self.action!r}"
            )


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
            raise TypeError(f"{self._where}: rules must be a sequence of rules, got {rules!r}")
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
                f"{self._where}: {field}: unknown action {action!r}; "
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
            f"rules[{i}] ({rule.when!r}) reads {', '.join(map(repr, sorted(reads - available)))}"
            for i, (rule, reads) in enumerate(zip(self.rules, self._reads, strict=True))
            if reads - available
        ]
        if problems:
            raise ValueError(
                f"{self._where}: rules on features the data does not have: "
                f"{'; '.join(problems)}. Available variables: {sorted(map(str, available))}"
            )

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
                raise TypeError(f"{self._where}: rules[{i}] {rule.when!r}: {err}") from None
            except ValueError as err:
                raise ValueError(f"{self._where}: rules[{i}] {rule.when!r}: {err}") from None
            chosen[holds & undecided] = action_index
            undecided &= ~holds
        return chosen

    def action_probs(self, states: States) -> np.ndarray:
        """Action probabilities, shape (n, n_actions), rows summing to 1."""
        return epsilon_mix(one_hot(self.decide(states), len(self.actions)), self.epsilon)

    def to_dict(self) -> dict[str, Any]:
        """The rule-file mapping (DESIGN.md §5); :func:`rule_policy_from_dict` reads it back."""
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
        raise TypeError(f"actions: expected a sequence of action names, got {actions!r}")
    catalogue = tuple(actions)
    if not catalogue:
        raise ValueError("actions: the action catalogue is empty")
    if not all(isinstance(a, str) for a in catalogue):
        raise TypeError(f"actions: action names must be strings, got {list(catalogue)}")
    if len(set(catalogue)) != len(catalogue):
        raise ValueError(f"actions: duplicate action names in {list(catalogue)}")
    return catalogue


def _check_epsilon(epsilon: object, where: str) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise TypeError(f"{where}: epsilon must be a number in [0, 1], got {epsilon!r}")
    if not (math.isfinite(epsilon) and 0.0 <= epsilon <= 1.0):
        raise ValueError(f"{where}: epsilon must be in [0, 1], got {epsilon}")
    return float(epsilon)


def _as_rule(rule: object, index: int, where: str) -> Rule:
    if isinstance(rule, Rule):
        return rule
    if not isinstance(rule, Mapping):
        raise TypeError(
            f"{where}: rules[{index}] must be a mapping with keys 'when' and 'action', got {rule!r}"
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


# --------------------------------------------------------------------------- loading


def rule_policy_from_dict(
    data: Mapping[str, Any],
    actions: Sequence[str],
    name: str,
    *,
    source: str | None = None,
) -> RulePolicy:
    """Build a :class:`RulePolicy` from a rule-file mapping (keys as in DESIGN.md §5).

    ``_target_``, if present, must be exactly ``agents.rules.RulePolicy``: the target is
    checked, never imported. ``rules`` and ``default`` are required (``rules: []`` is fine);
    ``epsilon`` defaults to 0. ``source`` (e.g. a file path) is named in error messages.
    """
    where = f"rule policy {name!r}" + (f" ({source})" if source else "")
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{where}: a rule policy must be a mapping with keys 'rules' and 'default' "
            f"(optional: '_target_', 'epsilon'), got {type(data).__name__}"
        )
    target = data.get("_target_", RULE_POLICY_TARGET)
    if target not in RULE_POLICY_TARGETS:
        raise ValueError(
            f"{where}: _target_ must be {RULE_POLICY_TARGET!r}, got {target!r}; "
            f"rule files cannot name other classes"
        )
    unknown = sorted(map(str, set(data) - _FILE_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed keys are {sorted(_FILE_KEYS)}")
    for required in ("rules", "default"):
        if required not in data:
            raise ValueError(
                f"{where}: missing key {required!r} (a rule policy needs 'rules' and "
                f"'default'; write 'rules: []' for a policy that always takes the default)"
            )
    rules = data["rules"]
    if not isinstance(rules, Sequence) or isinstance(rules, str | bytes):
        raise ValueError(
            f"{where}: 'rules' must be a list of {{when, action}} mappings "
            f"(write 'rules: []' for none), got {rules!r}"
        )
    return RulePolicy(
        actions,
        rules,
        data["default"],
        data.get("epsilon", 0.0),
        name=name,
        source=source,
    )


def load_rule_policy(path: str | Path, actions: Sequence[str]) -> RulePolicy:
    """Read a rule file (YAML, DESIGN.md §5) safely; the policy is named by the file's stem.

    The file is parsed with ``yaml.safe_load`` and its ``_target_`` is checked, never
    instantiated. A missing, unreadable or non-YAML file, or one that is not a mapping, is a
    ``ValueError`` naming the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: rule file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read rule file: {err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        raise ValueError(f"{path}: the rule file is empty")
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{path}: a rule file must be a YAML mapping with keys 'rules' and 'default', "
            f"got {type(data).__name__}"
        )
    return rule_policy_from_dict(data, actions, name=path.stem, source=str(path))


def load_rule_panel(directory: str | Path, actions: Sequence[str]) -> dict[str, RulePolicy]:
    """The deterministic rule policies (``rules_*.yaml`` with epsilon 0) in ``directory``, by stem.

    This is the panel that fidelity, regret and OPE accuracy are measured on.
    """
    panel: dict[str, RulePolicy] = {}
    for path in sorted(Path(directory).glob("rules_*.yaml")):
        policy = load_rule_policy(path, actions)
        if policy.epsilon == 0:
            panel[path.stem] = policy
    return panel
