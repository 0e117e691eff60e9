"""Tokenizer benchmark: how many tokens IOC fields cost compared with plain English.

Security text is dense with fields that general tokenizers split finely: Gemma's tokenizer, for
one, spends a token per digit, so an IPv4 address or a SHA-256 costs far more per character than
prose. ``run_tokenizer_bench`` encodes a fixed set of realistic values of each IOC kind
(``SAMPLES``, named as in ``secfm.text.iocs.ioc_kinds()``) and a fixed English paragraph
(``ENGLISH``) with every tokenizer and reports, per kind:

* ``mean_tokens``: mean tokens per field (each field encoded on its own, no special tokens);
* ``tokens_per_char``: total tokens / total characters over the kind's fields;
* ``ratio_to_words``: ``tokens_per_char`` over the English paragraph's tokens per character
  (above 1: the kind is denser in tokens than plain words);
* ``word_equivalents``: ``mean_tokens`` over the paragraph's tokens per word (how many plain
  words cost as much as one field).

Results go to ``out`` as JSON and beside it (``.md`` suffix) as markdown tables.
``load_tokenizers`` loads registered models' tokenizers; a model whose files are not available
offline is recorded as skipped, with the reason, instead of failing the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from secfm.errors import SecfmError
from secfm.models import load_tokenizer


class Tokenizer(Protocol):
    """What the bench needs from a tokenizer (``transformers`` tokenizers qualify)."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


@dataclass(frozen=True)
class Skipped:
    """A tokenizer that could not be loaded, and why."""

    reason: str


SAMPLES: dict[str, tuple[str, ...]] = {
    "ipv4": ("10.2.3.4", "192.168.100.254", "185.220.101.47", "45.142.212.61", "172.16.0.12"),
    "ipv6": ("2001:db8::1", "fe80::1ff:fe23:4567:890a", "2001:4860:4860::8888",
             "2a03:2880:f12f:83:face:b00c:0:25de", "::ffff:192.0.2.128"),
    "domain": ("evil-update.com", "login.microsoftonline-secure.net", "cdn.jsdelivr.net",
               "api.telegram.org", "update.windows-defender.xyz"),
    "url": ("https://evil-update.com/download/invoice.php?id=4471",
            "http://185.220.101.47:8080/stage2.bin",
            "https://raw.githubusercontent.com/user/repo/main/install.sh",
            "https://login.microsoftonline-secure.net/common/oauth2/authorize",
            "ftp://files.example.org/pub/payload.zip"),
    "email": ("billing@evil-update.com", "it-support@contoso.com", "j.smith@example.org",
              "noreply@login-secure.net", "admin@corp.local"),
    "md5": ("d41d8cd98f00b204e9800998ecf8427e", "e529be6bdecfed8fb08c1ee7411fe029",
            "2cbb03115ce43e8cc120f9fba7d331ae"),
    "sha1": ("da39a3ee5e6b4b0d3255bfef95601890afd80709", "2d1c46379297a675c262b97db3e213acdfcc596c",
             "6664096456f48240de180123a094310e6a467649"),
    "sha256": ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
               "359cc19ead072d8d7088df9cb45fbf5ed801883daeeef72e60ec06d99fcbe930",
               "cde81b8045da5d11ad9de7055b694b19d16452dd50b200e20246d2261e802dd8"),
    "cve": ("CVE-2021-44228", "CVE-2023-4966", "CVE-2024-3400", "CVE-2017-0144", "CVE-2022-30190"),
    "cwe": ("CWE-79", "CWE-89", "CWE-787", "CWE-22", "CWE-502"),
    "attack": ("T1059.001", "T1566", "TA0001", "T1003.001", "T1486"),
    "windows_path": (r"C:\Windows\System32\cmd.exe", r"C:\Users\Public\Documents\svchost.exe",
                     r"%APPDATA%\Microsoft\Windows\Start Menu\Programs\Startup\update.lnk",
                     r"C:\ProgramData\Microsoft\Crypto\RSA\key.dat",
                     r"\\10.0.0.5\C$\Windows\Temp\psexesvc.exe"),
    "posix_path": ("/etc/passwd", "/tmp/.X11-unix/.x", "/var/log/auth.log",
                   "~/.ssh/authorized_keys", "/dev/shm/kworker"),
    "registry_key": (r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Run",
                     r"HKCU\Software\Microsoft\Windows\CurrentVersion\RunOnce",
                     r"HKLM\SYSTEM\CurrentControlSet\Services\WinDefend",
                     r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Winlogon",
                     r"HKCU\Software\Classes\ms-settings\shell\open\command"),
}

ENGLISH = (
    "The old library stood at the corner of the market square, and on most mornings a few "
    "readers were already waiting when the doors opened. Inside, the light fell through tall "
    "windows onto long wooden tables, where students worked quietly beside retired teachers and "
    "curious visitors. The librarian knew almost everyone by name and often suggested a book "
    "before anyone had asked for one. In the afternoon the rooms grew warmer and busier, children "
    "arrived after school, and the gentle sound of turning pages mixed with whispered "
    "conversations. When evening came, the last readers returned their books, the lamps were "
    "switched off one by one, and the building rested until the next day began."
)


def load_tokenizers(names: list[str]) -> dict[str, Tokenizer | Skipped]:
    """Each named model's tokenizer (``secfm.models.load_tokenizer``), or why it is missing."""
    loaded: dict[str, Tokenizer | Skipped] = {}
    for name in names:
        try:
            loaded[name] = load_tokenizer(name)
        except SecfmError as exc:
            loaded[name] = Skipped(str(exc))
    return loaded


def _count(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def _measure(tokenizer: Tokenizer) -> dict:
    english_tokens = _count(tokenizer, ENGLISH)
    per_word = english_tokens / len(ENGLISH.split())
    per_char = english_tokens / len(ENGLISH)
    kinds = {}
    for kind, fields in SAMPLES.items():
        tokens = [_count(tokenizer, field) for field in fields]
        mean_tokens = sum(tokens) / len(fields)
        tokens_per_char = sum(tokens) / sum(len(field) for field in fields)
        kinds[kind] = {
            "fields": len(fields),
            "mean_tokens": round(mean_tokens, 3),
            "tokens_per_char": round(tokens_per_char, 4),
            "ratio_to_words": round(tokens_per_char / per_char, 3),
            "word_equivalents": round(mean_tokens / per_word, 3),
        }
    return {
        "status": "ok",
        "english": {"tokens": english_tokens, "tokens_per_word": round(per_word, 4),
                    "tokens_per_char": round(per_char, 4)},
        "kinds": kinds,
    }


def _markdown(results: dict) -> str:
    lines = [
        "# Tokenizer benchmark: IOC fields against plain English",
        "",
        f"Each field is encoded on its own, without special tokens; the English reference is a "
        f"{results['english_words']}-word paragraph. *× words*: tokens per character relative to "
        f"the paragraph; *word equivalents*: plain words that cost as many tokens as one field.",
    ]
    skipped = []
    for name, result in results["tokenizers"].items():
        if result["status"] != "ok":
            skipped.append(f"- {name}: {result['reason']}")
            continue
        english = result["english"]
        lines += [
            "", f"## {name}", "",
            "| kind | fields | tokens/field | tokens/char | × words | word equivalents |",
            "|---|---:|---:|---:|---:|---:|",
            f"| english (per word) | {results['english_words']} | {english['tokens_per_word']:.2f} "
            f"| {english['tokens_per_char']:.3f} | 1.00 | 1.00 |",
        ]
        lines += [
            f"| {kind} | {m['fields']} | {m['mean_tokens']:.2f} | {m['tokens_per_char']:.3f} "
            f"| {m['ratio_to_words']:.2f} | {m['word_equivalents']:.2f} |"
            for kind, m in result["kinds"].items()
        ]
    if skipped:
        lines += ["", "## Skipped", "", *skipped]
    return "\n".join(lines) + "\n"


def run_tokenizer_bench(tokenizers: dict[str, Tokenizer | Skipped], out: Path, allow_busy: bool = False) -> dict:
    """Measure every tokenizer (see the module docstring); write ``out`` (JSON) and its ``.md``
    through the provenance writer (token counts do not depend on the load, but the rule is one
    for every benchmark: refused on a busy machine unless ``allow_busy``)."""
    from secfm.provenance import recording

    with recording(allow_busy=allow_busy) as rec:
        results = _results(tokenizers)
        written = rec.write_json(out, results)
        rec.write_text(Path(out).with_suffix(".md"), _markdown(results))
    return written


def _results(tokenizers: dict[str, Tokenizer | Skipped]) -> dict:
    results = {
        "bench": "tokenizer",
        "english_words": len(ENGLISH.split()),
        "english_chars": len(ENGLISH),
        "samples": {kind: list(fields) for kind, fields in SAMPLES.items()},
        "tokenizers": {
            name: ({"status": "skipped", "reason": tok.reason} if isinstance(tok, Skipped)
                   else _measure(tok))
            for name, tok in tokenizers.items()
        },
    }
    return results
