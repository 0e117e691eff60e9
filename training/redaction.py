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

ALWAYS = ("private_key", "email", "password", "token", "api_key")
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
_BEARER = re.compile(r"(?i)\b((?:authorization:\s*)?(?:bearer|token|basic)\s+)([A-Za-z0-9._~+/=-]{16,})")

_Q = r"""["'`]?"""
_KEYWORD_VALUE = r"""(?:"[^"\r\n]{1,200}"|'[^'\r\n]{1,200}'|`[^`\r\n]{1,200}`|[^\s"'`,;&<>)\]}]{1,200})"""
_SEP = r"""\s*(?:=|:=|:|=>|\s+is\s+)\s*"""
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

    def __init__(self, types: Iterable[str] = (), salt: str | None = None,
                 keep_hostnames: Sequence[str] = ("attack.mitre.org", "cwe.mitre.org", "cve.org", "www.cve.org",
                                                  "nvd.nist.gov", "example.com", "example.org", "example.net")):
        extra = set(types)
        unknown = extra - set(ALL_TYPES)
        if unknown:
            from secfm.errors import SecfmError

            raise SecfmError(f"unknown redaction type(s) {', '.join(sorted(unknown))}: choose from {', '.join(OPTIONAL)}")
        self.types = set(ALWAYS) | extra
        self.salt = (salt if salt is not None else secrets.token_hex(16)).encode()
        self.keep_hostnames = {h.lower() for h in keep_hostnames}
        self.report = RedactionReport()

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
    def redact(self, text: str) -> str:
        """``text`` with every enabled kind replaced; counts go to ``self.report``."""
        before = sum(self.report.counts.values())
        count = self.report.counts

        def sub(kind: str, pattern: re.Pattern, group: int | None, text: str, check=None) -> str:
            def repl(m: re.Match) -> str:
                value = m.group(group) if group is not None else m.group(0)
                if check is not None and not check(value, m):
                    return m.group(0)
                count[kind] += 1
                pseudo = self.pseudonym(kind, _unquote(value))
                if value[:1] in "\"'`" and value[-1:] == value[:1] and len(value) > 1:
                    pseudo = value[0] + pseudo + value[0]
                if group is None:
                    return pseudo
                start, end = m.span(group)
                whole = m.group(0)
                offset = m.start(0)
                return whole[: start - offset] + pseudo + whole[end - offset:]

            return pattern.sub(repl, text)

        # private keys first (their bodies would otherwise look like tokens)
        text = sub("private_key", _PRIVATE_KEY, 2, text)
        text = sub("private_key", _PRIVATE_KEY_OPEN, 2, text)
        text = sub("private_key", _PUTTY_KEY, 2, text)
        # credentials inside URLs: user (on request) and password
        def url_creds(m: re.Match) -> str:
            user, password = m.group(2), m.group(3)
            count["password"] += 1
            if "username" in self.types:
                count["username"] += 1
                user = self.pseudonym("username", user)
            return f"{m.group(1)}{user}:{self.pseudonym('password', password)}@"

        text = _URL_CREDS.sub(url_creds, text)
        for pattern in _KEY_FORMATS:
            text = sub("api_key", pattern, 2, text)
        text = sub("token", _JWT, None, text)
        text = sub("token", _BEARER, 2, text, check=_token_like)
        text = sub("api_key", _API_ASSIGN, 2, text, check=_looks_secret)
        text = sub("token", _TOKEN_ASSIGN, 2, text, check=_looks_secret)
        text = sub("password", _PASSWORD_ASSIGN, 2, text, check=_looks_password)
        text = sub("password", _CLI_PASSWORD, 2, text, check=_looks_cli_password)
        text = sub("password", _NET_USER, 2, text, check=_looks_cli_password)
        text = sub("email", _EMAIL, None, text, check=lambda v, m: not v.lower().endswith("@example.com"))
        if "username" in self.types:
            text = sub("username", _USER_PATHS, 2, text, check=lambda v, m: v.strip().lower() not in _SYSTEM_USERS)
            text = sub("username", _DOMAIN_USER, 2, text, check=lambda v, m: v.lower() not in _SYSTEM_USERS and not v.startswith("user-"))
            text = sub("username", _USER_ASSIGN, 2, text, check=lambda v, m: v.lower() not in _SYSTEM_USERS and not v.startswith("user-"))
        if "ip" in self.types:
            text = sub("ip", _IPV4, None, text, check=lambda v, m: not v.startswith(("0.", "127.0.0.")) and v != "255.255.255.255")
            text = sub("ip", _IPV6, None, text, check=_looks_ipv6)
        if "hostname" in self.types:
            text = sub("hostname", _HOSTNAME, None, text, check=self._host_ok)
        if sum(self.report.counts.values()) > before:
            self.report.documents_touched += 1
        return text

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


def _placeholder(v: str) -> bool:
    return (not _not_redacted(v) or v.lower() in _DOC_WORDS or v.endswith("...")
            or bool(re.fullmatch(r"\$\{?[\w.]+\}?|%\w+%|\{\{.*\}\}|<[^>]*>|(?:os\.)?environ\b.*|getenv\(.*", v)))


def _looks_secret(value: str, m: re.Match) -> bool:
    v = _unquote(value).rstrip(".,;:")
    if _placeholder(v) or len(v) < 8:
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
