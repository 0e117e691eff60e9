"""Stable held-out splits by document or entity key, shared by the corpus and the SFT builder.

A key (``T1059.001``, ``CWE-79``, ``file:notes.md#3``) goes to the held-out split when a salted
hash of it falls under the fraction: the same key lands in the same split in every build, so
the CPT corpus, the instruction data and the evaluation questions never disagree about what
was held out.
"""

from __future__ import annotations

import hashlib

SPLIT_SALT = "secfm-corpus-v1"
DEFAULT_HELDOUT_FRACTION = 0.05


def unit_hash(key: str, salt: str = SPLIT_SALT) -> float:
    """A number in [0, 1) fixed by ``key`` and ``salt``."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_heldout(key: str, fraction: float = DEFAULT_HELDOUT_FRACTION, salt: str = SPLIT_SALT) -> bool:
    return unit_hash(key, salt) < fraction


__all__ = ["DEFAULT_HELDOUT_FRACTION", "SPLIT_SALT", "is_heldout", "unit_hash"]
