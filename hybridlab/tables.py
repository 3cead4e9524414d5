"""Tables and source listings for the chapters: HTML tables with exact data attached, and code blocks.

:func:`show_table` displays a list of dicts as a table (HTML for the book and JupyterLab, Markdown
and plain text as fallbacks) and attaches the exact numbers to the output's metadata, where tests
read them; :func:`show_source` shows a function of the package as a highlighted code block. Both are
re-exported by :mod:`hybridlab.plots`.
"""

from __future__ import annotations

__all__ = ["TABLE_METADATA_KEY", "html_table", "markdown_table", "show_source", "show_table"]


def show_source(obj, docstring: bool = False) -> None:
    """Display the source of a function, method or class as a highlighted code block.

    Args:
        obj: what to show (e.g. :func:`hybridlab.surrogate.projector_splitting_step`).
        docstring: keep the docstring (default: drop it, to show only the code).
    """
    import ast
    import inspect
    import textwrap

    from IPython.display import Markdown, display

    src = textwrap.dedent(inspect.getsource(obj))
    if not docstring:
        tree = ast.parse(src)
        node = tree.body[0]
        body = getattr(node, "body", [])
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            lines = src.splitlines()
            start, end = body[0].lineno - 1, body[0].end_lineno
            src = "\n".join(lines[:start] + lines[end:])
    module = getattr(obj, "__module__", "")
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", ""))
    display(Markdown(f"`{module}.{name}`\n\n```python\n{src.rstrip()}\n```"))


#: What a missing value (``None``) shows as in a table.
MISSING = "—"


def _format(value, fmt: str) -> str:
    """``fmt.format(value)``, or :data:`MISSING` for ``None``."""
    return MISSING if value is None else fmt.format(value)


def _table_columns(rows, columns, formats) -> tuple[dict, dict]:
    """``({key: header}, {key: format})`` of a table (default columns: the keys of the first row)."""
    if columns is None:
        columns = list(rows[0])
    if not isinstance(columns, dict):
        columns = {k: k for k in columns}
    return columns, formats or {}


def markdown_table(rows, columns=None, formats=None) -> str:
    """A Markdown table from a list of dicts.

    Args:
        rows: list of dicts (one per row).
        columns: ``{key: header}`` or a list of keys (default: the keys of the first row).
        formats: ``{key: format string}``, e.g. ``{"ratio": "{:.3f}"}``; a value ``None`` shows as
            :data:`MISSING`.
    """
    if not rows:
        return ""
    columns, formats = _table_columns(rows, columns, formats)
    head = "| " + " | ".join(columns.values()) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    def cell(k, row) -> str:
        return _format(row[k], formats.get(k, "{}")).replace("|", "\\|")

    body = ["| " + " | ".join(cell(k, r) for k in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


#: Key of the output metadata under which :func:`show_table` attaches its exact data.
TABLE_METADATA_KEY = "hybridlab/table"


def html_table(rows, columns=None, formats=None) -> str:
    """The table of :func:`markdown_table` as an HTML ``<table>`` (numbers right-aligned)."""
    import html
    import numbers

    if not rows:
        return ""
    columns, formats = _table_columns(rows, columns, formats)
    align = {k: "right" if all(isinstance(r[k], numbers.Number) or r[k] is None for r in rows) else "left"
             for k in columns}
    cell = "padding: 0.25em 0.9em; text-align: {};"
    head = "".join(f'<th style="{cell.format(align[k])} border-bottom: 1px solid #999;">{html.escape(str(h))}</th>'
                   for k, h in columns.items())
    body = "".join(
        "<tr>" + "".join(f'<td style="{cell.format(align[k])}">{html.escape(_format(r[k], formats.get(k, "{}")))}</td>'
                         for k in columns) + "</tr>"
        for r in rows)
    return (f'<table class="hybridlab-table" style="border-collapse: collapse; margin: 0.5em 0;">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def show_table(rows, columns=None, formats=None, data=None) -> None:
    """Display a table (HTML, with Markdown and plain-text fallbacks); ``data`` goes into the metadata.

    The book and JupyterLab show the HTML. ``data`` (JSON-able, e.g. the rows at full precision and
    the configuration that produced them) goes into the output *metadata* under
    :data:`TABLE_METADATA_KEY`, where tests can read the exact numbers; metadata is not rendered,
    so the book has nothing to warn about.
    """
    from IPython.display import display

    md = markdown_table(rows, columns, formats)
    metadata = {TABLE_METADATA_KEY: data} if data is not None else None
    display({"text/html": html_table(rows, columns, formats), "text/markdown": md, "text/plain": md},
            raw=True, metadata=metadata)
