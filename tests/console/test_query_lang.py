"""The console's query language without a database: tokens, trees, SQL, errors and their positions."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logsvc.console import query_lang as ql


def compiled(text: str) -> tuple[str, list[str | None]]:
    q = ql.compile_query(text)
    return q.sql, q.params.values


def error(text: str) -> tuple[str, int]:
    with pytest.raises(ql.QueryError) as info:
        ql.compile_query(text)
    return info.value.message, info.value.position


# -- what each form means ----------------------------------------------------------------------


def test_empty_query_matches_everything() -> None:
    assert compiled("") == ("TRUE", [])
    assert compiled("   \t ") == ("TRUE", [])


def test_bare_words_and_phrases_match_the_message_case_insensitively_with_like_escaped() -> None:
    sql, params = compiled('timeout "100% done_ok"')
    assert sql == "(message ILIKE $1::text AND message ILIKE $2::text)"
    assert params == ["%timeout%", "%100\\% done\\_ok%"]


def test_phrase_escapes() -> None:
    assert compiled(r'"say \"hi\" \\ there"')[1] == ['%say "hi" \\\\ there%']


def test_or_not_minus_and_parentheses() -> None:
    sql, params = compiled("a OR (b -c) NOT d")
    assert sql == (
        "(message ILIKE $1::text OR ((message ILIKE $2::text AND ((message ILIKE $3::text) IS NOT TRUE)) "
        "AND ((message ILIKE $4::text) IS NOT TRUE)))"
    )
    assert params == ["%a%", "%b%", "%c%", "%d%"]


def test_explicit_and_is_the_same_as_juxtaposition() -> None:
    assert compiled("a AND b") == compiled("a b")


def test_lower_case_keywords_are_words() -> None:
    assert compiled("error or not")[1] == ["%error%", "%or%", "%not%"]


def test_level_by_name_or_number_with_comparisons() -> None:
    assert compiled("level>=warning") == ("levelno >= $1::integer", ["30"])
    assert compiled("level:ERROR") == ("levelno = $1::integer", ["40"])
    assert compiled("level<25") == ("levelno < $1::integer", ["25"])


def test_logger_matches_itself_and_its_children() -> None:
    assert compiled("logger:app.db") == (
        "(logger = $1::text OR logger LIKE $2::text)",
        ["app.db", "app.db.%"],
    )


def test_extra_keys_match_string_or_number() -> None:
    sql, params = compiled("trace_id:17")
    assert sql == "(extra -> $1::text) IN ($2::jsonb, $3::jsonb)"
    assert params == ["trace_id", '"17"', "17"]
    assert compiled("run_id:abc") == ("(extra -> $1::text) IN ($2::jsonb)", ["run_id", '"abc"'])
    # quoted: only the string
    assert compiled('trace_id:"17"')[1] == ["trace_id", '"17"']
    # numbers are made valid JSON
    assert compiled("n:007")[1][-1] == "7"
    assert compiled("n:.5")[1][-1] == "0.5"
    # a key named like a column, through extra.
    assert compiled("extra.message:x")[1] == ["message", '"x"']


def test_extra_comparisons_are_numeric_and_guarded() -> None:
    sql, params = compiled("duration_ms>=250")
    assert "jsonb_typeof(extra -> $1::text) = $2::text" in sql
    assert "::numeric >= $3::numeric" in sql
    assert params == ["duration_ms", "number", "250"]


def test_exists_and_not_equal() -> None:
    assert compiled("trace_id:*") == ("extra ? $1::text", ["trace_id"])
    assert compiled("module:*") == ("module IS NOT NULL", [])
    assert compiled("module!=db") == ("((module = $1::text) IS NOT TRUE)", ["db"])


def test_regex_is_case_insensitive_and_positions_recorded() -> None:
    q = ql.compile_query('x message~"time.?out"')
    assert q.sql == "(message ILIKE $1::text AND message ~* $2::text)"
    assert q.params.values == ["%x%", "time.?out"]
    assert q.regex_positions == (10,)


def test_host_matches_the_address_part_of_peer() -> None:
    assert compiled("host:10.0.0.1")[1] == ["10.0.0.1:%"]
    assert compiled("host:::1")[1] == ["[::1]:%"]
    assert compiled("host:::ffff:10.0.0.1")[1] == ["10.0.0.1:%"]


def test_numbers_and_aliases() -> None:
    assert compiled("pid:42") == ("process = $1::bigint", ["42"])
    assert compiled("funcName:run") == ("func = $1::text", ["run"])
    assert compiled("filename:app.py")[1] == ["app.py", "%/app.py"]


# -- errors and their positions ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ('error "unclosed', 6, "never closed"),
        ("(a OR b", 0, "never closed"),
        ("a) b", 1, "closes nothing"),
        ("a OR", 2, "both sides"),
        ("OR a", 0, "before it"),
        ("a AND", 2, "both sides"),
        ("NOT", 0, "needs a term"),
        ("level>=loud", 7, "unknown level"),
        ("pid:abc", 4, "whole number"),
        ("x:", 2, "needs a value"),
        ("()", 0, "empty parentheses"),
        ("dur>fast", 4, "compares numbers"),
        ("pid~1", 0, "text fields"),
    ],
)
def test_errors_name_the_position(text: str, position: int, words: str) -> None:
    message, at = error(text)
    assert at == position, message
    assert words in message


def test_bounds() -> None:
    assert error("a" * (ql.MAX_QUERY_CHARS + 1))[1] == ql.MAX_QUERY_CHARS
    assert "terms" in error(" ".join(["w"] * (ql.MAX_TERMS + 1)))[0]
    assert "levels" in error("(" * (ql.MAX_DEPTH + 2) + "a" + ")" * (ql.MAX_DEPTH + 2))[0]
    assert "regular expression" in error('message~"' + "a" * (ql.MAX_REGEX_CHARS + 1) + '"')[0]
    assert "levels" in error("-" * 40 + "a")[0]


# -- properties --------------------------------------------------------------------------------

_ALPHABET = st.sampled_from([*"abcXYZ019 :=<>!~*-()\"\\._%'$;\n\t\u00e9\u2028", "OR", "AND", "NOT"])
_QUERIES = st.one_of(st.text(max_size=80), st.lists(_ALPHABET, max_size=40).map("".join))

# Every word the compiler may write; anything else in the SQL would be user text.
_SQL_WORDS = frozenset(
    "message ILIKE text AND OR IS NOT TRUE levelno integer logger LIKE extra jsonb IN bigint peer process "
    "thread lineno seq module func pathname process_name thread_name levelname exc_text stack_info NULL "
    "CASE WHEN jsonb_typeof THEN numeric END".split()
)
_PLACEHOLDER = re.compile(r"\$\d+::(text|integer|bigint|jsonb|numeric)")


@given(_QUERIES)
def test_any_input_compiles_or_fails_cleanly_with_a_position(text: str) -> None:
    try:
        q = ql.compile_query(text)
    except ql.QueryError as exc:
        assert 0 <= exc.position <= len(text)
        assert exc.message
        return
    sql = _PLACEHOLDER.sub(" ", q.sql)
    # No user text in the SQL: no quotes, no literals, only the compiler's own words.
    assert "'" not in sql and '"' not in sql and "\\" not in sql
    assert set(re.findall(r"[A-Za-z_]+", sql)) <= _SQL_WORDS, sql
    assert not re.search(r"\d", sql), sql
    assert q.sql.count("$") == len(q.params.values) or q.sql.count("$") >= len(q.params.values)
    for n in re.findall(r"\$(\d+)", q.sql):
        assert 1 <= int(n) <= len(q.params.values)


@given(st.text(min_size=1, max_size=60).filter(lambda s: s.strip()))
def test_a_phrase_of_anything_is_one_parameter(text: str) -> None:
    quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    sql, params = compiled(quoted)
    assert sql == "message ILIKE $1::text"
    assert params == ["%" + ql.like_escape(text) + "%"]
