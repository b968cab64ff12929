"""The read-only check of the SQL tool: one statement, and only a query (SELECT, WITH ... SELECT,
EXPLAIN, VALUES), judged on sqlparse's tokens so that comments and string literals cannot hide a
second statement or a write.

Where SQL dialects disagree on what is a comment or where a string ends (``#`` comments, MySQL's
``/*! ... */`` and ``--x``, backslash escapes, dollar quoting), the query is refused rather than
guessed at: a token this check reads as harmless text must not be code to the database. The
check is syntactic; the tool also asks the database itself for a read-only session where it can,
and a user with SELECT grants only is the real boundary.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_qwen.tools._common import ToolRefusedError

ALLOWED_STATEMENTS = ("SELECT", "WITH", "EXPLAIN", "VALUES")
_ALLOWED_TEXT = "SELECT, WITH ... SELECT, EXPLAIN or VALUES"
# Words that make a query write or run other statements (SELECT ... INTO a new table or a file;
# EXPLAIN ANALYZE EXECUTE runs a prepared statement).
_FORBIDDEN_WORDS = frozenset({"INTO", "EXECUTE", "EXEC"})
MAX_QUERY_CHARS = 100_000
# Functions that write, or reach past the read-only session, from inside a SELECT: another
# connection (dblink), files and large objects, other sessions, settings, extensions.
_FORBIDDEN_FUNCTIONS = frozenset(
    {
        "dblink", "dblink_exec", "dblink_connect", "dblink_connect_u", "dblink_send_query",
        "dblink_open", "dblink_fetch", "lo_import", "lo_export", "lo_unlink", "lo_create",
        "lo_from_bytea", "lo_put", "lo_truncate", "pg_read_file", "pg_read_binary_file",
        "pg_ls_dir", "pg_stat_file", "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf",
        "pg_rotate_logfile", "pg_promote", "pg_switch_wal", "pg_create_restore_point", "set_config",
        "pg_advisory_lock", "pg_advisory_xact_lock", "nextval", "setval", "txid_current",
        "pg_current_xact_id", "query_to_xml", "query_to_xmlschema", "cursor_to_xml",
        "load_extension", "writefile", "readfile", "edit", "fts3_tokenizer", "load_file",
        "sys_exec", "sys_eval",
    }
)  # fmt: skip


class ReadOnlyViolation(ToolRefusedError):
    """The query is not one read-only statement; the message says what was found and what is allowed."""


def check_read_only(query: str) -> str:
    """The statement's first word (``SELECT``, ``WITH``, ``EXPLAIN`` or ``VALUES``) if ``query`` is a
    single read-only statement; else ``ReadOnlyViolation`` saying why."""
    try:
        import sqlparse
        from sqlparse import tokens as T
    except ImportError:  # a worker without apache-airflow-providers-common-sql
        raise ReadOnlyViolation(
            "refused: the read-only check needs the sqlparse package on the worker"
        ) from None

    if not isinstance(query, str) or not query.strip():
        raise ReadOnlyViolation("refused: the query is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise ReadOnlyViolation(f"refused: the query has {len(query)} characters; at most {MAX_QUERY_CHARS}")
    if "\x00" in query:
        raise ReadOnlyViolation("refused: the query contains a NUL character")
    try:
        statements = [s for s in sqlparse.parse(query) if _meaningful(s.flatten())]
    except Exception as error:  # sqlparse's own limits (very deep nesting) or a bug: never run it
        raise ReadOnlyViolation(f"refused: the query could not be parsed ({error})") from None
    if len(statements) != 1:
        raise ReadOnlyViolation(
            f"refused: this tool runs exactly one statement and the query has {len(statements)}; "
            f"send one {_ALLOWED_TEXT} statement per call"
        )
    tokens = list(statements[0].flatten())
    for position, token in enumerate(tokens):
        _check_token(token, tokens[position + 1 :], T)
    first = _first_word(tokens, T)
    if first not in ALLOWED_STATEMENTS:
        raise ReadOnlyViolation(
            f"refused: this tool is read-only and the statement starts with {first or 'nothing'}; "
            f"only {_ALLOWED_TEXT} may run"
        )
    return first


def _meaningful(tokens: Any) -> list[Any]:
    """The tokens that are neither whitespace nor comments."""
    from sqlparse import tokens as T

    return [t for t in tokens if not t.is_whitespace and t.ttype not in T.Comment]


def _check_token(token: Any, rest: list[Any], T: Any) -> None:
    """Refuse a write keyword, or text the dialects would read differently."""
    value: str = token.value
    word = token.normalized.upper() if token.is_keyword else ""
    if token.ttype in T.Comment:
        if value.startswith("#"):
            raise ReadOnlyViolation(
                "refused: '#' comments are not allowed (databases disagree on them); use /* */"
            )
        if value.startswith("/*!"):
            raise ReadOnlyViolation("refused: MySQL executable comments (/*! ... */) are not allowed")
        if value.startswith("--") and len(value) > 2 and value[2] not in " \t\r\n":
            raise ReadOnlyViolation("refused: write '-- ' (with a space) for a comment, as MySQL requires")
        return
    if token.ttype in T.Literal.String and "\\" in value:
        raise ReadOnlyViolation(
            "refused: backslashes inside quoted text are not allowed (databases disagree on what they escape)"
        )
    if token.ttype in T.Literal and value.startswith("$"):
        raise ReadOnlyViolation("refused: dollar-quoted strings are not allowed; use '...' strings")
    if token.ttype in T.Keyword.DML and word != "SELECT":
        raise ReadOnlyViolation(
            f"refused: this tool is read-only; {word} is not allowed (only {_ALLOWED_TEXT})"
        )
    if token.ttype in T.Keyword.DDL or token.ttype in T.Keyword.DCL:
        raise ReadOnlyViolation(
            f"refused: this tool is read-only; {word} is not allowed (only {_ALLOWED_TEXT})"
        )
    if token.is_keyword and word in _FORBIDDEN_WORDS:
        raise ReadOnlyViolation(f"refused: this tool is read-only; {word} is not allowed in a query")
    if token.ttype in T.Name or token.ttype in T.Literal.String.Symbol or token.is_keyword:
        name = value.strip('"`[]').lower()
        after = _meaningful(rest[:8])
        if name in _FORBIDDEN_FUNCTIONS and after and after[0].value == "(":
            raise ReadOnlyViolation(
                f"refused: this tool is read-only; the function {name}() can write or reach past the "
                "read-only session"
            )
    if token.ttype in T.Punctuation and value == ";" and _meaningful(rest):
        raise ReadOnlyViolation(
            "refused: this tool runs exactly one statement; remove the ';' inside the query"
        )


def _first_word(tokens: list[Any], T: Any) -> str:
    """The statement's first keyword, past comments, whitespace and opening parentheses."""
    for token in tokens:
        if (
            token.is_whitespace
            or token.ttype in T.Comment
            or (token.ttype in T.Punctuation and token.value == "(")
        ):
            continue
        return str(token.normalized).upper() if token.is_keyword else str(token.value)[:40]
    return ""
