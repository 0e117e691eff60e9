"""Every configuration rule fires on its bad example and stays quiet on its good one; kinds are
told apart; the small parsers keep line numbers."""

from __future__ import annotations

import pytest

from secfm.errors import SecfmError
from secfm.knowledge import validate_id
from secfm.workflows.config_rules import KINDS, RULES, ConfigDoc, detect_kind, parse_nginx, parse_terraform, rules_for, run_rules


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_rule_fires_on_bad_and_not_on_good(rule):
    bad = rule.check(ConfigDoc(rule.bad, rule.kind))
    assert bad, f"{rule.id} did not fire on its bad example"
    n_lines = len(rule.bad.splitlines())
    for start, end in bad:
        assert 1 <= start <= end <= n_lines
    assert rule.check(ConfigDoc(rule.good, rule.kind)) == [], f"{rule.id} fired on its good example"
    # the examples are recognised as their kind without a file name
    assert detect_kind(rule.bad)[0] == rule.kind
    assert detect_kind(rule.good)[0] == rule.kind


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_rule_metadata(rule):
    assert rule.kind in KINDS
    assert rule.severity in ("critical", "high", "medium", "low", "info")
    assert rule.why and rule.fix and rule.references
    for ref in rule.references:
        check = validate_id(ref)
        assert check.current and check.kind in ("cwe", "mitigation"), f"{rule.id}: {ref} {check.message}"


def test_every_kind_has_rules():
    for kind in KINDS:
        assert len(rules_for(kind)) >= 5, kind


@pytest.mark.parametrize("name, kind", [
    ("Dockerfile", "dockerfile"), ("api.dockerfile", "dockerfile"), ("main.tf", "terraform"), ("sshd_config", "sshd"),
    ("docker-compose.yml", "docker-compose"), ("nginx.conf", "nginx"),
])
def test_kind_from_filename(name, kind):
    assert detect_kind("x = 1\n", name) == (kind, "filename")


def test_kind_from_content_and_unknown():
    assert detect_kind('{"Version": "2012-10-17", "Statement": []}') == ("aws-iam", "content")
    assert detect_kind("apiVersion: v1\nkind: Pod\n")[0] == "kubernetes"
    with pytest.raises(SecfmError, match="--kind"):
        detect_kind("hello world\nthis is not a configuration\n")


def test_nginx_parser_lines_and_nesting():
    stmts = parse_nginx("http {\n  # c { ;\n  server {\n    listen 80;\n    location /a { return 301 'https://x;y'; }\n  }\n}\n")
    http = stmts[0]
    assert http.name == "http" and http.start == 1 and http.end == 7
    server = http.children[0]
    assert server.start == 3 and server.end == 6
    assert server.children[0].name == "listen" and server.children[0].start == 4
    loc = server.children[1]
    assert loc.args == ["/a"] and loc.children[0].args == ["301", "https://x;y"]


def test_terraform_parser_blocks_heredoc_and_jsonencode():
    text = ('resource "aws_iam_policy" "p" {\n  name = "p"  # comment\n  policy = <<EOF\n{"Action": "*", "Resource": "*"}\nEOF\n'
            '  tags = {\n    a = "b"\n  }\n}\n')
    (res,) = parse_terraform(text)
    assert res.labels == ["aws_iam_policy", "p"] and (res.start, res.end) == (1, 9)
    assert res.attr("name").value == '"p"'
    policy = res.attr("policy")
    assert (policy.start, policy.end) == (3, 5) and '"Action": "*"' in policy.value
    assert (res.attr("tags").start, res.attr("tags").end) == (6, 8)
    hits = run_rules(ConfigDoc(text, "terraform"))
    assert [(r.id, span) for r, span in hits] == [("TF-IAM-WILDCARD", (3, 5))]


def test_yaml_errors_name_the_line():
    with pytest.raises(SecfmError, match="at line 4"):
        run_rules(ConfigDoc("apiVersion: v1\nkind: Pod\nspec: [a, b\n  c: d\n", "kubernetes"))


def test_sshd_comments_and_case():
    doc = ConfigDoc("# PermitRootLogin yes\npermitrootlogin YES  # really\n", "sshd")
    assert [(r.id, s) for r, s in run_rules(doc)] == [("SSHD-ROOT-LOGIN", (2, 2))]


def test_multi_document_kubernetes_spans():
    text = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\nspec:\n  containers:\n  - name: c\n    image: x:1\n"
            "    securityContext:\n      privileged: true\n    resources:\n      limits: {cpu: 1}\n---\n"
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: b\nspec:\n  hostNetwork: true\n  containers:\n  - name: d\n"
            "    image: y:2\n    resources:\n      limits: {cpu: 1}\n")
    found = {(r.id, span) for r, span in run_rules(ConfigDoc(text, "kubernetes"))}
    assert found == {("K8S-PRIVILEGED", (10, 10)), ("K8S-HOST-NAMESPACE", (19, 19))}


def test_precision_and_recall_on_public_scanner_fixtures():
    """checkov's and gixy's fixtures (not written here), mapped check -> rule; the figure is in
    workflows/results/config-public-vectors.json (secfm bench config-rules)."""
    from secfm.workflows.config_eval import load_vectors, score

    meta, rows = load_vectors()
    assert {s["repo"] for s in meta["sources"]} == {"bridgecrewio/checkov", "yandex/gixy"}
    result = score(rows)["overall"]
    print(f"config review on {len(rows)} public fixtures: precision {result['precision']}, recall {result['recall']}")
    assert result["precision"] >= 0.9 and result["recall"] >= 0.6


def test_terraform_values_come_from_python_hcl2_and_lines_from_the_line_parser():
    """python-hcl2 reads the values (objects in attribute syntax, heredocs, numbers) and the
    line-span parser the lines; ``dynamic`` blocks and a file python-hcl2 cannot parse are still
    reviewed."""
    from secfm.workflows.config_rules import ConfigDoc, hcl2_values, parse_terraform, run_rules

    text = """resource "aws_security_group" "inline" {
  ingress = [
    {
      cidr_blocks = ["0.0.0.0/0"]
      from_port   = 0
      to_port     = 65535
      protocol    = "-1"
    }
  ]
}

resource "aws_security_group" "generated" {
  dynamic "ingress" {
    for_each = var.admin_ports
    content {
      from_port   = 3389
      to_port     = 3389
      protocol    = "tcp"
      cidr_blocks = ["0.0.0.0/0"]
    }
  }
}

resource "aws_db_instance" "db" {
  password = <<EOT
Winter2024!
EOT
}
"""
    assert hcl2_values(text)["resource"][0]["aws_security_group"]["inline"]["ingress"][0]["to_port"] == 65535
    found = {(r.id, span) for r, span in run_rules(ConfigDoc(text, "terraform"))}
    assert ("TF-SG-ADMIN-OPEN", (2, 9)) in found  # the attribute-syntax object, at its lines
    assert ("TF-SG-ADMIN-OPEN", (13, 21)) in found  # the dynamic block
    assert ("TF-HARDCODED-SECRET", (25, 27)) in found  # a heredoc's value, read by python-hcl2
    db = parse_terraform(text)[2]
    assert db.attrs[0].literal == "Winter2024!" and (db.attrs[0].start, db.attrs[0].end) == (25, 27)

    broken = text + "%%% not HCL\n"  # python-hcl2 refuses the file; the line parser reads what it can
    assert hcl2_values(broken) is None
    assert ("TF-SG-ADMIN-OPEN", (13, 21)) in {(r.id, span) for r, span in run_rules(ConfigDoc(broken, "terraform"))}


def test_a_new_rule_is_one_yaml_entry(tmp_path):
    from secfm.errors import SecfmError
    from secfm.workflows.config_rules import load_rules

    path = tmp_path / "rules.yaml"
    path.write_text("""rules:
- id: SSHD-AGENT-FORWARDING
  kind: sshd
  title: Agent forwarding enabled
  severity: low
  why: A compromised server can use the forwarded agent.
  fix: Set AllowAgentForwarding no.
  references: [M1042]
  check: sshd_value
  args: {keyword: AllowAgentForwarding, equals: ['yes']}
  example_bad: "AllowAgentForwarding yes\\n"
  example_good: "AllowAgentForwarding no\\n"
""")
    (rule,) = load_rules(path)
    assert rule.check(ConfigDoc(rule.bad, "sshd")) == [(1, 1)] and rule.check(ConfigDoc(rule.good, "sshd")) == []
    path.write_text(path.read_text().replace("check: sshd_value", "check: no_such_check"))
    with pytest.raises(SecfmError, match="unknown config check 'no_such_check'"):
        load_rules(path)
