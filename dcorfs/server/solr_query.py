"""``package_search``'s ``q`` as CKAN hands it to Solr, over the local catalog.

Read from CKAN's ``ckan/lib/search/query.py`` (``PackageSearchQuery.run``) and its
Solr schema (``ckan/config/solr/schema.xml``):

- A ``q`` without a colon goes to Solr's *dismax* parser with ``qf = name^4 title^4
  tags^2 groups^2 text``, ``tie = 0.1`` and the minimum-match rule ``mm = 2<-1 5<80%``:
  up to two optional clauses must all match, three to five all but one, more than five
  80% (rounded down).  Only ``+``, ``-`` and quotes are syntax there (and AND, OR, NOT
  between clauses); every other special character is escaped, so ``eryth*`` is the
  word ``eryth``, which matches nothing, and ``blood OR beads`` is two optional
  clauses, both required by ``mm``: it acts as AND.
- A ``q`` with a colon goes to the standard (Lucene) parser with ``q.op = AND`` and
  ``df = text``: ``field:value``, quotes, ``*`` and ``?`` wildcards, ``[a TO b]``
  ranges (dates with ``NOW``, ``NOW-30DAYS``, ``NOW/DAY``), AND/OR/NOT, ``+``/``-`` and
  parentheses, under Lucene's ``addClause`` rules.
- ``name``, ``tags``, ``groups``, ``organization`` and ``license_id`` are ``string``
  fields (whole values, case-sensitive); ``title``, ``notes`` and ``text`` (every
  field copied into one) are ``text``: split on whitespace and at word delimiters
  (punctuation, case changes, letters to digits), lower-cased, Porter2-stemmed
  (Solr's Snowball "English"), ASCII-folded; ``res_name`` is ``text_general`` (not
  stemmed).  A wildcard term is matched against the indexed tokens, lower-cased and
  folded, not stemmed.

Relevance is approximated: a clause scores the boost of the best field it matches
plus ``tie`` times the others' (dismax), or 1 (standard); ties go to the newest
(CKAN's ``score desc, metadata_modified desc``).  A query Solr cannot parse raises
``QuerySyntaxError`` (CKAN answers it with 409 "Search Error").
"""
from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import functools
import re
import unicodedata
from collections.abc import Callable
from typing import Any

import snowballstemmer

QUERY_FIELDS = {"name": 4.0, "title": 4.0, "tags": 2.0, "groups": 2.0, "text": 1.0}
TIE = 0.1
STRING_FIELDS = {"name", "tags", "groups", "organization", "license_id", "id", "state",
                 "capacity", "site_id"}
TEXT_FIELDS = {"title", "notes", "text"}
GENERAL_FIELDS = {"res_name", "res_description"}  # text_general: not stemmed
DATE_FIELDS = {"metadata_modified", "metadata_created"}
FIELDS = STRING_FIELDS | TEXT_FIELDS | GENERAL_FIELDS | DATE_FIELDS | {"num_resources"}


class QuerySyntaxError(ValueError):
    """What Solr answers a query it cannot parse with."""


@functools.lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _STEMMER.stemWord(word)


_STEMMER = snowballstemmer.stemmer("english")


def _fold(text: str) -> str:
    """ASCII folding: accents dropped, as Solr's ASCIIFoldingFilter does."""
    return "".join(c for c in unicodedata.normalize("NFKD", text)
                   if not unicodedata.combining(c))


def _parts(token: str) -> list[str]:
    """WordDelimiterGraphFilter's word and number parts of one whitespace token."""
    parts: list[str] = []
    for piece in re.findall(r"[^\W_]+", token):
        # split at lower-to-upper case changes and between letters and digits
        parts += re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[^\W\d_]+", piece)
    return parts


def analyse(text: str, stem: bool = True) -> list[str]:
    """The tokens a text (or text_general) field holds for ``text``, in order."""
    tokens = []
    for word in text.split():
        for part in _parts(word):
            part = _fold(part.lower())
            tokens.append(_stem(part) if stem else part)
    return tokens


@dataclasses.dataclass
class Document:
    """A dataset as Solr indexes it (``ckan/lib/search/index.py``)."""

    fields: dict[str, list[str]]  # string and date fields: values; as given
    modified: float  # metadata_modified, epoch seconds (the tie-break)

    @functools.cached_property
    def tokens(self) -> dict[str, list[list[str]]]:
        """Each text field's values as token lists."""
        out: dict[str, list[list[str]]] = {}
        for name in TEXT_FIELDS | GENERAL_FIELDS:
            out[name] = [analyse(v, stem=name not in GENERAL_FIELDS)
                         for v in self.fields.get(name, [])]
        return out


def document(values: dict[str, Any], modified: float) -> Document:
    """A Document from field values (lists or single values); ``text`` is every value
    copied into one, as the schema's ``copyField``s do."""
    fields: dict[str, list[str]] = {}
    for key, value in values.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        fields[key] = [str(v) for v in items if v not in (None, "")]
    fields["text"] = [v for key in ("name", "title", "notes", "tags", "groups",
                                    "organization", "res_name", "res_description",
                                    "license_id", "text")
                      for v in fields.get(key, [])]
    return Document(fields, modified)


# -- matching one term in one field --------------------------------------------------------
def _has_sequence(values: list[list[str]], wanted: list[str]) -> bool:
    """Whether one value holds ``wanted`` as consecutive tokens."""
    n = len(wanted)
    return any(tokens[i:i + n] == wanted for tokens in values
               for i in range(len(tokens) - n + 1))


def term_matches(doc: Document, field: str, term: str, phrase: bool = False,
                 wildcard: bool = False) -> bool:
    """Whether ``field`` of ``doc`` matches the query term (after its field's analysis;
    a ``wildcard`` term is matched as a pattern, not analysed)."""
    if field not in FIELDS:
        return False
    if field in STRING_FIELDS or field in DATE_FIELDS or field == "num_resources":
        values = doc.fields.get(field, [])
        if term == "*":
            return bool(values)
        if wildcard:
            return any(fnmatch.fnmatchcase(v, term) for v in values)
        return term in values
    values = doc.tokens[field]
    if wildcard:
        if term == "*":
            return any(values)
        pattern = _fold(term.lower())
        return any(fnmatch.fnmatchcase(t, pattern) for tokens in values for t in tokens)
    wanted = analyse(term, stem=field not in GENERAL_FIELDS)
    if not wanted:
        return False
    if phrase or len(wanted) > 1:  # the parts of one word, or a quoted phrase: in order
        return _has_sequence(values, wanted)
    return any(wanted[0] in tokens for tokens in values)


# -- dates -------------------------------------------------------------------------------
def solr_date(text: str, now: float) -> float:
    """A Solr date (ISO 8601, ``*``, ``NOW`` with ``+/-N UNIT`` and ``/UNIT``) as epoch
    seconds."""
    if text == "*":
        return float("-inf")
    match = re.fullmatch(r"(NOW|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)((?:[+-]\d+[A-Z]+|/[A-Z]+)*)",
                         text)
    if not match:
        raise QuerySyntaxError(f"Invalid Date String:'{text}'")
    if match.group(1) == "NOW":
        at = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    else:
        at = datetime.datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
    units = {"YEAR": "years", "YEARS": "years", "MONTH": "months", "MONTHS": "months",
             "DAY": "days", "DAYS": "days", "HOUR": "hours", "HOURS": "hours",
             "MINUTE": "minutes", "MINUTES": "minutes", "SECOND": "seconds",
             "SECONDS": "seconds"}
    for op in re.findall(r"[+-]\d+[A-Z]+|/[A-Z]+", match.group(2)):
        unit = units.get(op.lstrip("+-/0123456789"))
        if unit is None:
            raise QuerySyntaxError(f"Invalid Date Math String:'{text}'")
        if op.startswith("/"):
            at = _round_down(at, unit)
            continue
        n = int(re.match(r"[+-]\d+", op).group(0))
        if unit in ("years", "months"):
            months = at.month - 1 + n * (12 if unit == "years" else 1)
            at = at.replace(year=at.year + months // 12, month=months % 12 + 1)
        else:
            at += datetime.timedelta(**{unit: n})
    return at.timestamp()


def _round_down(at: datetime.datetime, unit: str) -> datetime.datetime:
    keep = ["years", "months", "days", "hours", "minutes", "seconds"].index(unit)
    zero = {"month": 1, "day": 1, "hour": 0, "minute": 0, "second": 0, "microsecond": 0}
    names = ["month", "day", "hour", "minute", "second", "microsecond"]
    return at.replace(**{k: zero[k] for k in names[keep:]})


# -- the standard parser ---------------------------------------------------------------------
MUST, SHOULD, MUST_NOT = "+", "?", "-"


@dataclasses.dataclass
class Clause:
    occur: str
    query: Any  # Term | Boolean


@dataclasses.dataclass
class Term:
    field: str | None  # None: the parser's default field(s)
    text: str
    phrase: bool = False
    wildcard: bool = False  # holds an unescaped * or ?
    low: str | None = None  # a range: [low TO high]
    high: str | None = None
    inclusive: tuple[bool, bool] = (True, True)


@dataclasses.dataclass
class Boolean:
    clauses: list[Clause]
    min_should: int = 0


TOKEN = re.compile(r'''
    \s*(?:
      (?P<open>\()|(?P<close>\))
    | (?P<op>(?:AND|OR|NOT|&&|\|\|)(?=[\s()]|$))
    | (?P<mod>[+-])(?=\S)
    | (?P<all>\*:\*)(?=[\s()]|$)
    | (?P<field>[A-Za-z_][\w.]*):(?=\S)
    | (?P<range>[\[{]\s*(?P<low>\S+)\s+TO\s+(?P<high>\S+?)\s*[\]}])
    | "(?P<phrase>(?:[^"\\]|\\.)*)"
    | (?P<term>(?:[^\s()"\\:]|\\.)+)
    )''', re.VERBOSE)


def _lex(q: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(q):
        if not q[pos:].strip():
            break
        match = TOKEN.match(q, pos)
        if not match or match.end() == pos:
            raise QuerySyntaxError(f"org.apache.solr.search.SyntaxError: Cannot parse "
                                   f"'{q}': Encountered \"{q[pos:].strip()[:20]}\"")
        pos = match.end()
        kind = match.lastgroup if match.lastgroup not in ("low", "high") else "range"
        if match.group("range"):
            text = match.group("range").strip()
            out.append(("range", (match.group("low"), match.group("high"),
                                  (text[0] == "[", text[-1] == "]"))))
        elif match.group("phrase") is not None:
            out.append(("phrase", match.group("phrase").replace('\\"', '"')))
        else:
            out.append((kind, match.group(kind)))
    return out


class StandardParser:
    """Lucene's classic query parser, as Solr's ``lucene`` parser runs it."""

    def __init__(self, default_and: bool, make_term: Callable[[Term], Any]) -> None:
        self.default_and = default_and
        self.make_term = make_term

    def parse(self, q: str) -> Boolean:
        self.tokens = _lex(q)
        self.pos = 0
        query = self._query()
        if self.pos != len(self.tokens):
            raise QuerySyntaxError(f"org.apache.solr.search.SyntaxError: Cannot parse "
                                   f"'{q}': Encountered \" \")\" \") \"\"")
        return query

    def _peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _query(self) -> Boolean:
        clauses: list[Clause] = []
        first = True
        while True:
            token = self._peek()
            if token is None or token[0] == "close":
                break
            conj = None
            if not first and token[0] == "op" and token[1] in ("AND", "&&", "OR", "||"):
                conj = "AND" if token[1] in ("AND", "&&") else "OR"
                self.pos += 1
                token = self._peek()
                if token is None:
                    raise QuerySyntaxError("org.apache.solr.search.SyntaxError: Cannot "
                                           "parse: Encountered \"<EOF>\"")
            mods = None
            if token[0] == "op" and token[1] == "NOT":
                mods = "NOT"
                self.pos += 1
            elif token[0] == "mod":
                mods = "REQ" if token[1] == "+" else "NOT"
                self.pos += 1
            query = self._clause()
            self._add(clauses, conj, mods, query)
            first = False
        return Boolean(clauses)

    def _add(self, clauses: list[Clause], conj: str | None, mods: str | None,
             query: Any) -> None:
        """Lucene's ``QueryParserBase.addClause``."""
        if clauses and conj == "AND" and clauses[-1].occur != MUST_NOT:
            clauses[-1].occur = MUST
        if clauses and self.default_and and conj == "OR" and clauses[-1].occur != MUST_NOT:
            clauses[-1].occur = SHOULD
        prohibited = mods == "NOT"
        if self.default_and:
            required = not prohibited and conj != "OR"
        else:
            required = mods == "REQ" or (conj == "AND" and not prohibited)
        clauses.append(Clause(MUST_NOT if prohibited else MUST if required else SHOULD,
                              query))

    def _clause(self) -> Any:
        token = self._peek()
        if token is None:
            raise QuerySyntaxError("org.apache.solr.search.SyntaxError: Cannot parse: "
                                   "Encountered \"<EOF>\"")
        field = None
        if token[0] == "field":
            field = token[1]
            self.pos += 1
            token = self._peek()
            if token is None:
                raise QuerySyntaxError("org.apache.solr.search.SyntaxError: Cannot parse: "
                                       "Encountered \"<EOF>\"")
        self.pos += 1
        kind, value = token
        if kind == "open":
            inner = self._query()
            if self._peek() is None or self._peek()[0] != "close":
                raise QuerySyntaxError("org.apache.solr.search.SyntaxError: Cannot parse: "
                                       "Encountered \"<EOF>\", expected \")\"")
            self.pos += 1
            return _with_field(inner, field)
        if kind == "all":
            return Term("*", "*")
        if kind == "phrase":
            return self.make_term(Term(field, value, phrase=True))
        if kind == "range":
            low, high, inclusive = value
            return self.make_term(Term(field, "", low=low, high=high, inclusive=inclusive))
        if kind in ("term", "op"):  # an operator word where a term must be: a term
            wildcard = re.search(r"(?<!\\)[*?]", value) is not None
            return self.make_term(Term(field, value.replace("\\", ""), wildcard=wildcard))
        raise QuerySyntaxError(f"org.apache.solr.search.SyntaxError: Cannot parse: "
                               f"Encountered \"{value}\"")


def _with_field(query: Any, field: str | None) -> Any:
    """``field:(a b)``: the field applies to every term inside without one."""
    if field is None:
        return query
    if isinstance(query, Boolean):
        return Boolean([Clause(c.occur, _with_field(c.query, field)) for c in query.clauses],
                       query.min_should)
    if isinstance(query, Term) and query.field is None:
        return dataclasses.replace(query, field=field)
    return query


@dataclasses.dataclass
class DisMax:
    """One clause of a dismax query: the term in every query field."""

    terms: list[Term]


# -- the two parsers CKAN chooses between ---------------------------------------------------
def min_should_match(optional: int) -> int:
    """``mm = 2<-1 5<80%``."""
    if optional <= 2:
        return optional
    if optional <= 5:
        return optional - 1
    return optional * 80 // 100


def parse(q: str) -> Boolean:
    """``q`` as CKAN has Solr parse it (see the module)."""
    q = q.strip()
    if not q or q in ('""', "''"):
        q = "*:*"
    if ":" not in q:
        # dismax: only + - and quotes are syntax; everything else is escaped
        escaped = re.sub(r'([\\!():^\[\]{}~*?/])', r"\\\1", _balanced_quotes(q))
        query = StandardParser(False, lambda t: DisMax(
            [dataclasses.replace(t, field=f) for f in QUERY_FIELDS])).parse(escaped)
        optional = sum(1 for c in query.clauses if c.occur == SHOULD)
        query.min_should = min_should_match(optional)
        return query
    return StandardParser(True, _known_field).parse(q)


def _known_field(term: Term) -> Term:
    if term.field is not None and term.field not in FIELDS:
        raise QuerySyntaxError(f"undefined field {term.field}")
    return term


def _balanced_quotes(q: str) -> str:
    """Dismax drops the quotes of a query whose quotes do not pair up."""
    return q if q.count('"') % 2 == 0 else q.replace('"', "")


# -- evaluation ----------------------------------------------------------------------------
def score(query: Any, doc: Document, now: float) -> float | None:
    """The document's score for ``query``, or None when it does not match."""
    if isinstance(query, Term):
        return 1.0 if _term(query, doc, now) else None
    if isinstance(query, DisMax):
        hits = [QUERY_FIELDS[t.field] for t in query.terms if _term(t, doc, now)]
        return max(hits) + TIE * (sum(hits) - max(hits)) if hits else None
    total, should = 0.0, 0
    required = False
    for clause in query.clauses:
        s = score(clause.query, doc, now)
        if clause.occur == MUST_NOT:
            if s is not None:
                return None
            continue
        if clause.occur == MUST:
            required = True
            if s is None:
                return None
            total += s
        elif s is not None:
            should += 1
            total += s
    if should < query.min_should:
        return None
    if not required and not should and any(c.occur == SHOULD for c in query.clauses):
        return None
    if not required and not any(c.occur == SHOULD for c in query.clauses):
        return 0.0 if query.clauses else None  # only prohibitions: everything else
    return total


def _term(term: Term, doc: Document, now: float) -> bool:
    field = term.field or "text"
    if term.low is not None:
        return _in_range(term, doc, field, now)
    if field == "*" and term.text == "*":
        return True
    return term_matches(doc, field, term.text, term.phrase, term.wildcard)


def _in_range(term: Term, doc: Document, field: str, now: float) -> bool:
    values = doc.fields.get(field, [])
    low_in, high_in = term.inclusive
    if field in DATE_FIELDS:
        low, high = solr_date(term.low, now), solr_date(term.high, now)
        if term.high == "*":
            high = float("inf")
        stamps = [solr_date(v if v.endswith("Z") else v + "Z", now) for v in values]
        return any((low < s or (low_in and low == s)) and (s < high or (high_in and s == high))
                   for s in stamps)
    return any((term.low == "*" or term.low < v or (low_in and term.low == v))
               and (term.high == "*" or v < term.high or (high_in and v == term.high))
               for v in values)


def search(q: str, docs: list[Document], now: float) -> list[tuple[float, Document]]:
    """The matching documents with their scores, best first, newest first among equals."""
    query = parse(q)
    if _is_all(query):
        hits = [(0.0, d) for d in docs]
    else:
        hits = [(s, d) for d in docs if (s := score(query, d, now)) is not None]
    hits.sort(key=lambda pair: (-pair[0], -pair[1].modified))
    return hits


def _is_all(query: Boolean) -> bool:
    return (len(query.clauses) == 1 and isinstance(query.clauses[0].query, Term)
            and query.clauses[0].query.field == "*" and query.clauses[0].query.text == "*")
