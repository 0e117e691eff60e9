"""The literal text a regular expression cannot match without: a cheap test that proves a pattern
does not match, so the pattern itself need not run.

:func:`requirement` reads a pattern with Python's own regex parser and returns a small tree of
lower-case literals: ``("lit", s)`` (``s`` occurs in every match), ``("and", parts)``,
``("or", parts)``; or None when the pattern needs no literal (``.*``, ``\\w+``, a class alone).
:func:`holds` checks a tree against :func:`fold_case` of the text: when it is false the pattern
cannot match, case-sensitive or not (``re.IGNORECASE`` also lets ``ı``, ``İ`` and ``ſ`` match
``i`` and ``s``, and the Kelvin sign ``k``: ``fold_case`` maps them so).

:func:`any_of` reduces a tree to one set of literals one of which every match contains (the most
selective one an ``and`` offers): what an index keyed by literals needs.
"""

from __future__ import annotations

import re
from functools import lru_cache
from re import _constants as _C  # Python's own regex parser (3.11+; sre_parse is its deprecated alias)
from re import _parser as _P

#: the non-ASCII letters Python's re.IGNORECASE matches to ASCII ones that str.lower() leaves
#: apart (U+0130 lowers to "i" plus a combining dot; U+212A lowers to "k" already)
_RE_FOLDS = {0x130: "i", 0x131: "i", 0x17F: "s"}

Tree = tuple  # ("lit", str) | ("and", tuple[Tree, ...]) | ("or", tuple[Tree, ...])
_REPEATS = tuple(op for op in (getattr(_C, "MAX_REPEAT", None), getattr(_C, "MIN_REPEAT", None),
                               getattr(_C, "POSSESSIVE_REPEAT", None)) if op is not None)


@lru_cache(maxsize=4096)
def requirement(pattern: str, flags: int = 0) -> Tree | None:
    """The literal requirement of ``pattern`` (see the module docstring); None when there is none
    or the pattern does not parse."""
    try:
        parsed = _P.parse(pattern, flags & ~re.VERBOSE if isinstance(flags, int) else 0)
    except (re.error, TypeError, ValueError, RecursionError):
        return None
    try:
        return _sequence(parsed)
    except RecursionError:
        return None


def _sequence(items) -> Tree | None:
    parts: list[Tree] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            parts.append(("lit", "".join(run)))
            run.clear()

    for op, av in items:
        if op is _C.LITERAL:
            run.append(chr(av).lower())
            continue
        flush()
        got = None
        if op is _C.SUBPATTERN:
            got = _sequence(av[-1])
        elif op is _C.BRANCH:
            got = _either([_sequence(b) for b in av[1]])
        elif op in _REPEATS and av[0] >= 1:
            got = _sequence(av[2])
        elif getattr(_C, "ATOMIC_GROUP", None) is not None and op is _C.ATOMIC_GROUP:
            got = _sequence(av)
        if got is not None:
            parts.append(got)
    flush()
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else ("and", tuple(parts))


def _either(options: list[Tree | None]) -> Tree | None:
    if not options or any(o is None for o in options):
        return None
    return options[0] if len(options) == 1 else ("or", tuple(options))


def fold_case(text: str) -> str:
    """``text`` lower-cased as :func:`holds` reads it."""
    return text.lower() if text.isascii() else text.translate(_RE_FOLDS).lower()


def holds(tree: Tree, low: str) -> bool:
    """Whether ``low`` (:func:`fold_case` of a text) has what ``tree`` asks for (False: the
    pattern cannot match the text)."""
    kind = tree[0]
    if kind == "lit":
        return tree[1] in low
    if kind == "and":
        return all(holds(t, low) for t in tree[1])
    return any(holds(t, low) for t in tree[1])


def any_of(tree: Tree | None) -> frozenset[str] | None:
    """One set of literals of which every match contains at least one (None: no such set)."""
    if tree is None:
        return None
    kind = tree[0]
    if kind == "lit":
        return frozenset({tree[1]})
    if kind == "or":
        out: set[str] = set()
        for t in tree[1]:
            got = any_of(t)
            if got is None:
                return None
            out |= got
        return frozenset(out)
    best = None
    for t in tree[1]:
        got = any_of(t)
        if got is not None and (best is None or selectivity(got) > selectivity(best)):
            best = got
    return best


def selectivity(literals: frozenset[str]) -> tuple[int, int]:
    """Larger is more selective: the shortest literal's length (capped), then fewer literals."""
    return (min(min(len(s) for s in literals), 8), -len(literals))
