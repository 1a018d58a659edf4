"""The console's query language: text in, a parameterised SQL condition out, or a positioned error.

Theory of operation
-------------------
Three pure steps, no database, no I/O:

1. ``tokenize`` cuts the text into ``Token`` values: ``(`` ``)``, the keywords ``OR``,
   ``AND``, ``NOT`` (upper case only: a lower-case ``or`` is a word to search for), ``-``
   before a term (NOT), quoted phrases (``"..."`` with ``\\"`` and ``\\\\`` escapes), bare
   words, and field terms ``name OP value`` where OP is one of ``: = != > >= < <= ~`` and
   the value is a word or a phrase glued to the operator (``message~"time.?out"``).
2. ``parse`` builds a tree (``Term``, ``Not``, ``And``, ``Or``) by recursive descent::

       query := or? EOF
       or    := and ("OR" and)*
       and   := unary (["AND"] unary)*        (implicit AND between neighbours)
       unary := ("NOT" | "-") unary | "(" or ")" | term

3. ``compile_query`` turns the tree into SQL over the ``records`` columns. Every value the
   user typed travels as a parameter (``Params.add`` returns ``$n::type``); the SQL text is
   made of this module's constants only, with no quote character anywhere in it. That is
   the invariant the tests check on any input.

Any input gives a ``Query`` or a ``QueryError`` carrying the 0-based character offset of the
problem; nothing else escapes (a hypothesis property checks it). Bounds: ``MAX_QUERY_CHARS``
characters, ``MAX_TERMS`` terms, ``MAX_DEPTH`` nested parentheses/NOTs, ``MAX_REGEX_CHARS``
per regular expression (PostgreSQL's regex engine has no backtracking blow-up, but a long
pattern over millions of rows is still costly; every console statement also runs under a
``statement_timeout``, see ``console.db``).

This module does no I/O; its level names are the CLI's (``query.LEVELS``).
"""

# Copyright (c) logsvc developers

from __future__ import annotations

import enum
import ipaddress
import json
import math
import re
from dataclasses import dataclass, field
from typing import TypeAlias

from logsvc.query import LEVELS

MAX_QUERY_CHARS = 2000
MAX_TERMS = 64
MAX_DEPTH = 16
MAX_REGEX_CHARS = 256
MAX_VALUE_CHARS = 1000


class QueryError(ValueError):
    """A query the console cannot run: ``message`` for people, ``position`` a 0-based offset."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at character {position})")
        self.message = message
        self.position = position


# -- tokens ------------------------------------------------------------------------------------


class Kind(enum.Enum):
    LPAREN = "("
    RPAREN = ")"
    OR = "OR"
    AND = "AND"
    NOT = "NOT"
    WORD = "word"
    PHRASE = "phrase"
    FIELD = "field"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    pos: int
    text: str = ""  # WORD/PHRASE: the text; FIELD: the value
    name: str = ""  # FIELD: the field name as typed
    op: str = ""  # FIELD: the operator
    quoted: bool = False  # FIELD: the value was a phrase
    value_pos: int = 0  # FIELD: where the value starts


_KEYWORDS = {"OR": Kind.OR, "AND": Kind.AND, "NOT": Kind.NOT}
_OPS = ("!=", ">=", "<=", ":", "=", ">", "<", "~")
# A field name: letters, digits, _ . - (extra keys such as "http.status" or "run-id").
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")
_BREAK = frozenset(' \t\r\n\f\v()"')


def tokenize(text: str) -> list[Token]:
    """Cut ``text`` into tokens. Raises QueryError for an unterminated phrase or an empty value."""
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is longer than {MAX_QUERY_CHARS} characters", MAX_QUERY_CHARS)
    out: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "(":
            out.append(Token(Kind.LPAREN, i))
            i += 1
        elif c == ")":
            out.append(Token(Kind.RPAREN, i))
            i += 1
        elif c == '"':
            phrase, i2 = _phrase(text, i)
            out.append(Token(Kind.PHRASE, i, phrase))
            i = i2
        elif c == "-" and i + 1 < n and not text[i + 1].isspace() and text[i + 1] != ")":
            out.append(Token(Kind.NOT, i))
            i += 1
        else:
            start = i
            m = _FIELD.match(text, i)
            if m is not None:
                j = m.end()
                op = next((o for o in _OPS if text.startswith(o, j)), None)
                if op is not None:
                    out.append(_field(text, start, m.group(), op, j + len(op)))
                    i = _end_of_field(text, out[-1])
                    continue
            while i < n and text[i] not in _BREAK:
                i += 1
            word = text[start:i]
            out.append(Token(_KEYWORDS.get(word, Kind.WORD), start, word))
    return out


def _phrase(text: str, start: int) -> tuple[str, int]:
    # "..." with \" and \\ as escapes; any other backslash is kept as it is.
    buf: list[str] = []
    i, n = start + 1, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in '"\\':
            buf.append(text[i + 1])
            i += 2
        elif c == '"':
            return "".join(buf), i + 1
        else:
            buf.append(c)
            i += 1
    raise QueryError('this quote is never closed: end the phrase with "', start)


def _field(text: str, start: int, name: str, op: str, at: int) -> Token:
    if at < len(text) and text[at] == '"':
        value, _ = _phrase(text, at)
        return Token(Kind.FIELD, start, value, name, op, True, at)
    j = at
    while j < len(text) and text[j] not in _BREAK:
        j += 1
    if j == at:
        raise QueryError(f"{name}{op} needs a value right after it (no space), for example {name}{op}x", at)
    return Token(Kind.FIELD, start, text[at:j], name, op, False, at)


def _end_of_field(text: str, tok: Token) -> int:
    if tok.quoted:
        return _phrase(text, tok.value_pos)[1]
    return tok.value_pos + len(tok.text)


# -- the tree ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Term:
    tok: Token


@dataclass(frozen=True, slots=True)
class Not:
    node: Node
    pos: int


@dataclass(frozen=True, slots=True)
class And:
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    nodes: tuple[Node, ...]


Node: TypeAlias = Term | Not | And | Or


class _Parser:
    def __init__(self, tokens: list[Token], length: int) -> None:
        self.toks = tokens
        self.i = 0
        self.end = length
        self.terms = 0

    def peek(self) -> Token | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def where(self) -> int:
        tok = self.peek()
        return tok.pos if tok is not None else self.end

    def parse_or(self, depth: int) -> Node:
        nodes = [self.parse_and(depth)]
        while (tok := self.peek()) is not None and tok.kind is Kind.OR:
            self.i += 1
            if self.peek() is None or self.peek().kind in (Kind.OR, Kind.RPAREN):  # type: ignore[union-attr]
                raise QueryError("OR needs something to search for on both sides", tok.pos)
            nodes.append(self.parse_and(depth))
        return nodes[0] if len(nodes) == 1 else Or(tuple(nodes))

    def parse_and(self, depth: int) -> Node:
        nodes = [self.parse_unary(depth)]
        while (tok := self.peek()) is not None and tok.kind not in (Kind.OR, Kind.RPAREN):
            if tok.kind is Kind.AND:
                self.i += 1
                nxt = self.peek()
                if nxt is None or nxt.kind in (Kind.OR, Kind.AND, Kind.RPAREN):
                    raise QueryError("AND needs something to search for on both sides", tok.pos)
            nodes.append(self.parse_unary(depth))
        return nodes[0] if len(nodes) == 1 else And(tuple(nodes))

    def parse_unary(self, depth: int) -> Node:
        tok = self.peek()
        if tok is None:
            raise QueryError("the query ends where a search term was expected", self.end)
        if depth > MAX_DEPTH:
            raise QueryError(f"more than {MAX_DEPTH} levels of parentheses or NOT", tok.pos)
        if tok.kind is Kind.NOT:
            self.i += 1
            if self.peek() is None:
                raise QueryError("NOT (or -) needs a term after it", tok.pos)
            return Not(self.parse_unary(depth + 1), tok.pos)
        if tok.kind is Kind.LPAREN:
            self.i += 1
            if (nxt := self.peek()) is not None and nxt.kind is Kind.RPAREN:
                raise QueryError("empty parentheses", tok.pos)
            node = self.parse_or(depth + 1)
            close = self.peek()
            if close is None or close.kind is not Kind.RPAREN:
                raise QueryError("this parenthesis is never closed", tok.pos)
            self.i += 1
            return node
        if tok.kind in (Kind.WORD, Kind.PHRASE, Kind.FIELD):
            self.i += 1
            self.terms += 1
            if self.terms > MAX_TERMS:
                raise QueryError(f"more than {MAX_TERMS} terms", tok.pos)
            return Term(tok)
        if tok.kind is Kind.RPAREN:
            raise QueryError("this parenthesis closes nothing", tok.pos)
        raise QueryError(f"{tok.kind.value} needs a term before it", tok.pos)


def parse(text: str) -> Node | None:
    """The tree of ``text``, or None for an empty query (everything matches)."""
    tokens = tokenize(text)
    if not tokens:
        return None
    p = _Parser(tokens, len(text))
    node = p.parse_or(0)
    tok = p.peek()
    if tok is not None:
        # Only a stray ")" can stop parse_or before the end.
        raise QueryError("this parenthesis closes nothing", tok.pos)
    return node


# -- compiling ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Params:
    """Numbered parameters for ``PQsendQueryParams``: every value is sent as text."""

    values: list[str | None] = field(default_factory=list)

    def add(self, value: str | int | float | None, cast: str) -> str:
        """Append ``value``; return its placeholder with a cast, ``$n::cast``."""
        self.values.append(None if value is None else str(value))
        return f"${len(self.values)}::{cast}"


class How(enum.Enum):
    CONTAINS = "contains"  # ILIKE '%v%'
    EQUALS = "equals"  # = v
    LOGGER = "logger"  # = v or a child of v
    LEVEL = "level"  # levelno, by name or number
    NUMBER = "number"  # a bigint column
    HOST = "host"  # the address part of peer
    FILENAME = "filename"  # the last part of pathname


# name typed -> (column, how). Every other name is a key of extra ("extra.name" always is).
COLUMN_FIELDS: dict[str, tuple[str, How]] = {
    "message": ("message", How.CONTAINS),
    "msg": ("message", How.CONTAINS),
    "logger": ("logger", How.LOGGER),
    "name": ("logger", How.LOGGER),
    "level": ("levelno", How.LEVEL),
    "levelno": ("levelno", How.LEVEL),
    "levelname": ("levelname", How.EQUALS),
    "host": ("peer", How.HOST),
    "peer": ("peer", How.EQUALS),
    "process": ("process", How.NUMBER),
    "pid": ("process", How.NUMBER),
    "thread": ("thread", How.NUMBER),
    "lineno": ("lineno", How.NUMBER),
    "seq": ("seq", How.NUMBER),
    "module": ("module", How.EQUALS),
    "func": ("func", How.EQUALS),
    "funcName": ("func", How.EQUALS),
    "pathname": ("pathname", How.EQUALS),
    "filename": ("pathname", How.FILENAME),
    "process_name": ("process_name", How.EQUALS),
    "processName": ("process_name", How.EQUALS),
    "thread_name": ("thread_name", How.EQUALS),
    "threadName": ("thread_name", How.EQUALS),
    "exc_text": ("exc_text", How.CONTAINS),
    "stack_info": ("stack_info", How.CONTAINS),
}
_TEXT_HOWS = frozenset({How.CONTAINS, How.EQUALS, How.LOGGER, How.HOST, How.FILENAME})
_CMP = {">": ">", ">=": ">=", "<": "<", "<=": "<="}
_INT = re.compile(r"^[+-]?\d{1,19}$")
_NUM = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?$")
_INT64 = 1 << 63


@dataclass(frozen=True, slots=True)
class Query:
    """A compiled query: ``sql`` is a condition on ``records``; ``params`` fill its ``$n``."""

    sql: str
    params: Params
    regex_positions: tuple[int, ...] = ()  # where each regex starts, for PostgreSQL's errors
    regex_patterns: tuple[str, ...] = ()  # the regexes themselves, in the same order


def like_escape(text: str) -> str:
    """``text`` as a LIKE pattern matching itself (the backslash is LIKE's escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def compile_query(text: str, params: Params | None = None) -> Query:
    """Compile ``text`` to a SQL condition on ``records``; values go to ``params``.

    Returns:
        A ``Query`` whose ``sql`` is ``TRUE`` for an empty query.

    Raises:
        QueryError: with the position of the first problem.
    """
    ps = params if params is not None else Params()
    node = parse(text)
    if node is None:
        return Query("TRUE", ps)
    regexes: list[tuple[int, str]] = []
    sql = _node_sql(node, ps, regexes)
    return Query(sql, ps, tuple(p for p, _ in regexes), tuple(r for _, r in regexes))


def _node_sql(node: Node, ps: Params, regexes: list[tuple[int, str]]) -> str:
    if isinstance(node, Term):
        return _term_sql(node.tok, ps, regexes)
    if isinstance(node, Not):
        # NOT of a NULL comparison is NULL: "-logger:x" must keep rows without a logger.
        return f"(({_node_sql(node.node, ps, regexes)}) IS NOT TRUE)"
    joiner = " AND " if isinstance(node, And) else " OR "
    return "(" + joiner.join(_node_sql(n, ps, regexes) for n in node.nodes) + ")"


def _term_sql(tok: Token, ps: Params, regexes: list[tuple[int, str]]) -> str:
    if tok.kind is not Kind.FIELD:
        if len(tok.text) > MAX_VALUE_CHARS:
            raise QueryError(f"a search term is longer than {MAX_VALUE_CHARS} characters", tok.pos)
        return f"message ILIKE {ps.add('%' + like_escape(tok.text) + '%', 'text')}"
    value, op, name = tok.text, tok.op, tok.name
    if len(value) > MAX_VALUE_CHARS:
        raise QueryError(f"a value is longer than {MAX_VALUE_CHARS} characters", tok.value_pos)
    negate = op == "!="
    if negate:
        op = ":"
    if op == "=":
        op = ":"
    if name.startswith("extra.") and len(name) > 6:
        sql = _extra_sql(tok, name[6:], op, value, ps, regexes)
    elif name in COLUMN_FIELDS:
        column, how = COLUMN_FIELDS[name]
        sql = _column_sql(tok, column, how, op, value, ps, regexes)
    else:
        sql = _extra_sql(tok, name, op, value, ps, regexes)
    return f"(({sql}) IS NOT TRUE)" if negate else sql


def _regex(tok: Token, subject: str, value: str, ps: Params, regexes: list[tuple[int, str]]) -> str:
    if len(value) > MAX_REGEX_CHARS:
        raise QueryError(f"a regular expression is longer than {MAX_REGEX_CHARS} characters", tok.value_pos)
    regexes.append((tok.value_pos, value))
    return f"{subject} ~* {ps.add(value, 'text')}"


def _column_sql(
    tok: Token, column: str, how: How, op: str, value: str, ps: Params, regexes: list[tuple[int, str]]
) -> str:
    if not tok.quoted and value == "*" and op == ":":
        return f"{column} IS NOT NULL"
    if op == "~":
        if how not in _TEXT_HOWS:
            raise QueryError(f"{tok.name}~ is for text fields; {tok.name} is a number", tok.pos)
        return _regex(tok, column, value, ps, regexes)
    if how is How.LEVEL:
        level = _level(tok, value)
        return f"{column} {_CMP.get(op, '=')} {ps.add(level, 'integer')}"
    if how is How.NUMBER:
        if not _INT.match(value) or not -_INT64 <= int(value) < _INT64:
            raise QueryError(f"{tok.name} takes a whole number, not {value[:40]!r}", tok.value_pos)
        return f"{column} {_CMP.get(op, '=')} {ps.add(int(value), 'bigint')}"
    if op in _CMP:
        return f"{column} {_CMP[op]} {ps.add(value, 'text')}"
    if how is How.CONTAINS:
        return f"{column} ILIKE {ps.add('%' + like_escape(value) + '%', 'text')}"
    if how is How.LOGGER:
        if not value:
            return f"{column} = {ps.add('', 'text')}"
        exact = ps.add(value, "text")
        return f"({column} = {exact} OR {column} LIKE {ps.add(like_escape(value) + '.%', 'text')})"
    if how is How.HOST:
        return f"{column} LIKE {ps.add(_host_pattern(value), 'text')}"
    if how is How.FILENAME:
        exact = ps.add(value, "text")
        return f"({column} = {exact} OR {column} LIKE {ps.add('%/' + like_escape(value), 'text')})"
    return f"{column} = {ps.add(value, 'text')}"


def _level(tok: Token, value: str) -> int:
    if value.isdigit() and len(value) <= 9:
        return int(value)
    level = LEVELS.get(value.upper())
    if level is None:
        raise QueryError(
            f"unknown level {value[:40]!r}: use DEBUG, INFO, WARNING, ERROR, CRITICAL or a number",
            tok.value_pos,
        )
    return level


def _host_pattern(value: str) -> str:
    # peer is "ip:port", an IPv6 address as "[ip]:port"; a name (or a unix peer) is matched
    # as it was stored, up to the port.
    text = value.strip("[]")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return like_escape(value) + ":%"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    shown = f"[{ip.compressed}]" if ip.version == 6 else ip.compressed
    return like_escape(shown) + ":%"


def _extra_sql(tok: Token, key: str, op: str, value: str, ps: Params, regexes: list[tuple[int, str]]) -> str:
    k = ps.add(key, "text")
    if not tok.quoted and value == "*" and op == ":":
        return f"extra ? {k}"
    if op == "~":
        return _regex(tok, f"(extra ->> {k})", value, ps, regexes)
    if op in _CMP:
        if not _NUM.match(value) or not math.isfinite(float(value)):
            raise QueryError(f"{tok.name}{op} compares numbers; {value[:40]!r} is not one", tok.value_pos)
        # The cast only runs on numbers: CASE guards it, so a string value is no error.
        return (
            f"(CASE WHEN jsonb_typeof(extra -> {k}) = {ps.add('number', 'text')} "
            f"THEN (extra ->> {k})::numeric {_CMP[op]} {ps.add(value, 'numeric')} END)"
        )
    # ":" matches the JSON value as a string, or as a number when the text is one; "true",
    # "false" and "null" match those JSON values too. "=" on the jsonb (not ->>) lets an
    # index on (extra -> 'key') serve it (the planner sees the key's value: an unnamed
    # statement is planned with its parameters).
    options = [json.dumps(value)]
    if not tok.quoted:
        number = _json_number(value)
        if number is not None:
            options.append(number)
        elif value in ("true", "false", "null"):
            options.append(value)
    alts = ", ".join(ps.add(o, "jsonb") for o in options)
    return f"(extra -> {k}) IN ({alts})"


def _json_number(text: str) -> str | None:
    """``text`` as a valid JSON number (``007`` -> ``7``, ``.5`` -> ``0.5``), or None."""
    if len(text) > 40 or not _NUM.match(text):
        return None
    if _INT.match(text) or text.lstrip("+-").isdigit():
        return str(int(text))
    f = float(text)
    return json.dumps(f) if math.isfinite(f) else None
