"""Every detector over 1 MB of adversarial text (blank-line runs, one long line, repeated
separators and markers), in a child process with a generous bound: a pattern whose cost grows
faster than its input takes hours here, a linear one seconds. Prints each detector's time."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

#: seconds any one detector may take on the 1 MB text (linear ones take 0.1-10 s on this machine)
BOUND_S = 90

CHILD = textwrap.dedent(r'''
    import json, sys, time
    size = 1_000_000
    pieces = ["\n" * 120_000, " \n\t\n" * 30_000, "a" * 120_000 + "\n", ": " * 40_000 + "\n", "= " * 40_000 + "\n",
              "#" * 60_000 + "\n", "{" * 20_000 + "\n" + "}" * 20_000 + "\n", "ignore " * 12_000 + "\n",
              "\u200b\u0430" * 30_000 + "\n", "http://a." * 8_000 + "\n", "C:\\a " * 15_000 + "\n",
              "- " * 30_000 + "\n", "Statement Effect: " * 6_000 + "\n", "password=" * 8_000 + "\n", "x@y." * 15_000 + "\n"]
    text = "".join(pieces)
    text = (text * (size // len(text) + 1))[:size]

    from secfm.text.normalize import normalize
    from secfm.text.iocs import extract_iocs
    from secfm.text.defang import refang
    from secfm.workflows.untrusted import find_injection, injection_warnings, screen_model_text
    from secfm.workflows.config_rules import ConfigDoc, KINDS, detect_kind, run_rules
    from secfm.workflows.alerts import parse_alerts
    from secfm.workflows.signatures import match_signatures
    from secfm.workflows.summarize import extract_entities, timeline
    from secfm.training.redaction import Redactor
    from secfm.errors import SecfmError

    def kind():
        try:
            detect_kind(text)
        except SecfmError:
            pass

    def rules(k):
        def run():
            try:
                run_rules(ConfigDoc(text, k))
            except SecfmError:
                pass
        return run

    def alerts():
        for alert in parse_alerts(text, "lines", skip_bad=True)[:2000]:
            match_signatures(alert)

    detectors = {
        "normalize": lambda: normalize(text),
        "extract_iocs": lambda: extract_iocs(text),
        "refang": lambda: refang(text),
        "find_injection": lambda: find_injection(text),
        "injection_warnings": lambda: injection_warnings(text),
        "screen_model_text": lambda: screen_model_text(text[:200_000], text),
        "detect_kind": kind,
        **{f"rules:{k}": rules(k) for k in KINDS},
        "parse_alerts+signatures": alerts,
        "extract_entities": lambda: extract_entities(text),
        "timeline": lambda: timeline(text),
        "redact": lambda: Redactor(types=("ip", "hostname", "username"), salt="s").redact(text),
    }
    only = sys.argv[1:]
    for name, fn in detectors.items():
        if only and name not in only:
            continue
        started = time.perf_counter()
        fn()
        print(json.dumps({"detector": name, "seconds": round(time.perf_counter() - started, 2)}), flush=True)
''')


def test_every_detector_is_linear_on_1mb_of_adversarial_text():
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done: list[dict] = []
    try:
        out, err = proc.communicate(timeout=BOUND_S * 3 + 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    for line in out.splitlines():
        if line.startswith("{"):
            done.append(json.loads(line))
    print(f"linear-time suite: {len(done)} detectors on 1 MB: " + ", ".join(f"{d['detector']} {d['seconds']}s" for d in done))
    assert proc.returncode == 0, f"stuck or failed after {[d['detector'] for d in done]}: {err[-2000:]}"
    slow = [d for d in done if d["seconds"] > BOUND_S]
    assert not slow, slow
