"""What the knowledge base indexes, as chunks with a content-hash id, source and position.

* ATT&CK techniques and sub-techniques (current ones), each with its tactics, platforms, the
  analytics of its detection strategies and the mitigations linked to it;
* ATT&CK mitigations, with the techniques they mitigate;
* CWE weaknesses (not deprecated), with extended description and consequences;
* user documents (runbooks, policies): Markdown, text, HTML and PDF (PDF needs ``pypdf``).

A chunk id is ``sha256(kind | ref id | text)``: the same content always gets the same id, so a
rebuild adds nothing new and a build that stopped half way resumes where it stopped.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from secfm.errors import SecfmError
from secfm.text.html import read_html

CHUNK_CHARS = 900  # all-MiniLM-L6-v2 reads 256 word pieces, about 1,000 characters of English
CHUNK_OVERLAP = 120
DOCUMENT_SUFFIXES = (".md", ".markdown", ".txt", ".text", ".html", ".htm", ".pdf")


@dataclass(frozen=True)
class Chunk:
    id: str
    text: str
    metadata: dict = field(hash=False)


def chunk_id(kind: str, ref_id: str, text: str) -> str:
    return hashlib.sha256(f"{kind}|{ref_id}|{text}".encode()).hexdigest()[:40]


def split_text(text: str, size: int = CHUNK_CHARS, overlap: int = CHUNK_OVERLAP) -> list[tuple[int, int]]:
    """(start, end) character spans that cover ``text``: about ``size`` long, cut at a paragraph,
    line, sentence or word boundary, overlapping by about ``overlap`` characters."""
    n = len(text)
    if n <= size:
        return [(0, n)] if text.strip() else []
    spans: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end = min(n, start + size)
        if end < n:
            floor = start + size // 2
            for sep in ("\n\n", "\n", ". ", "; ", ", ", " "):
                cut = text.rfind(sep, floor, end)
                if cut != -1:
                    end = cut + len(sep)
                    break
        if text[start:end].strip():
            spans.append((start, end))
        if end >= n:
            break
        nxt = max(end - overlap, start + 1)
        space = text.find(" ", nxt, end)
        start = space + 1 if space != -1 else nxt
    return spans


def chunks_for(kind: str, ref_id: str, header: str, body: str, metadata: dict) -> list[Chunk]:
    """Chunks of ``body``, each prefixed with ``header`` (so every chunk says what it is about)."""
    out = []
    for position, (start, end) in enumerate(split_text(body, CHUNK_CHARS - len(header) - 1)):
        text = f"{header}\n{body[start:end].strip()}" if header else body[start:end].strip()
        meta = {**metadata, "kind": kind, "ref_id": ref_id, "position": position, "start": start, "end": end}
        out.append(Chunk(chunk_id(kind, ref_id, text), text, {k: v for k, v in meta.items() if v not in (None, [], "")}))
    return out


# --------------------------------------------------------------------------------------------
# ATT&CK and CWE
# --------------------------------------------------------------------------------------------
def attack_chunks(attack_bundle: str | Path | None = None) -> Iterator[Chunk]:
    from secfm.knowledge import load_attack

    kb = load_attack(attack_bundle)
    source = f"attack-v{kb.version}"
    mitigated: dict[str, list[str]] = defaultdict(list)
    for tech in kb.techniques():
        body = [tech.description]
        detections = [kb.detection_strategies_by_id[d] for d in tech.detection_ids if d in kb.detection_strategies_by_id]
        for det in detections:
            for analytic in det.analytics:
                logs = f" (log sources: {', '.join(analytic.log_sources)})" if analytic.log_sources else ""
                body.append(f"Detection ({', '.join(analytic.platforms)}): {analytic.description}{logs}")
        mitigations = [kb.mitigations_by_id[m] for m in tech.mitigation_ids if m in kb.mitigations_by_id]
        for mit in mitigations:
            mitigated[mit.id].append(f"{tech.id} {tech.name}")
            body.append(f"Mitigation {mit.id} {mit.name}: {mit.description}")
        domain = {"enterprise": "", "mobile": "Mobile ", "ics": "ICS "}.get(tech.domain, "")
        header = f"{tech.id} {tech.name} (ATT&CK {domain}technique; tactics: {', '.join(tech.tactics)})"
        meta = {"name": tech.name, "source": source, "set": "attack", "url": tech.url, "domain": tech.domain,
                "tactics": sorted(tech.tactics), "platforms": sorted(tech.platforms),
                "mitigations": [m.id for m in mitigations]}
        yield from chunks_for("technique", tech.id, header, "\n".join(body), meta)
    for mit in sorted(kb.mitigations_by_id.values(), key=lambda m: m.id):
        if mit.deprecated:
            continue
        uses = mitigated.get(mit.id, [])
        body = mit.description + ("\nMitigates: " + "; ".join(uses) if uses else "")
        header = f"{mit.id} {mit.name} (ATT&CK mitigation)"
        yield from chunks_for("mitigation", mit.id, header, body,
                              {"name": mit.name, "source": source, "set": "attack", "url": mit.url})


def cwe_chunks() -> Iterator[Chunk]:
    from secfm.knowledge import load_cwe

    kb = load_cwe()
    source = f"cwe-{kb.version}"
    for w in kb.weaknesses():
        parts = [w.description]
        if w.extended_description:
            parts.append(w.extended_description)
        for c in w.consequences:
            parts.append(f"Consequence ({', '.join(c.scopes)}): {', '.join(c.impacts)}" + (f". {c.note}" if c.note else ""))
        header = f"{w.cwe_id} {w.name} (CWE weakness, {w.abstraction})"
        yield from chunks_for("cwe", w.cwe_id, header, "\n".join(parts),
                              {"name": w.name, "source": source, "set": "cwe",
                               "url": f"https://cwe.mitre.org/data/definitions/{w.id}.html"})


# --------------------------------------------------------------------------------------------
# user documents
# --------------------------------------------------------------------------------------------
def pdf_to_text(path: Path) -> str:
    try:
        import pypdf
    except ImportError as exc:
        raise SecfmError(f"{path}: reading PDF needs pypdf (pip install 'secfm[pdf]'), which is not installed") from exc
    try:
        reader = pypdf.PdfReader(str(path))
        pages = [page.extract_text() or "" for page in reader.pages]
    except Exception as exc:  # noqa: BLE001 - pypdf raises many kinds
        raise SecfmError(f"cannot read PDF {path}: {exc}") from exc
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise SecfmError(f"{path}: no extractable text in the PDF (a scanned image?)")
    return text


def read_document(path: str | Path) -> tuple[str, str]:
    """(text, title) of a runbook or policy: .md, .txt, .html or .pdf."""
    from secfm.inputs import read_file_text

    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in DOCUMENT_SUFFIXES:
        raise SecfmError(f"{path}: unsupported document type '{suffix or '(none)'}' (use {', '.join(DOCUMENT_SUFFIXES)})")
    if suffix == ".pdf":
        if not path.is_file():
            raise SecfmError(f"file not found: {path}")
        return pdf_to_text(path), path.stem
    text = read_file_text(path)
    if suffix in (".html", ".htm"):
        page = read_html(text)
        if not page.text.strip():
            raise SecfmError(f"{path}: no text in the HTML page")
        return page.text, page.title or path.stem
    title = path.stem
    for line in text.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip() or title
            break
        if line.strip():
            break
    return text, title


def expand_documents(paths: Iterable[str | Path]) -> list[Path]:
    """Files named, and the supported files under folders named (sorted)."""
    out: list[Path] = []
    for p in paths:
        path = Path(p).expanduser()
        if path.is_dir():
            out.extend(sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in DOCUMENT_SUFFIXES))
        elif path.exists():
            out.append(path)
        else:
            raise SecfmError(f"file not found: {path}")
    return out


def document_chunks(path: str | Path) -> list[Chunk]:
    path = Path(path).expanduser().resolve()
    text, title = read_document(path)
    ref = str(path)
    return chunks_for("document", ref, f"{title} ({path.name})", text,
                      {"name": title, "source": ref, "set": f"doc:{ref}"})
