"""Files in the official CTIBench layout, written by the project (never CTIBench rows).

``official_prompt`` renders the Prompt column the way each official file words it;
``attack_mcq_rows`` derives multiple-choice questions from ATT&CK (technique ids, tactics,
mitigations, group aliases) so that ``cti-mcqa`` runs and benchmarks have hundreds of items
offline; ``write_tsv`` writes a tab-separated file with CRLF line ends, as the official files are.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

MCQ_COLUMNS = ["URL", "Question", "Option A", "Option B", "Option C", "Option D", "Prompt", "GT"]

_MCQ = (
    "You are given a multiple-choice question (MCQ) from a Cyber Threat Intelligence (CTI) knowledge benchmark "
    "dataset. Your task is to choose the best option among the four provided. Return your answer as a single "
    "uppercase letter: A, B, C, or D.  **Question:** {question}  **Options:** A) {a} B) {b} C) {c} D) {d}  "
    "**Important:** The last line of your answer should contain only the single letter corresponding to the best "
    "option, with no additional text. "
)
_RCM = (
    "Analyze the following CVE description and map it to the appropriate CWE. Provide a brief justification for "
    "your choice. Ensure the last line of your response contains only the CWE ID.  CVE Description: {text} "
)
_VSP = (
    "Analyze the following CVE description and calculate the CVSS v3.1 Base Score. Determine the values for each "
    "base metric: AV, AC, PR, UI, S, C, I, and A. Summarize each metric's value and provide the final CVSS v3.1 "
    "vector string.   Valid options for each metric are as follows: - **Attack Vector (AV)**: Network (N), "
    "Adjacent (A), Local (L), Physical (P) - **Attack Complexity (AC)**: Low (L), High (H) - **Privileges Required "
    "(PR)**: None (N), Low (L), High (H) - **User Interaction (UI)**: None (N), Required (R) - **Scope (S)**: "
    "Unchanged (U), Changed (C) - **Confidentiality (C)**: None (N), Low (L), High (H) - **Integrity (I)**: None "
    "(N), Low (L), High (H) - **Availability (A)**: None (N), Low (L), High (H)  Summarize each metric's value and "
    "provide the final CVSS v3.1 vector string. Ensure the final line of your response contains only the CVSS v3 "
    "Vector String in the following format:  Example format: CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H  "
    "CVE Description: {text} "
)
_ATE = (
    "Extract all MITRE {platform} attack patterns from the following text and map them to their corresponding "
    "MITRE technique IDs. Provide reasoning for each identification. Ensure the final line contains only the IDs "
    "for the main techniques, separated by commas, excluding any subtechnique IDs. MITRE {platform} IDs are given "
    "below as reference.  **Text:** {text}  **MITRE {platform} IDs:** {reference}     "
)
_TAA = (
    "You are given a threat report that describes a cyber incident. Any direct mentions of the threat actor "
    "group, specific campaign names, or malware names responsible have been replaced with [PLACEHOLDER]. Your "
    "task is to analyze the report and attribute the incident to a known threat actor based on the techniques, "
    "tactics, procedures (TTPs), and any other relevant information described. Please provide the name of the "
    "threat actor you believe is responsible and briefly explain your reasoning.  Threat Report: {text}"
)


def mcq_prompt(question: str, options: Sequence[str]) -> str:
    a, b, c, d = options
    return _MCQ.format(question=question, a=a, b=b, c=c, d=d)


def official_prompt(task: str, text: str, **extra: str) -> str:
    """The Prompt column of a cti-rcm, cti-vsp, cti-ate or cti-taa row."""
    template = {"cti-rcm": _RCM, "cti-vsp": _VSP, "cti-ate": _ATE, "cti-taa": _TAA}[task]
    return template.format(text=text, **extra)


def attack_reference(kb, limit: int | None = None) -> str:
    """``T1071 : Application Layer Protocol T1059 : ...``: the reference list of the ATE prompt."""
    techniques = [t for t in kb.techniques(include_subtechniques=False)]
    techniques.sort(key=lambda t: t.name)
    if limit:
        techniques = techniques[:limit]
    return " ".join(f"{t.id} : {t.name}" for t in techniques)


def write_tsv(path: str | Path, columns: Sequence[str], rows: Sequence[dict[str, str]]) -> Path:
    """A tab-separated file with CRLF line ends (tabs and newlines inside values become spaces)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(value: str) -> str:
        return " ".join(str(value).replace("\t", " ").replace("\r", " ").split("\n"))

    lines = ["\t".join(columns)] + ["\t".join(clean(r[c]) for c in columns) for r in rows]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    return path


def mcq_row(url: str, question: str, options: Sequence[str], answer_index: int) -> dict[str, str]:
    letters = "ABCD"
    row = {"URL": url, "Question": question, "Prompt": mcq_prompt(question, options), "GT": letters[answer_index]}
    row.update({f"Option {letters[i]}": options[i] for i in range(4)})
    return row


def attack_mcq_rows(kb, n: int = 240, seed: int = 0) -> list[dict[str, str]]:
    """``n`` four-option questions derived from ATT&CK, answers spread evenly over A-D."""
    rng = random.Random(seed)
    techniques = [t for t in kb.techniques(include_subtechniques=False) if t.tactics]
    tactics = {t.shortname: t.name for t in kb.tactics_by_id.values()}
    mitigations = [m for m in kb.mitigations_by_id.values() if not m.deprecated]
    groups = [g for g in kb.groups_by_id.values() if not g.revoked and len(g.aliases) > 1]

    def ask(url, question, right, wrong_pool, k):
        wrong = rng.sample([w for w in dict.fromkeys(wrong_pool) if w != right], 3)
        options = wrong[:]
        options.insert(k, right)
        return mcq_row(url, question, options, k)

    makers = []

    def tactic_q(k):
        t = rng.choice(techniques)
        right = tactics.get(t.tactics[0], t.tactics[0])
        others = [v for s, v in tactics.items() if s not in t.tactics]
        return ask(t.url, f"Which ATT&CK tactic does the technique {t.name} ({t.id}) serve?", right, others, k)

    def id_q(k):
        t = rng.choice(techniques)
        return ask(t.url, f"What is the MITRE ATT&CK ID of the technique {t.name}?", t.id,
                   [x.id for x in rng.sample(techniques, 12)], k)

    def name_q(k):
        t = rng.choice(techniques)
        return ask(t.url, f"Which technique has the MITRE ATT&CK ID {t.id}?", t.name,
                   [x.name for x in rng.sample(techniques, 12)], k)

    def mitigation_q(k):
        t = rng.choice([x for x in techniques if x.mitigation_ids])
        linked = {kb.mitigations_by_id[m].name for m in t.mitigation_ids if m in kb.mitigations_by_id}
        right = kb.mitigations_by_id[rng.choice(t.mitigation_ids)].name
        others = [m.name for m in mitigations if m.name not in linked]
        return ask(t.url, f"Which mitigation does ATT&CK list for the technique {t.name} ({t.id})?", right, others, k)

    def alias_q(k):
        g = rng.choice(groups)
        alias = rng.choice(g.aliases[1:])
        others = [x.name for x in groups if x.id != g.id and alias not in x.aliases]
        return ask(g.url, f"Which threat group does MITRE ATT&CK also track under the name {alias}?", g.name, others, k)

    makers = [tactic_q, id_q, name_q, mitigation_q, alias_q]
    rows, seen = [], set()
    while len(rows) < n:
        k = len(rows) % 4
        row = makers[len(rows) % len(makers)](k)
        if row["Question"] in seen:
            continue
        seen.add(row["Question"])
        rows.append(row)
    rng.shuffle(rows)
    return rows


def write_attack_mcq(path: str | Path, n: int = 240, seed: int = 0) -> Path:
    from secfm.knowledge.attack import load_attack

    return write_tsv(path, MCQ_COLUMNS, attack_mcq_rows(load_attack(), n, seed))
