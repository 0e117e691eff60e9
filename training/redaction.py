"""Privacy-aware redaction: secrets and personal data -> stable salted pseudonyms.

Always redacted: emails, API keys (cloud, SaaS and ``key = value`` assignments), private keys
(PEM / OpenSSH blocks), passwords (assignments, connection strings, URLs with credentials) and
tokens (JWTs, bearer / session tokens, token assignments). On request: IP addresses,
hostnames and usernames (off by default: in security text they are usually indicators, not
personal data).

Each value is replaced by a pseudonym derived from HMAC-SHA256(salt, type + value), so the
same secret always becomes the same pseudonym within a corpus (and across corpora built with
the same salt) and the text keeps its shape: an email stays an email, an ``AKIA...`` key keeps
its prefix and length, an IP stays an IP, ``password=...`` keeps its key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

ALWAYS = ("private_key", "email", "password", "token", "api_key", "card", "ssn", "phone")
# "url-host" is internal: it keeps the host of a URL with credentials from being read as an e-mail
OPTIONAL = ("ip", "hostname", "username")
ALL_TYPES = ALWAYS + OPTIONAL

_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"

# --- patterns ------------------------------------------------------------------------------------
# private keys: the whole block; the BEGIN/END lines are kept
_PRIVATE_KEY = re.compile(
    r"(-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)(.*?)(-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)",
    re.S,
)
# a truncated block (no END line): everything after BEGIN
_PRIVATE_KEY_OPEN = re.compile(r"(-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)(?![\s\S]*-----END )(?!\nREDACTED-)([\s\S]{16,})$")
_PUTTY_KEY = re.compile(r"(Private-Lines: \d+\r?\n)((?:[A-Za-z0-9+/=]{8,}\r?\n?)+)")

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}\b")

# well-known key formats: (prefix group, body group)
_KEY_FORMATS = [
    re.compile(r"\b((?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA))([A-Z0-9]{16})\b"),  # AWS access key id
    re.compile(r"\b(gh[pousr]_)([A-Za-z0-9]{30,255})\b"),  # GitHub
    re.compile(r"\b(github_pat_)([A-Za-z0-9_]{40,255})\b"),
    re.compile(r"\b(glpat-)([A-Za-z0-9_-]{20,})\b"),  # GitLab
    re.compile(r"\b(xox[abposr]-)([A-Za-z0-9-]{10,})\b"),  # Slack
    re.compile(r"\b(AIza)([0-9A-Za-z_-]{35})\b"),  # Google API key
    re.compile(r"\b((?:sk|rk|pk)_(?:live|test)_)([0-9A-Za-z]{16,})\b"),  # Stripe
    re.compile(r"\b(sk-(?:proj-|ant-(?:api\d\d-)?)?)([A-Za-z0-9_-]{20,})\b"),  # OpenAI / Anthropic
    re.compile(r"\b(hf_)([A-Za-z]{30,})\b"),  # Hugging Face
    re.compile(r"\b(SG\.)([A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,})\b"),  # SendGrid
    re.compile(r"\b(npm_)([A-Za-z0-9]{36})\b"),
    re.compile(r"\b(shpat_|shpss_)([a-fA-F0-9]{32})\b"),
    re.compile(r"\b(dop_v1_)([a-f0-9]{64})\b"),
    re.compile(r"\b(AccountKey=)([A-Za-z0-9+/]{40,}={0,2})"),  # Azure storage
]
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b")
_BEARER = re.compile(r"(?i)\b((?:authorization:[ \t]*)?(?:bearer|token|basic)[ \t]+)([A-Za-z0-9._~+/=-]{8,})")
# curl -u user:pass, --user "user:pass", wget --password
_USERPASS_FLAG = re.compile(r"""(?<![\w-])(?:-u|--user|--proxy-user)[ \t=]+["']?([^\s:"']{1,64}):([^\s"']{1,128})["']?""")
# NAME_KEY / NAME_TOKEN / ..._SECRET / ..._LOGIN / ..._CREDENTIALS = value (any separator a config language uses)
_SECRET_NAMED = re.compile(
    r"""(?i)(?<![\w-])(["'`]?[\w.-]{0,40}?(?:key|token|secret|login|credentials?|auth|apikey|id)["'`]?[ \t]*(?:[:?+!]{0,3}=|:{1,3}=?|=>)[ \t]*)"""
    r"""("[^"\r\n]{8,200}"|'[^'\r\n]{8,200}'|[^\s"'`,;&<>)\]}]{8,200})""")
# a prefixed token (xapp-1-..., hvb.AAAA..., glc_eyJ..., ntn_..., sgp_...): prefix, then 20+ high-entropy characters
_PREFIXED_TOKEN = re.compile(r"(?<![\w.-])[A-Za-z][A-Za-z0-9]{1,9}[_.-](?:[A-Za-z0-9]{1,9}[_-])?[A-Za-z0-9_~+/=.-]{20,400}")

_Q = r"""["'`]?"""
_KEYWORD_VALUE = r"""(?:"[^"\r\n]{1,200}"|'[^'\r\n]{1,200}'|`[^`\r\n]{1,200}`|[^\s"'`,;&<>)\]}]{1,200})"""
_SEP = r"""[ \t]*(?:[:?+!]{0,3}=|:|=>|[ \t]+is[ \t]+)[ \t]*"""
_PASSWORD_KEYS = r"(?:[\w.-]{0,30}?(?:password|passwd|passphrase|db_pass|secret_?key|client_?secret)|pwd|pass|secret)"
_PASSWORD_ASSIGN = re.compile(
    rf"""(?i)(?<![\w-])({_Q}{_PASSWORD_KEYS}{_Q}{_SEP})({_KEYWORD_VALUE})"""
)
_TOKEN_KEYS = r"(?:access_?token|refresh_?token|auth_?token|session_?token|id_?token|api_?token|bearer_?token|token|session_?id|sessionid|csrf_?token|sid)"
_TOKEN_ASSIGN = re.compile(rf"""(?i)(?<![\w-])({_Q}[\w.-]{{0,30}}?{_TOKEN_KEYS}{_Q}{_SEP})({_KEYWORD_VALUE})""")
_API_KEYS = r"(?:api[_-]?key|apikey|x-api-key|access[_-]?key(?:[_-]?id)?|secret[_-]?access[_-]?key|private[_-]?key|app[_-]?key|subscription[_-]?key)"
_API_ASSIGN = re.compile(rf"""(?i)(?<![\w-])({_Q}[\w.-]{{0,30}}?{_API_KEYS}{_Q}{_SEP})({_KEYWORD_VALUE})""")
_URL_CREDS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{1,15}://)([^\s:/@]{1,64}):([^\s@/]{1,128})@")
_CLI_PASSWORD = re.compile(r"""(?i)(\s(?:-p|--password(?:=|\s+)|-pass\s+|/p:|-Password\s+))("[^"\r\n]{1,100}"|'[^'\r\n]{1,100}'|[^\s"']{4,100})""")
_NET_USER = re.compile(r"""(?i)\b(net\s+user\s+[^\s"']+\s+)("[^"\r\n]{1,100}"|[^\s/"']{4,100})""")

_IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\d|\.\d)")
_IPV6 = re.compile(
    r"(?<![0-9A-Fa-f:])(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,7}:|"
    r"(?:[0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,5}(?::[0-9A-Fa-f]{1,4}){1,2}|"
    r"(?:[0-9A-Fa-f]{1,4}:){1,4}(?::[0-9A-Fa-f]{1,4}){1,3}|(?:[0-9A-Fa-f]{1,4}:){1,3}(?::[0-9A-Fa-f]{1,4}){1,4}|"
    r"(?:[0-9A-Fa-f]{1,4}:){1,2}(?::[0-9A-Fa-f]{1,4}){1,5}|[0-9A-Fa-f]{1,4}:(?::[0-9A-Fa-f]{1,4}){1,6})(?![0-9A-Fa-f:])"
)
# a bare AWS secret access key: 40 base64 characters (checked: mixed classes, not hex, not a path)
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])")
# payment cards: 13-19 digits in groups of 4 (or unbroken), Luhn-checked
_CARD = re.compile(r"(?<![\w-])(?:\d{4}[ -]?){3}\d{1,7}(?![\w-])")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
# phone numbers: +CC with separators, or (NNN) NNN-NNNN / NNN-NNN-NNNN / NNN.NNN.NNNN; validated by phonenumbers
_PHONE = re.compile(r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,4}|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}|\d{3}[-.]\d{3}[-.]\d{4})(?![\w.-]\d|\d)")
# e-mails written to dodge scrapers: carol [at] acme-corp [dot] com, carol(at)acme(dot)com, carol AT acme DOT com
_AT = r"(?:[ \t]*(?:\[at\]|\(at\)|\{at\}|\[@\]|\(@\))[ \t]*|[ \t]+(?:AT|at)[ \t]+)"
_DOT = r"(?:[ \t]*(?:\[dot\]|\(dot\)|\{dot\}|\[\.\]|\(\.\))[ \t]*|[ \t]+(?:DOT|dot)[ \t]+)"
_EMAIL_OBFUSCATED = re.compile(
    rf"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{{0,63}}{_AT}[A-Za-z0-9-]{{1,63}}(?:(?:{_DOT}|\.)[A-Za-z0-9-]{{1,63}})*(?:{_DOT})(?:[A-Za-z]{{2,24}})\b",
    re.IGNORECASE)
_TLDS = (
    "com|net|org|edu|gov|mil|int|io|co|us|uk|de|fr|ru|cn|jp|kr|in|br|au|ca|nl|se|no|fi|pl|it|es|ch|at|be|cz|"
    "info|biz|xyz|top|online|site|club|app|dev|cloud|local|lan|corp|internal|home|intra|onion|me|tv|cc|ws|su|ir|kp"
)
_HOSTNAME = re.compile(rf"(?<![\w@.-])(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+(?:{_TLDS})(?![\w-]|\.[A-Za-z])")
_USER_ASSIGN = re.compile(r"""(?i)(?<![\w-])((?:user(?:name)?|login|uid|account|owner)["']?\s*(?:=|:)\s*["']?)([A-Za-z0-9._$-]{2,64})""")
_USER_PATHS = re.compile(r"""(?i)((?:[A-Z]:\\Users\\|/home/|/Users/))([A-Za-z0-9._$ -]{1,64}?)(?=[\\/"'\s]|$)""")
_DOMAIN_USER = re.compile(r"\b([A-Z][A-Z0-9-]{1,15}\\)([A-Za-z][A-Za-z0-9._$-]{1,64})\b")
_SYSTEM_USERS = {"public", "default", "all users", "administrator", "admin", "root", "system", "guest", "shared",
                 "default user", "user", "username", "<user>", "%username%", "$user"}
_DOC_WORDS = {"example", "placeholder", "redacted", "xxxxxx", "changeme", "your_password", "<password>", "none",
              "null", "true", "false", "required", "optional", "string"}


@dataclass(frozen=True)
class Detection:
    """One secret or personal datum: its kind and where it is."""

    kind: str
    start: int
    end: int
    value: str
    detector: str = ""  # which pattern found it (``secret_named``, ``detect-secrets:aws``, ...)


_DETECT_SECRETS_PLUGINS = {
    # module: (class, kind); the entropy and keyword plugins are left out (hashes and prose in
    # security text would be flagged), the private-key and basic-auth ones have our own handlers
    "artifactory": ("ArtifactoryDetector", "api_key"), "aws": ("AWSKeyDetector", "api_key"),
    "azure_storage_key": ("AzureStorageKeyDetector", "api_key"), "cloudant": ("CloudantDetector", "api_key"),
    "discord": ("DiscordBotTokenDetector", "token"), "github_token": ("GitHubTokenDetector", "api_key"),
    "gitlab_token": ("GitLabTokenDetector", "api_key"), "ibm_cloud_iam": ("IbmCloudIamDetector", "api_key"),
    "ibm_cos_hmac": ("IbmCosHmacDetector", "api_key"), "jwt": ("JwtTokenDetector", "token"),
    "mailchimp": ("MailchimpDetector", "api_key"), "npm": ("NpmDetector", "api_key"), "openai": ("OpenAIDetector", "api_key"),
    "pypi_token": ("PypiTokenDetector", "api_key"), "sendgrid": ("SendGridDetector", "api_key"),
    "slack": ("SlackDetector", "token"), "softlayer": ("SoftlayerDetector", "api_key"),
    "square_oauth": ("SquareOAuthDetector", "api_key"), "stripe": ("StripeDetector", "api_key"),
    "telegram_token": ("TelegramBotTokenDetector", "token"), "twilio": ("TwilioKeyDetector", "api_key"),
}


def _detect_secrets_patterns() -> list[tuple[str, re.Pattern, int | None, str]]:
    """(kind, pattern, group of the secret) from detect-secrets' regex plugins (its own
    definitions, kept up to date by that project)."""
    global _DS_CACHE
    if _DS_CACHE is None:
        import importlib

        found = []
        for module_name, (class_name, kind) in _DETECT_SECRETS_PLUGINS.items():
            try:
                plugin = getattr(importlib.import_module(f"detect_secrets.plugins.{module_name}"), class_name)
            except (ImportError, AttributeError):  # a plugin renamed in another release: the others still run
                continue
            for pattern in plugin.denylist:
                found.append((kind, pattern, 1 if pattern.groups else None, f"detect-secrets:{module_name}"))
        _DS_CACHE = found
    return _DS_CACHE


_DS_CACHE: list | None = None


def _looks_aws_secret(value: str, m: re.Match) -> bool:
    if not (any(c.isupper() for c in value) and any(c.islower() for c in value) and any(c.isdigit() for c in value)):
        return False
    if "/" in value and value.count("/") > 3:  # a path, not a key
        return False
    window = m.string[max(0, m.start() - 300):m.end() + 300].lower()
    return "/" in value or "+" in value or "aws" in window or "akia" in window or "secret" in window


def _luhn_card(value: str, m: re.Match) -> bool:
    digits = [int(c) for c in value if c.isdigit()]
    if not 13 <= len(digits) <= 19 or len(set(digits)) < 2:
        return False
    if not (digits[0] in (3, 4, 5, 6) or value.startswith(("2", "1800", "2131"))):
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return total % 10 == 0


def _valid_phone(value: str, m: re.Match) -> bool:
    import phonenumbers

    try:
        number = phonenumbers.parse(value, None if value.startswith("+") else "US")
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_possible_number(number) and phonenumbers.is_valid_number(number)


@dataclass
class RedactionReport:
    """Counts per type, over every text redacted by one :class:`Redactor`."""

    counts: Counter = field(default_factory=Counter)
    documents_touched: int = 0

    def as_dict(self) -> dict:
        return {"by_type": dict(sorted(self.counts.items())), "total": sum(self.counts.values()),
                "documents_touched": self.documents_touched}


class Redactor:
    """Replace secrets and personal data with stable salted pseudonyms.

    ``types``: the optional kinds to redact as well (``ip``, ``hostname``, ``username``).
    ``salt``: keep it to reproduce pseudonyms across builds; a random one by default.
    ``keep_hostnames``: hostnames left alone even with ``hostname`` on (e.g. ``attack.mitre.org``).
    """

    def __init__(self, types: Iterable[str] = (), salt: str | None = None, use_detect_secrets: bool = True,
                 keep_hostnames: Sequence[str] = ("attack.mitre.org", "cwe.mitre.org", "cve.org", "www.cve.org",
                                                  "nvd.nist.gov", "example.com", "example.org", "example.net")):
        extra = set(types)
        unknown = extra - set(ALL_TYPES)
        if unknown:
            from secfm.errors import SecfmError

            raise SecfmError(f"unknown redaction type(s) {', '.join(sorted(unknown))}: choose from {', '.join(OPTIONAL)}")
        self.types = set(ALWAYS) | extra | {"url-host"}
        self.salt = (salt if salt is not None else secrets.token_hex(16)).encode()
        self.keep_hostnames = {h.lower() for h in keep_hostnames}
        self.report = RedactionReport()
        self.use_detect_secrets = use_detect_secrets

    @property
    def salt_fingerprint(self) -> str:
        """A short hash of the salt (safe to publish; the salt itself is not)."""
        return hashlib.sha256(b"fingerprint" + self.salt).hexdigest()[:12]

    # -- pseudonyms -----------------------------------------------------------------------------
    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self.salt, f"{kind}\x00{value}".encode(), hashlib.sha256).digest()

    def _chars(self, kind: str, value: str, n: int, alphabet: str = _ALNUM) -> str:
        digest = self._digest(kind, value)
        while len(digest) < n:
            digest += hashlib.sha256(digest).digest()
        return "".join(alphabet[b % len(alphabet)] for b in digest[:n])

    def _shaped(self, kind: str, value: str) -> str:
        """Same length and character classes as ``value`` (upper/lower/digit), other chars kept."""
        digest = self._chars(kind, value, len(value), "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
        out = []
        for ch, d in zip(value, digest):
            n = ord(d)
            if ch.isdigit():
                out.append(str(n % 10))
            elif ch.isupper():
                out.append(chr(ord("A") + n % 26))
            elif ch.islower():
                out.append(chr(ord("a") + n % 26))
            else:
                out.append(ch)
        return "".join(out)

    def pseudonym(self, kind: str, value: str) -> str:
        if kind == "email":
            return f"user-{self._chars(kind, value.lower(), 8)}@example.com"
        if kind == "ip":
            d = self._digest(kind, value)
            if ":" in value:
                return "fd00:" + ":".join(d[i:i + 2].hex() for i in range(0, 8, 2)) + ":" + d[8:10].hex()
            return f"10.{d[0]}.{d[1]}.{max(1, d[2]) if d[2] < 255 else 254}"
        if kind == "hostname":
            return f"host-{self._chars(kind, value.lower(), 8)}.example"
        if kind == "username":
            return f"user-{self._chars(kind, value, 6)}"
        if kind == "password":
            return f"PASSWORD-{self._chars(kind, value, 8)}"
        if kind == "token":
            return f"TOKEN-{self._chars(kind, value, 12)}"
        if kind == "private_key":
            return f"\nREDACTED-PRIVATE-KEY-{self._chars(kind, value.strip(), 12)}\n"
        return self._shaped(kind, value)  # api keys keep their shape

    # -- redaction -----------------------------------------------------------------------------
    def detect(self, text: str) -> list[Detection]:
        """Every enabled kind found in ``text``: detectors run in priority order (private keys,
        credentials in URLs, known key formats, detect-secrets' plugins, tokens, assignments,
        cards, SSNs, phones, e-mails plain and obfuscated, then the optional kinds) and a span
        that overlaps one already taken is dropped, so ``postgres://admin:pw@db.host`` is a
        password, never an e-mail that swallows the host. Sorted by position."""
        taken: list[Detection] = []
        starts: list[int] = []

        def free(start: int, end: int) -> bool:
            from bisect import bisect_right

            i = bisect_right(starts, start)
            if i and taken[i - 1].end > start:
                return False
            return not (i < len(taken) and taken[i].start < end)

        def add(kind: str, start: int, end: int, detector: str = "") -> None:
            from bisect import bisect_right

            if start >= end or not free(start, end):
                return
            i = bisect_right(starts, start)
            taken.insert(i, Detection(kind, start, end, text[start:end], detector))
            starts.insert(i, start)

        def scan(kind: str, pattern: re.Pattern, group: int | None = None, check=None, detector: str = "") -> None:
            if kind not in self.types:
                return
            for m in pattern.finditer(text):
                g = group if group is not None else 0
                value = m.group(g)
                if value is None or (check is not None and not check(value, m)):
                    continue
                if kind in ("api_key", "token") and _filler(m.group(0)):
                    continue  # ghp_xxxx..., glc_1111..., ...PUT_YOUR_TOKEN_HERE...: a placeholder, not a secret
                add(kind, *m.span(g), detector or kind)

        scan("private_key", _PRIVATE_KEY, 2, detector="private_key_block")
        scan("private_key", _PRIVATE_KEY_OPEN, 2, detector="private_key_open")
        scan("private_key", _PUTTY_KEY, 2, detector="putty_key")
        for m in _URL_CREDS.finditer(text):  # before e-mails: the host after @ is not an address
            if "username" in self.types:
                add("username", *m.span(2), "url_credentials")
            add("password", *m.span(3), "url_credentials")
            add("url-host", m.start(3), m.end(0), "url_credentials")  # holds the span so no e-mail takes "pw@host"
        for pattern in _KEY_FORMATS:
            scan("api_key", pattern, 2, detector="key_format")
        for kind, pattern, group, name in (_detect_secrets_patterns() if self.use_detect_secrets else ()):
            scan(kind, pattern, group, detector=name)
        scan("api_key", _AWS_SECRET, 1, check=_looks_aws_secret, detector="aws_secret")
        for m in _USERPASS_FLAG.finditer(text):
            if "username" in self.types:
                add("username", *m.span(1), "userpass_flag")
            if _looks_cli_password(m.group(2), m):
                add("password", *m.span(2), "userpass_flag")
        scan("token", _JWT, detector="jwt")
        scan("token", _BEARER, 2, check=_token_like, detector="bearer")
        scan("api_key", _API_ASSIGN, 2, check=_looks_secret, detector="api_key_assignment")
        scan("token", _TOKEN_ASSIGN, 2, check=_looks_secret, detector="token_assignment")
        scan("password", _PASSWORD_ASSIGN, 2, check=_looks_password, detector="password_assignment")
        scan("password", _CLI_PASSWORD, 2, check=_looks_cli_password, detector="cli_password")
        scan("password", _NET_USER, 2, check=_looks_cli_password, detector="net_user")
        scan("api_key", _SECRET_NAMED, 2, check=_looks_secret, detector="secret_named")
        scan("token", _PREFIXED_TOKEN, None, check=_high_entropy_token, detector="prefixed_token")
        scan("card", _CARD, None, check=_luhn_card)
        scan("ssn", _SSN)
        scan("phone", _PHONE, None, check=_valid_phone)
        scan("email", _EMAIL, None, check=lambda v, m: not v.lower().endswith("@example.com"))
        scan("email", _EMAIL_OBFUSCATED, detector="email_obfuscated")
        scan("username", _USER_PATHS, 2, check=lambda v, m: v.strip().lower() not in _SYSTEM_USERS)
        scan("username", _DOMAIN_USER, 2, check=lambda v, m: v.lower() not in _SYSTEM_USERS and not v.startswith("user-"))
        scan("username", _USER_ASSIGN, 2, check=lambda v, m: v.lower() not in _SYSTEM_USERS and not v.startswith("user-"))
        scan("ip", _IPV4, None, check=lambda v, m: not v.startswith(("0.", "127.0.0.")) and v != "255.255.255.255")
        scan("ip", _IPV6, None, check=_looks_ipv6)
        scan("hostname", _HOSTNAME, None, check=self._host_ok)
        return [d for d in taken if d.kind != "url-host"]

    def redact(self, text: str) -> str:
        """``text`` with every enabled kind replaced by its pseudonym (:meth:`detect`); counts go
        to ``self.report``."""
        found = self.detect(text)
        if not found:
            return text
        parts: list[str] = []
        pos = 0
        for d in found:
            value = d.value
            pseudo = self.pseudonym(d.kind, _unquote(value))
            if value[:1] in "\"'`" and value[-1:] == value[:1] and len(value) > 1:
                pseudo = value[0] + pseudo + value[0]
            parts += [text[pos:d.start], pseudo]
            pos = d.end
            self.report.counts[d.kind] += 1
        parts.append(text[pos:])
        self.report.documents_touched += 1
        return "".join(parts)

    def _host_ok(self, value: str, m: re.Match) -> bool:
        low = value.lower()
        if low in self.keep_hostnames or low.endswith(".example") or low.startswith("host-"):
            return False
        return not re.fullmatch(r"[\d.]+", low)


def _unquote(value: str) -> str:
    if len(value) > 1 and value[0] in "\"'`" and value[-1] == value[0]:
        return value[1:-1]
    return value


def _not_redacted(value: str, m: re.Match | None = None) -> bool:
    return not value.startswith(("TOKEN-", "PASSWORD-", "REDACTED"))


def _token_like(value: str, m: re.Match) -> bool:
    """Bearer / token values: letters and digits mixed (prose words after "token" are not)."""
    return _not_redacted(value) and bool(re.search(r"\d", value) and re.search(r"[A-Za-z]", value))


_FILLER_WORDS = re.compile(
    r"(?i)(?:your|put|insert|replace|add)[_-]?(?:\w{0,12}?[_-])?(?:token|key|secret|password)|"
    r"(?:token|key|secret|string)[_-]?here\b|\bmy[_-](?:\w{1,10}[_-])?(?:token|key|secret)\b|placeholder|changeme")
_FILE_NAME = re.compile(r"(?i)\.(?:png|jpe?g|gif|svg|webp|ico|bmp|image|pem|crt|cer|der|pdf|html?|css|js|json|ya?ml|"
                        r"xml|txt|md|zip|gz|tgz|tar|jar|war|so|dll|exe|py|go|rs|java|rb|php)$")
_NOT_A_SECRET_WORDS = re.compile(r"(?i)version|snapshot|release|commit|checksum|digest")
_HOST_THEN_PATH = re.compile(r"[A-Za-z0-9-]\.[A-Za-z]{2,24}/")


def _filler(value: str) -> bool:
    """A placeholder where a secret would go: one character filling much of the value
    (``xxxx``, ``XXXX``, ``0000``, ``1111``) or the words of an instruction (``YOUR_TOKEN``,
    ``..._HERE``, ``my-bot-token``)."""
    v = _unquote(value)
    body = re.sub(r"[^A-Za-z0-9]", "", v)
    if len(body) >= 8:
        ch, n = Counter(body).most_common(1)[0]
        if n / len(body) >= 0.6 and ch * 5 in body:
            return True
    return bool(_FILLER_WORDS.search(v))


def _identifier(value: str) -> bool:
    """A name, not a random string: ``this.ultraPictureBox1.Name``, ``MINIDUMP_SYSMEMINFO1_PERF``,
    ``SalesResults-1.2``, ``DOC_Vector_5_32``: its letters come in word-length runs (a mean of
    3.5+ letters per case-consistent chunk) and digits are at most 30% of it."""
    body = re.sub(r"[^A-Za-z0-9]", "", value)
    if not body:
        return False
    chunks = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])", value)
    if not chunks:
        return False
    digits = sum(c.isdigit() for c in body)
    if any(len(re.findall(r"[A-Za-z]\d+(?=[A-Za-z])", seg)) >= 2 for seg in re.split(r"[^A-Za-z0-9]+", value)):
        return False  # digits strewn inside a word (ZNRMR7SL6L3ATMOIK): random, not a name
    return sum(map(len, chunks)) / len(chunks) >= 3.5 and digits / len(body) <= 0.3


_CAPABILITY_URL = re.compile(r"(?i)hook|token|secret|key|/bot\d|sig=|signature")


def _in_url_or_file(value: str, m: re.Match) -> bool:
    """A file name, or part of a URL (``host.tld/path``, or after ``://`` in the same word) that
    is not a capability URL (webhooks, bot and signed links carry their secret in the path)."""
    if _FILE_NAME.search(value.rstrip(".,;:)'\"")):
        return True
    text, start, end = m.string, m.start(), m.end()
    lo, hi = max(0, start - 2000), min(len(text), end + 2000)  # a bounded look around: linear time
    word_start = max(lo - 1, *(text.rfind(c, lo, start) for c in " \t\n\"'(<[=")) + 1
    word_end = min((i for i in (text.find(c, end, hi) for c in " \t\n\"'>)]") if i >= 0), default=hi)
    word = text[word_start:word_end]
    in_url = bool(_HOST_THEN_PATH.search(value)) or "://" in text[word_start:start]
    return in_url and not _CAPABILITY_URL.search(word)


def _high_entropy_token(value: str, m: re.Match) -> bool:
    """A prefixed token, not a word, path, hash or version: letters and digits mixed, upper and
    lower case (or 32+ characters), at least 3.5 bits of entropy per character."""
    import math

    body = value.rstrip(".,;:")
    if re.fullmatch(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}", body):
        return False  # a GUID (CLSIDs, ids in logs) is an indicator, not a secret
    if _in_url_or_file(body, m) or _identifier(body) or _NOT_A_SECRET_WORDS.search(body):
        return False  # a URL path, a file name, a constant or member name, a version string
    if not (re.search(r"\d", body) and re.search(r"[A-Za-z]", body)) or body.count(".") > 3 or "/" in body[:12]:
        return False
    if re.fullmatch(r"[A-Za-z]+[_.-][0-9a-fA-F.-]+", body) and not re.search(r"[g-zG-Z]", body.split("_", 1)[-1].split("-", 1)[-1]):
        return False  # "sha256-<hex>", "md5_<hex>": a hash
    if not (re.search(r"[A-Z]", body) and re.search(r"[a-z]", body)) and len(body) < 32:
        return False
    counts = {c: body.count(c) for c in set(body)}
    entropy = -sum(n / len(body) * math.log2(n / len(body)) for n in counts.values())
    return entropy >= 3.5


def _placeholder(v: str) -> bool:
    return (not _not_redacted(v) or v.lower() in _DOC_WORDS or v.endswith("...")
            or bool(re.fullmatch(r"\$\{?[\w.]+\}?|%\w+%|\{\{.*\}\}|<[^>]*>|(?:os\.)?environ\b.*|getenv\(.*", v)))


_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


def _looks_secret(value: str, m: re.Match) -> bool:
    v = _unquote(value).rstrip(".,;:")
    if _placeholder(v) or len(v) < 8:
        return False
    key = re.sub(r"[\s\"'`:=?+!>]+$", "", m.group(1))
    if re.search(r"(?i)public|(?:^|[_.-])pub(?:lic)?[_.-]?key", key):
        return False  # a public key or token is published, not a secret
    if re.search(r"(?:[_.-]id|[a-z]Id|ID)$|^id$", key) and _UUID.fullmatch(v):
        return False  # clientId = <GUID>, kms_key_id: <GUID>: a name for something, not a secret
    if _identifier(v) or _in_url_or_file(v, m):
        return False
    if re.search(r"\d", v) and re.search(r"[A-Za-z]", v):
        return True
    return len(v) >= 20 and bool(re.fullmatch(r"[A-Za-z0-9_+/=-]+", v)) and bool(re.search(r"[A-Z]", v) and re.search(r"[a-z]", v))


def _looks_password(value: str, m: re.Match) -> bool:
    quoted = value[:1] in "\"'`"
    v = _unquote(value)
    if _placeholder(v) or len(v) < 4:
        return False
    # prose ("the password is correct.", "password is hard-coded"): after " is ", only a quoted
    # value or one with a digit counts; after "=" or ":" any value of 4+ characters does
    if re.search(r"\sis\s*$", m.group(1)) and not quoted:
        v = v.rstrip(".,;:!?")
        return len(v) >= 6 and bool(re.search(r"\d", v) or re.search(r"[!@#$%^&*?~+=_]", v)
                                    or len(re.findall(r"[a-z][A-Z]", v)) >= 1 and len(v) >= 8)
    return True


def _looks_cli_password(value: str, m: re.Match) -> bool:
    """``-p VALUE`` / ``net user NAME VALUE``: a value with a digit or a symbol, or quoted."""
    v = _unquote(value)
    if _placeholder(v) or v.startswith(("/", "\\", "-")):
        return False
    return value[:1] in "\"'" or bool(re.search(r"\d", v) and re.search(r"[A-Za-z]", v)) or bool(
        re.search(r"[!@#$%^&*?~+]", v))


def _looks_ipv6(value: str, m: re.Match) -> bool:
    groups = [g for g in value.split(":") if g]
    return len(groups) == 8 or ("::" in value and len(groups) >= 2)


__all__ = ["ALL_TYPES", "ALWAYS", "OPTIONAL", "RedactionReport", "Redactor"]
