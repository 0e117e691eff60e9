"""Field values normalised before Sigma rules look at them, so hiding tricks do not evade a rule.

The project's one normalisation of untrusted text, :func:`secfm.text.normalize.fold` (NFKC,
invisible and tag characters removed, diacritics dropped, homoglyphs folded): a zero-width space
or a Cyrillic letter inside ``mimikatz`` does not hide it from a rule. Memoised: alerts repeat
values (hosts, users, images) and most are plain ASCII, which comes back as it is.
"""

from __future__ import annotations

import re
from functools import lru_cache

from secfm.text.normalize import fold

_ASCII_PLAIN = re.compile(r"[\t\n\r\x20-\x7e]*")


@lru_cache(maxsize=65536)
def _cached(text: str) -> str:
    return fold(text)


def normalize_value(text: str) -> str:
    """``text`` as matchers see it."""
    if len(text) < 4096 and _ASCII_PLAIN.fullmatch(text):
        return text
    return _cached(text) if len(text) < 4096 else fold(text)
