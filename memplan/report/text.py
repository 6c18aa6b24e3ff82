"""Shortening text for a table cell: the JSON keeps every note and source whole; a table shows its beginning, cut
between words and never inside a parenthesis (a cut mid-number or mid-parenthesis reads as a wrong figure)."""
from __future__ import annotations


def brief(text: str, width: int) -> str:
    """`text` if it fits in `width` characters, else its beginning cut at a word boundary, an unclosed parenthesis
    dropped, then ' ...'."""
    if len(text) <= width:
        return text
    cut = text.rfind(" ", 0, width - 3)
    head = text[:cut if cut > 0 else width - 4]
    opened = head.rfind("(")
    if opened > head.rfind(")") and opened > width // 3:  # an unclosed parenthesis: end before it
        head = head[:opened]
    return head.rstrip(" ,;:=") + " ..."


def first_clause(note: str, width: int) -> str:
    """The first clause of a note (up to its first '; '), shortened to `width`."""
    return brief(note.split("; ")[0], width)
