"""The rule language's syntax tree and its error (see :mod:`supportrl.agents.rules`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from supportrl.files import brief

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
        # A window of the expression around the column: messages stay short for any input.
        start = max(0, min(position - 60, len(expression) - 120))
        window = expression[start : start + 120]
        # Newlines/tabs would break the caret's alignment under the expression.
        shown = window.replace("\n", " ").replace("\t", " ")
        quoted = repr(window) if len(window) == len(expression) else f"{brief(window, 120)} (cut)"
        super().__init__(
            f"{prefix}{reason} at column {position + 1} of rule expression {quoted}\n"
            f"    {shown}\n    {' ' * (position - start)}^"
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


def string_comparisons(expr: Expr | ListLiteral) -> list[tuple[str, str]]:
    """``(variable, literal)`` for every string literal compared with a state variable
    (``intent == "billing"``, ``tier in ["pro", "free"]``)."""
    match expr:
        case Compare(_, Var(name), Const(value)) | Compare(_, Const(value), Var(name)):
            return [(name, value)] if isinstance(value, str) else []
        case Compare(_, Var(name), ListLiteral(values)):
            return [(name, v) for v in values if isinstance(v, str)]
        case Not(operand):
            return string_comparisons(operand)
        case And(operands) | Or(operands):
            return [pair for o in operands for pair in string_comparisons(o)]
        case _:
            return []


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
