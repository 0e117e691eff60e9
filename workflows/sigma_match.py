"""Matching Sigma detections against events in process.

pySigma parses a rule and applies its value modifiers (contains, startswith, endswith, re, cidr,
base64/base64offset, wide/utf16, windash, cased, exists, fieldref, all, gt/gte/lt/lte/neq...);
what comes out is a condition tree of AND/OR/NOT over ``field = value`` and keyword leaves whose
values are pySigma types (:class:`~sigma.types.SigmaString` with wildcards,
:class:`~sigma.types.SigmaRegularExpression`, :class:`~sigma.types.SigmaCIDRExpression`...).
pySigma has no in-process evaluator, and the PyPI packages that add one either pin pySigma < 2
(``sigma-rule-matcher``) or bring a parser of their own (``azuma``), so this module does the one
missing step:

* :func:`compile_condition` turns pySigma's condition tree into a small, picklable intermediate
  form (nested tuples: the cached rule set stores it, so the 17 s pySigma parse runs once);
* :func:`build` turns that form into closures over an :class:`EventView` (what
  :mod:`~secfm.workflows.sigma_fields` makes of an alert). The values of one field in one
  detection item are merged into one test (``str.endswith`` over a tuple, a set for equality),
  which is where most of the speed comes from.

Semantics (those of the Sigma specification and SigmaHQ's backends): strings compare case-
insensitively unless ``cased``; ``*`` and ``?`` are wildcards; ``re`` searches (unanchored),
through RE2 where the pattern allows (no catastrophic backtracking on untrusted events), Python's
``re`` otherwise; a keyword (a value without a field) is searched in every field's value; a field
that holds several values (an array, or auditd records of one event) matches when one of them
does; ``null`` matches an absent or empty field. Placeholders (``expand``) and timestamp parts
have no meaning without a deployment's own values: such leaves never match, and are counted.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: bump when the intermediate form changes (part of the rule-set cache key)
IR_VERSION = 3

Node = tuple  # ("and", (nodes)) | ("or", (nodes)) | ("not", node) | ("f", field, vm) | ("k", vm) | ("const", bool)
Test = Callable[["EventView"], bool]


class EventView:
    """What a rule sees of an event: field name (lower case) -> values (normalised strings), and
    the same values lower-cased (``low``)."""

    __slots__ = ("fields", "low", "_all", "_all_low")

    def __init__(self, fields: dict[str, tuple[str, ...]]):
        self.fields = fields
        self.low = {k: tuple(v.lower() for v in vs) for k, vs in fields.items()}
        self._all: tuple[str, ...] | None = None
        self._all_low: tuple[str, ...] | None = None

    def values(self, name: str) -> tuple[str, ...] | None:
        return self.fields.get(name)

    def lowered(self, name: str) -> tuple[str, ...] | None:
        return self.low.get(name)

    def all_values(self) -> tuple[str, ...]:
        if self._all is None:
            self._all = tuple(v for vs in self.fields.values() for v in vs)
        return self._all

    def all_lowered(self) -> tuple[str, ...]:
        if self._all_low is None:
            self._all_low = tuple(v for vs in self.low.values() for v in vs)
        return self._all_low


@dataclass
class CompileStats:
    """Leaves the matcher cannot evaluate (they never match), by kind."""

    unsupported: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str) -> None:
        self.unsupported[kind] = self.unsupported.get(kind, 0) + 1


# ---------------------------------------------------------------------------------------------
# pySigma condition tree -> intermediate form
# ---------------------------------------------------------------------------------------------
def compile_condition(tree: Any, stats: CompileStats | None = None) -> Node:
    """The intermediate form of one postprocessed pySigma condition (``rule.detection.parsed_condition[i].parsed``)."""
    from sigma.conditions import (
        ConditionAND,
        ConditionFieldEqualsValueExpression,
        ConditionNOT,
        ConditionOR,
        ConditionValueExpression,
    )

    stats = stats or CompileStats()
    if tree is None:
        return ("const", False)
    if isinstance(tree, ConditionAND):
        return _flat("and", [compile_condition(a, stats) for a in tree.args])
    if isinstance(tree, ConditionOR):
        return _merge_or(_flat("or", [compile_condition(a, stats) for a in tree.args]))
    if isinstance(tree, ConditionNOT):
        return ("not", compile_condition(tree.args[0], stats))
    if isinstance(tree, ConditionFieldEqualsValueExpression):
        return ("f", tree.field.lower(), _value(tree.value, stats))
    if isinstance(tree, ConditionValueExpression):
        return ("k", _value(tree.value, stats, keyword=True))
    stats.add(type(tree).__name__)
    return ("const", False)


def _flat(op: str, args: list[Node]) -> Node:
    out: list[Node] = []
    for a in args:
        if a[0] == op:
            out.extend(a[1])
        else:
            out.append(a)
    return (op, tuple(out)) if len(out) != 1 else out[0]


def _merge_or(node: Node) -> Node:
    """``or`` of leaves on the same field -> one leaf with an ``any`` matcher (one lookup, one test)."""
    if node[0] != "or":
        return node
    by_field: dict[str, list] = {}
    rest: list[Node] = []
    for a in node[1]:
        if a[0] == "f":
            by_field.setdefault(a[1], []).append(a[2])
        else:
            rest.append(a)
    merged = [("f", f, vms[0] if len(vms) == 1 else ("any", tuple(vms))) for f, vms in by_field.items()]
    out = tuple(merged + rest)
    return out[0] if len(out) == 1 else ("or", out)


def _value(value: Any, stats: CompileStats, keyword: bool = False) -> tuple:
    from sigma.types import (
        CompareOperators,
        SigmaBool,
        SigmaCasedString,
        SigmaCIDRExpression,
        SigmaCompareExpression,
        SigmaExists,
        SigmaExpansion,
        SigmaFieldReference,
        SigmaNull,
        SigmaNumber,
        SigmaRegularExpression,
        SigmaRegularExpressionFlag,
        SigmaString,
    )

    if isinstance(value, SigmaExpansion):
        return ("any", tuple(_value(v, stats, keyword) for v in value.values))
    if isinstance(value, SigmaString):  # SigmaCasedString is a SigmaString
        return _string(value, isinstance(value, SigmaCasedString), stats, keyword)
    if isinstance(value, SigmaRegularExpression):
        flags = ""
        for flag in value.flags:
            flags += {SigmaRegularExpressionFlag.IGNORECASE: "i", SigmaRegularExpressionFlag.MULTILINE: "m",
                      SigmaRegularExpressionFlag.DOTALL: "s"}[flag]
        return ("re", str(value.regexp), flags)
    if isinstance(value, SigmaCIDRExpression):
        return ("cidr", str(value.network))
    if isinstance(value, SigmaCompareExpression):
        op = {CompareOperators.LT: "lt", CompareOperators.LTE: "lte", CompareOperators.GT: "gt",
              CompareOperators.GTE: "gte", CompareOperators.NEQ: "neq"}[value.op]
        return ("cmp", op, float(value.number.number))
    if isinstance(value, SigmaBool):
        return ("eq", "true" if value.boolean else "false", False)
    if isinstance(value, SigmaNumber):  # SigmaTimestampPart is a SigmaNumber too
        if type(value).__name__ == "SigmaTimestampPart":
            stats.add("timestamp-part")
            return ("never",)
        return ("num", float(value.number))
    if isinstance(value, SigmaNull):
        return ("null",)
    if isinstance(value, SigmaExists):
        return ("exists", bool(value.exists))
    if isinstance(value, SigmaFieldReference):
        return ("ref", value.field.lower(), bool(value.starts_with), bool(value.ends_with))
    stats.add(type(value).__name__)
    return ("never",)


def _string(value: Any, cased: bool, stats: CompileStats, keyword: bool) -> tuple:
    from sigma.types import Placeholder, SpecialChars

    parts = list(value.s)
    if any(isinstance(p, Placeholder) for p in parts):
        stats.add("placeholder")
        return ("never",)
    if keyword:  # a keyword is searched for, not compared with the whole value
        if not parts or parts[0] is not SpecialChars.WILDCARD_MULTI:
            parts.insert(0, SpecialChars.WILDCARD_MULTI)
        if parts[-1] is not SpecialChars.WILDCARD_MULTI:
            parts.append(SpecialChars.WILDCARD_MULTI)
    norm = (lambda s: s) if cased else str.lower
    plain = [p for p in parts if isinstance(p, str)]
    specials = [p for p in parts if not isinstance(p, str)]
    if not specials:
        return ("eq", norm("".join(plain)), cased)
    if all(p is SpecialChars.WILDCARD_MULTI for p in specials) and len(plain) <= 1:
        text = norm(plain[0]) if plain else ""
        lead = parts[0] is SpecialChars.WILDCARD_MULTI
        trail = parts[-1] is SpecialChars.WILDCARD_MULTI
        if not plain:
            return ("exists", True) if not keyword else ("const_true",)
        if lead and trail:
            return ("sub", text, cased)
        if lead:
            return ("suf", text, cased)
        if trail:
            return ("pre", text, cased)
    pattern = "".join(re.escape(p) if isinstance(p, str) else (".*" if p is SpecialChars.WILDCARD_MULTI else ".") for p in parts)
    return ("glob", pattern, cased)


# ---------------------------------------------------------------------------------------------
# intermediate form -> closures
# ---------------------------------------------------------------------------------------------
_NOT_RE2 = re.compile(r"\(\?[=!<]|\\[1-9]")
#: a group with a quantifier inside that is itself repeated: the shape that backtracks badly
_NESTED_QUANTIFIER = re.compile(r"\([^()]*[+*][^()]*\)[+*{]")


def _regex(pattern: str, flags: str):
    """Python's re (fast) unless the pattern has a repeated group with a quantifier inside, which
    could backtrack badly on a crafted event: RE2 (linear time) then; Python's re again where RE2
    lacks the syntax (lookaround, backreferences)."""
    pyflags = (re.IGNORECASE if "i" in flags else 0) | (re.MULTILINE if "m" in flags else 0) | (re.DOTALL if "s" in flags else 0)
    if _NESTED_QUANTIFIER.search(pattern) and not _NOT_RE2.search(pattern):
        try:
            import re2

            return re2.compile(f"(?{flags})" + pattern if flags else pattern).search
        except Exception:  # noqa: BLE001 - RE2 lacks some syntax
            pass
    try:
        return re.compile(pattern, pyflags).search
    except re.error:
        return None


def _to_float(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        try:
            return float(int(s, 0))  # 0x1010
        except ValueError:
            return None


def value_test(vm: tuple) -> Callable[[tuple[str, ...] | None, tuple[str, ...] | None, EventView], bool]:
    """``test(raw_values, lowered_values, view)`` for one value matcher (values None: field absent)."""
    kind = vm[0]
    if kind == "any":
        return _any_test(vm[1])
    if kind in ("eq", "pre", "suf", "sub"):
        _, text, cased = vm
        if kind == "eq":
            if cased:
                return lambda raw, low, view: raw is not None and text in raw
            return lambda raw, low, view: low is not None and text in low
        if kind == "pre":
            def pre(raw, low, view):
                for v in (raw if cased else low) or ():
                    if v.startswith(text):
                        return True
                return False

            return pre
        if kind == "suf":
            def suf(raw, low, view):
                for v in (raw if cased else low) or ():
                    if v.endswith(text):
                        return True
                return False

            return suf

        def sub(raw, low, view):
            for v in (raw if cased else low) or ():
                if text in v:
                    return True
            return False

        return sub
    if kind == "glob":
        _, pattern, cased = vm
        rx = re.compile(pattern, re.DOTALL if cased else re.DOTALL | re.IGNORECASE)
        return lambda raw, low, view: raw is not None and any(rx.fullmatch(v) for v in raw)
    if kind == "re":
        search = _regex(vm[1], vm[2])
        if search is None:
            return lambda raw, low, view: False
        return lambda raw, low, view: raw is not None and any(search(v) for v in raw)
    if kind == "num":
        n = vm[1]
        text = str(int(n)) if n == int(n) else str(n)
        return lambda raw, low, view: raw is not None and any(v.strip() == text or _to_float(v.strip()) == n for v in raw)
    if kind == "cmp":
        _, op, n = vm
        cmp = {"lt": lambda x: x < n, "lte": lambda x: x <= n, "gt": lambda x: x > n, "gte": lambda x: x >= n,
               "neq": lambda x: x != n}[op]
        return lambda raw, low, view: raw is not None and any((x := _to_float(v.strip())) is not None and cmp(x) for v in raw)
    if kind == "null":
        return lambda raw, low, view: raw is None or all(v == "" for v in raw)
    if kind == "exists":
        want = vm[1]
        return lambda raw, low, view: (raw is not None) == want
    if kind == "cidr":
        net = ipaddress.ip_network(vm[1], strict=False)
        return lambda raw, low, view: raw is not None and any(_in_net(v, net) for v in raw)
    if kind == "ref":
        _, other, starts, ends = vm

        def ref(raw, low, view):
            theirs = view.lowered(other)
            if low is None or theirs is None:
                return False
            for v in low:
                for t in theirs:
                    if (starts and v.startswith(t)) or (ends and v.endswith(t)) or (not starts and not ends and v == t):
                        return True
            return False

        return ref
    if kind == "const_true":
        return lambda raw, low, view: True
    return lambda raw, low, view: False  # "never"


def _in_net(value: str, net) -> bool:
    try:
        return ipaddress.ip_address(value.strip().strip("[]")) in net
    except ValueError:
        return False


def _any_test(vms: tuple):
    """Many values of one field: sets and tuples for the plain kinds, closures for the rest."""
    eq_i, eq_c, pre, suf, sub, others = set(), set(), [], [], [], []
    for vm in _flatten_any(vms):
        kind = vm[0]
        if kind == "eq":
            (eq_c if vm[2] else eq_i).add(vm[1])
        elif kind in ("pre", "suf", "sub") and not vm[2]:
            {"pre": pre, "suf": suf, "sub": sub}[kind].append(vm[1])
        else:
            others.append(value_test(vm))
    pre_t, suf_t, sub_t = tuple(pre), tuple(suf), tuple(sub)

    def test(raw, low, view):
        if low is not None:
            for v in low:
                if v in eq_i or (pre_t and v.startswith(pre_t)) or (suf_t and v.endswith(suf_t)):
                    return True
                if sub_t:
                    for s in sub_t:
                        if s in v:
                            return True
            if eq_c:
                for v in raw:
                    if v in eq_c:
                        return True
        for o in others:
            if o(raw, low, view):
                return True
        return False

    return test


def _flatten_any(vms: tuple):
    for vm in vms:
        if vm[0] == "any":
            yield from _flatten_any(vm[1])
        else:
            yield vm


def build(node: Node) -> Test:
    """A closure ``view -> bool`` for one condition."""
    kind = node[0]
    if kind == "and":
        tests = tuple(build(n) for n in _cheap_first(node[1]))

        def all_of(view):
            for t in tests:
                if not t(view):
                    return False
            return True

        return all_of
    if kind == "or":
        tests = tuple(build(n) for n in node[1])

        def any_of(view):
            for t in tests:
                if t(view):
                    return True
            return False

        return any_of
    if kind == "not":
        inner = build(node[1])
        return lambda view: not inner(view)
    if kind == "f":
        name, test = node[1], value_test(node[2])

        def leaf(view):
            return test(view.fields.get(name), view.low.get(name), view)

        return leaf
    if kind == "k":
        test = value_test(node[1])
        return lambda view: test(view.all_values(), view.all_lowered(), view)
    value = bool(node[1]) if kind == "const" else False
    return lambda view: value


_COST = {"eq": 0, "num": 0, "exists": 0, "null": 0, "suf": 1, "pre": 1, "any": 2, "sub": 2, "cidr": 3, "cmp": 1, "ref": 3,
         "glob": 4, "re": 5}


def _cost(node: Node) -> int:
    kind = node[0]
    if kind == "f":
        return _COST.get(node[2][0], 3)
    if kind == "k":
        return 6
    if kind == "not":
        return 8 + _cost(node[1])
    if kind in ("and", "or"):
        return 3 + max((_cost(n) for n in node[1]), default=0)
    return 0


def _cheap_first(nodes: tuple) -> list:
    """AND arguments cheapest first (plain field tests before regexes and NOT filters)."""
    return sorted(nodes, key=_cost)


def gate(node: Node) -> frozenset | None:
    """A necessary condition of a condition, for the index: a set of keys of which a matching
    event has at least one, or None when no such set exists (a NOT alone, ``exists``, a number
    comparison...). Keys (values lower case):

    * ``("eq", field, value)``: the field has this value;
    * ``("base", field, name)``: a value's last path component is ``name`` (``endswith \\cmd.exe``);
    * ``("sub", field, literal)``: a value contains ``literal`` (contains, startswith, endswith,
      the literal parts of wildcards and regular expressions; field ``*`` for keywords, which
      search every value). Values are read as :func:`secfm.text.literals.fold_case` has them
      too, the folding of a case-insensitive regex.

    Of the gates an ``and`` offers, the most selective is kept (exact values before substrings,
    long literals before short ones)."""
    kind = node[0]
    if kind == "f":
        return _gate_value(node[1], node[2])
    if kind == "k":
        return _gate_value("*", node[1])
    if kind == "and":
        best = None
        for n in node[1]:
            g = gate(n)
            if g is not None and (best is None or gate_cost(g) < gate_cost(best)):
                best = g
        return best
    if kind == "or":
        out: set = set()
        for n in node[1]:
            g = gate(n)
            if g is None:
                return None
            out |= g
        return frozenset(out)
    if kind == "const" and not node[1]:
        return frozenset()
    return None


def gate_cost(keys: frozenset) -> int:
    """How often a gate lets an event through, roughly: an exact value costs 1, a substring more
    the shorter it is."""
    cost = 0
    for key in keys:
        if key[0] == "sub":
            n = len(key[2])
            cost += 1 if n >= 6 else 2 if n >= 4 else 4 if n == 3 else 8
        else:
            cost += 1
    return cost


def _gate_value(name: str, vm: tuple) -> frozenset | None:
    kind = vm[0]
    exact = name != "*"  # eq and base keys are per field; a keyword searches every field
    if kind == "eq":
        return frozenset({("eq", name, vm[1].lower())}) if exact else frozenset({("sub", name, vm[1].lower())})
    if kind == "num" and vm[1] == int(vm[1]) and exact:
        return frozenset({("eq", name, str(int(vm[1])))})
    if kind in ("pre", "sub"):
        return frozenset({("sub", name, vm[1].lower())})
    if kind == "suf":
        text = vm[1].lower()
        cut = max(text.rfind("\\"), text.rfind("/"))
        if exact and not vm[2] and 0 <= cut < len(text) - 1:
            return frozenset({("base", name, text[cut + 1:])})
        return frozenset({("sub", name, text)})
    if kind in ("glob", "re"):
        from secfm.text.literals import any_of, requirement

        if kind == "glob":
            pattern, flags = vm[1], (re.DOTALL if vm[2] else re.DOTALL | re.IGNORECASE)
        else:
            pattern = vm[1]
            flags = (re.IGNORECASE if "i" in vm[2] else 0) | (re.MULTILINE if "m" in vm[2] else 0) | (re.DOTALL if "s" in vm[2] else 0)
        try:
            re.compile(pattern, flags)
        except re.error:
            return frozenset()  # never matches (value_test gives up on it too)
        literals = any_of(requirement(pattern, flags))
        return None if literals is None else frozenset(("sub", name, lit) for lit in literals)
    if kind == "any":
        out: set = set()
        for sub in vm[1]:
            g = _gate_value(name, sub)
            if g is None:
                return None
            out |= g
        return frozenset(out)
    if kind == "never":
        return frozenset()
    return None


def event_keys(view: EventView) -> set:
    """The keys of :func:`gate` an event has."""
    keys = set()
    for name, values in view.low.items():
        for v in values:
            keys.add(("eq", name, v))
            cut = max(v.rfind("\\"), v.rfind("/"))
            keys.add(("base", name, v[cut + 1:] if cut >= 0 else v))
    return keys


def positive_leaves(node: Node, negated: bool = False):
    """The field and keyword leaves that count as evidence when they match (not under a NOT)."""
    kind = node[0]
    if kind in ("and", "or"):
        for n in node[1]:
            yield from positive_leaves(n, negated)
    elif kind == "not":
        yield from positive_leaves(node[1], not negated)
    elif kind in ("f", "k") and not negated:
        yield node


def evidence_fields(node: Node, view: EventView) -> list[tuple[str, int]]:
    """Which values made a matched rule fire: ``(field, index of the value)`` pairs (the field in
    lower case as the view names it), for the leaves that are not under a NOT."""
    found: list[tuple[str, int]] = []
    for leaf in positive_leaves(node):
        test = value_test(leaf[2] if leaf[0] == "f" else leaf[1])
        names = [leaf[1]] if leaf[0] == "f" else list(view.fields)
        for name in names:
            values = view.fields.get(name)
            if not values:
                continue
            for i, v in enumerate(values):
                if (name, i) not in found and test((v,), (v.lower(),), view):
                    found.append((name, i))
                    break
            if leaf[0] == "k" and found and found[-1][0] == name:
                break
    return found


def fields_of(node: Node) -> set[str]:
    """Every field a condition reads (for the index and the rule-set statistics)."""
    kind = node[0]
    if kind in ("and", "or"):
        return set().union(*(fields_of(n) for n in node[1]))
    if kind == "not":
        return fields_of(node[1])
    if kind == "f":
        return {node[1]}
    return set()
