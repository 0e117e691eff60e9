"""Deterministic configuration rules: common misconfigurations per kind, with line ranges.

Kinds: ``terraform``, ``kubernetes``, ``docker-compose``, ``dockerfile``, ``sshd``, ``nginx``,
``aws-iam``. :func:`detect_kind` tells them apart by file name, then by content.

The rules are data: ``config_rules.yaml`` holds each rule (id, kind, title, severity, why, fix,
references: CWE weaknesses and ATT&CK mitigations, checked with ``validate_id``), its check by
name with arguments (``check: sshd_value`` ``args: {keyword: PermitRootLogin, equals: [yes]}``)
and a bad and a good example (the tests run each rule on both). :data:`CHECKS` maps check names
to the functions here; a check returns the 1-based line ranges it fires on, which the review
quotes as evidence.

Parsers keep line numbers: sshd is read as sshd reads it (first value wins, ``Match`` blocks
apart); Dockerfiles through dockerfile-parse; nginx through crossplane's lexer; Terraform twice:
the line-span parser gives the blocks and their lines (HCL attributes, nested and ``dynamic``
blocks, heredocs and ``jsonencode`` bodies by brace counting; python-hcl2 8.x gives no line
numbers) and python-hcl2 gives the values (unquoted strings, heredocs, numbers, objects written
in attribute syntax such as ``ingress = [{...}]``), matched block by block; Kubernetes, Compose and IAM policies (JSON is YAML) through PyYAML's composer.
Walks over nested structures are iterative, and every pattern is linear in its input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePath
from typing import Any

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




# --------------------------------------------------------------------------------------------
# Terraform (HCL, read by brace counting)
# --------------------------------------------------------------------------------------------
UNPARSED = object()  # an attribute python-hcl2 gave no value for (the file did not parse, or was too big)


@dataclass
class TfAttr:
    name: str
    value: str  # the text as written (the line parser's)
    start: int
    end: int
    parsed: Any = UNPARSED  # the value as python-hcl2 reads it

    @property
    def literal(self) -> str | None:
        """The value when it is a plain string (no ``${...}`` interpolation), else None."""
        if self.parsed is UNPARSED:
            return _tf_literal(self.value)
        return self.parsed if isinstance(self.parsed, str) and "${" not in self.parsed else None


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
    values = hcl2_values(text)
    if values is not None:
        _attach_values(root.blocks, values)
        _objects_as_blocks(root)
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


HCL2_MAX_CHARS = 256_000  # python-hcl2 takes ~3 s per 100 kB; bigger files keep the line parser's raw values


def hcl2_values(text: str) -> dict | None:
    """The document's values as python-hcl2 reads them (strings unquoted, heredocs as text,
    numbers as numbers, expressions as ``${...}``), or None when it cannot (a syntax error, a file
    over :data:`HCL2_MAX_CHARS`); line numbers come from :func:`parse_terraform`, which python-hcl2
    8.x does not give."""
    if len(text) > HCL2_MAX_CHARS:
        return None
    try:
        import hcl2
        from hcl2.utils import SerializationOptions

        opts = SerializationOptions(with_comments=False, strip_string_quotes=True, preserve_heredocs=False)
        return hcl2.loads(text, serialization_options=opts)
    except Exception:  # noqa: BLE001 - any parse failure: the line parser's raw values stay
        return None


def _is_block_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and v.get("__is_block__") for v in value)


def _attach_values(blocks: list[TfBlock], body: dict) -> None:
    """Give each attribute of ``blocks`` (children of a block whose python-hcl2 body is ``body``)
    its parsed value, walking both trees in document order: blocks of one type are matched in
    order, labels by name."""
    by_type: dict[str, list[TfBlock]] = {}
    for b in blocks:
        by_type.setdefault(b.type, []).append(b)
    for btype, ours in by_type.items():
        theirs = body.get(btype)
        if not isinstance(theirs, list):
            continue
        if len(ours) != len(theirs):
            continue  # the two readers disagree on this level: keep the raw values
        for block, item in zip(ours, theirs):
            node = item
            for label in block.labels:
                node = node.get(label) if isinstance(node, dict) else None
            if isinstance(node, dict):
                _attach_block(block, node)


def _attach_block(block: TfBlock, node: dict) -> None:
    for a in block.attrs:
        if a.name in node and not _is_block_list(node[a.name]):
            a.parsed = node[a.name]
    _attach_values(block.blocks, node)


def _objects_as_blocks(root: TfBlock) -> None:
    """``ingress = [{ from_port = 22, ... }]`` (attribute syntax, read by python-hcl2) becomes the
    ``ingress`` blocks it declares, spanning the attribute's lines, so rules see both spellings."""
    stack = [root]
    while stack:
        block = stack.pop()
        for a in list(block.attrs):
            if isinstance(a.parsed, list) and a.parsed and all(isinstance(v, dict) for v in a.parsed):
                for obj in a.parsed:
                    attrs = [TfAttr(k, _hcl_text(v), a.start, a.end, v) for k, v in obj.items() if not k.startswith("__")]
                    block.blocks.append(TfBlock(a.name, [], a.start, a.end, attrs))
        stack.extend(block.blocks)


def _hcl_text(value) -> str:
    """A parsed value written back as the HCL text the rules read."""
    import json

    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


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
    proto = (block.attr("protocol").literal if block.attr("protocol") else None) or ""
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
            if t and t.literal == "ingress":
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
            literal = a.literal
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
        for _top, block in tf_walk([b]):
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
                if act and res and (effect is None or effect.literal == "Allow"):
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


# --------------------------------------------------------------------------------------------
# checks by name: what config_rules.yaml refers to (``check: NAME`` with ``args``)
# --------------------------------------------------------------------------------------------
Check = Callable[[ConfigDoc], list[Span]]


def _sshd_value(keyword: str | list[str], equals: list[str] | None = None, above: int | None = None,
                list_has: str | None = None, list_matches: str | None = None) -> Check:
    """An effective sshd directive (first value wins, Match blocks apart) whose value is one of
    ``equals``, a number above ``above``, or a comma list holding ``list_has`` or an item matching
    ``list_matches``."""
    keywords = {k.lower() for k in ([keyword] if isinstance(keyword, str) else keyword)}
    wanted = {e.lower() for e in equals or ()}
    item_re = re.compile(list_matches, re.I) if list_matches else None

    def bad(v: str) -> bool:
        items = [x for x in v.replace(" ", "").split(",") if x]
        return ((wanted and v.lower() in wanted) or (above is not None and v.isdigit() and int(v) > above)
                or (list_has is not None and list_has in items) or (item_re is not None and any(item_re.search(x) for x in items)))

    return lambda doc: [(n, n) for n, k, v in sshd_directives(doc) if k in keywords and bad(v)]


def _nginx_directive_check(name: str, first_in: list[str] | None = None, any_in: list[str] | None = None,
                           any_matches: str | None = None) -> Check:
    """A (non-block) nginx directive whose first argument is in ``first_in`` (any case), any
    argument is in ``any_in`` (any case), or any argument matches ``any_matches``."""
    first = {x.lower() for x in first_in or ()}
    anyset = {x.lower() for x in any_in or ()}
    pattern = re.compile(any_matches) if any_matches else None

    def bad(args: list[str]) -> bool:
        return bool(args) and ((first and args[0].lower() in first) or any(x.lower() in anyset for x in args)
                               or (pattern is not None and any(pattern.search(x) for x in args)))

    return _nginx_directive(name, bad)


def _iam_statement(action: str | None = None, resource: str | None = None, service_wildcard: bool = False,
                   actions: list[str] | None = None, has: str | None = None) -> Check:
    """An Allow statement with Action ``action`` (or a ``service:*`` action, or one of ``actions``,
    or key ``has``) on Resource ``resource``."""
    wanted = {a.lower() for a in actions or ()}

    def test(stmt) -> bool:
        acts = _stmt(stmt, "Action")
        if resource is not None and resource not in _stmt(stmt, "Resource"):
            return False
        if action is not None and action not in acts:
            return False
        if service_wildcard and ("*" in acts or not any(a.endswith(":*") for a in acts)):
            return False
        if wanted and not any(a.lower() in wanted for a in acts):
            return False
        return has is None or y_get(stmt, has) is not None

    return _iam_rule(test)


def _any_of(checks: list[dict]) -> Check:
    parts = [make_check(c["check"], c.get("args") or {}) for c in checks]
    return lambda doc: sorted({span for part in parts for span in part(doc)})


CHECKS: dict[str, Callable[..., Check]] = {
    "sshd_value": _sshd_value,
    "nginx_directive": _nginx_directive_check,
    "nginx_alias_traversal": lambda: _nginx_alias_traversal,
    "nginx_plain_http": lambda: _nginx_plain_http,
    "docker_no_user": lambda: _docker_no_user,
    "docker_latest": lambda: _docker_latest,
    "docker_secret": lambda: _docker_secret,
    "docker_instruction": lambda names, matches: _docker_instr(tuple(names), matches),
    "yaml_key": lambda path, true=True: _y_key_rule(tuple(path), y_true),
    "k8s_host_namespace": lambda: _k8s_host_namespace,
    "k8s_root": lambda: _k8s_root,
    "k8s_dangerous_caps": lambda: _k8s_dangerous_caps,
    "k8s_hostpath": lambda: _k8s_hostpath,
    "k8s_image_latest": lambda: _k8s_image_latest,
    "k8s_no_limits": lambda: _k8s_no_limits,
    "k8s_secret_env": lambda: _k8s_secret_env,
    "k8s_rbac_wildcard": lambda: _k8s_rbac_wildcard,
    "k8s_cluster_admin_binding": lambda: _k8s_cluster_admin_binding,
    "compose_key": lambda key, true=False, equals=None: _compose_key(
        key, y_true if true else (lambda v: (y_scalar(v) or "") == equals)),
    "compose_item": lambda key, matches: _compose_seq_item(key, matches),
    "compose_secret_env": lambda: _compose_secret_env,
    "iam_statement": _iam_statement,
    "iam_public_principal": lambda: _iam_rule(_principal_public),
    "tf_open_admin": lambda: _tf_open_admin,
    "tf_attribute": lambda attributes, values, resources=(): _tf_attr_is(tuple(resources), tuple(attributes), lambda v: v in set(values)),
    "tf_hardcoded_secret": lambda: _tf_hardcoded_secret,
    "tf_iam_wildcard": lambda: _tf_iam_wildcard,
    "any_of": _any_of,
}


def make_check(name: str, args: dict) -> Check:
    """The check ``name`` built with ``args`` (a clear error for an unknown name or argument)."""
    if name not in CHECKS:
        raise SecfmError(f"unknown config check {name!r} (one of {', '.join(sorted(CHECKS))})")
    try:
        return CHECKS[name](**args)
    except TypeError as exc:
        raise SecfmError(f"config check {name!r}: bad arguments {sorted(args)} ({exc})") from exc


RULES_FILE = Path(__file__).parent / "config_rules.yaml"
_REQUIRED = ("id", "kind", "title", "severity", "why", "fix", "check", "example_bad", "example_good")


def load_rules(path: str | Path = RULES_FILE) -> tuple[Rule, ...]:
    """Rules from a YAML file (``config_rules.yaml``: one entry per rule, its check by name)."""
    import yaml

    from secfm.workflows.schemas import SEVERITIES

    try:
        entries = yaml.safe_load(Path(path).read_text(encoding="utf-8"))["rules"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise SecfmError(f"cannot read config rules from {path}: {exc}") from exc
    rules = []
    for entry in entries:
        missing = [k for k in _REQUIRED if k not in entry]
        if missing or entry["kind"] not in KINDS or entry["severity"] not in SEVERITIES:
            raise SecfmError(f"{path}: rule {entry.get('id')!r} needs {', '.join(missing) or 'a known kind and severity'}")
        rules.append(Rule(entry["id"], entry["kind"], entry["title"], entry["severity"], entry["why"], entry["fix"],
                          tuple(entry.get("references") or ()), make_check(entry["check"], entry.get("args") or {}),
                          entry["example_bad"], entry["example_good"]))
    return tuple(rules)


RULES: tuple[Rule, ...] = load_rules()
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
