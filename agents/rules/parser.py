"""Tokenizer and recursive-descent parser of rule conditions (grammar in :mod:`supportrl.agents.rules`)."""

from __future__ import annotations

import keyword
import math
import re
from dataclasses import dataclass

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
    _describe,
    _literal_kind,
)

from supportrl.files import brief

# --------------------------------------------------------------------------- tokenizer


@dataclass(frozen=True)
class _Token:
    kind: str
    """One of: name number string bool and or not in compare - ( ) [ ] , end."""
    text: str
    position: int
    value: Scalar | None = None


MAX_EXPRESSION_DEPTH = 100
"""Deepest nesting of parentheses and ``not`` in one condition (a user error beyond)."""

MAX_EXPRESSION_LENGTH = 20_000
"""Longest condition accepted (characters)."""

_MAX_NUMBER_CHARS = 40
"""Longest number literal (an int of 4,300+ digits cannot even be converted)."""

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
    if len(literal) > _MAX_NUMBER_CHARS:
        raise RuleSyntaxError(
            f"number literal too long ({len(literal)} characters; at most {_MAX_NUMBER_CHARS})",
            text,
            start,
        )
    value: int | float = int(literal) if literal.isdigit() else float(literal)
    if not math.isfinite(value) or abs(value) >= 2**63:
        raise RuleSyntaxError("number out of range (beyond +-9.2e18)", text, start)
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
        raise TypeError(f"rule expression must be a string, got {brief(text)}")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise RuleSyntaxError(
            f"expression too long ({len(text)} characters; at most {MAX_EXPRESSION_LENGTH})",
            text,
            MAX_EXPRESSION_LENGTH,
        )
    return _Parser(text).parse()


class _Parser:
    """Recursive descent over the grammar in the module docstring, one method per rule."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0
        """Open parentheses and ``not``s around the current token (bounded, no deep recursion)."""

    def nest(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_EXPRESSION_DEPTH:
            raise self.error(
                f"nested too deeply (more than {MAX_EXPRESSION_DEPTH} parentheses / 'not's)", token
            )

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
            self.nest(self.advance())
            operand = self.parse_not()
            self.depth -= 1
            return Not(operand)
        return self.parse_primary()

    def parse_primary(self) -> Expr:
        if self.peek().kind == "(":
            opening = self.advance()
            self.nest(opening)
            inner = self.parse_or()
            self.depth -= 1
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
