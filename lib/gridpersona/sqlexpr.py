"""Checking Spark SQL expressions from config without Spark.

Campaign rules (eligibility, qualifiers, scores, channel rules) are Spark SQL
expressions over the columns of a known table. :func:`check_expression` parses
one with sqlglot's Spark dialect when the configuration is loaded, so a rule
that does not parse, is not a single expression (a query, several statements)
or names a column the table does not have fails with a readable message before
any Spark work starts. Spark analyses the expressions again when a stage
applies them (unknown functions, type errors); see the stages.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError


class ExpressionError(ValueError):
    """An expression from config is not a valid single Spark SQL expression over the known columns."""


_STATEMENTS = tuple(t for t in (getattr(exp, n, None) for n in ("Query", "DDL", "DML", "Command", "Block", "Use", "Set"))
                    if isinstance(t, type))


def referenced_columns(sql: str) -> list[str]:
    """Column names ``sql`` refers to, each once (lambda variables excluded).

    Raises ExpressionError when ``sql`` is empty, does not parse, or is not a single expression.
    """
    text = (sql or "").strip()
    if not text:
        raise ExpressionError("empty expression")
    try:
        parsed = sqlglot.parse(text, read="spark")
    except (ParseError, TokenError) as exc:
        first = str(exc).splitlines()[0]
        raise ExpressionError(f"does not parse as Spark SQL: {first}") from None
    parsed = [p for p in parsed if p is not None]
    if len(parsed) != 1:
        raise ExpressionError(f"must be one expression, found {len(parsed)} statements")
    tree = parsed[0]
    if isinstance(tree, _STATEMENTS) or any(isinstance(node, _STATEMENTS) for node in tree.walk()):
        raise ExpressionError("must be an expression over the row's columns, not a query or statement")
    lambda_vars = {v.name.lower() for lam in tree.find_all(exp.Lambda) for v in lam.expressions}
    names: list[str] = []
    for col in tree.find_all(exp.Column):
        if col.table:
            raise ExpressionError(f"column {col.sql(dialect='spark')!r} must not be qualified by a table name")
        name = col.name
        if name.lower() not in lambda_vars and name not in names:
            names.append(name)
    return names


def check_expression(sql: str, known_columns: Iterable[str]) -> list[str]:
    """Validate ``sql`` against ``known_columns``; return the columns it refers to.

    Raises ExpressionError naming the unknown column(s) and listing the known ones.
    """
    known = {c.lower(): c for c in known_columns}
    names = referenced_columns(sql)
    unknown = [n for n in names if n.lower() not in known]
    if unknown:
        raise ExpressionError(f"unknown column(s) {unknown}; known columns: {', '.join(sorted(known.values()))}")
    return names
