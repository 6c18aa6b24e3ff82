"""Shortening text for a table cell: the JSON keeps every note and source whole; a table shows its beginning, cut
between words and never inside a parenthesis (a cut mid-number or mid-parenthesis reads as a wrong figure)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from memplan.spec.layout import Layout


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


def describe_layout(layout: Layout) -> str:
    """'dp16 tp8 pp8 v3 zero1 mb1 ga96 rc:full sp' -- the layout as one short line."""
    L = layout
    parts = [f"dp{L.dp}", f"tp{L.tp}", f"pp{L.pp}"]
    if L.virtual_stages > 1:
        parts.append(f"v{L.virtual_stages}")
    if L.first_stage_layers is not None or L.last_stage_layers is not None:
        parts.append(f"stages[{L.first_stage_layers if L.first_stage_layers is not None else '='}|"
                     f"{L.last_stage_layers if L.last_stage_layers is not None else '='}]")
    if L.cp > 1:
        parts.append(f"cp{L.cp}")
    if L.ep > 1:
        parts.append(f"ep{L.ep}" + (f" etp{L.etp}" if L.etp is not None else ""))
    parts.append(f"zero{L.zero}")
    if L.offload_optimizer != "none" or L.offload_params != "none":
        parts.append("offload:" + "+".join(x for x, on in (("opt", L.offload_optimizer != "none"),
                                                            ("params", L.offload_params != "none")) if on))
    parts += [f"mb{L.micro_batch}", f"ga{L.grad_accum}"]
    if L.recompute != "none":
        parts.append(f"rc:{L.recompute}")
    if L.sequence_parallel:
        parts.append("sp")
    return " ".join(parts)
