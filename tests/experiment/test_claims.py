"""Claim grammar: what parses, what is refused (ClaimSyntaxError), and how the tree evaluates."""

from __future__ import annotations

import math

import pytest

from labctl.experiment.claims import (
    METRICS,
    BinOp,
    ClaimSyntaxError,
    MissingMetric,
    Num,
    Ref,
    evaluate,
    parse_claim,
)

V = {
    ("p99_ms", "go"): 10.0,
    ("p99_ms", "rust"): 4.0,
    ("p50_ms", "go"): 2.0,
    ("gc_cycles_per_s", "go"): 6.0,
    ("rss_mb", "go-gogc400"): 300.0,
}


def value(text: str, values: dict[tuple[str, str], float] = V) -> float:
    return evaluate(parse_claim(text).expr, values)


def test_flagship_claim_tree() -> None:
    c = parse_claim("p99_ms[go] / p99_ms[rust] >= 2")
    assert c.expr == BinOp("/", Ref("p99_ms", "go"), Ref("p99_ms", "rust"))
    assert (c.cmp, c.threshold, c.text) == (">=", 2.0, "p99_ms[go] / p99_ms[rust] >= 2")
    assert c.holds(2.5) and c.holds(2.0) and not c.holds(1.99)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("p99_ms[go] - p99_ms[rust] * 2 > 0", 10 - 4 * 2),  # * binds tighter than -
        ("(p99_ms[go] - p99_ms[rust]) * 2 > 0", (10 - 4) * 2),
        ("p99_ms[go] - p99_ms[rust] - 1 > 0", 10 - 4 - 1),  # left-associative
        ("p99_ms[go] / p99_ms[rust] / 2 > 0", 10 / 4 / 2),
        ("p99_ms[go] / (p99_ms[rust] / 2) > 0", 10 / (4 / 2)),
        ("1 + 2 * p50_ms[go] > 0", 1 + 2 * 2),
        ("((p99_ms[go])) > 0", 10),
        ("rss_mb[go-gogc400] / 1.5e2 > 0", 2.0),
        ("p99_ms[go]/p99_ms[rust]>=2", 2.5),  # no spaces needed
        ("  gc_cycles_per_s[go]   >   5  ", 6.0),
    ],
)
def test_precedence_and_parentheses(text: str, expected: float) -> None:
    assert value(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "cmp", "threshold", "holds_at", "fails_at"),
    [
        ("p99_ms[go] > 5", ">", 5.0, 5.1, 5.0),
        ("p99_ms[go] >= 5", ">=", 5.0, 5.0, 4.9),
        ("p99_ms[go] < 5", "<", 5.0, 4.9, 5.0),
        ("p99_ms[go] <= 5", "<=", 5.0, 5.0, 5.1),
        ("p99_ms[go] - p99_ms[rust] > -3", ">", -3.0, -2.9, -3.0),
        ("p99_ms[go] - p99_ms[rust] <= - 0.5", "<=", -0.5, -0.5, -0.4),
        ("p99_ms[go] < 2.5e-3", "<", 0.0025, 0.002, 0.0025),
    ],
)
def test_comparisons_and_thresholds(
    text: str, cmp: str, threshold: float, holds_at: float, fails_at: float
) -> None:
    c = parse_claim(text)
    assert (c.cmp, c.threshold) == (cmp, threshold)
    assert c.holds(holds_at)
    assert not c.holds(fails_at)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "ends too early"),
        ("   ", "ends too early"),
        ("p99_ms[go]", "ends too early"),  # no comparison
        ("p99_ms[go] >", "ends too early"),  # missing threshold
        ("p99_ms[go] > -", "ends too early"),
        ("p99_ms[go] > p99_ms[rust]", "must be a number"),  # threshold must be a number
        ("p99_ms[go] > > 1", "must be a number"),
        ("p99_ms[go] > 2 3", "after the threshold"),  # trailing junk
        ("p99_ms[go] > 2 )", "after the threshold"),
        ("p99_ms[go] > 2 and 1", "unexpected text"),
        ("p99_ms[go] > 2; import os", "unexpected text"),
        ("p99_ms[go] == 2", "unexpected text"),
        ("p99_ms[go] != 2", "unexpected text"),
        ("p98_ms[go] > 1", "unknown metric"),
        ("P99_MS[go] > 1", "unknown metric"),
        ("p99_ms > 1", "unexpected text"),  # a metric needs [variant]
        ("p99_ms[] > 1", "unexpected text"),
        ("p99_ms[go > 1", "unexpected text"),
        ("p99_ms[go rust] > 1", "unexpected text"),
        ("1 > 0", "names no metric"),  # no metric at all
        ("2 * (3 + 1) >= 8", "names no metric"),
        ("(p99_ms[go] > 1", "missing ')'"),
        ("(p99_ms[go] > 1)", "missing ')'"),  # a comparison is not an operand
        ("p99_ms[go] * > 1", "unexpected '>'"),
        ("-p99_ms[go] > 1", "unexpected '-'"),  # no unary minus in expressions
        ("p99_ms[go] 2 > 1", "expected a comparison"),
        ("p99_ms[go] / p99_ms[rust] >= 2 >= 1", "after the threshold"),
        ("__import__('os').system('true') > 0", "unexpected text"),
        ("p99_ms[go] > __import__('os')", "unexpected text"),
        ("open('/etc/passwd')[go] > 0", "unexpected text"),
        ("p99_ms[go].__class__ > 0", "unexpected text"),
        ("lambda: 0 > 1", "unexpected text"),
        ("p99_ms[go] > 1e", "unexpected text"),  # an incomplete exponent
        ("p99_ms[go] > .5", "unexpected text"),
    ],
)
def test_invalid_expressions_raise(text: str, why: str) -> None:
    with pytest.raises(ClaimSyntaxError) as info:
        parse_claim(text)
    assert why in str(info.value), str(info.value)


def test_unknown_metric_lists_the_known_ones() -> None:
    with pytest.raises(ClaimSyntaxError, match="p99_ms"):
        parse_claim("latency[go] > 1")


def test_claim_syntax_error_is_a_value_error() -> None:
    # pydantic turns ValueError raised in validators into a schema error naming the key.
    assert issubclass(ClaimSyntaxError, ValueError)


def test_every_documented_metric_parses() -> None:
    for m in METRICS:
        assert parse_claim(f"{m}[go] >= 0").refs() == [Ref(m, "go")]


def test_refs_are_unique_and_in_order() -> None:
    c = parse_claim("(p99_ms[go] + p99_ms[go]) / p99_ms[rust] - p50_ms[go] * p99_ms[rust] > 1")
    assert c.refs() == [Ref("p99_ms", "go"), Ref("p99_ms", "rust"), Ref("p50_ms", "go")]


def test_numbers_and_refs_in_the_tree() -> None:
    c = parse_claim("2 * p99_ms[go] < 10")
    assert c.expr == BinOp("*", Num(2.0), Ref("p99_ms", "go"))


def test_evaluate_division_by_zero() -> None:
    zero = {("p99_ms", "go"): 3.0, ("p99_ms", "rust"): 0.0, ("p50_ms", "go"): 0.0}
    assert value("p99_ms[go] / p99_ms[rust] > 1", zero) == math.inf
    assert value("(0 - p99_ms[go]) / p99_ms[rust] > 1", zero) == -math.inf
    assert math.isnan(value("p50_ms[go] / p99_ms[rust] > 1", zero))
    c = parse_claim("p50_ms[go] / p99_ms[rust] > 1")
    nan = evaluate(c.expr, zero)
    # NaN satisfies no comparison, so a 0/0 claim can never be supported on its point value.
    assert not c.holds(nan) and not parse_claim("p50_ms[go] / p99_ms[rust] < 1").holds(nan)


def test_evaluate_missing_metric() -> None:
    c = parse_claim("p99_ms[go] / p99_ms[cpp] >= 2")
    with pytest.raises(MissingMetric, match=r"p99_ms\[cpp\]"):
        evaluate(c.expr, V)
    with pytest.raises(MissingMetric):
        evaluate(c.expr, {("p99_ms", "go"): 1.0, ("p99_ms", "cpp"): None})  # type: ignore[dict-item]


def test_evaluate_never_runs_text() -> None:
    # The variant is an opaque label: anything the grammar allows is only a dictionary key.
    c = parse_claim("p99_ms[os.system] > 0")
    assert c.refs() == [Ref("p99_ms", "os.system")]
    assert evaluate(c.expr, {("p99_ms", "os.system"): 1.0}) == 1.0
