"""Rebuild the benign Windows event sets in this folder from the public EVTX samples (run once,
offline; see README.md).

    pip install evtx            # pyevtx-rs, only for this script (not a secfm dependency)
    python workflows/data/benign/build.py SAMPLES_DIR

SAMPLES_DIR holds ``sysmon.evtx``, ``security.evtx`` and ``system.evtx`` from the ``samples/``
folder of omerbenamram/evtx. Every record is converted to JSON exactly as pyevtx-rs renders it
(``{"Event": {"System": ..., "EventData": ...}}``, the shape an EVTX export has). The selection is
deterministic and blind to what triage says: records in file order, at most ``PER_KEY`` records of
each kind (event id plus the field that tells events of that id apart: the image, the account and
logon type, the service, the provider), so a loop of one event (a script pinging every 5 s) does
not become most of the set.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PER_KEY = 4
FILES = {"sysmon.evtx": "sysmon.jsonl", "security.evtx": "security.jsonl", "system.evtx": "system.jsonl"}


def _text(value) -> str:
    if isinstance(value, dict):
        return str(value.get("#text", ""))
    return "" if value is None else str(value)


def kind_key(event: dict) -> tuple:
    system = event.get("System") or {}
    data = event.get("EventData") or event.get("UserData") or {}
    if not isinstance(data, dict):
        data = {}
    eid = _text(system.get("EventID"))
    provider = _text(((system.get("Provider") or {}).get("#attributes") or {}).get("Name"))
    image = _text(data.get("Image") or data.get("SourceImage") or data.get("ProcessName")).lower().rsplit("\\", 1)[-1]
    account = _text(data.get("TargetUserName") or data.get("SubjectUserName")).lower()
    return (provider, eid, image, account, _text(data.get("LogonType")), _text(data.get("ServiceName") or data.get("param1")))


def records(path: Path):
    import evtx

    it = evtx.PyEvtxParser(str(path)).records_json()
    while True:
        try:
            rec = next(it)
        except StopIteration:
            return
        except RuntimeError:  # a damaged chunk at the end of a sample: keep what came before it
            return
        yield json.loads(rec["data"])


def main(samples: Path, out_dir: Path) -> None:
    for name, out_name in FILES.items():
        seen: dict[tuple, int] = {}
        kept = []
        total = 0
        for rec in records(samples / name):
            total += 1
            key = kind_key(rec.get("Event") or {})
            if seen.get(key, 0) >= PER_KEY:
                continue
            seen[key] = seen.get(key, 0) + 1
            kept.append(rec)
        with open(out_dir / out_name, "w", encoding="utf-8") as handle:
            for rec in kept:
                handle.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
        print(f"{name}: {total} records, {len(kept)} kept ({len(seen)} kinds) -> {out_name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).parent)
