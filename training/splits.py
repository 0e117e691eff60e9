"""The one splitting function: by entity, never by row.

Every dataset secfm trains or evaluates on (the CPT corpus, the instruction data and its
held-out questions, the classifier heads' data) decides its splits here. The unit of a split
is an *entity*: an ATT&CK technique family (a sub-technique travels with its parent), group,
software or campaign (a campaign travels with the groups it is attributed to), a CWE weakness
or a CVE. An entity lands in a split by a salted hash of its key, the same on every machine and
in every build; callers may pin some keys to a split (``assigned``: the CVE engineer's split
by publication date, or a MinHash near-duplicate group) and name owners (``owners``: a CVE
listed under a held-out CWE is held out with it).

A *unit* (a document, a conversation, a question, a head example) carries the entities it is
about, and the ids it merely mentions are found in its text: the unit goes to the most
protected split among all of them. So a held-out group takes every document about it with it
(its description, its procedure examples, its questions, the relationships naming it), and a
training document never names a held-out entity. Builders that render relationships (a group's
technique list, a weakness's observed CVEs) ask :meth:`EntitySplit.allows` and leave the
held-out side out of training documents, instead of losing the whole document.

Splits are listed from the least to the most protected: ``train`` first, then ``validation``
(the development set methods are chosen on), then ``test`` (reported once).

    from secfm.training.splits import EntitySplit, SplitPlan

    split = EntitySplit(SplitPlan.standard(validation=0.05, test=0.05))
    split.unit(["G0016", "T1059.001"], text)       # 'train', 'validation' or 'test'
    split.allows("train", "T1003")                  # may a training unit name T1003?
    assert not split.leaks(train_texts, "train")    # the leakage check every builder runs
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

TRAIN = "train"
VALIDATION = "validation"
TEST = "test"
#: the salt of the corpus and instruction-data split (v2: entity split with families and owners)
SPLIT_SALT = "secfm-entities-v2"
DEFAULT_VALIDATION_FRACTION = 0.05
DEFAULT_TEST_FRACTION = 0.05
#: id kinds (secfm.knowledge.ids) that are split entities; tactics and mitigations are shared answers
ENTITY_KINDS = frozenset({"technique", "subtechnique", "group", "software", "campaign", "cwe", "cve"})


def stable_fraction(key: str, salt: str) -> float:
    """A number in [0, 1) fixed by ``key`` and ``salt`` (the same on every machine and run)."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class SplitPlan:
    """Split names with their fractions, least protected first (train, then held-out splits),
    and the salt of the hash. The fractions are cumulative bands of :func:`stable_fraction`."""

    bands: tuple[tuple[str, float], ...]
    salt: str = SPLIT_SALT

    def __post_init__(self):
        names = [n for n, _ in self.bands]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"split names must be unique and non-empty: {names}")
        if any(f < 0 for _, f in self.bands) or abs(sum(f for _, f in self.bands) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be >= 0 and sum to 1: {self.bands}")

    @classmethod
    def standard(cls, validation: float = DEFAULT_VALIDATION_FRACTION, test: float = DEFAULT_TEST_FRACTION,
                 salt: str = SPLIT_SALT) -> SplitPlan:
        """train / validation / test (the corpus, the instruction data, the held-out questions)."""
        if validation + test >= 1:
            raise ValueError("validation + test fractions must be below 1")
        return cls(((TRAIN, 1.0 - validation - test), (VALIDATION, validation), (TEST, test)), salt)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.bands)

    def rank(self, split: str) -> int:
        """How protected a split is (0 = train)."""
        return self.names.index(split)

    def of_key(self, key: str) -> str:
        x = stable_fraction(key, self.salt)
        edge = 0.0
        for name, fraction in self.bands:
            edge += fraction
            if x < edge:
                return name
        return self.bands[-1][0]


def technique_family(entity: str) -> str:
    """``T1059`` for ``T1059.001``: a sub-technique is split with its parent."""
    return entity.split(".")[0] if re.fullmatch(r"T\d{4}\.\d{3}", entity) else entity


def canonical(entity: str) -> str:
    """The canonical spelling of an id (``t1059/001`` -> ``T1059.001``); other keys unchanged."""
    from secfm.knowledge.ids import normalize_id

    parsed = normalize_id(entity)
    return parsed[0] if parsed else entity.strip()


@dataclass
class EntitySplit:
    """Entity -> split, and unit (entities + text) -> split; see the module docstring.

    * ``group_of``: entity -> the key its split is drawn from (campaign -> its group cluster; a
      CVE -> its MinHash group); sub-techniques use their parent's key.
    * ``owners``: entity -> entities it belongs to: its split is at least as protected as
      theirs (a CVE observed under a held-out CWE is held out).
    * ``assigned``: key -> split, pinned (a date split), instead of the hash.
    * ``names``: proper names (group, software, campaign names) -> entity id, so a text that
      names a held-out group without its id is held out too.
    """

    plan: SplitPlan = field(default_factory=SplitPlan.standard)
    group_of: Mapping[str, str] = field(default_factory=dict)
    owners: Mapping[str, Iterable[str]] = field(default_factory=dict)
    assigned: Mapping[str, str] = field(default_factory=dict)
    names: Mapping[str, str] = field(default_factory=dict)
    mention_kinds: frozenset[str] = ENTITY_KINDS

    def __post_init__(self):
        self._cache: dict[str, str] = {}
        self._held_names: list[tuple[str, re.Pattern]] | None = None
        for split in self.assigned.values():
            if split not in self.plan.names:
                raise ValueError(f"assigned split {split!r} is not one of {self.plan.names}")

    # -- entities --------------------------------------------------------------------------
    def key_of(self, entity: str) -> str:
        """The key an entity's split is drawn from."""
        entity = canonical(entity)
        family = technique_family(entity)
        return self.group_of.get(entity) or self.group_of.get(family) or family

    def entity(self, entity: str, _seen: frozenset[str] = frozenset()) -> str:
        """The split of one entity (its key's hash or pinned split, raised to its owners')."""
        entity = canonical(entity)
        if entity in self._cache:
            return self._cache[entity]
        key = self.key_of(entity)
        split = self.assigned.get(key) or self.assigned.get(entity) or self.plan.of_key(key)
        for owner in self.owners.get(entity, ()):
            owner = canonical(owner)
            if owner not in _seen and owner != entity:
                split = self.most_protected([split, self.entity(owner, _seen | {entity})])
        self._cache[entity] = split
        return split

    def most_protected(self, splits: Iterable[str]) -> str:
        return max(splits, key=self.plan.rank, default=self.plan.names[0])

    def allows(self, split: str, entity: str) -> bool:
        """Whether a unit of ``split`` may carry ``entity`` (it is in that split or a less
        protected one): a training document may name only training entities."""
        return self.plan.rank(self.entity(entity)) <= self.plan.rank(split)

    # -- units ------------------------------------------------------------------------------
    def mentions(self, text: str) -> list[str]:
        """Entity ids named in ``text``: ids of the entity kinds, and the proper names of
        entities outside the training split."""
        from secfm.knowledge.ids import find_ids, normalize_id

        found = [i for i in find_ids(text) if (normalize_id(i) or ("", ""))[1] in self.mention_kinds]
        for name, pattern in self._protected_names():
            if name in text and pattern.search(text):  # the substring test first: most texts name none
                found.append(self.names[name])
        return found

    def unit(self, entities: Iterable[str] = (), text: str | None = None) -> str:
        """The split of a unit: the most protected split of its entities and of the entities
        its text mentions (train when it has none)."""
        ids = list(entities)
        if text:
            ids += self.mentions(text)
        return self.most_protected(self.entity(e) for e in ids)

    def assign(self, units: Sequence, entities: Callable[[object], Iterable[str]],
               text: Callable[[object], str | None] | None = None) -> dict[str, list]:
        """Units grouped by split, in their order: ``{split: [unit, ...]}`` for every split."""
        out: dict[str, list] = {name: [] for name in self.plan.names}
        for u in units:
            out[self.unit(entities(u), text(u) if text else None)].append(u)
        return out

    def leaks(self, texts: Iterable[str], split: str = TRAIN, entities: Iterable[Iterable[str]] | None = None) -> list[tuple[int, str]]:
        """(row, entity) for every row of a ``split`` that names or carries an entity of a more
        protected split; empty when the split is clean."""
        found = []
        rows = zip(texts, entities) if entities is not None else ((t, ()) for t in texts)
        for i, (t, ents) in enumerate(rows):
            for e in [*ents, *self.mentions(t or "")]:
                if not self.allows(split, e):
                    found.append((i, canonical(e)))
        return found

    def entities_in(self, split: str, candidates: Iterable[str]) -> list[str]:
        """The candidates whose split is ``split`` (e.g. the held-out techniques)."""
        return sorted({canonical(c) for c in candidates if self.entity(c) == split})

    def _protected_names(self) -> list[tuple[str, re.Pattern]]:
        """(name, whole-word pattern) of the entities outside the training split."""
        if self._held_names is None:
            self._held_names = [(n, re.compile(r"(?<!\w)" + re.escape(n) + r"(?!\w)"))
                                for n, e in sorted(self.names.items()) if self.entity(e) != self.plan.names[0]]
        return self._held_names

    def describe(self) -> dict:
        """What a data card records about the split."""
        return {"by": "entity (technique family, group cluster, software, CWE, CVE; owners and text mentions follow)",
                "splits": {n: round(f, 6) for n, f in self.plan.bands}, "salt": self.plan.salt,
                "pinned_keys": len(self.assigned)}


# -------------------------------------------------------------------------------------------------
# the knowledge base's entity graph
# -------------------------------------------------------------------------------------------------
def kb_entity_split(plan: SplitPlan | None = None, attack=None, cwe=None,
                    assigned: Mapping[str, str] | None = None) -> EntitySplit:
    """The split of the packaged knowledge base's entities: campaigns with the groups they are
    attributed to, CVEs with the CWEs that list them, group/software/campaign names as mentions."""
    from secfm.heads import source_clusters
    from secfm.knowledge import load_attack, load_cwe

    attack = attack or load_attack()
    cwe = cwe or load_cwe()
    return EntitySplit(plan or SplitPlan.standard(), group_of=source_clusters(attack), owners=cve_owners(cwe),
                       assigned=dict(assigned or {}), names=entity_names(attack))


def cve_owners(cwe) -> dict[str, tuple[str, ...]]:
    """CVE id -> the CWEs whose observed examples list it."""
    owners: dict[str, set[str]] = {}
    for cve, cwe_id, _ in cwe.observed_examples():
        owners.setdefault(cve, set()).add(cwe_id)
    return {k: tuple(sorted(v)) for k, v in owners.items()}


#: names too generic to mark a text as naming an entity (ATT&CK software called "at", "Net", "ping")
MIN_NAME_CHARS = 5


def entity_names(attack) -> dict[str, str]:
    """Group, software and campaign names (and aliases) -> id, for names of 5+ characters that
    belong to one entity only."""
    seen: dict[str, set[str]] = {}
    for objs in (attack.groups_by_id.values(), attack.software_by_id.values(), attack.campaigns_by_id.values()):
        for o in objs:
            for name in {o.name, *getattr(o, "aliases", ())}:
                if name and len(name) >= MIN_NAME_CHARS:
                    seen.setdefault(name, set()).add(o.id)
    return {name: next(iter(ids)) for name, ids in seen.items() if len(ids) == 1}


__all__ = ["DEFAULT_TEST_FRACTION", "DEFAULT_VALIDATION_FRACTION", "ENTITY_KINDS", "SPLIT_SALT", "TEST", "TRAIN",
           "VALIDATION", "EntitySplit", "SplitPlan", "canonical", "cve_owners", "entity_names", "kb_entity_split",
           "stable_fraction", "technique_family"]
