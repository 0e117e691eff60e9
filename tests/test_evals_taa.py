"""CTI-TAA: alias and relation tables derived from ATT&CK, the official C/P/I rule, the actor parser."""

from __future__ import annotations

import pytest

from secfm.evals.parsers import EMPTY, OK, REFUSAL, UNPARSEABLE
from secfm.evals.taa import ActorMatcher, ActorParser, ActorTables, attack_tables, connection, norm, tables_from_attack


@pytest.fixture(scope="module")
def tables():
    return attack_tables()


def test_tables_come_from_attack(tables):
    from secfm.knowledge.attack import load_attack

    kb = load_attack()
    assert tables.source.startswith(f"MITRE ATT&CK {kb.version}")
    apt29 = kb.groups_by_id["G0016"]
    for alias in apt29.aliases:  # every ATT&CK alias is an alias in the table
        assert connection("APT29", alias, tables) == "C"
    counts = tables.counts()
    assert counts["names"] > 500 and counts["alias_edges"] > 300 and counts["relation_edges"] > 10


def test_connection_official_semantics(tables):
    assert connection("APT29", "apt 29", tables) == "C"  # spacing and case
    assert connection("Stately Taurus", "Mustang Panda", tables) == "C"  # alias
    assert connection("APT29", "UNC2452", tables) == "C"  # revoked group -> its replacement
    assert connection("APT29", "SolarWinds Compromise", tables) == "P"  # campaign attributed to the group
    assert connection("Transparent Tribe", "C0011", tables) == "P"
    assert connection("APT29", "APT28", tables) == "I"
    assert connection("APT29", None, tables) == "I"
    assert connection("Some New Actor", "some-new actor", tables) == "C"  # unknown to ATT&CK: same name only


def test_tables_from_a_small_kb():
    """Relations from descriptions and campaigns, on a hand-made KB shaped like AttackKB."""
    from types import SimpleNamespace as NS

    groups = {
        "G1": NS(id="G1", name="Red Otter", aliases=("Red Otter", "OTTER-1"), associated_groups=("OTTER-1",),
                 description="Red Otter overlaps with Blue Heron.", replaced_by=None),
        "G2": NS(id="G2", name="Blue Heron", aliases=("Blue Heron",), associated_groups=(), description="", replaced_by=None),
        "G3": NS(id="G3", name="Old Otter", aliases=("Old Otter",), associated_groups=(), description="", replaced_by="G1"),
    }
    campaigns = {"C1": NS(id="C1", name="Operation Lake", aliases=("Operation Lake",), group_ids=("G2",))}
    t = tables_from_attack(NS(version="test", groups_by_id=groups, campaigns_by_id=campaigns))
    assert connection("Red Otter", "otter 1", t) == "C"
    assert connection("Red Otter", "Old Otter", t) == "C"
    assert connection("Red Otter", "Blue Heron", t) == "P"
    assert connection("Red Otter", "Operation Lake", t) == "P"  # through Blue Heron (official chains)
    assert connection("Blue Heron", "Nobody", t) == "I"


def test_norm():
    assert norm("APT-29") == norm("apt 29") == "apt29"
    assert norm("TEMP.Veles") == "tempveles"


@pytest.mark.parametrize(
    "output, actor",
    [
        ("The threat actor is likely APT 36, also called Transparent Tribe.", "APT36"),
        ("**Mustang Panda**\n\nReasoning: PlugX side-loading...", "Mustang Panda"),
        ("I attribute this to cozy bear based on the SAML token forgery.", "Cozy Bear"),
        ("Likely Lazarus Group (Operation Dream Job).", "Lazarus Group"),
    ],
)
def test_actor_parser(output, actor):
    parsed = ActorParser()(output)
    assert parsed.status == OK and parsed.answer == actor


def test_actor_parser_ignores_ordinary_words():
    parser = ActorParser()
    # "play", "silence", "snake" and "equation" are ATT&CK aliases only with their own casing
    assert parser("we play a role; silence the snake in the equation").status == UNPARSEABLE
    assert parser("").status == EMPTY
    assert parser("I cannot attribute this report to any actor.").status == REFUSAL


def test_actor_parser_knows_gold_names_outside_attack():
    parser = ActorParser(extra_names=["Storm-0558"])
    assert parser("This was Storm 0558.").answer == "Storm-0558"


def test_matcher_prefers_longest_and_whole_words():
    m = ActorMatcher(["APT2", "APT29", "Cozy Bear"])
    assert m.find_all("APT29 and APT2 but not APT290 or xAPT2") == ["APT29", "APT2"]
    assert m.first("cozy-bear") == "cozy-bear"


def test_empty_tables():
    t = ActorTables()
    assert connection("a", "b", t) == "I" and t.counts()["names"] == 0
