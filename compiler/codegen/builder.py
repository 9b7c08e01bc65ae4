"""An indented code builder: kernels and wrappers are written line by line, never formatted whole.

Example:
    >>> b = CodeBuilder()
    >>> b.line("def f():")
    >>> with b.indent():
    ...     b.line("return 1")
    >>> print(b.text(), end="")
    def f():
        return 1
"""
from __future__ import annotations

import contextlib


class CodeBuilder:
    def __init__(self, indent: str = "    "):
        self._lines: list[str] = []
        self._depth = 0
        self._unit = indent

    def line(self, text: str = "") -> None:
        self._lines.append(f"{self._unit * self._depth}{text}" if text else "")

    def lines(self, texts) -> None:
        for text in texts:
            self.line(text)

    def splice(self, other: "CodeBuilder | str") -> None:
        """Insert another builder's text (or a block of text) at the current depth."""
        body = other.text() if isinstance(other, CodeBuilder) else other
        for text in body.rstrip("\n").split("\n"):
            self.line(text)

    @contextlib.contextmanager
    def indent(self):
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def affine(offset, terms) -> str:
    """``offset + c0*v0 + ...`` as source, skipping zero terms: ``terms`` are (coef, text).

    Example:
        >>> affine(0, [(1, "rm"), (0, "bindex"), (8, "rk")])
        'rm + 8 * rk'
    """
    parts = [f"{int(c)} * {v}" if int(c) != 1 else v for c, v in terms if int(c) != 0]
    if int(offset) != 0 or not parts:
        parts.insert(0, str(int(offset)))
    return " + ".join(parts)
