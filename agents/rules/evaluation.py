"""Column-wise evaluation of parsed rule conditions over a batch of named states."""

from __future__ import annotations

import numpy as np
from supportrl.agents.base import States, batch_size
from supportrl.agents.rules.syntax import (
    And,
    Compare,
    Const,
    Expr,
    ListLiteral,
    Not,
    Or,
    Scalar,
    Var,
    _describe,
    _literal_kind,
)

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
