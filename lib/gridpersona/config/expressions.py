"""Checking Spark SQL expressions from config files without a SparkSession.

Config (tag definitions in conf/tags.yaml; campaign eligibility, qualifiers,
scores and channel rules in conf/campaigns.yaml) carries Spark SQL expressions.
They are parsed here with sqlglot's Spark dialect, in pure Python, so a typo, a
query or statement, or a column that does not exist fails at config load, before
a JVM starts. The Spark analyzer checks them again (types, functions) when a
stage builds its select, still without running a job; see
``gridpersona.transform.tags.check_with_spark`` and
``gridpersona.stages.campaigns``. Column names match case-insensitively, as in
Spark.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError


class ExpressionError(ValueError):
    """An expression does not parse, or is not a row-level expression."""


# Statements are never expressions. sqlglot keeps them in its ddl/dml modules; the names
# cover versions that lay the classes out differently.
_STATEMENT_NAMES = {"Alter", "Cache", "Command", "Commit", "Create", "Delete", "Describe", "Drop", "Insert", "Merge",
                    "Pragma", "Rollback", "Set", "Show", "Transaction", "TruncateTable", "Uncache", "Update", "Use"}


def _is_statement(node: exp.Expression) -> bool:
    cls = type(node)
    return cls.__name__ in _STATEMENT_NAMES or cls.__module__.rsplit(".", 1)[-1] in ("ddl", "dml")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(text) -> str:
    return " ".join(_ANSI.sub("", str(text)).split())[:300]


def parse_row_expression(text: str) -> exp.Expression:
    """Parse one Spark SQL row-level expression; ExpressionError saying what is wrong otherwise.

    Refused: empty text, several statements, aggregates, window functions,
    subqueries, ``*`` and aliases (``AS``): an expression computes one value from
    one row.
    """
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("expression is empty")
    try:
        trees = sqlglot.parse(text, read="spark")
    except SqlglotError as exc:
        raise ExpressionError(f"does not parse as Spark SQL: {_first_line(exc)}") from None
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        raise ExpressionError(f"expected one expression, found {len(trees)} statements")
    tree = trees[0]
    if isinstance(tree, (exp.Select, exp.Query)) and not isinstance(tree, exp.Subquery):
        raise ExpressionError("is a query, not an expression")
    if any(_is_statement(node) for node in tree.walk()):
        raise ExpressionError("is a statement, not an expression")
    forbidden = [
        (exp.AggFunc, "an aggregate function"),
        (exp.Window, "a window function"),
        (exp.Subquery, "a subquery"),
        (exp.Select, "a subquery"),
        (exp.Star, "'*'"),
        (exp.Alias, "an alias (AS)"),
    ]
    for node_type, what in forbidden:
        node = tree.find(node_type)
        if node is not None:
            raise ExpressionError(f"uses {what} ({_first_line(node.sql(dialect='spark'))}); "
                                  f"write a row-level expression over the view's columns")
    _refuse_computed_index(tree)
    return tree


def _is_literal(node: exp.Expression) -> bool:
    if isinstance(node, exp.Paren):
        return _is_literal(node.this)
    if isinstance(node, exp.Neg):
        return _is_literal(node.this)
    return isinstance(node, exp.Literal)


def _refuse_computed_index(tree: exp.Expression) -> None:
    """Refuse element_at / try_element_at / get / ``x[i]`` whose index is not a literal.

    In Spark 4.2 ``element_at(array, idx)`` with a NULL ``idx`` coming from a
    column returns the array's LAST element instead of NULL (and fails in the
    optimizer over literal rows), so an unknown input silently becomes the
    highest category. A literal index cannot be NULL; a computed one must be
    written as CASE WHEN, which keeps NULL as NULL.
    """
    for node in tree.walk():
        if isinstance(node, exp.Bracket):
            index = node.expressions
        elif isinstance(node, exp.Anonymous) and str(node.this).lower() in ("get", "element_at", "try_element_at"):
            index = node.expressions[1:]
        else:
            continue
        if not all(_is_literal(i) for i in index):
            raise ExpressionError(
                f"uses element_at / a subscript with a computed index ({_first_line(node.sql(dialect='spark'))}): "
                f"a NULL index returns the LAST element in Spark, so unknown inputs read as a value; "
                f"write CASE WHEN <conditions> THEN 'value' ... END (NULL stays NULL)")


def referenced_columns(tree: exp.Expression | str) -> list[str]:
    """Column names an expression reads, in order of appearance (lambda parameters excluded).

    ``tree``: a parsed expression, or its text (parsed with :func:`parse_row_expression`).
    A qualified name (``a.b``) is reported by its first part, which must be a column
    (Spark reads ``a.b`` over one table as field ``b`` of struct column ``a``).
    """
    if isinstance(tree, str):
        tree = parse_row_expression(tree)
    bound: set[str] = set()
    for lam in tree.find_all(exp.Lambda):
        bound |= {e.name for e in lam.expressions}
    seen: list[str] = []
    for col in tree.find_all(exp.Column):
        parts = [p.name for p in col.parts] if col.parts else [col.name]
        name = parts[0]
        if name and name not in bound and name not in seen:
            seen.append(name)
    return seen


def check_expression(text: str, known: dict[str, object] | set[str] | list[str]) -> list[str]:
    """Parse ``text`` and check every column it reads is in ``known``; returns the columns read.

    ExpressionError names the unknown columns and, for each, the closest known names.
    """
    tree = parse_row_expression(text)
    used = referenced_columns(tree)
    known_set = set(known)
    known_lower = {c.lower() for c in known_set}
    unknown = [c for c in used if c.lower() not in known_lower]
    if unknown:
        import difflib

        hints = []
        for c in unknown:
            close = difflib.get_close_matches(c, sorted(known_set), n=3)
            hints.append(f"'{c}'" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise ExpressionError(f"names unknown column(s) {', '.join(hints)}")
    return used
