"""Claim expressions: a tiny, safe grammar (no eval of user text).

    claim   := expr CMP NUMBER
    expr    := term (('+' | '-') term)*
    term    := factor (('*' | '/') factor)*
    factor  := NUMBER | METRIC '[' VARIANT ']' | '(' expr ')'
    CMP     := '>' | '>=' | '<' | '<='

Example: ``p99_ms[go] / p99_ms[rust] >= 2``. Parsing yields an AST that is
evaluated against any mapping of (metric, variant) → value, so the same tree gives the
point estimate and every bootstrap replicate.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# Metrics a claim may name. Latency and throughput come from the load generator's
# histograms; the rest from the servers' self-reports.
METRICS: dict[str, str] = {
    "p50_ms": "median latency (corrected), ms",
    "p90_ms": "90th percentile latency (corrected), ms",
    "p99_ms": "99th percentile latency (corrected), ms",
    "p999_ms": "99.9th percentile latency (corrected), ms",
    "max_ms": "maximum latency (corrected), ms",
    "achieved_rps": "achieved request rate",
    "capacity_rps": "closed-loop capacity",
    "errors": "errors + timeouts",
    "gc_pause_max_ms": "longest GC stop-the-world pause, ms (Go only)",
    "gc_pause_p99_ms": "99th percentile GC pause, ms (Go only)",
    "gc_cycles_per_s": "GC cycles per second of measurement (Go only)",
    "rss_mb": "peak resident set (VmHWM), MiB",
}

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"\[(?P<var>[A-Za-z0-9_.+-]+)\]|(?P<op>>=|<=|[-+*/()<>]))"
)
_CMP: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


class ClaimSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Ref:
    metric: str
    variant: str


@dataclass(frozen=True)
class BinOp:
    op: str
    left: Node
    right: Node


Node = Num | Ref | BinOp


@dataclass(frozen=True)
class Claim:
    expr: Node
    cmp: str
    threshold: float
    text: str

    def refs(self) -> list[Ref]:
        out: list[Ref] = []

        def walk(n: Node) -> None:
            if isinstance(n, Ref):
                if n not in out:
                    out.append(n)
            elif isinstance(n, BinOp):
                walk(n.left)
                walk(n.right)

        walk(self.expr)
        return out

    def holds(self, value: float) -> bool:
        return _CMP[self.cmp](value, self.threshold)


def _tokenize(text: str) -> list[tuple[str, str, str | None]]:
    pos = 0
    out: list[tuple[str, str, str | None]] = []
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ClaimSyntaxError(f"unexpected text at column {pos + 1}: {text[pos : pos + 12]!r}")
        if m.group("num"):
            out.append(("num", m.group("num"), None))
        elif m.group("name"):
            out.append(("ref", m.group("name"), m.group("var")))
        else:
            out.append(("op", m.group("op"), None))
        pos = m.end()
    return out


def parse_claim(text: str) -> Claim:
    """Parse ``expr CMP number``; raise ClaimSyntaxError with the reason."""
    toks = _tokenize(text)
    i = 0

    def peek() -> tuple[str, str, str | None] | None:
        return toks[i] if i < len(toks) else None

    def take() -> tuple[str, str, str | None]:
        nonlocal i
        if i >= len(toks):
            raise ClaimSyntaxError("expression ends too early")
        i += 1
        return toks[i - 1]

    def factor() -> Node:
        kind, val, var = take()
        if kind == "num":
            return Num(float(val))
        if kind == "ref":
            if val not in METRICS:
                raise ClaimSyntaxError(f"unknown metric {val!r} (known: {', '.join(METRICS)})")
            assert var is not None
            return Ref(val, var)
        if val == "(":
            node = expr()
            if take()[1] != ")":
                raise ClaimSyntaxError("missing ')'")
            return node
        raise ClaimSyntaxError(f"unexpected {val!r}")

    def term() -> Node:
        node = factor()
        while (t := peek()) and t[0] == "op" and t[1] in "*/":
            take()
            node = BinOp(t[1], node, factor())
        return node

    def expr() -> Node:
        node = term()
        while (t := peek()) and t[0] == "op" and t[1] in "+-":
            take()
            node = BinOp(t[1], node, term())
        return node

    lhs = expr()
    cmp = take()
    if cmp[0] != "op" or cmp[1] not in _CMP:
        raise ClaimSyntaxError(f"expected a comparison (>, >=, <, <=), got {cmp[1]!r}")
    neg = False
    if (t := peek()) and t[1] == "-":
        take()
        neg = True
    num = take()
    if num[0] != "num":
        raise ClaimSyntaxError("the right-hand side must be a number (the threshold)")
    if peek() is not None:
        raise ClaimSyntaxError(f"unexpected {peek()[1]!r} after the threshold")  # type: ignore[index]
    claim = Claim(lhs, cmp[1], -float(num[1]) if neg else float(num[1]), text.strip())
    if not claim.refs():
        raise ClaimSyntaxError("the expression names no metric[variant]")
    return claim


class MissingMetric(KeyError):
    pass


def evaluate(node: Node, values: Mapping[tuple[str, str], float]) -> float:
    """Value of ``node`` given metric values; MissingMetric when one is absent."""
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Ref):
        key = (node.metric, node.variant)
        if key not in values or values[key] is None:
            raise MissingMetric(f"{node.metric}[{node.variant}]")
        return float(values[key])
    left, right = evaluate(node.left, values), evaluate(node.right, values)
    if node.op == "+":
        return left + right
    if node.op == "-":
        return left - right
    if node.op == "*":
        return left * right
    if right == 0:
        return float("inf") if left > 0 else float("-inf") if left < 0 else float("nan")
    return left / right
