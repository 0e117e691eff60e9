"""Redaction on a corpus of planted secrets and personal data: recall >= 99%, misses listed."""

from __future__ import annotations

import ipaddress
import json
import random
import re
import string
from pathlib import Path

import pytest

from secfm.training.redaction import Redactor

FIXTURE = Path(__file__).parent / "fixtures" / "training" / "planted_secrets.jsonl"


def _rand(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def planted_corpus(seed: int = 7, n: int = 60) -> list[dict]:
    """Documents with planted values: {"text", "planted": [[type, value], ...]}."""
    rng = random.Random(seed)
    first = ["alice", "bob", "carol", "dmitri", "eve", "farah", "gustavo", "hana", "ivan", "jun"]
    last = ["smith", "ng", "kowalski", "okafor", "tanaka", "garcia", "müller", "o'neil", "lee", "patel"]
    domains = ["acme-corp.com", "mail.example.co.uk", "contoso.net", "bigbank.de", "uni-hamburg.de", "gmail.com"]
    words = ["Winter", "Summer", "Dragon", "Secure", "Admin", "Qwerty", "Monkey", "Shadow"]
    docs = []
    for i in range(n):
        f, l_, d = rng.choice(first), rng.choice(last), rng.choice(domains)
        email = f"{f}.{re.sub('[^a-z]', '', l_)}{rng.randint(1, 99)}@{d}"
        aws = "AKIA" + _rand(rng, 16, string.ascii_uppercase + string.digits)
        aws_secret = _rand(rng, 40, string.ascii_letters + string.digits + "+/")
        gh = "ghp_" + _rand(rng, 36)
        slack = "xoxb-" + "-".join(str(rng.randint(10**10, 10**11)) for _ in range(2)) + "-" + _rand(rng, 24)
        google = "AIza" + _rand(rng, 35, string.ascii_letters + string.digits + "_-")
        stripe = "sk_live_" + _rand(rng, 24)
        openai = "sk-proj-" + _rand(rng, 40)
        pw1 = rng.choice(words) + str(rng.randint(2000, 2030)) + rng.choice("!@#$%")
        pw2 = _rand(rng, 12, string.ascii_letters + string.digits + "!#%&*")
        pw3 = rng.choice(words).lower() + rng.choice(words).lower()
        jwt = "eyJhbGciOiJIUzI1NiJ9.eyJ" + _rand(rng, 30, string.ascii_letters + string.digits + "_-") + "." + _rand(rng, 43, string.ascii_letters + string.digits + "_-")
        bearer = _rand(rng, 32, string.ascii_letters + string.digits)
        session = _rand(rng, 26, string.ascii_lowercase + string.digits)
        api_generic = _rand(rng, 32, string.hexdigits.lower()[:16])
        key_body = "\n".join(_rand(rng, 64, string.ascii_letters + string.digits + "+/") for _ in range(5))
        key_kind = rng.choice(["RSA ", "EC ", "OPENSSH ", "", "ENCRYPTED "])
        ip4 = f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        ip6 = "2001:db8:" + ":".join(f"{rng.randint(0, 65535):x}" for _ in range(3)) + "::" + f"{rng.randint(1, 65535):x}"
        host = f"{rng.choice(['ws', 'srv', 'dc', 'fs', 'vpn'])}{rng.randint(1, 99)}.{rng.choice(['corp', 'internal', 'acme-corp'])}.{rng.choice(['com', 'local', 'net'])}"
        user = f"{f[0]}{re.sub('[^a-z]', '', l_)}{rng.randint(1, 9)}"
        db_user = _rand(rng, 8, string.ascii_lowercase)
        db_pw = _rand(rng, 14)
        templates = [
            (f"Incident 4{i:03d}: the phishing mail came from {email} and asked the victim to reset the VPN password.",
             [["email", email]]),
            (f"Leaked config:\nAWS_ACCESS_KEY_ID={aws}\nAWS_SECRET_ACCESS_KEY={aws_secret}\nregion=eu-west-1",
             [["api_key", aws], ["api_key", aws_secret]]),
            (f"The repo had a GitHub token {gh} and a Slack bot token {slack} committed in .env.",
             [["api_key", gh], ["api_key", slack]]),
            (f'const cfg = {{ "apiKey": "{google}", "stripe": "{stripe}" }};\nOPENAI_API_KEY={openai}',
             [["api_key", google], ["api_key", stripe], ["api_key", openai]]),
            (f"db.password = {pw1}\nThe admin password is {pw2} according to the ticket.\npassword: {pw3}",
             [["password", pw1], ["password", pw2], ["password", pw3]]),
            (f"curl -H 'Authorization: Bearer {bearer}' https://api.acme-corp.com/v1/users\nCookie: sessionid={session}",
             [["token", bearer], ["token", session]]),
            (f"id_token={jwt}\napi_key = \"{api_generic}\"",
             [["token", jwt], ["api_key", api_generic]]),
            (f"Found on the share:\n-----BEGIN {key_kind}PRIVATE KEY-----\n{key_body}\n-----END {key_kind}PRIVATE KEY-----\nowner: it-ops",
             [["private_key", key_body.splitlines()[0]], ["private_key", key_body.splitlines()[-1]]]),
            (f"postgres://{db_user}:{db_pw}@db.internal:5432/app was in the crash log.",
             [["password", db_pw]]),
            (f"Beacon from {ip4} and {ip6} reached {host}; the session ran as user={user} under C:\\Users\\{user}\\AppData.",
             [["ip", ip4], ["ip", ip6], ["hostname", host], ["username", user]]),
            (f"mysql -u root -p'{pw1}' -h {ip4}\nnet user {user} {pw2} /add",
             [["password", pw1], ["password", pw2], ["ip", ip4]]),
            (f"Contact: {f.title()} {l_.title()} <{email}>, home dir /home/{user}/.ssh/id_rsa",
             [["email", email], ["username", user]]),
        ]
        text, planted = templates[i % len(templates)]
        text2, planted2 = templates[(i * 7 + 3) % len(templates)]
        docs.append({"text": text + "\n\n" + text2, "planted": planted + planted2})
    return docs


def write_fixture() -> None:  # pragma: no cover - run by hand to refresh the fixture
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text("".join(json.dumps(d) + "\n" for d in planted_corpus()))


def recall(docs: list[dict], redactor: Redactor) -> tuple[float, list[tuple[str, str]], int]:
    misses = []
    total = 0
    for doc in docs:
        out = redactor.redact(doc["text"])
        for kind, value in doc["planted"]:
            if kind in redactor.types:
                total += 1
                if value in out:
                    misses.append((kind, value))
    return 1 - len(misses) / total, misses, total


def test_fixture_matches_generator():
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    assert rows == planted_corpus()


def test_recall_on_planted_secrets_and_personal_data():
    docs = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    redactor = Redactor(types=("ip", "hostname", "username"), salt="test")
    rate, misses, total = recall(docs, redactor)
    assert total >= 200
    assert rate >= 0.99, f"recall {rate:.3f} on {total} planted values; misses: {misses}"
    counts = redactor.report.counts
    for kind in ("email", "api_key", "private_key", "password", "token", "ip", "hostname", "username"):
        assert counts[kind] > 0, kind


def test_default_types_leave_indicators_alone():
    r = Redactor(salt="s")
    text = "Beacon to 203.0.113.7 and evil-c2.example-bad.com as user=jdoe; T1059.001 CWE-79 CVE-2021-44228."
    assert r.redact(text) == text
    assert sum(r.report.counts.values()) == 0


def test_pseudonyms_are_stable_salted_and_keep_structure():
    text = "mail bob@acme-corp.com then bob@acme-corp.com; key AKIAABCDEFGHIJKLMNOP; from 198.51.100.23"
    a = Redactor(types=("ip",), salt="one").redact(text)
    b = Redactor(types=("ip",), salt="one").redact(text)
    c = Redactor(types=("ip",), salt="two").redact(text)
    assert a == b and a != c
    emails = re.findall(r"[\w.-]+@[\w.-]+", a)
    assert len(emails) == 2 and emails[0] == emails[1] and emails[0].endswith("@example.com")
    key = re.search(r"AKIA[A-Z0-9]{16}\b", a)
    assert key and key.group(0) != "AKIAABCDEFGHIJKLMNOP"
    ip = re.search(r"\b10\.\d+\.\d+\.\d+\b", a)
    assert ip and ipaddress.ip_address(ip.group(0))
    assert "198.51.100.23" not in a


def test_private_key_block_keeps_its_frame():
    body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nabcdefghijklmnopqrstuvwxyz0123456789ABCDEF"
    text = f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----"
    out = Redactor(salt="s").redact(text)
    assert out.startswith("-----BEGIN PRIVATE KEY-----") and out.endswith("-----END PRIVATE KEY-----")
    assert "MIIEvQ" not in out and "REDACTED-PRIVATE-KEY-" in out


def test_security_prose_is_not_redacted():
    prose = [
        "The password is correct. Hard-coded passwords such as the default password is hard-coded in firmware.",
        "Adversaries may steal access tokens: Token Impersonation/Theft lets them act as another user.",
        "The `net user username \\password` commands in Net can be used to create a local account.",
        "OilRig has run `net user`, `net user /domain`, `net group \"domain admins\" /domain`.",
        "menuPass is a threat group; its name is Security related.",
        "RansomHub used the `-safeboot-instance -pass` command line argument.",
    ]
    r = Redactor(salt="s")
    for text in prose:
        assert r.redact(text) == text, text


def test_unknown_optional_type_is_a_clear_error():
    from secfm.errors import SecfmError

    with pytest.raises(SecfmError, match="unknown redaction type"):
        Redactor(types=("shoe-size",))


# ------------------------------------------------------------------------------------------------
# issue #18: ordered, overlap-aware detection; cards, phones, SSNs, obfuscated e-mails, bare AWS keys
# ------------------------------------------------------------------------------------------------
def test_a_url_with_credentials_keeps_its_host():
    r = Redactor(salt="s")
    out = r.redact("db: postgres://admin:S3cr3t@db.acme-corp.com:5432/app")
    assert "S3cr3t" not in out and "@db.acme-corp.com:5432/app" in out and "example.com" not in out


@pytest.mark.parametrize("text, secret, kind", [
    ("card on file 4111 1111 1111 1111, exp 12/27", "4111 1111 1111 1111", "card"),
    ("paid with 5500-0055-5555-5559", "5500-0055-5555-5559", "card"),
    ("call me at +1 415-555-0132", "415-555-0132", "phone"),
    ("office (212) 555-0175", "555-0175", "phone"),
    ("SSN 078-05-1120 on the form", "078-05-1120", "ssn"),
    ("write to carol [at] acme-corp [dot] com", "carol", "email"),
    ("or bob(at)example-corp(dot)org", "bob", "email"),
    ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY was in the script", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "api_key"),
    ("curl -u elastic:P@ssw0rd1 https://localhost:9200", "P@ssw0rd1", "password"),
])
def test_personal_data_and_bare_keys_are_redacted(text, secret, kind):
    r = Redactor(salt="s")
    out = r.redact(text)
    assert secret not in out and r.report.counts[kind] == 1, (out, dict(r.report.counts))


def test_security_indicators_are_not_redacted():
    r = Redactor(salt="s")
    text = ("sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855, version 10.0.19041.1, "
            "CLSID {E3514235-4B06-11D1-AB04-00C04FC2DCD2}, T1059.001, CVE-2021-44228 on 2024-01-02 12:00:01, "
            "port 4444, event 4624, build 1234-5678")
    assert r.redact(text) == text


def test_recall_on_public_secret_scanner_vectors():
    from secfm.training.redaction_eval import load_vectors, score

    meta, rows = load_vectors()
    assert "gitleaks" in meta["source"] and meta["licence"].startswith("MIT")
    result = score(rows, True)
    print(f"redaction recall on {result['secret_lines']} gitleaks vectors: {result['recall']:.1%}, "
          f"false alarms {result['false_alarm_rate']:.1%} of {result['clean_lines']}")
    assert result["recall"] >= 0.8


def test_placeholders_names_urls_and_public_ids_are_not_secrets_but_real_tokens_still_are():
    """The false-alarm classes found on the development half of gitleaks' vectors (#18), on lines
    written here: placeholders, file names, URL paths, constant and member names, version strings,
    GUIDs under *id keys and public keys stay; key-shaped secrets, webhooks and tokens go."""
    r = Redactor(salt="s")
    clean = [
        "token = ghp_" + "x" * 36,
        'API_KEY="glc_' + "0" * 40 + '="',
        'auth_token="sk_live_PUT_YOUR_TOKEN_HERE_PLEASE"',
        '<img src="./img/logo-9f2c4e7a1b3d5f6e8a0c2b4d6f8e0a1c3b5d7f9e.png">',
        "see https://cdn.example-static.net/files/aZ3kQ9mW2xR7tY5uP1oL8nB4vC6 for details",
        "pub const IMAGE_SUBSYSTEM_WINDOWS_BOOT_APPLICATION_FLAG: u32 = 16;",
        "this.mainToolStripButton2.Text = label;",
        'release_version = "build0.9.1_20240102_0930-SNAPSHOT"',
        'clientId = "3f2b8c1d-4e5a-4b6c-9d7e-8f9a0b1c2d3e"',
        'public_key = "Qm9vbGVhbk1hcmtldFB1YmxpY0tleTEyMzQ1Njc4OQ"',
        'schemaKey = "Invoice_Line_7_2"',
    ]
    for line in clean:
        assert r.redact(line) == line, (line, r.detect(line))
    secret = [
        ("webhook https://hooks.slack.com/workflows/T0AB12CD3/A0EF45GH6/123456789012345678/q8Wn3RkT5vYx", "q8Wn3RkT5vYx"),
        ('deploy_token = "gLpX8mN2qR5tV9wZ3bC7dF1hJ4kM6"', "gLpX8mN2qR5tV9wZ3bC7dF1hJ4kM6"),
        ('set apikey="API-Q7WKM4ST9LR2HXV5NB8PDC3GJ"', "Q7WKM4ST9LR2HXV5NB8PDC3GJ"),
    ]
    for line, value in secret:
        assert value not in r.redact(line), (line, r.detect(line))
