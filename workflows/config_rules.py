"""Deterministic configuration rules: common misconfigurations per kind, with line ranges.

Kinds: ``terraform``, ``kubernetes``, ``docker-compose``, ``dockerfile``, ``sshd``, ``nginx``,
``aws-iam``. :func:`detect_kind` tells them apart by file name, then by content.

Every :class:`Rule` carries a bad and a good example (the tests run each rule on both), a
severity, why it matters, the fix, and references (CWE weaknesses and ATT&CK mitigations, checked
with ``validate_id``). A rule returns the 1-based line ranges it fires on; the review quotes those
lines as evidence.

Parsers are small and tolerant: sshd and Dockerfile are line formats; nginx is parsed into
statements and blocks; Terraform is read block by block (HCL attributes, nested blocks,
heredocs and ``jsonencode`` bodies by brace counting); Kubernetes, Compose and IAM policies
(JSON is YAML) go through PyYAML's composer, which keeps line numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import PurePath

from secfm.errors import SecfmError

KINDS = ("terraform", "kubernetes", "docker-compose", "dockerfile", "sshd", "nginx", "aws-iam")
Span = tuple[int, int]


# --------------------------------------------------------------------------------------------
# the document
# --------------------------------------------------------------------------------------------
@dataclass
class ConfigDoc:
    text: str
    kind: str
    filename: str | None = None

    @cached_property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def line(self, n: int) -> str:
        return self.lines[n - 1] if 1 <= n <= len(self.lines) else ""

    def quote(self, start: int, end: int, max_lines: int = 12) -> str:
        end = min(end, start + max_lines - 1, len(self.lines))
        return "\n".join(self.lines[start - 1:end])

    @cached_property
    def yaml_nodes(self) -> list:
        return _compose_yaml(self.text)

    @cached_property
    def nginx(self) -> list[NginxStmt]:
        return parse_nginx(self.text)

    @cached_property
    def terraform(self) -> list[TfBlock]:
        return parse_terraform(self.text)

    @cached_property
    def dockerfile(self) -> list[DockerInstr]:
        return parse_dockerfile(self.text)


# --------------------------------------------------------------------------------------------
# line formats: sshd
# --------------------------------------------------------------------------------------------
def sshd_all_directives(doc: ConfigDoc) -> Iterator[tuple[int, str, str, str]]:
    """(line, keyword lower-cased, value, section) for every sshd_config directive as written;
    section is "" for the global part and the ``Match`` line's criteria inside a Match block."""
    section = ""
    for n, raw in enumerate(doc.lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = re.split(r"[ \t]+|[ \t]*=[ \t]*", line, maxsplit=1)
        keyword = parts[0].lower()
        value = parts[1].strip().strip('"') if len(parts) == 2 else ""
        if keyword == "match":
            section = value or "all"
            continue
        if len(parts) == 2:
            yield n, keyword, value, section


def sshd_directives(doc: ConfigDoc) -> Iterator[tuple[int, str, str]]:
    """(line, keyword lower-cased, value) for each directive that takes effect, as sshd reads
    the file: for each keyword the first value wins (later repeats are ignored), in the global
    part and separately inside each ``Match`` block (whose values override the global ones for
    the connections it matches; ``Match all`` is one more block)."""
    seen: set[tuple[str, str, int]] = set()
    block = 0
    last_section = ""
    for n, keyword, value, section in sshd_all_directives(doc):
        if section != last_section:
            block += 1
            last_section = section
        key = (keyword, section, block if section else 0)
        if key in seen:
            continue
        seen.add(key)
        yield n, keyword, value


def sshd_rule(keyword: str, bad: Callable[[str], bool]) -> Callable[[ConfigDoc], list[Span]]:
    keyword = keyword.lower()
    return lambda doc: [(n, n) for n, k, v in sshd_directives(doc) if k == keyword and bad(v)]


_WEAK_SSH = re.compile(r"(^|,)(3des-cbc|aes\d+-cbc|blowfish-cbc|cast128-cbc|arcfour\w*|hmac-md5\S*|hmac-sha1-96|umac-64\S*|diffie-hellman-group1-sha1|diffie-hellman-group-exchange-sha1|ssh-dss)(,|$)", re.I)


# --------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------
@dataclass
class DockerInstr:
    name: str
    args: str
    start: int
    end: int


def parse_dockerfile(text: str) -> list[DockerInstr]:
    """Instructions with their 1-based line span, from dockerfile-parse (continuation lines and
    comments inside them handled as Docker does)."""
    import io

    from dockerfile_parse import DockerfileParser

    try:
        structure = DockerfileParser(fileobj=io.BytesIO(text.encode("utf-8", "surrogateescape"))).structure
    except Exception as exc:  # noqa: BLE001 - the library's own errors: one line
        raise SecfmError(f"cannot parse the Dockerfile: {type(exc).__name__}: {exc}") from exc
    return [DockerInstr(item["instruction"].upper(), " ".join(str(item["value"]).split()) if item["instruction"].upper() != "RUN" else str(item["value"]).strip(),
                        item["startline"] + 1, item["endline"] + 1)
            for item in structure if item["instruction"].upper() != "COMMENT"]


def _docker_no_user(doc: ConfigDoc) -> list[Span]:
    instrs = doc.dockerfile
    froms = [i for i, ins in enumerate(instrs) if ins.name == "FROM"]
    if not froms:
        return []
    last_stage = instrs[froms[-1]:]
    users = [ins for ins in last_stage if ins.name == "USER"]
    if not users:
        f = instrs[froms[-1]]
        return [(f.start, f.end)]
    last = users[-1]
    if last.args.split(":")[0].strip() in ("root", "0"):
        return [(last.start, last.end)]
    return []


def _docker_latest(doc: ConfigDoc) -> list[Span]:
    spans = []
    stages = set()
    for ins in doc.dockerfile:
        if ins.name != "FROM":
            continue
        words = [w for w in ins.args.split() if not w.startswith("--")]
        if not words:
            continue
        image = words[0]
        if len(words) >= 3 and words[1].lower() == "as":
            stages.add(words[2].lower())
        if image.lower() in stages or image.lower() == "scratch" or "$" in image:
            continue
        name = image.split("@", 1)[0]
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else None
        if "@" not in image and (tag is None or tag == "latest"):
            spans.append((ins.start, ins.end))
    return spans


_SECRET_NAME = r"[A-Z0-9_]*(?:PASSWORD|PASSWD|PWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIALS?)[A-Z0-9_]*"


def _docker_secret(doc: ConfigDoc) -> list[Span]:
    pattern = re.compile(rf"(?:^|\s)({_SECRET_NAME})(?:=|\s+)(\"[^\"]+\"|'[^']+'|[^\s$][^\s]*)", re.I)
    spans = []
    for ins in doc.dockerfile:
        if ins.name in ("ENV", "ARG"):
            m = pattern.search(ins.args)
            if m and not m.group(2).strip("\"'").startswith("$"):
                spans.append((ins.start, ins.end))
    return spans


def _docker_instr(names: tuple[str, ...], pattern: str) -> Callable[[ConfigDoc], list[Span]]:
    compiled = re.compile(pattern, re.I)
    return lambda doc: [(i.start, i.end) for i in doc.dockerfile if i.name in names and compiled.search(i.args)]


# --------------------------------------------------------------------------------------------
# nginx
# --------------------------------------------------------------------------------------------
@dataclass
class NginxStmt:
    name: str
    args: list[str]
    start: int
    end: int
    children: list[NginxStmt] = field(default_factory=list)
    block: bool = False


def parse_nginx(text: str) -> list[NginxStmt]:
    """Statements with their line spans (a block ends on its closing brace's line), from
    crossplane's lexer (nginx's own quoting, escapes and comments; one clear error on unbalanced
    braces)."""
    import os
    import tempfile

    import crossplane

    fd, path = tempfile.mkstemp(suffix=".conf")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(text)
        try:
            tokens = [(tok, line) for tok, line, quoted in crossplane.lex(path) if quoted or not tok.startswith("#")]
        except crossplane.errors.NgxParserBaseException as exc:
            raise SecfmError(f"cannot parse the nginx configuration: {exc.strerror} (line {exc.lineno})") from exc
    finally:
        os.unlink(path)
    root: list[NginxStmt] = []
    stack: list[list[NginxStmt]] = [root]
    open_blocks: list[NginxStmt] = []
    words: list[tuple[str, int]] = []
    for tok, ln in tokens:
        if tok == ";":
            if words:
                stack[-1].append(NginxStmt(words[0][0], [w for w, _ in words[1:]], words[0][1], ln))
            words = []
        elif tok == "{":
            stmt = NginxStmt(words[0][0] if words else "", [w for w, _ in words[1:]], words[0][1] if words else ln, ln, block=True)
            stack[-1].append(stmt)
            stack.append(stmt.children)
            open_blocks.append(stmt)
            words = []
        elif tok == "}":
            if open_blocks:
                open_blocks.pop().end = ln
                stack.pop()
            words = []
        else:
            words.append((tok, ln))
    return root


def nginx_walk(stmts: list[NginxStmt]) -> Iterator[NginxStmt]:
    """Every statement, depth first, in file order (iterative: any nesting depth)."""
    stack = [iter(stmts)]
    while stack:
        for s in stack[-1]:
            yield s
            if s.children:
                stack.append(iter(s.children))
            break
        else:
            stack.pop()


def _nginx_directive(name: str, bad: Callable[[list[str]], bool]) -> Callable[[ConfigDoc], list[Span]]:
    return lambda doc: [(s.start, s.end) for s in nginx_walk(doc.nginx) if s.name == name and not s.block and bad(s.args)]


def _nginx_alias_traversal(doc: ConfigDoc) -> list[Span]:
    spans = []
    for s in nginx_walk(doc.nginx):
        if s.name == "location" and s.block and s.args:
            path = s.args[-1]
            if path.endswith("/") or s.args[0] in ("~", "~*", "="):
                continue
            for c in s.children:
                if c.name == "alias" and c.args and c.args[0].endswith("/"):
                    spans.append((s.start, c.end))
    return spans


def _nginx_plain_http(doc: ConfigDoc) -> list[Span]:
    spans = []
    for s in nginx_walk(doc.nginx):
        if s.name != "server" or not s.block:
            continue
        listens = [c for c in s.children if c.name == "listen"]
        plain = [c for c in listens if c.args and re.fullmatch(r"(\[?[\d.:a-f\]]*:)?80", c.args[0]) and "ssl" not in c.args]
        if not plain or any("ssl" in c.args or (c.args and c.args[0].endswith("443")) for c in listens):
            continue
        redirects = any(c.name in ("return", "rewrite") and any(a.startswith("https://") or a in ("301", "302", "308") for a in c.args)
                        for c in nginx_walk(s.children))
        serves = any(c.name in ("proxy_pass", "root", "fastcgi_pass", "uwsgi_pass", "alias") for c in nginx_walk(s.children))
        if serves and not redirects:
            spans.append((plain[0].start, plain[0].end))
    return spans


_WEAK_TLS = {"sslv2", "sslv3", "tlsv1", "tlsv1.1"}


# --------------------------------------------------------------------------------------------
# Terraform (HCL, read by brace counting)
# --------------------------------------------------------------------------------------------
@dataclass
class TfAttr:
    name: str
    value: str
    start: int
    end: int


@dataclass
class TfBlock:
    type: str
    labels: list[str]
    start: int
    end: int
    attrs: list[TfAttr] = field(default_factory=list)
    blocks: list[TfBlock] = field(default_factory=list)

    def attr(self, name: str) -> TfAttr | None:
        for a in self.attrs:
            if a.name == name:
                return a
        return None


_TF_BLOCK = re.compile(r'^\s*([A-Za-z_][\w-]*)((?:\s+"[^"]*"|\s+[A-Za-z_][\w-]*)*)\s*\{\s*(\}\s*)?$')
_TF_ATTR = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*=\s*(.*)$")


def _strip_tf_comment(line: str) -> str:
    out, quote = [], False
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == '"' and (i == 0 or line[i - 1] != "\\"):
            quote = not quote
        if not quote and (ch == "#" or line.startswith("//", i)):
            break
        out.append(ch)
        i += 1
    return "".join(out).rstrip()


def parse_terraform(text: str) -> list[TfBlock]:
    lines = text.splitlines()
    root = TfBlock("", [], 1, len(lines))
    stack = [root]
    i = 0
    while i < len(lines):
        n = i + 1
        line = _strip_tf_comment(lines[i])
        stripped = line.strip()
        i += 1
        if not stripped or stripped.startswith("/*"):
            continue
        if stripped == "}" or stripped == "},":
            if len(stack) > 1:
                stack.pop().end = n
            continue
        m = _TF_BLOCK.match(line)
        if m and "=" not in line.split("{")[0]:
            labels = re.findall(r'"([^"]*)"|([A-Za-z_][\w-]*)', m.group(2) or "")
            block = TfBlock(m.group(1), [a or b for a, b in labels], n, n)
            stack[-1].blocks.append(block)
            if not m.group(3):
                stack.append(block)
            continue
        m = _TF_ATTR.match(line)
        if m:
            name, value = m.group(1), m.group(2)
            end = n
            heredoc = re.match(r"<<-?\s*([A-Z_]+)\s*$", value)
            if heredoc:
                marker = heredoc.group(1)
                body = []
                while i < len(lines) and lines[i].strip() != marker:
                    body.append(lines[i])
                    i += 1
                i += 1
                end = i
                value = "\n".join(body)
            else:
                depth = value.count("{") + value.count("[") + value.count("(") - value.count("}") - value.count("]") - value.count(")")
                body = [value]
                while depth > 0 and i < len(lines):
                    nxt = _strip_tf_comment(lines[i])
                    body.append(nxt)
                    depth += nxt.count("{") + nxt.count("[") + nxt.count("(") - nxt.count("}") - nxt.count("]") - nxt.count(")")
                    i += 1
                end = i if len(body) > 1 else n
                value = "\n".join(body)
            stack[-1].attrs.append(TfAttr(name, value.strip(), n, end))
    _expand_dynamic(root)
    return root.blocks


def _expand_dynamic(root: TfBlock) -> None:
    """``dynamic "ingress" { for_each = ...  content { ... } }`` becomes the ``ingress`` block it
    generates (its ``content`` attributes and blocks, spanning the dynamic block's lines), so
    every rule sees generated blocks as written ones."""
    stack = [root]
    while stack:
        block = stack.pop()
        for i, child in enumerate(block.blocks):
            if child.type == "dynamic" and child.labels:
                content = next((b for b in child.blocks if b.type == "content"), None)
                block.blocks[i] = TfBlock(child.labels[0], [], child.start, child.end,
                                          child.attrs + (content.attrs if content else []),
                                          [b for b in child.blocks if b is not content] + (content.blocks if content else []))
            stack.append(block.blocks[i])


def tf_walk(blocks: list[TfBlock]) -> Iterator[tuple[TfBlock | None, TfBlock]]:
    """(top-level resource, block) for every block, nested ones included (iterative)."""
    for top in blocks:
        stack = [top]
        while stack:
            block = stack.pop()
            yield top, block
            stack.extend(reversed(block.blocks))


def _tf_resources(doc: ConfigDoc, *types: str) -> Iterator[TfBlock]:
    for b in doc.terraform:
        if b.type == "resource" and b.labels and b.labels[0] in types:
            yield b


def _tf_literal(value: str) -> str | None:
    v = value.strip().rstrip(",")
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] == '"' else None


def _tf_attr_is(types: tuple[str, ...], names: tuple[str, ...], bad: Callable[[str], bool]) -> Callable[[ConfigDoc], list[Span]]:
    def check(doc: ConfigDoc) -> list[Span]:
        spans = []
        for top, block in tf_walk(doc.terraform):
            if top.type != "resource" or not top.labels or (types and top.labels[0] not in types):
                continue
            for a in block.attrs:
                if a.name in names and bad(a.value.strip().strip('"').lower()):
                    spans.append((a.start, a.end))
        return spans

    return check


def _port_range_covers(block: TfBlock, ports: tuple[int, ...]) -> bool:
    proto = (_tf_literal(block.attr("protocol").value) if block.attr("protocol") else None) or ""
    if proto in ("-1", "all"):
        return True
    try:
        lo = int((block.attr("from_port") or block.attr("port")).value.strip().strip('"'))
        hi = int((block.attr("to_port") or block.attr("from_port") or block.attr("port")).value.strip().strip('"'))
    except (AttributeError, ValueError):
        return False
    return any(lo <= p <= hi for p in ports) or (lo == 0 and hi in (0, 65535))


def _tf_open_admin(doc: ConfigDoc) -> list[Span]:
    spans = []
    for top, block in tf_walk(doc.terraform):
        if top.type != "resource" or not top.labels:
            continue
        rtype = top.labels[0]
        candidates = []
        if rtype == "aws_security_group" and block.type == "ingress":
            candidates.append(block)
        elif rtype == "aws_security_group_rule" and block is top:
            t = block.attr("type")
            if t and _tf_literal(t.value) == "ingress":
                candidates.append(block)
        elif rtype == "aws_vpc_security_group_ingress_rule" and block is top:
            candidates.append(block)
        for c in candidates:
            cidrs = " ".join(a.value for a in c.attrs if a.name in ("cidr_blocks", "ipv6_cidr_blocks", "cidr_ipv4", "cidr_ipv6"))
            if ("0.0.0.0/0" in cidrs or "::/0" in cidrs) and _port_range_covers(c, (22, 3389, 5985, 5986, 23)):
                spans.append((c.start, c.end))
    return spans


_TF_SECRET_ATTR = re.compile(r"^(password|master_password|admin_password|secret_key|access_key|secret|token|api_key|client_secret|private_key)$")


def _tf_hardcoded_secret(doc: ConfigDoc) -> list[Span]:
    spans = []
    for top, block in tf_walk(doc.terraform):
        if top.type not in ("resource", "provider", "module", "data"):
            continue
        for a in block.attrs:
            literal = _tf_literal(a.value)
            if _TF_SECRET_ATTR.match(a.name) and literal and "${" not in literal and len(literal) >= 4:
                spans.append((a.start, a.end))
    return spans


def _policy_wildcards(text: str) -> tuple[bool, bool]:
    """(an Action of exactly "*", a Resource of exactly "*") in a policy body (JSON or HCL)."""
    action = re.search(r'"?(?:Action|actions)"?\s*[:=]\s*\[?\s*"\*"', text, re.I) is not None
    resource = re.search(r'"?(?:Resource|resources)"?\s*[:=]\s*\[?\s*"\*"', text, re.I) is not None
    return action, resource


def _tf_iam_wildcard(doc: ConfigDoc) -> list[Span]:
    spans = []
    for b in doc.terraform:
        if b.type not in ("resource", "data") or not b.labels:
            continue
        if not (b.labels[0].startswith("aws_iam_") and ("polic" in b.labels[0])):
            continue
        for top, block in tf_walk([b]):
            if block is b:
                for a in block.attrs:
                    if a.name == "policy":
                        act, res = _policy_wildcards(a.value)
                        if act and res:
                            spans.append((a.start, a.end))
            elif block.type == "statement":
                body = " ".join(f'{x.name} = {x.value}' for x in block.attrs)
                act, res = _policy_wildcards(body)
                effect = block.attr("effect")
                if act and res and (effect is None or _tf_literal(effect.value) == "Allow"):
                    spans.append((block.start, block.end))
    return spans


# --------------------------------------------------------------------------------------------
# YAML (Kubernetes, Compose, IAM JSON)
# --------------------------------------------------------------------------------------------
def _compose_yaml(text: str) -> list:
    import yaml

    try:
        return [n for n in yaml.compose_all(text.expandtabs(4), Loader=yaml.SafeLoader) if n is not None]
    except RecursionError as exc:
        raise SecfmError("the configuration is nested too deeply to read (YAML/JSON)") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise SecfmError(f"cannot parse the configuration as YAML/JSON{where}: {problem}") from exc


def _span(key_node, value_node) -> Span:
    start = key_node.start_mark.line + 1
    end_mark = value_node.end_mark
    end = end_mark.line + (1 if end_mark.column > 0 else 0)
    return start, max(start, end)


def y_items(node, path: tuple = ()) -> Iterator[tuple[tuple, object, object]]:
    """(path, key node, value node) for every mapping entry under ``node`` (sequences add the
    index to the path)."""
    import yaml

    stack = [(node, path)]
    while stack:  # iterative: any nesting depth
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for k, v in reversed(node.value):
                stack.append((v, path + (str(k.value),)))
                stack.append((("entry", k, v), path + (str(k.value),)))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in reversed(list(enumerate(node.value))):
                stack.append((v, path + (i,)))
        elif isinstance(node, tuple) and node and node[0] == "entry":
            yield path, node[1], node[2]


def y_get(node, key: str):
    import yaml

    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == key:
                return k, v
    return None


def y_scalar(node) -> str | None:
    import yaml

    return str(node.value) if isinstance(node, yaml.ScalarNode) else None


def y_true(node) -> bool:
    return (y_scalar(node) or "").lower() in ("true", "yes", "on")


def y_seq_scalars(node) -> list[str]:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return [str(v.value) for v in node.value if isinstance(v, yaml.ScalarNode)]
    s = y_scalar(node)
    return [s] if s is not None else []


def _y_key_rule(suffix: tuple[str, ...], bad: Callable[[object], bool]) -> Callable[[ConfigDoc], list[Span]]:
    def check(doc: ConfigDoc) -> list[Span]:
        spans = []
        for root in doc.yaml_nodes:
            for path, k, v in y_items(root):
                if len(path) >= len(suffix) and tuple(str(p) for p in path[-len(suffix):]) == suffix and bad(v):
                    spans.append(_span(k, v))
        return spans

    return check


def _k8s_containers(doc: ConfigDoc) -> Iterator[tuple[object, object]]:
    """(the `containers:` key node, each container mapping node)."""
    import yaml

    for root in doc.yaml_nodes:
        for path, k, v in y_items(root):
            if path and path[-1] in ("containers", "initContainers") and isinstance(v, yaml.SequenceNode):
                for c in v.value:
                    if isinstance(c, yaml.MappingNode):
                        yield k, c


def _k8s_image_latest(doc: ConfigDoc) -> list[Span]:
    spans = []
    for _k, c in _k8s_containers(doc):
        got = y_get(c, "image")
        if got:
            image = y_scalar(got[1]) or ""
            name = image.split("@", 1)[0]
            tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else None
            if "@" not in image and (tag is None or tag == "latest"):
                spans.append(_span(*got))
    return spans


def _k8s_no_limits(doc: ConfigDoc) -> list[Span]:
    spans = []
    for _k, c in _k8s_containers(doc):
        res = y_get(c, "resources")
        if res is None or y_get(res[1], "limits") is None:
            name = y_get(c, "name") or y_get(c, "image")
            if name:
                spans.append((name[0].start_mark.line + 1, name[0].start_mark.line + 1))
    return spans


def _k8s_secret_env(doc: ConfigDoc) -> list[Span]:
    import yaml

    pattern = re.compile(_SECRET_NAME, re.I)
    spans = []
    for _k, c in _k8s_containers(doc):
        env = y_get(c, "env")
        if not env or not isinstance(env[1], yaml.SequenceNode):
            continue
        for item in env[1].value:
            name, value = y_get(item, "name"), y_get(item, "value")
            if name and value and pattern.fullmatch(y_scalar(name[1]) or "") and (y_scalar(value[1]) or "").strip():
                spans.append((name[0].start_mark.line + 1, _span(*value)[1]))
    return spans


def _k8s_dangerous_caps(doc: ConfigDoc) -> list[Span]:
    bad = {"ALL", "SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "SYS_MODULE", "DAC_READ_SEARCH", "BPF"}
    return _y_key_rule(("capabilities", "add"), lambda v: any(c.upper().removeprefix("CAP_") in bad for c in y_seq_scalars(v)))(doc)


def _k8s_root(doc: ConfigDoc) -> list[Span]:
    return (_y_key_rule(("securityContext", "runAsUser"), lambda v: y_scalar(v) == "0")(doc)
            + _y_key_rule(("securityContext", "runAsNonRoot"), lambda v: (y_scalar(v) or "").lower() == "false")(doc))


def _k8s_host_namespace(doc: ConfigDoc) -> list[Span]:
    spans = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        spans += _y_key_rule(("spec", key), y_true)(doc)
    return spans


def _k8s_hostpath(doc: ConfigDoc) -> list[Span]:
    import yaml

    spans = []
    for root in doc.yaml_nodes:
        for path, k, v in y_items(root):
            if path and path[-1] == "hostPath" and len(path) >= 3 and "volumes" in [str(p) for p in path] and isinstance(v, yaml.MappingNode):
                spans.append(_span(k, v))
    return spans


def _doc_kind(root) -> str:
    got = y_get(root, "kind")
    return (y_scalar(got[1]) or "") if got else ""


def _k8s_rbac_wildcard(doc: ConfigDoc) -> list[Span]:
    import yaml

    spans = []
    for root in doc.yaml_nodes:
        if _doc_kind(root) not in ("Role", "ClusterRole"):
            continue
        rules = y_get(root, "rules")
        if not rules or not isinstance(rules[1], yaml.SequenceNode):
            continue
        for rule in rules[1].value:
            verbs, resources = y_get(rule, "verbs"), y_get(rule, "resources")
            if verbs and resources and "*" in y_seq_scalars(verbs[1]) and "*" in y_seq_scalars(resources[1]):
                first = min(verbs[0].start_mark.line, resources[0].start_mark.line) + 1
                last = max(_span(*verbs)[1], _span(*resources)[1])
                spans.append((first, last))
    return spans


def _k8s_cluster_admin_binding(doc: ConfigDoc) -> list[Span]:
    import yaml

    spans = []
    for root in doc.yaml_nodes:
        if _doc_kind(root) != "ClusterRoleBinding":
            continue
        ref = y_get(root, "roleRef")
        subjects = y_get(root, "subjects")
        if not ref or not subjects:
            continue
        name = y_get(ref[1], "name")
        if not name or y_scalar(name[1]) != "cluster-admin" or not isinstance(subjects[1], yaml.SequenceNode):
            continue
        for s in subjects[1].value:
            kind, sname = y_get(s, "kind"), y_get(s, "name")
            kind_v, name_v = (y_scalar(kind[1]) if kind else ""), (y_scalar(sname[1]) if sname else "")
            if kind_v == "ServiceAccount" or name_v in ("system:authenticated", "system:unauthenticated", "system:anonymous"):
                spans.append(_span(*ref))
                break
    return spans


# -- Compose
def _compose_services(doc: ConfigDoc) -> Iterator[tuple[str, object]]:
    import yaml

    for root in doc.yaml_nodes:
        services = y_get(root, "services")
        if services and isinstance(services[1], yaml.MappingNode):
            for k, v in services[1].value:
                yield str(k.value), v


def _compose_key(key: str, bad: Callable[[object], bool]) -> Callable[[ConfigDoc], list[Span]]:
    def check(doc: ConfigDoc) -> list[Span]:
        spans = []
        for _name, svc in _compose_services(doc):
            got = y_get(svc, key)
            if got and bad(got[1]):
                spans.append(_span(*got))
        return spans

    return check


def _compose_seq_item(key: str, pattern: str) -> Callable[[ConfigDoc], list[Span]]:
    import yaml

    compiled = re.compile(pattern, re.I)

    def check(doc: ConfigDoc) -> list[Span]:
        spans = []
        for _name, svc in _compose_services(doc):
            got = y_get(svc, key)
            if got and isinstance(got[1], yaml.SequenceNode):
                for item in got[1].value:
                    text = y_scalar(item) or " ".join(str(v.value) for _, v in getattr(item, "value", []) if hasattr(v, "value") and isinstance(v.value, str))
                    if compiled.search(text):
                        ln = item.start_mark.line + 1
                        spans.append((ln, max(ln, item.end_mark.line + (1 if item.end_mark.column > 0 else 0))))
        return spans

    return check


def _compose_secret_env(doc: ConfigDoc) -> list[Span]:
    import yaml

    name_re = re.compile(_SECRET_NAME, re.I)
    spans = []
    for _name, svc in _compose_services(doc):
        env = y_get(svc, "environment")
        if not env:
            continue
        node = env[1]
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                value = y_scalar(v) or ""
                if name_re.fullmatch(str(k.value)) and value and not value.startswith("$"):
                    spans.append(_span(k, v))
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                text = y_scalar(item) or ""
                key, _, value = text.partition("=")
                if name_re.fullmatch(key.strip()) and value.strip() and not value.strip().startswith("$"):
                    ln = item.start_mark.line + 1
                    spans.append((ln, ln))
    return spans


# -- IAM policies
def _iam_statements(doc: ConfigDoc) -> Iterator[tuple[object, object]]:
    """(the Statement key node, each statement mapping node)."""
    import yaml

    for root in doc.yaml_nodes:
        targets = [root]
        policy = y_get(root, "PolicyDocument") or y_get(root, "policy")
        if policy:
            targets.append(policy[1])
        for t in targets:
            st = y_get(t, "Statement")
            if not st:
                continue
            if isinstance(st[1], yaml.SequenceNode):
                for s in st[1].value:
                    if isinstance(s, yaml.MappingNode):
                        yield st[0], s
            elif isinstance(st[1], yaml.MappingNode):
                yield st[0], st[1]


def _stmt_span(stmt) -> Span:
    start = stmt.start_mark.line + 1
    end = stmt.end_mark.line + (1 if stmt.end_mark.column > 0 else 0)
    return start, max(start, end)


def _stmt(stmt, key: str) -> list[str]:
    got = y_get(stmt, key)
    return y_seq_scalars(got[1]) if got else []


def _allow(stmt) -> bool:
    return (_stmt(stmt, "Effect") or ["Allow"])[0] == "Allow"


def _iam_rule(test: Callable[[object], bool]) -> Callable[[ConfigDoc], list[Span]]:
    return lambda doc: [_stmt_span(s) for _k, s in _iam_statements(doc) if _allow(s) and test(s)]


_IAM_SENSITIVE = {"iam:createaccesskey", "iam:attachuserpolicy", "iam:attachrolepolicy", "iam:putuserpolicy", "iam:putrolepolicy",
                  "iam:createpolicyversion", "iam:updateassumerolepolicy", "iam:createloginprofile", "iam:updateloginprofile",
                  "iam:addusertogroup", "sts:assumerole", "lambda:updatefunctioncode"}


def _principal_public(stmt) -> bool:
    import yaml

    got = y_get(stmt, "Principal")
    if not got or y_get(stmt, "Condition"):
        return False
    node = got[1]
    if y_scalar(node) == "*":
        return True
    if isinstance(node, yaml.MappingNode):
        return any("*" in y_seq_scalars(v) for _k, v in node.value)
    return False


# --------------------------------------------------------------------------------------------
# rules
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    id: str
    kind: str
    title: str
    severity: str
    why: str
    fix: str
    references: tuple[str, ...]
    check: Callable[[ConfigDoc], list[Span]]
    bad: str
    good: str


def R(id, kind, title, severity, why, fix, refs, check, bad, good) -> Rule:  # noqa: N802
    return Rule(id, kind, title, severity, why, fix, tuple(refs.split()), check, bad, good)


RULES: tuple[Rule, ...] = (
    # ---- sshd ------------------------------------------------------------------------------
    R("SSHD-ROOT-LOGIN", "sshd", "Root login over SSH allowed", "high",
      "A direct root login gives an attacker who guesses or steals one password full control and leaves no named user in the logs.",
      "Set `PermitRootLogin no` (or `prohibit-password` if key-based root access is required) and use named accounts with sudo.",
      "CWE-250 M1026", sshd_rule("PermitRootLogin", lambda v: v.lower() == "yes"),
      "Port 22\nPermitRootLogin yes\n", "Port 22\nPermitRootLogin no\n"),
    R("SSHD-PASSWORD-AUTH", "sshd", "SSH password authentication enabled", "medium",
      "Passwords can be guessed or sprayed; keys or certificates resist brute force.",
      "Set `PasswordAuthentication no` and use public-key (or certificate) authentication, with MFA where possible.",
      "CWE-309 M1032", sshd_rule("PasswordAuthentication", lambda v: v.lower() == "yes"),
      "PasswordAuthentication yes\n", "PasswordAuthentication no\n"),
    R("SSHD-EMPTY-PASSWORDS", "sshd", "Empty passwords accepted", "critical",
      "Accounts without a password can log in remotely with no credential at all.",
      "Set `PermitEmptyPasswords no`.", "CWE-258 M1027", sshd_rule("PermitEmptyPasswords", lambda v: v.lower() == "yes"),
      "PermitEmptyPasswords yes\n", "PermitEmptyPasswords no\n"),
    R("SSHD-PROTOCOL-1", "sshd", "SSH protocol version 1 enabled", "high",
      "SSH-1 has known cryptographic weaknesses that allow session hijacking and decryption.",
      "Remove `Protocol 1`; only SSH-2 should be offered.", "CWE-327 M1041", sshd_rule("Protocol", lambda v: "1" in v.replace(" ", "").split(",")),
      "Protocol 2,1\n", "Protocol 2\n"),
    R("SSHD-WEAK-CRYPTO", "sshd", "Weak SSH ciphers, MACs or key exchange", "medium",
      "CBC-mode ciphers, RC4, MD5/SHA-1 MACs and group1 key exchange are broken or deprecated and weaken the session's confidentiality.",
      "Offer only modern algorithms (e.g. chacha20-poly1305, aes256-gcm; hmac-sha2-512-etm; curve25519-sha256).",
      "CWE-327 M1041", lambda doc: [(n, n) for n, k, v in sshd_directives(doc) if k in ("ciphers", "macs", "kexalgorithms", "hostkeyalgorithms") and _WEAK_SSH.search(v.replace(" ", ""))],
      "Ciphers aes128-cbc,3des-cbc\n", "Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com\n"),
    R("SSHD-X11-FORWARDING", "sshd", "X11 forwarding enabled", "low",
      "X11 forwarding exposes the client's display to a compromised server (keystroke capture, screen access).",
      "Set `X11Forwarding no` unless a user needs it.", "M1042", sshd_rule("X11Forwarding", lambda v: v.lower() == "yes"),
      "X11Forwarding yes\n", "X11Forwarding no\n"),
    R("SSHD-MAX-AUTH-TRIES", "sshd", "Many authentication attempts per connection", "low",
      "A high MaxAuthTries lets a client try many passwords per connection, which speeds up brute force.",
      "Set `MaxAuthTries 3` (or at most 6).", "CWE-307 M1036",
      sshd_rule("MaxAuthTries", lambda v: v.isdigit() and int(v) > 6), "MaxAuthTries 20\n", "MaxAuthTries 3\n"),
    R("SSHD-USER-ENVIRONMENT", "sshd", "Users may set environment variables for sshd", "medium",
      "PermitUserEnvironment lets users pass variables such as LD_PRELOAD that can bypass restrictions.",
      "Set `PermitUserEnvironment no`.", "CWE-15 M1042", sshd_rule("PermitUserEnvironment", lambda v: v.lower() == "yes"),
      "PermitUserEnvironment yes\n", "PermitUserEnvironment no\n"),
    R("SSHD-HOSTBASED-AUTH", "sshd", "Host-based or rhosts authentication enabled", "medium",
      "Trusting a host's identity instead of the user's lets one compromised host log in as any user elsewhere.",
      "Set `HostbasedAuthentication no` and `IgnoreRhosts yes`.", "CWE-287 M1042",
      lambda doc: [(n, n) for n, k, v in sshd_directives(doc) if (k == "hostbasedauthentication" and v.lower() == "yes") or (k == "ignorerhosts" and v.lower() == "no")],
      "HostbasedAuthentication yes\nIgnoreRhosts no\n", "HostbasedAuthentication no\nIgnoreRhosts yes\n"),
    # ---- nginx -----------------------------------------------------------------------------
    R("NGINX-SERVER-TOKENS", "nginx", "nginx version disclosed", "low",
      "The version in headers and error pages tells an attacker which exploits to try.",
      "Set `server_tokens off;` in the http block.", "CWE-200",
      _nginx_directive("server_tokens", lambda a: bool(a) and a[0].lower() in ("on", "build")),
      "http {\n  server_tokens on;\n}\n", "http {\n  server_tokens off;\n}\n"),
    R("NGINX-AUTOINDEX", "nginx", "Directory listing enabled", "medium",
      "Directory listings expose file names (backups, keys, configs) that were never meant to be linked.",
      "Set `autoindex off;` (the default) and serve an index page.", "CWE-548 M1022",
      _nginx_directive("autoindex", lambda a: bool(a) and a[0].lower() == "on"),
      "server {\n  location /files/ {\n    autoindex on;\n  }\n}\n", "server {\n  location /files/ {\n    autoindex off;\n  }\n}\n"),
    R("NGINX-WEAK-TLS", "nginx", "Obsolete TLS/SSL protocol versions enabled", "high",
      "SSLv3, TLS 1.0 and TLS 1.1 have known attacks (POODLE, BEAST) and are deprecated.",
      "Use `ssl_protocols TLSv1.2 TLSv1.3;`.", "CWE-327 M1041",
      _nginx_directive("ssl_protocols", lambda a: any(x.lower() in _WEAK_TLS for x in a)),
      "server {\n  ssl_protocols TLSv1 TLSv1.1 TLSv1.2;\n}\n", "server {\n  ssl_protocols TLSv1.2 TLSv1.3;\n}\n"),
    R("NGINX-WEAK-CIPHERS", "nginx", "Weak TLS cipher suites allowed", "medium",
      "RC4, DES/3DES, export, NULL and anonymous suites can be broken or allow man-in-the-middle attacks.",
      "Use a modern cipher list (e.g. the Mozilla intermediate profile) and exclude the weak suites explicitly.",
      "CWE-327 M1041",
      _nginx_directive("ssl_ciphers", lambda a: bool(a) and any(re.search(r"(^|:)(?!!)[A-Z0-9-]*(RC4|DES|EXPORT|NULL|aNULL|eNULL|MD5)\b", x) for x in a)),
      "server {\n  ssl_ciphers RC4-SHA:DES-CBC3-SHA:HIGH;\n}\n", "server {\n  ssl_ciphers HIGH:!aNULL:!MD5:!RC4;\n}\n"),
    R("NGINX-ALIAS-TRAVERSAL", "nginx", "alias with a location missing its trailing slash (path traversal)", "high",
      "`location /static { alias /var/www/static/; }` maps /static../ to /var/www/, letting a client read files outside the folder.",
      "End the location with a slash when the alias does (`location /static/ { alias /var/www/static/; }`).",
      "CWE-22 M1022", _nginx_alias_traversal,
      "server {\n  location /static {\n    alias /var/www/static/;\n  }\n}\n",
      "server {\n  location /static/ {\n    alias /var/www/static/;\n  }\n}\n"),
    R("NGINX-PLAIN-HTTP", "nginx", "Content served over plain HTTP without a redirect to HTTPS", "medium",
      "Traffic over port 80 can be read and altered on the network (credentials, session cookies).",
      "Serve the site over TLS and make the port-80 server only `return 301 https://$host$request_uri;`.",
      "CWE-319 M1041", _nginx_plain_http,
      "server {\n  listen 80;\n  location / {\n    proxy_pass http://app:8080;\n  }\n}\n",
      "server {\n  listen 80;\n  return 301 https://$host$request_uri;\n}\n"),
    R("NGINX-UNLIMITED-BODY", "nginx", "Request body size unlimited", "low",
      "`client_max_body_size 0` lets a client send arbitrarily large bodies (resource exhaustion).",
      "Set a bound that fits the application, e.g. `client_max_body_size 10m;`.", "CWE-770",
      _nginx_directive("client_max_body_size", lambda a: bool(a) and a[0] == "0"),
      "http {\n  client_max_body_size 0;\n}\n", "http {\n  client_max_body_size 10m;\n}\n"),
    # ---- Dockerfile ------------------------------------------------------------------------
    R("DOCKER-ROOT-USER", "dockerfile", "Container runs as root", "medium",
      "Without a USER instruction (or with USER root) the process runs as root; a breakout or a bug gets root in the container.",
      "Create an unprivileged user and add `USER app` (a non-root user) before the CMD/ENTRYPOINT.", "CWE-250 M1026",
      _docker_no_user, "FROM python:3.12-slim\nCOPY app.py /app/\nCMD [\"python\", \"/app/app.py\"]\n",
      "FROM python:3.12-slim\nRUN useradd -r app\nCOPY app.py /app/\nUSER app\nCMD [\"python\", \"/app/app.py\"]\n"),
    R("DOCKER-LATEST-TAG", "dockerfile", "Base image not pinned (latest or no tag)", "low",
      "An unpinned base image changes under you: builds are not reproducible and a compromised upstream tag flows in silently.",
      "Pin the base image to a version tag, ideally with its digest (`FROM python:3.12-slim@sha256:...`).", "CWE-1357 M1045",
      _docker_latest, "FROM ubuntu:latest\nUSER nobody\n", "FROM ubuntu:24.04\nUSER nobody\n"),
    R("DOCKER-SECRET-IN-ENV", "dockerfile", "Secret baked into the image (ENV/ARG)", "high",
      "ENV and ARG values are stored in the image layers and history; anyone who can pull the image can read them.",
      "Pass secrets at run time (secret mounts, `docker build --secret`, an orchestrator secret store).", "CWE-798 M1027",
      _docker_secret, "FROM alpine:3.20\nENV DB_PASSWORD=hunter2\nUSER nobody\n", "FROM alpine:3.20\nENV DB_HOST=db\nUSER nobody\n"),
    R("DOCKER-ADD-URL", "dockerfile", "ADD from a remote URL", "medium",
      "ADD downloads without verifying integrity; a changed or hijacked URL puts arbitrary content in the image.",
      "Download with curl and verify a checksum in a RUN step, or COPY a vetted file.", "CWE-494 M1045",
      _docker_instr(("ADD",), r"^(--\S+\s+)*https?://"),
      "FROM alpine:3.20\nADD https://example.com/tool.tar.gz /opt/\nUSER nobody\n", "FROM alpine:3.20\nCOPY tool.tar.gz /opt/\nUSER nobody\n"),
    R("DOCKER-CURL-PIPE-SHELL", "dockerfile", "Remote script piped into a shell", "high",
      "`curl ... | sh` runs whatever the server returns, unverified, at build time.",
      "Download the script, verify its checksum or signature, then run it.", "CWE-494 M1045",
      _docker_instr(("RUN",), r"(curl|wget)\s[^|]*\|\s*(sudo\s+)?(ba)?sh\b"),
      "FROM alpine:3.20\nRUN curl -fsSL https://get.example.com | sh\nUSER nobody\n",
      "FROM alpine:3.20\nRUN curl -fsSLo /tmp/i.sh https://get.example.com && echo \"abc123  /tmp/i.sh\" | sha256sum -c && sh /tmp/i.sh\nUSER nobody\n"),
    R("DOCKER-CHMOD-777", "dockerfile", "World-writable permissions", "medium",
      "chmod 777 lets any process in the container rewrite the files, including code that runs later.",
      "Grant only what is needed (e.g. `chmod 755` for executables, `chown app` for data).", "CWE-732 M1022",
      _docker_instr(("RUN",), r"chmod\s+(-R\s+)?(0?777|a\+rwx|o\+w)"),
      "FROM alpine:3.20\nRUN chmod -R 777 /app\nUSER nobody\n", "FROM alpine:3.20\nRUN chmod -R 755 /app\nUSER nobody\n"),
    R("DOCKER-SSH-EXPOSED", "dockerfile", "SSH port exposed from the container", "low",
      "Running sshd inside a container adds a remote login service that is rarely patched or monitored.",
      "Remove sshd and `EXPOSE 22`; use `docker exec` or the orchestrator for access.", "M1042",
      _docker_instr(("EXPOSE",), r"(^|\s)22(/tcp)?(\s|$)"),
      "FROM alpine:3.20\nEXPOSE 22 8080\nUSER nobody\n", "FROM alpine:3.20\nEXPOSE 8080\nUSER nobody\n"),
    # ---- Kubernetes ------------------------------------------------------------------------
    R("K8S-PRIVILEGED", "kubernetes", "Privileged container", "critical",
      "A privileged container has all capabilities and the host's devices: escaping to the node is trivial.",
      "Remove `privileged: true`; grant only the specific capabilities the workload needs.", "CWE-250 M1048",
      _y_key_rule(("securityContext", "privileged"), y_true),
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: nginx:1.27\n    securityContext:\n      privileged: true\n",
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: nginx:1.27\n    securityContext:\n      privileged: false\n"),
    R("K8S-HOST-NAMESPACE", "kubernetes", "Pod shares the host's network, PID or IPC namespace", "high",
      "hostNetwork/hostPID/hostIPC let the pod see and reach the node's processes and interfaces.",
      "Remove hostNetwork, hostPID and hostIPC from the pod spec.", "CWE-668 M1048", _k8s_host_namespace,
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  hostPID: true\n  containers:\n  - name: c\n    image: busybox:1.36\n",
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  hostPID: false\n  containers:\n  - name: c\n    image: busybox:1.36\n"),
    R("K8S-RUN-AS-ROOT", "kubernetes", "Container configured to run as root", "medium",
      "Running as UID 0 turns any container escape or file-permission bug into root access.",
      "Set `runAsNonRoot: true` and a non-zero `runAsUser`.", "CWE-250 M1026", _k8s_root,
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: app:1.0\n    securityContext:\n      runAsUser: 0\n",
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: app:1.0\n    securityContext:\n      runAsUser: 10001\n      runAsNonRoot: true\n"),
    R("K8S-PRIVILEGE-ESCALATION", "kubernetes", "Privilege escalation allowed", "medium",
      "allowPrivilegeEscalation lets a process gain more privileges than its parent (setuid binaries).",
      "Set `allowPrivilegeEscalation: false`.", "CWE-269 M1048",
      _y_key_rule(("securityContext", "allowPrivilegeEscalation"), y_true),
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: app:1.0\n    securityContext:\n      allowPrivilegeEscalation: true\n",
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: app:1.0\n    securityContext:\n      allowPrivilegeEscalation: false\n"),
    R("K8S-DANGEROUS-CAPABILITIES", "kubernetes", "Dangerous Linux capabilities added", "high",
      "SYS_ADMIN, NET_ADMIN, SYS_PTRACE, SYS_MODULE or ALL give near-root power over the node.",
      "Drop ALL capabilities and add back only narrow ones the workload needs (e.g. NET_BIND_SERVICE).", "CWE-250 M1048",
      _k8s_dangerous_caps,
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: app:1.0\n    securityContext:\n      capabilities:\n        add: [\"SYS_ADMIN\"]\n",
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: app:1.0\n    securityContext:\n      capabilities:\n        drop: [\"ALL\"]\n        add: [\"NET_BIND_SERVICE\"]\n"),
    R("K8S-HOSTPATH", "kubernetes", "hostPath volume mounted", "high",
      "A hostPath volume exposes the node's file system (the container runtime socket, /etc, kubelet credentials).",
      "Use a PersistentVolumeClaim, configMap, secret or emptyDir instead of hostPath.", "CWE-668 M1048", _k8s_hostpath,
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: app:1.0\n  volumes:\n  - name: sock\n    hostPath:\n      path: /var/run/docker.sock\n",
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: app:1.0\n  volumes:\n  - name: data\n    emptyDir: {}\n"),
    R("K8S-LATEST-TAG", "kubernetes", "Container image not pinned (latest or no tag)", "low",
      "An unpinned image changes on every pull: rollbacks are unreliable and a compromised tag is deployed silently.",
      "Pin images to a version tag and digest.", "CWE-1357 M1045", _k8s_image_latest,
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: nginx:latest\n",
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: nginx:1.27.2\n"),
    R("K8S-NO-LIMITS", "kubernetes", "Container without resource limits", "low",
      "A container without CPU/memory limits can starve the node (denial of service, noisy neighbour).",
      "Set `resources.limits` (and requests) for every container.", "CWE-770", _k8s_no_limits,
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: app:1.0\n",
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: app:1.0\n    resources:\n      limits:\n        cpu: 500m\n        memory: 256Mi\n"),
    R("K8S-SECRET-IN-ENV", "kubernetes", "Secret value written in the manifest", "high",
      "A literal password or token in a manifest ends up in version control and in `kubectl get -o yaml` output.",
      "Store it in a Secret (or an external secret store) and use `valueFrom.secretKeyRef`.", "CWE-798 M1027", _k8s_secret_env,
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: app:1.0\n    env:\n    - name: DB_PASSWORD\n      value: hunter2\n",
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: app:1.0\n    env:\n    - name: DB_PASSWORD\n      valueFrom:\n        secretKeyRef:\n          name: db\n          key: password\n"),
    R("K8S-RBAC-WILDCARD", "kubernetes", "RBAC rule grants every verb on every resource", "high",
      "A wildcard role is cluster-admin in all but name: whoever holds it can read secrets and change anything.",
      "List the specific resources and verbs the subject needs.", "CWE-269 M1026", _k8s_rbac_wildcard,
      "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: r\nrules:\n- apiGroups: [\"*\"]\n  resources: [\"*\"]\n  verbs: [\"*\"]\n",
      "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: r\nrules:\n- apiGroups: [\"\"]\n  resources: [\"pods\"]\n  verbs: [\"get\", \"list\"]\n"),
    R("K8S-CLUSTER-ADMIN-BINDING", "kubernetes", "cluster-admin bound to a service account or to all users", "high",
      "Binding cluster-admin to a service account (or system:authenticated) hands full cluster control to any pod or user that gets that identity.",
      "Bind a narrowly scoped Role instead; keep cluster-admin for named administrators.", "CWE-269 M1026",
      _k8s_cluster_admin_binding,
      "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: b\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n- kind: ServiceAccount\n  name: default\n  namespace: default\n",
      "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: b\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: view\nsubjects:\n- kind: ServiceAccount\n  name: default\n  namespace: default\n"),
    # ---- docker-compose --------------------------------------------------------------------
    R("COMPOSE-PRIVILEGED", "docker-compose", "Privileged service", "critical",
      "A privileged container can take over the Docker host.", "Remove `privileged: true`; add only needed capabilities.",
      "CWE-250 M1048", _compose_key("privileged", y_true),
      "services:\n  app:\n    image: app:1.0\n    privileged: true\n", "services:\n  app:\n    image: app:1.0\n    privileged: false\n"),
    R("COMPOSE-DOCKER-SOCKET", "docker-compose", "Docker socket mounted into a service", "high",
      "Access to /var/run/docker.sock is root on the host: the service can start privileged containers.",
      "Do not mount the socket; if a tool needs the API, use a filtering proxy with read-only access.", "CWE-668 M1048",
      _compose_seq_item("volumes", r"docker\.sock"),
      "services:\n  app:\n    image: app:1.0\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n",
      "services:\n  app:\n    image: app:1.0\n    volumes:\n      - data:/data\nvolumes:\n  data: {}\n"),
    R("COMPOSE-HOST-NETWORK", "docker-compose", "Service uses the host network", "medium",
      "network_mode: host removes network isolation: the service binds and reaches everything the host can.",
      "Use a bridge network and publish only the ports needed.", "CWE-668 M1030",
      _compose_key("network_mode", lambda v: (y_scalar(v) or "") == "host"),
      "services:\n  app:\n    image: app:1.0\n    network_mode: host\n", "services:\n  app:\n    image: app:1.0\n    ports:\n      - \"127.0.0.1:8080:8080\"\n"),
    R("COMPOSE-SECRET-IN-ENV", "docker-compose", "Secret value written in the compose file", "high",
      "Literal passwords in a compose file end up in version control and in `docker inspect` output.",
      "Use compose secrets or an env file kept out of version control (`${DB_PASSWORD}`).", "CWE-798 M1027",
      _compose_secret_env,
      "services:\n  db:\n    image: postgres:16\n    environment:\n      POSTGRES_PASSWORD: hunter2\n",
      "services:\n  db:\n    image: postgres:16\n    environment:\n      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}\n"),
    R("COMPOSE-DB-PORT-EXPOSED", "docker-compose", "Database port published on all interfaces", "medium",
      "Publishing a database port without a bind address exposes it to every network the host is on.",
      "Bind to 127.0.0.1 (`127.0.0.1:5432:5432`) or keep the database on an internal network only.", "CWE-668 M1035",
      _compose_seq_item("ports", r"^(0\.0\.0\.0:)?(3306|5432|6379|27017|9200|11211|5984|1433)(:\d+)?$"),
      "services:\n  db:\n    image: postgres:16\n    ports:\n      - \"5432:5432\"\n",
      "services:\n  db:\n    image: postgres:16\n    ports:\n      - \"127.0.0.1:5432:5432\"\n"),
    # ---- AWS IAM policies ------------------------------------------------------------------
    R("IAM-ADMIN-WILDCARD", "aws-iam", "Policy allows every action on every resource", "critical",
      "Action \"*\" on Resource \"*\" is full administrator access: one leaked credential controls the account.",
      "Grant the specific actions and resource ARNs the principal needs (least privilege).", "CWE-269 M1026",
      _iam_rule(lambda s: "*" in _stmt(s, "Action") and "*" in _stmt(s, "Resource")),
      '{\n  "Version": "2012-10-17",\n  "Statement": [\n    {"Effect": "Allow", "Action": "*", "Resource": "*"}\n  ]\n}\n',
      '{\n  "Version": "2012-10-17",\n  "Statement": [\n    {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::reports/*"}\n  ]\n}\n'),
    R("IAM-SERVICE-WILDCARD", "aws-iam", "Policy allows all actions of a service on every resource", "high",
      "A service wildcard such as iam:* or s3:* on \"*\" grants far more than a workload needs (iam:* is account takeover).",
      "List the specific actions and scope Resource to the ARNs involved.", "CWE-269 M1026",
      _iam_rule(lambda s: "*" not in _stmt(s, "Action") and any(a.endswith(":*") for a in _stmt(s, "Action")) and "*" in _stmt(s, "Resource")),
      '{\n  "Version": "2012-10-17",\n  "Statement": [\n    {"Effect": "Allow", "Action": "iam:*", "Resource": "*"}\n  ]\n}\n',
      '{\n  "Version": "2012-10-17",\n  "Statement": [\n    {"Effect": "Allow", "Action": ["iam:GetUser"], "Resource": "arn:aws:iam::111122223333:user/app"}\n  ]\n}\n'),
    R("IAM-PUBLIC-PRINCIPAL", "aws-iam", "Resource policy open to any principal", "high",
      "Principal \"*\" without a condition lets anyone on the internet (any AWS account) use the resource.",
      "Name the accounts or roles allowed, or add conditions (aws:SourceVpce, aws:PrincipalOrgID).", "CWE-284 M1022",
      _iam_rule(_principal_public),
      '{\n  "Version": "2012-10-17",\n  "Statement": [\n    {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}\n  ]\n}\n',
      '{\n  "Version": "2012-10-17",\n  "Statement": [\n    {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}\n  ]\n}\n'),
    R("IAM-NOTACTION-ALLOW", "aws-iam", "Allow with NotAction", "medium",
      "Allow + NotAction grants every action except those listed, including any new ones AWS adds.",
      "Use an explicit Action list instead.", "CWE-269 M1026",
      _iam_rule(lambda s: y_get(s, "NotAction") is not None),
      '{\n  "Version": "2012-10-17",\n  "Statement": [\n    {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}\n  ]\n}\n',
      '{\n  "Version": "2012-10-17",\n  "Statement": [\n    {"Effect": "Deny", "NotAction": "iam:*", "Resource": "*"}\n  ]\n}\n'),
    R("IAM-PASSROLE-ANY", "aws-iam", "iam:PassRole on any role", "high",
      "PassRole on \"*\" lets the principal hand any role (including admin roles) to a service it controls: privilege escalation.",
      "Restrict Resource to the specific role ARNs, with an iam:PassedToService condition.", "CWE-269 M1026",
      _iam_rule(lambda s: any(a.lower() in ("iam:passrole", "iam:pass*") for a in _stmt(s, "Action")) and "*" in _stmt(s, "Resource")),
      '{\n  "Version": "2012-10-17",\n  "Statement": [\n    {"Effect": "Allow", "Action": ["iam:PassRole", "ec2:RunInstances"], "Resource": "*"}\n  ]\n}\n',
      '{\n  "Version": "2012-10-17",\n  "Statement": [\n    {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::111122223333:role/app-ec2"}\n  ]\n}\n'),
    R("IAM-SENSITIVE-ANY", "aws-iam", "Privilege-changing IAM actions on any resource", "medium",
      "Actions such as CreateAccessKey, AttachUserPolicy or UpdateAssumeRolePolicy on \"*\" allow escalation to other identities.",
      "Scope these actions to the principal's own ARN (e.g. ${aws:username}) or remove them.", "CWE-269 M1026",
      _iam_rule(lambda s: any(a.lower() in _IAM_SENSITIVE for a in _stmt(s, "Action")) and "*" in _stmt(s, "Resource")),
      '{\n  "Version": "2012-10-17",\n  "Statement": [\n    {"Effect": "Allow", "Action": ["iam:CreateAccessKey"], "Resource": "*"}\n  ]\n}\n',
      '{\n  "Version": "2012-10-17",\n  "Statement": [\n    {"Effect": "Allow", "Action": ["iam:CreateAccessKey"], "Resource": "arn:aws:iam::111122223333:user/${aws:username}"}\n  ]\n}\n'),
    # ---- Terraform -------------------------------------------------------------------------
    R("TF-SG-ADMIN-OPEN", "terraform", "Admin port open to the internet", "high",
      "SSH/RDP/WinRM reachable from 0.0.0.0/0 invites brute force and exploitation of the login service.",
      "Restrict the CIDR to known addresses, or use a bastion / SSM Session Manager.", "CWE-284 M1037", _tf_open_admin,
      'resource "aws_security_group" "web" {\n  ingress {\n    from_port   = 22\n    to_port     = 22\n    protocol    = "tcp"\n    cidr_blocks = ["0.0.0.0/0"]\n  }\n}\n',
      'resource "aws_security_group" "web" {\n  ingress {\n    from_port   = 22\n    to_port     = 22\n    protocol    = "tcp"\n    cidr_blocks = ["10.0.0.0/8"]\n  }\n}\n'),
    R("TF-S3-PUBLIC-ACL", "terraform", "S3 bucket ACL grants public access", "high",
      "A public-read(-write) ACL exposes every object in the bucket to anyone.",
      "Use `acl = \"private\"` (or no ACL with BucketOwnerEnforced) and a public access block.", "CWE-732 M1022",
      _tf_attr_is(("aws_s3_bucket", "aws_s3_bucket_acl"), ("acl",), lambda v: v in ("public-read", "public-read-write", "authenticated-read")),
      'resource "aws_s3_bucket_acl" "logs" {\n  bucket = aws_s3_bucket.logs.id\n  acl    = "public-read"\n}\n',
      'resource "aws_s3_bucket_acl" "logs" {\n  bucket = aws_s3_bucket.logs.id\n  acl    = "private"\n}\n'),
    R("TF-S3-PUBLIC-BLOCK-OFF", "terraform", "S3 public access block disabled", "medium",
      "Turning off the public access block lets a later ACL or policy change make the bucket public.",
      "Set all four block_public_* / ignore_public_acls / restrict_public_buckets settings to true.", "CWE-732 M1022",
      _tf_attr_is(("aws_s3_bucket_public_access_block", "aws_s3_account_public_access_block"),
                  ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"), lambda v: v == "false"),
      'resource "aws_s3_bucket_public_access_block" "b" {\n  bucket            = aws_s3_bucket.b.id\n  block_public_acls = false\n}\n',
      'resource "aws_s3_bucket_public_access_block" "b" {\n  bucket            = aws_s3_bucket.b.id\n  block_public_acls = true\n}\n'),
    R("TF-STORAGE-UNENCRYPTED", "terraform", "Storage encryption disabled", "medium",
      "Unencrypted volumes, databases and snapshots expose data to anyone who gets the media or a shared snapshot.",
      "Set `storage_encrypted = true` / `encrypted = true` (with a KMS key).", "CWE-311 M1041",
      _tf_attr_is((), ("storage_encrypted", "encrypted"), lambda v: v == "false"),
      'resource "aws_db_instance" "db" {\n  engine            = "postgres"\n  storage_encrypted = false\n}\n',
      'resource "aws_db_instance" "db" {\n  engine            = "postgres"\n  storage_encrypted = true\n}\n'),
    R("TF-DB-PUBLIC", "terraform", "Database publicly accessible", "high",
      "A publicly accessible database endpoint is reachable from the internet and exposed to credential attacks.",
      "Set `publicly_accessible = false` and reach the database from inside the VPC.", "CWE-284 M1035",
      _tf_attr_is(("aws_db_instance", "aws_rds_cluster_instance", "aws_redshift_cluster"), ("publicly_accessible",), lambda v: v == "true"),
      'resource "aws_db_instance" "db" {\n  engine              = "mysql"\n  publicly_accessible = true\n}\n',
      'resource "aws_db_instance" "db" {\n  engine              = "mysql"\n  publicly_accessible = false\n}\n'),
    R("TF-HARDCODED-SECRET", "terraform", "Hard-coded secret in Terraform", "high",
      "A literal password or key in code lands in version control and in the state file in clear text.",
      "Use a variable marked sensitive, a secrets manager data source, or `manage_master_user_password`.", "CWE-798 M1027",
      _tf_hardcoded_secret,
      'resource "aws_db_instance" "db" {\n  engine   = "mysql"\n  username = "admin"\n  password = "Sup3rS3cret!"\n}\n',
      'resource "aws_db_instance" "db" {\n  engine   = "mysql"\n  username = "admin"\n  password = var.db_password\n}\n'),
    R("TF-IAM-WILDCARD", "terraform", "IAM policy allows every action on every resource", "high",
      "Action \"*\" on Resource \"*\" is administrator access for whoever gets the role or user.",
      "List the specific actions and resource ARNs (least privilege).", "CWE-269 M1026", _tf_iam_wildcard,
      'resource "aws_iam_policy" "p" {\n  name   = "p"\n  policy = jsonencode({\n    Version = "2012-10-17"\n    Statement = [{\n      Effect   = "Allow"\n      "Action" = "*"\n      "Resource" = "*"\n    }]\n  })\n}\n',
      'resource "aws_iam_policy" "p" {\n  name   = "p"\n  policy = jsonencode({\n    Version = "2012-10-17"\n    Statement = [{\n      Effect   = "Allow"\n      "Action" = "s3:GetObject"\n      "Resource" = "arn:aws:s3:::reports/*"\n    }]\n  })\n}\n'),
    R("TF-CLOUDTRAIL-DISABLED", "terraform", "CloudTrail logging disabled", "high",
      "Without CloudTrail there is no record of API activity to detect or investigate an intrusion.",
      "Set `enable_logging = true` (and a multi-region trail).", "CWE-778 M1047",
      _tf_attr_is(("aws_cloudtrail",), ("enable_logging",), lambda v: v == "false"),
      'resource "aws_cloudtrail" "t" {\n  name           = "t"\n  s3_bucket_name = "logs"\n  enable_logging = false\n}\n',
      'resource "aws_cloudtrail" "t" {\n  name           = "t"\n  s3_bucket_name = "logs"\n  enable_logging = true\n}\n'),
    R("TF-IMDSV1", "terraform", "Instance metadata service v1 allowed", "medium",
      "IMDSv1 answers unauthenticated GETs, so an SSRF in the workload can steal the instance role's credentials.",
      "Set `metadata_options { http_tokens = \"required\" }`.", "CWE-918 M1042",
      _tf_attr_is(("aws_instance", "aws_launch_template", "aws_launch_configuration"), ("http_tokens",), lambda v: v == "optional"),
      'resource "aws_instance" "i" {\n  ami = "ami-123"\n  metadata_options {\n    http_tokens = "optional"\n  }\n}\n',
      'resource "aws_instance" "i" {\n  ami = "ami-123"\n  metadata_options {\n    http_tokens = "required"\n  }\n}\n'),
    R("TF-KMS-NO-ROTATION", "terraform", "KMS key rotation disabled", "low",
      "Without rotation a compromised key material stays valid indefinitely.",
      "Set `enable_key_rotation = true`.", "CWE-326 M1041",
      _tf_attr_is(("aws_kms_key",), ("enable_key_rotation",), lambda v: v == "false"),
      'resource "aws_kms_key" "k" {\n  description         = "k"\n  enable_key_rotation = false\n}\n',
      'resource "aws_kms_key" "k" {\n  description         = "k"\n  enable_key_rotation = true\n}\n'),
)

RULES_BY_ID = {r.id: r for r in RULES}
assert len(RULES_BY_ID) == len(RULES), "duplicate rule id"


def rules_for(kind: str) -> list[Rule]:
    return [r for r in RULES if r.kind == kind]


# --------------------------------------------------------------------------------------------
# kind detection
# --------------------------------------------------------------------------------------------
_SSHD_WORDS = re.compile(r"^[ \t]*(PermitRootLogin|PasswordAuthentication|ChallengeResponseAuthentication|KbdInteractiveAuthentication|PubkeyAuthentication|UsePAM|Subsystem[ \t]+sftp|AuthorizedKeysFile|PermitEmptyPasswords|X11Forwarding|HostKey|ListenAddress|MaxAuthTries|AllowUsers|AllowGroups|ClientAliveInterval|Protocol[ \t]+[12]|Ciphers|MACs|KexAlgorithms|HostKeyAlgorithms|PermitUserEnvironment|HostbasedAuthentication|IgnoreRhosts|Port[ \t]+\d+[ \t]*$|LoginGraceTime|StrictModes)\b", re.I | re.M)


def detect_kind(text: str, filename: str | None = None) -> tuple[str, str]:
    """(kind, how it was told: "filename" or "content"); SecfmError when it cannot be told."""
    if filename:
        name = PurePath(filename).name.lower()
        if name == "dockerfile" or name.startswith("dockerfile.") or name.endswith(".dockerfile") or name == "containerfile":
            return "dockerfile", "filename"
        if name.endswith((".tf", ".tf.json", ".tfvars")):
            return "terraform", "filename"
        if name.startswith("sshd_config") or name.endswith(".sshd_config"):
            return "sshd", "filename"
        if name in ("docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml") or name.startswith("docker-compose."):
            return "docker-compose", "filename"
        if name.startswith("nginx") and name.endswith(".conf"):
            return "nginx", "filename"
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            from secfm.inputs import load_json

            value = load_json(text, filename or "configuration")
        except SecfmError:
            value = None
        if isinstance(value, dict) and ("Statement" in value or "PolicyDocument" in value):
            return "aws-iam", "content"
        if isinstance(value, dict) and ("resource" in value or "provider" in value or "terraform" in value):
            return "terraform", "content"
    scores = {
        "dockerfile": len(re.findall(r"^[ \t]*(FROM|RUN|CMD|ENTRYPOINT|COPY|ADD|WORKDIR|EXPOSE|USER|ENV|ARG|LABEL|HEALTHCHECK)[ \t]", text, re.M))
                      * (2 if re.search(r"^[ \t]*FROM[ \t]+\S+", text, re.M | re.I) else 0),
        "terraform": 3 * len(re.findall(r'^[ \t]*(resource|provider|module|variable|data|output|locals|terraform)[ \t]*("[^"\n]*"[ \t]*)*\{', text, re.M)),
        "kubernetes": 3 * len(re.findall(r"^apiVersion:[ \t]*\S+", text, re.M)) + 2 * len(re.findall(r"^kind:[ \t]*[A-Z]\w+", text, re.M)),
        "docker-compose": 5 * len(re.findall(r"^services:[ \t]*$", text, re.M)),
        "nginx": 2 * len(re.findall(r"^[ \t]*(server|location|http|upstream|events)\b[^;{\n]*\{", text, re.M))
                 + len(re.findall(r"^[ \t]*(listen|server_name|proxy_pass|root|ssl_certificate|ssl_protocols|add_header)[ \t]+[^;\n]+;", text, re.M)),
        "sshd": 2 * len(_SSHD_WORDS.findall(text)),
        "aws-iam": 3 * len(re.findall(r"^[ \t]*-?[ \t]*\"?(Effect|Action|Resource|Principal)\"?[ \t]*:", text, re.M)) if "Statement" in text else 0,
    }
    kind, score = max(scores.items(), key=lambda kv: kv[1])
    if score < 2:
        raise SecfmError("cannot tell what kind of configuration this is; name it with --kind (kind= in Python): "
                         f"one of {', '.join(KINDS)}")
    return kind, "content"


def run_rules(doc: ConfigDoc) -> list[tuple[Rule, Span]]:
    """Every rule of the document's kind, with the spans it fires on (sorted by line)."""
    hits = []
    for rule in rules_for(doc.kind):
        for start, end in rule.check(doc):
            start = max(1, start)
            end = max(start, min(end, len(doc.lines)))
            hits.append((rule, (start, end)))
    hits.sort(key=lambda h: (h[1][0], h[0].id))
    return hits
