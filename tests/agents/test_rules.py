"""Rule policies: the expression language, first-match policies and safe rule-file loading."""

from __future__ import annotations

import ast
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from supportrl.agents.base import Policy, one_hot
from supportrl.agents.rules import (
    And,
    Compare,
    Const,
    ListLiteral,
    Not,
    Or,
    Rule,
    RulePolicy,
    RuleSyntaxError,
    Var,
    evaluate,
    expression_variables,
    load_rule_policy,
    parse_expression,
    rule_policy_from_dict,
)

from tests.helpers import REPO

ROOT = REPO
RULE_FILES = sorted((ROOT / "configs" / "rules").glob("rules_*.yaml"))
ACTIONS = ("empathize", "direct_answer", "faq_link", "clarify", "offer_credit", "escalate_human")
INTENTS = ["billing", "technical", "account", "shipping", "cancel", "other"]
TIERS = ["free", "pro", "enterprise"]
CHANNELS = ["chat", "web", "mobile"]
STATE_VARIABLES = {
    "turn",
    "previous_action",
    "intent",
    "sentiment",
    "tier",
    "channel",
    "tenure_months",
    "prior_contacts_30d",
}


def make_states(**columns: list) -> dict[str, np.ndarray]:
    return {name: np.asarray(values) for name, values in columns.items()}


# Five hand-made states; expected masks below are read off these columns.
STATES = make_states(
    turn=[0, 1, 2, 3, 5],
    sentiment=[-0.9, -0.2, 0.0, 0.4, 1.0],
    intent=["billing", "technical", "billing", "cancel", "other"],
    tier=["free", "pro", "enterprise", "free", "pro"],
    channel=["chat", "web", "mobile", "chat", "web"],
    previous_action=["none", "faq_link", "empathize", "clarify", "direct_answer"],
    tenure_months=[0.5, 12, 30, 3, 48],
    prior_contacts_30d=[0, 1, 3, 0, 2],
    vip=[True, False, False, True, False],
)


def random_states(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A synthetic batch with every state variable of the synthetic world."""
    rng = np.random.default_rng(seed)
    return {
        "turn": rng.integers(0, 9, n),
        "previous_action": rng.choice(["none", *ACTIONS], n),
        "intent": rng.choice(INTENTS, n),
        "sentiment": rng.uniform(-1, 1, n),
        "tier": rng.choice(TIERS, n),
        "channel": rng.choice(CHANNELS, n),
        "tenure_months": rng.uniform(0, 60, n),
        "prior_contacts_30d": rng.integers(0, 6, n),
    }


def mask(text: str) -> list[bool]:
    return [v == "1" for v in text]


# --------------------------------------------------------------------------- expressions

VALID = [
    # numeric comparisons
    ("turn >= 3", "00011"),
    ("turn < 2", "11000"),
    ("turn == 2", "00100"),
    ("turn != 2", "11011"),
    ("sentiment <= -0.2", "11000"),
    ("sentiment > 0", "00011"),
    ("sentiment < -0.5", "10000"),
    ("sentiment > - 0.5", "01111"),
    ("sentiment < 1e-3", "11100"),
    ("sentiment >= .4", "00011"),
    ("3 <= turn", "00011"),
    ("tenure_months > prior_contacts_30d", "11111"),
    ("prior_contacts_30d >= turn", "11100"),
    # string comparisons, both quote styles
    ('intent == "billing"', "10100"),
    ("intent == 'billing'", "10100"),
    ('"billing" == intent', "10100"),
    ('intent != "billing"', "01011"),
    ('intent != "bil\\"ling"', "11111"),
    ("tier == previous_action", "00000"),
    # in / not in on strings and numbers
    ('intent in ["billing", "cancel"]', "10110"),
    ('intent not in ["billing", "cancel"]', "01001"),
    ('tier in ["pro", "enterprise",]', "01101"),
    ("turn in [0, 5]", "10001"),
    ("turn not in [0, 5]", "01110"),
    ("sentiment in [1.0, -0.9]", "10001"),
    ("intent in []", "00000"),
    ("intent not in []", "11111"),
    # precedence: not > and > or
    ('turn == 3 or turn == 1 and intent == "technical"', "01010"),
    ('(turn == 3 or turn == 1) and intent == "technical"', "01000"),
    ('turn == 1 and intent == "technical" or turn == 3', "01010"),
    ('not turn >= 2 and intent == "billing"', "10000"),
    ('not (turn >= 2 and intent == "billing")', "11011"),
    ('not intent in ["billing"]', "01011"),
    ("not not turn >= 3", "00011"),
    ("turn < 1 or turn > 4 or turn == 2", "10101"),
    ("((turn >= 3))", "00011"),
    # examples from docs/rules.md
    ('sentiment < -0.5 and intent == "billing"', "10000"),
    ('turn >= 3 or tier in ["enterprise"]', "00111"),
    # booleans
    ("vip", "10010"),
    ("not vip", "01101"),
    ("vip == true", "10010"),
    ("vip != True", "01101"),
    ("vip in [false]", "01101"),
    ("true", "11111"),
    ("false or turn == 0", "10000"),
]


@pytest.mark.parametrize(("expression", "expected"), VALID)
def test_valid_expressions(expression: str, expected: str) -> None:
    result = evaluate(parse_expression(expression), STATES)
    assert result.dtype == bool
    assert result.shape == (5,)
    assert result.tolist() == mask(expected)


def test_parse_tree_shape() -> None:
    tree = parse_expression('not a < 1 and b in ["x"] or c')
    assert tree == Or(
        (
            And(
                (
                    Not(Compare("<", Var("a"), Const(1))),
                    Compare("in", Var("b"), ListLiteral(("x",))),
                )
            ),
            Var("c"),
        )
    )
    assert expression_variables(tree) == {"a", "b", "c"}
    with pytest.raises(AttributeError):
        tree.operands = ()  # type: ignore[misc]  # frozen


def test_object_and_categorical_columns() -> None:
    states = {"intent": np.array(["billing", None, "cancel"], dtype=object)}
    assert evaluate(parse_expression('intent in ["cancel"]'), states).tolist() == [0, 0, 1]
    assert evaluate(parse_expression('intent != "billing"'), states).tolist() == [0, 1, 1]


def test_empty_batch() -> None:
    states = {"turn": np.array([], dtype=int)}
    assert evaluate(parse_expression("turn > 1 or true"), states).shape == (0,)


INVALID = [
    ("", "empty expression"),
    ("   ", "empty expression"),
    ("turn >", "expected a value after '>', found the end"),
    ("turn >= 3 and", "expected a condition, found the end"),
    ("turn = 3", "unknown operator '='; use '=='"),
    ("turn => 3", "unknown operator '='"),
    ('intent == "billing', "unterminated string"),
    ("intent == 'billing", "unterminated string"),
    ("intent == 'a\\n'", "unsupported escape"),
    ("turn >= 3 )", "expected 'and', 'or' or the end of the expression, found '\\)'"),
    ("(turn >= 3", "expected '\\)' to close the '\\(' at column 1"),
    ("turn >= 3 turn", "found 'turn'"),
    ("()", "expected a condition, found '\\)'"),
    ("1 < turn < 3", "chained comparisons"),
    ("turn == 1 in [1]", "chained comparisons"),
    ("3", "number 3 is not a condition"),
    ('"billing"', "string 'billing' is not a condition"),
    ('["a"]', "a list is not a condition"),
    ('["a"] in intent', "a list may only stand on the right"),
    ('intent in "billing"', "'in' needs a list"),
    ("intent not in tier", "'not in' needs a list"),
    ('intent == ["billing"]', "a list may only follow 'in'"),
    ('intent in ["a", 1]', "one type, found number and string"),
    ("intent in [tier]", "only literals, found variable 'tier'"),
    ('intent in [["a"]]', "may not be nested"),
    ('intent in ["a" "b"]', "expected ',' or '\\]' in the list opened at column 11"),
    ('intent in ["a"', "expected ',' or '\\]'.*found the end"),
    ("turn >= 3 && turn < 5", "unknown operator '&&'; use 'and'"),
    ("turn >= 3 || vip", "unknown operator '\\|\\|'; use 'or'"),
    ("!vip", "unknown operator '!'; use 'not'"),
    ("turn is 3", "'is' is not part of the rule language; use '=='"),
    ("intent == None", "'None' is not part of the rule language"),
    ("turn not 3", "expected 'in' after 'not', found '3'"),
    ("turn >= 1.2.3", "malformed number"),
    ("turn >= 3abc", "malformed number"),
    ("turn >= 3 # comment", "unexpected character '#'"),
    ("turn ≥ 3", "unexpected character '≥'"),
    ("-turn < 3", "'-' is only allowed in front of a number"),
    ("turn - 1 > 3", "arithmetic \\('-'\\)"),
    ("turn > 3 - 1", "arithmetic \\('-'\\)"),
    ("turn * 2 > 3", "arithmetic \\('\\*'\\)"),
]


@pytest.mark.parametrize(("expression", "message"), INVALID)
def test_invalid_expressions(expression: str, message: str) -> None:
    with pytest.raises(RuleSyntaxError, match=message) as info:
        parse_expression(expression)
    # The message quotes the expression and marks the column with a caret.
    text = str(info.value)
    assert repr(expression) in text
    assert f"column {info.value.position + 1}" in text
    assert text.endswith(" " * (4 + info.value.position) + "^")


@pytest.mark.parametrize(
    ("expression", "column"),
    [("a.b", 2), ("f(x)", 2), ("x[0]", 2), ("turn >= 3 and", 14), ('x == "a', 6)],
)
def test_error_points_at_offending_column(expression: str, column: int) -> None:
    with pytest.raises(RuleSyntaxError, match=f"at column {column} ") as info:
        parse_expression(expression)
    assert info.value.position == column - 1


MALICIOUS = [
    ('__import__("os").system("x")', "names starting with '__'"),
    ("a.b", "attribute access"),
    ("f(x)", "function calls"),
    ("x[0]", "subscripts"),
    ("x[0:1]", "unexpected character ':'"),
    ("().__class__", "attribute access"),
    ("[].__class__.__base__", "attribute access"),
    ("__class__", "names starting with '__'"),
    ("lambda: 1", "'lambda' is not part"),
    ("1 + 1", "arithmetic"),
    ('open("f")', "function calls"),
    ("getattr(turn, 'x')", "function calls"),
    ("exec('x')", "function calls"),
    ("import os", "'import' is not part"),
    ("turn if true else false", "'if' is not part"),
    ("turn; import os", "unexpected character ';'"),
    ("{}", "unexpected character '{'"),
    ("f'{turn}'", "found"),
    ("'a' * 1000", "arithmetic"),
    ("turn ** 99", "arithmetic"),
    ("yield turn", "'yield' is not part"),
]


@pytest.mark.parametrize(("expression", "message"), MALICIOUS)
def test_malicious_expressions_are_syntax_errors(expression: str, message: str) -> None:
    with pytest.raises(RuleSyntaxError, match=message):
        parse_expression(expression)


def test_module_never_evaluates_code() -> None:
    """No eval/exec/compile/__import__ calls and no ast import in the implementation."""
    modules = sorted((ROOT / "agents" / "rules").glob("*.py"))
    assert len(modules) >= 5
    for module in modules:
        tree = ast.parse(module.read_text())
        called = {
            node.func.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        }
        assert not called & {"eval", "exec", "compile", "__import__", "getattr"}, module
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        assert "ast" not in imported and "importlib" not in imported, module


def test_syntax_error_is_value_error_and_picklable() -> None:
    with pytest.raises(ValueError) as info:
        parse_expression("a.b")
    copy = pickle.loads(pickle.dumps(info.value))
    assert isinstance(copy, RuleSyntaxError) and str(copy) == str(info.value)


def test_non_string_expression() -> None:
    with pytest.raises(TypeError, match="must be a string"):
        parse_expression(3)  # type: ignore[arg-type]


EVALUATION_ERRORS = [
    ('intent < "b"', TypeError, "ordering comparison '<' is not defined for strings"),
    ('"a" >= "b"', TypeError, "ordering comparison '>=' is not defined for strings"),
    ("vip < true", TypeError, "ordering comparison '<' is not defined for bools"),
    ("intent == 3", TypeError, "cannot compare variable 'intent' \\(string.*with number 3"),
    ('turn == "3"', TypeError, "cannot compare variable 'turn' \\(number.*with string '3'"),
    ("turn != intent", TypeError, "cannot compare variable 'turn'.*variable 'intent'"),
    ('turn in ["a"]', TypeError, "variable 'turn' \\(number.*'in' a list of strings"),
    ("intent not in [1, 2]", TypeError, "'not in' a list of numbers"),
    ("turn", TypeError, "variable 'turn' \\(number\\) is not a condition"),
    ("missing == 1", ValueError, "unknown state variable 'missing'; the states have \\["),
]


@pytest.mark.parametrize(("expression", "error", "message"), EVALUATION_ERRORS)
def test_evaluation_errors(expression: str, error: type[Exception], message: str) -> None:
    expr = parse_expression(expression)
    with pytest.raises(error, match=message):
        evaluate(expr, STATES)


def test_state_columns_must_be_one_dimensional() -> None:
    with pytest.raises(ValueError, match="shape \\(n,\\)"):
        evaluate(parse_expression("turn > 1"), {"turn": np.zeros((2, 2))})


# --------------------------------------------------------------------------- policy


def policy(rules: list[tuple[str, str]], default: str = "direct_answer", **kwargs) -> RulePolicy:
    return RulePolicy(ACTIONS, [Rule(when, action) for when, action in rules], default, **kwargs)


def names(indices: np.ndarray) -> list[str]:
    return [ACTIONS[i] for i in indices]


def test_first_match_wins() -> None:
    late_first = policy([("turn >= 3", "escalate_human"), ("turn >= 1", "clarify")])
    assert names(late_first.decide(STATES)) == [
        "direct_answer",
        "clarify",
        "clarify",
        "escalate_human",
        "escalate_human",
    ]
    # Reversed, the broader rule shadows the narrower one.
    broad_first = policy([("turn >= 1", "clarify"), ("turn >= 3", "escalate_human")])
    assert names(broad_first.decide(STATES)) == ["direct_answer"] + ["clarify"] * 4


def test_default_without_rules() -> None:
    constant = policy([], default="faq_link")
    assert names(constant.decide(STATES)) == ["faq_link"] * 5
    assert constant.variables == frozenset()


def test_decide_and_action_probs_shapes() -> None:
    p = policy([('intent == "billing"', "offer_credit")])
    chosen = p.decide(STATES)
    assert chosen.dtype == np.int64 and chosen.shape == (5,)
    probs = p.action_probs(STATES)
    assert probs.shape == (5, len(ACTIONS))
    np.testing.assert_array_equal(probs, one_hot(chosen, len(ACTIONS)))
    np.testing.assert_array_equal(p.act(STATES, np.random.default_rng(0)), chosen)
    assert isinstance(p, Policy)


def test_empty_batch_policy() -> None:
    p = policy([("turn > 1", "clarify")], epsilon=0.2)
    assert p.action_probs({"turn": np.array([], dtype=int)}).shape == (0, len(ACTIONS))


@pytest.mark.parametrize("epsilon", [0.0, 0.3, 1.0])
def test_epsilon_propensities(epsilon: float) -> None:
    p = policy([("turn >= 3", "escalate_human")], epsilon=epsilon)
    probs = p.action_probs(STATES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    chosen = p.decide(STATES)
    expected_chosen = 1 - epsilon + epsilon / len(ACTIONS)
    np.testing.assert_allclose(probs[np.arange(5), chosen], expected_chosen)
    if epsilon > 0:
        assert (probs > 0).all()
        np.testing.assert_allclose(probs.min(), min(epsilon / len(ACTIONS), expected_chosen))


def test_variables() -> None:
    p = policy([("turn >= 3 or tier == 'pro'", "clarify"), ("sentiment < 0", "empathize")])
    assert p.variables == {"turn", "tier", "sentiment"}


def test_missing_variable_names_rule_variable_and_available() -> None:
    p = policy([("turn >= 3", "clarify"), ("mood < 0 and churn_risk > 0.5", "empathize")])
    message = (
        "rules on features the data does not have: rules\\[1\\] \\('mood < 0 and churn_risk > "
        "0.5'\\) reads 'churn_risk', 'mood'. Available variables: \\['intent', 'turn'\\]"
    )
    with pytest.raises(ValueError, match=message):
        p.check_variables(["turn", "intent"])
    with pytest.raises(ValueError, match="rules\\[1\\].*reads 'churn_risk', 'mood'"):
        p.decide({"turn": np.array([1]), "intent": np.array(["billing"])})
    p.check_variables(["turn", "mood", "churn_risk"])  # all present: no error


def test_type_error_at_decide_names_the_rule() -> None:
    p = policy([("turn >= 3", "clarify"), ('turn == "late"', "escalate_human")], name="prod")
    with pytest.raises(TypeError, match="rule policy 'prod': rules\\[1\\] 'turn == \"late\"'"):
        p.decide(STATES)


CONSTRUCTION_ERRORS = [
    ({"rules": [Rule("turn > 1", "refund")]}, ValueError, "rules\\[0\\].action: unknown action 'refund'; the catalogue is \\['empathize'"),
    ({"default": "refund"}, ValueError, "default: unknown action 'refund'; the catalogue"),
    ({"epsilon": -0.1}, ValueError, "epsilon must be in \\[0, 1\\], got -0.1"),
    ({"epsilon": 1.5}, ValueError, "epsilon must be in \\[0, 1\\]"),
    ({"epsilon": float("nan")}, ValueError, "epsilon must be in \\[0, 1\\]"),
    ({"epsilon": "0.1"}, TypeError, "epsilon must be a number"),
    ({"epsilon": True}, TypeError, "epsilon must be a number"),
    ({"rules": [Rule("turn >", "clarify")]}, RuleSyntaxError, "rule policy 'rules': rules\\[0\\] \\(action clarify\\): expected a value"),
    ({"rules": ["turn > 1"]}, TypeError, "rules\\[0\\] must be a mapping"),
    ({"rules": "turn > 1"}, TypeError, "rules must be a sequence of rules"),
    ({"rules": [{"when": "turn > 1"}]}, ValueError, "rules\\[0\\] must have exactly the keys.*missing keys \\['action'\\]"),
    ({"rules": [{"when": True, "action": "clarify"}]}, TypeError, "rules\\[0\\].when: expected a string.*quote"),
    ({"actions": ("a", "a")}, ValueError, "actions: duplicate"),
    ({"actions": ()}, ValueError, "actions: the action catalogue is empty"),
    ({"actions": "abc"}, TypeError, "actions: expected a sequence"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "error", "message"), CONSTRUCTION_ERRORS)
def test_construction_errors(overrides: dict, error: type[Exception], message: str) -> None:
    arguments = {"actions": ACTIONS, "rules": [], "default": "direct_answer", **overrides}
    with pytest.raises(error, match=message):
        RulePolicy(**arguments)


def test_rule_is_frozen_and_checked() -> None:
    rule = Rule("turn > 1", "clarify")
    with pytest.raises(AttributeError):
        rule.when = "x"  # type: ignore[misc]
    with pytest.raises(TypeError, match="when: expected a string"):
        Rule(3, "clarify")  # type: ignore[arg-type]


def test_mapping_rules_are_accepted() -> None:
    p = RulePolicy(ACTIONS, [{"when": "turn >= 3", "action": "clarify"}], "direct_answer")
    assert p.rules == (Rule("turn >= 3", "clarify"),)


def test_to_dict_round_trip(tmp_path: Path) -> None:
    p = policy([('intent in ["billing"] and turn < 2', "offer_credit")], epsilon=0.25)
    data = p.to_dict()
    assert data == {
        "_target_": "supportrl.agents.rules.RulePolicy",
        "rules": [{"when": 'intent in ["billing"] and turn < 2', "action": "offer_credit"}],
        "default": "direct_answer",
        "epsilon": 0.25,
    }
    assert rule_policy_from_dict(data, ACTIONS, "copy").to_dict() == data
    path = tmp_path / "copied.yaml"
    path.write_text(yaml.safe_dump(data))
    loaded = load_rule_policy(path, ACTIONS)
    assert loaded.to_dict() == data and loaded.name == "copied"
    np.testing.assert_array_equal(loaded.action_probs(STATES), p.action_probs(STATES))


# --------------------------------------------------------------------------- YAML files

GOOD_YAML = """\
_target_: agents.rules.RulePolicy
rules:
  - when: 'sentiment < -0.5 and intent == "billing"'
    action: empathize
  - when: 'turn >= 3 or tier in ["enterprise"]'
    action: escalate_human
default: direct_answer
epsilon: 0.0
"""


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_design_example(tmp_path: Path) -> None:
    p = load_rule_policy(write(tmp_path, GOOD_YAML, "baseline_v2.yaml"), ACTIONS)
    assert p.name == "baseline_v2"
    assert names(p.decide(STATES)) == [
        "empathize",
        "direct_answer",
        "escalate_human",
        "escalate_human",
        "escalate_human",
    ]


def test_v1_contract_target_is_still_read(tmp_path: Path) -> None:
    text = "_target_: agents.rules.RulePolicy\nrules: []\ndefault: clarify\n"
    assert load_rule_policy(write(tmp_path, text), ACTIONS).default == "clarify"


def test_load_without_target_and_with_empty_rules(tmp_path: Path) -> None:
    p = load_rule_policy(write(tmp_path, "rules: []\ndefault: clarify\n"), ACTIONS)
    assert names(p.decide(STATES)) == ["clarify"] * 5 and p.epsilon == 0.0


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "agents.rules.Rule", ""])
def test_foreign_target_is_refused_without_being_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    calls = []
    monkeypatch.setattr(os, "system", lambda *args: calls.append(args))
    text = f"_target_: {target!r}\n_args_: ['echo pwned']\nrules: []\ndefault: clarify\n"
    path = write(tmp_path, text)
    with pytest.raises(
        ValueError,
        match=f"{re.escape(str(path))}.*_target_ must be 'supportrl.agents.rules.RulePolicy', got {re.escape(repr(target))}",
    ):
        load_rule_policy(path, ACTIONS)
    assert calls == []


def test_python_yaml_tags_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(os, "system", lambda *args: calls.append(args))
    path = write(tmp_path, "rules: !!python/object/apply:os.system ['echo pwned']\ndefault: x\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_rule_policy(path, ACTIONS)
    assert calls == []


FILE_ERRORS = [
    ("rules: []\ndefault: clarify\nepsilon: 0.1\nactions: [a]\n", "unknown keys \\['actions'\\]; allowed keys"),
    ("rule: []\ndefault: clarify\n", "unknown keys \\['rule'\\]"),
    ("default: clarify\n", "missing key 'rules'.*'rules: \\[\\]'"),
    ("rules: []\n", "missing key 'default'"),
    ("rules:\ndefault: clarify\n", "'rules' must be a list.*got null"),
    ("rules: {when: 'x'}\ndefault: clarify\n", "'rules' must be a list"),
    ("rules: [{when: 'turn > 1', action: clarify, note: x}]\ndefault: clarify\n", "rules\\[0\\].*unknown keys \\['note'\\]"),
    ("rules: [{when: 'turn > 1'}]\ndefault: clarify\n", "rules\\[0\\].*missing keys \\['action'\\]"),
    ("rules: [{when: true, action: clarify}]\ndefault: clarify\n", "rules\\[0\\].when: expected a string"),
    ("rules: [{when: 'turn > 1', action: refund}]\ndefault: clarify\n", "unknown action 'refund'"),
    ("rules: []\ndefault: clarify\nepsilon: 2\n", "epsilon must be in \\[0, 1\\]"),
    ("rules: [oops\n", "not valid YAML"),
    ("just a string\n", "must be a YAML mapping.*got str"),
    ("- a\n- b\n", "must be a YAML mapping.*got list"),
    ("", "the rule file is empty"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), FILE_ERRORS)
def test_rule_file_errors_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text, "broken.yaml")
    with pytest.raises((ValueError, TypeError), match=message) as info:
        load_rule_policy(path, ACTIONS)
    assert str(path) in str(info.value)


def test_syntax_error_in_file_names_file_and_rule(tmp_path: Path) -> None:
    path = write(
        tmp_path, "rules:\n  - when: 'turn.real > 1'\n    action: clarify\ndefault: clarify\n"
    )
    with pytest.raises(RuleSyntaxError, match=f"{re.escape(str(path))}.*rules\\[0\\].*attribute"):
        load_rule_policy(path, ACTIONS)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}: rule file not found"):
        load_rule_policy(path, ACTIONS)
    with pytest.raises(ValueError, match="cannot read rule file"):
        load_rule_policy(tmp_path, ACTIONS)


def test_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(ValueError, match="rule policy 'x': a rule policy must be a mapping"):
        rule_policy_from_dict(["rules"], ACTIONS, "x")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- shipped files


def test_enough_rule_files_are_shipped() -> None:
    assert len(RULE_FILES) >= 8


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.stem)
def test_shipped_rule_file_loads_and_evaluates(path: Path) -> None:
    p = load_rule_policy(path, ACTIONS)
    assert p.name == path.stem
    assert p.variables <= STATE_VARIABLES
    assert yaml.safe_load(path.read_text())["_target_"] == "supportrl.agents.rules.RulePolicy"
    states = random_states(200)
    probs = p.action_probs(states)
    assert probs.shape == (200, len(ACTIONS))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert rule_policy_from_dict(p.to_dict(), ACTIONS, p.name).to_dict() == p.to_dict()


def test_shipped_deterministic_policies_are_distinct() -> None:
    """The fidelity/OPE panel needs at least 8 deterministic rule policies that differ."""
    states = random_states(400, seed=1)
    policies = [load_rule_policy(path, ACTIONS) for path in RULE_FILES]
    decisions = {p.name: tuple(p.decide(states)) for p in policies if p.epsilon == 0.0}
    assert len(decisions) >= 8
    assert len(set(decisions.values())) == len(decisions)


def test_exploring_production_matches_production() -> None:
    production = load_rule_policy(ROOT / "configs/rules/rules_production.yaml", ACTIONS)
    explore = load_rule_policy(ROOT / "configs/rules/rules_production_explore.yaml", ACTIONS)
    assert explore.rules == production.rules and explore.default == production.default
    assert explore.epsilon > 0 and (explore.action_probs(random_states(50)) > 0).all()


def test_hydra_instantiate_matches_loader() -> None:
    """The files are also valid Hydra configs for the experiments layer."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    path = ROOT / "configs/rules/rules_production.yaml"
    via_hydra = instantiate(OmegaConf.load(path), actions=list(ACTIONS))
    assert isinstance(via_hydra, RulePolicy)
    states = random_states(100)
    expected = load_rule_policy(path, ACTIONS).decide(states)
    np.testing.assert_array_equal(via_hydra.decide(states), expected)


# --------------------------------------------------------------------------- properties


@st.composite
def state_batches(draw: st.DrawFn) -> dict[str, np.ndarray]:
    n = draw(st.integers(0, 12))

    def column(elements: st.SearchStrategy) -> list:
        return draw(st.lists(elements, min_size=n, max_size=n))

    return {
        "turn": np.asarray(column(st.integers(0, 10)), dtype=np.int64),
        "sentiment": np.asarray(column(st.floats(-1, 1)), dtype=float),
        "intent": np.asarray(column(st.sampled_from(INTENTS)), dtype=str),
        "tier": np.asarray(column(st.sampled_from(TIERS)), dtype=str),
        "previous_action": np.asarray(column(st.sampled_from(["none", *ACTIONS])), dtype=str),
    }


PROPERTY_POLICY = policy(
    [
        ("turn >= 6 or sentiment < -0.7", "escalate_human"),
        ('intent == "billing" and tier != "free"', "offer_credit"),
        ('previous_action == "none" and intent in ["shipping", "account"]', "faq_link"),
        ("not sentiment > -0.3", "empathize"),
    ]
)


@settings(max_examples=60, deadline=None)
@given(states=state_batches(), epsilon=st.floats(0, 1))
def test_action_probs_rows_sum_to_one(states: dict[str, np.ndarray], epsilon: float) -> None:
    p = RulePolicy(ACTIONS, PROPERTY_POLICY.rules, PROPERTY_POLICY.default, epsilon)
    probs = p.action_probs(states)
    n = len(states["turn"])
    assert probs.shape == (n, len(ACTIONS))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert (probs >= epsilon / len(ACTIONS) - 1e-12).all()
    if epsilon < 0.999:
        np.testing.assert_array_equal(probs.argmax(axis=1), p.decide(states))


COMPARISONS = st.one_of(
    st.builds(
        "{} {} {}".format,
        st.sampled_from(["turn", "sentiment"]),
        st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
        st.sampled_from(["0", "2", "3", "-0.5", "0.25"]),
    ),
    st.builds(
        "{} {} {!r}".format,
        st.just("intent"),
        st.sampled_from(["==", "!="]),
        st.sampled_from([*INTENTS, "refund"]),
    ),
    st.builds(
        "{} {} {!r}".format,
        st.sampled_from(["intent", "turn"]),
        st.sampled_from(["in", "not in"]),
        st.lists(st.sampled_from(INTENTS), max_size=3),
    ).filter(lambda text: not text.startswith("turn") or "[]" in text),
    st.sampled_from(["true", "false"]),
)


@st.composite
def conditions(draw: st.DrawFn, depth: int = 0) -> str:
    """Random conditions, deliberately often without parentheses, to exercise precedence."""
    if depth >= 2 or draw(st.booleans()):
        text = draw(COMPARISONS)
    else:
        text = draw(conditions(depth + 1))
        for _ in range(draw(st.integers(1, 2))):
            joiner = draw(st.sampled_from([" and ", " or ", " and not ", " or not "]))
            text += joiner + draw(conditions(depth + 1))
    if draw(st.booleans()):
        text = f"({text})"
    if draw(st.integers(0, 3)) == 0:
        text = "not " + text
    return text


@settings(max_examples=150, deadline=None)
@given(text=conditions(), states=state_batches())
def test_vectorised_evaluation_matches_python_semantics(
    text: str, states: dict[str, np.ndarray]
) -> None:
    # The rule language is a subset of Python expressions, so Python itself is the
    # reference: a row-by-row oracle on generated (trusted) text, in the test only.
    n = len(states["turn"])
    expected = [
        bool(
            eval(  # noqa: S307
                text,
                {"__builtins__": {}},
                {"true": True, "false": False} | {k: v[i].item() for k, v in states.items()},
            )
        )
        for i in range(n)
    ]
    assert evaluate(parse_expression(text), states).tolist() == expected


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=list("turn intent<>=!()[],\"'.-+0123456789 andortrue_\\:x"), max_size=30)
)
def test_parser_raises_only_rule_syntax_errors(text: str) -> None:
    try:
        parse_expression(text)
    except RuleSyntaxError:
        pass
