"""The import graph of memplan, read from the source: floors, no cycles, torch in measure/ only.

docs/architecture.md ("Floors") gives the shape: base helpers -> what the user describes (spec/) -> views (report/)
-> the answers' shapes (results/) -> knowledge (families/, engines/) -> catalog -> serving and other tools' files ->
bytes (memory/) -> setups -> seconds (perf/) -> answers composed from them (answers/) -> measurement (measure/) ->
the Python API -> the CLI.  This test computes the graph with `ast` from every module under memplan/ -- imports at
module level AND inside functions (a lazy import is an edge like any other: it runs, and it ties the two modules
together) -- and asserts:

  (a) only memplan/measure/ imports torch, transformers, peft, trl, pynvml (and the other libraries of HEAVY);
  (b) no module cycle;
  (c) no import from a lower floor to a higher one (FLOORS below, lowest first).

Not counted as edges: imports under `if TYPE_CHECKING:` (annotations only, never run) and under
`if __name__ == "__main__":` (the module run as a script is the program `__main__`, not the module others import).
`import memplan` / `from memplan import X` is an edge to the package `memplan` itself, which sits on the API's floor:
its __getattr__ loads memplan.api (by name, through importlib, so the edge is declared in PACKAGE_EDGES).  A module
below the API that reaches a helper through the package closes a cycle through the API: import the defining module.
Likewise `from memplan.setupfiles import deepspeed` is an edge to the package memplan.setupfiles (it reads the
package's namespace, whose __init__ imports every reader) as well as to memplan.setupfiles.deepspeed, while
`import memplan.setupfiles.deepspeed as deepspeed` is an edge to the module alone: Python runs a parent package's
__init__ before any module in it, but that implicit step is not counted, or every module would depend on memplan/.
"""
from __future__ import annotations

import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "memplan"

# Libraries only memplan/measure/ may import: each costs seconds at start-up and a GPU stack to install.
HEAVY = {"torch", "transformers", "peft", "trl", "pynvml", "accelerate", "deepspeed", "bitsandbytes", "tokenizers"}

# The floors, lowest first.  A module may import its own floor and any floor below; never one above.  A module's
# floor is that of its first folder under memplan/ (memplan.memory.states -> "memory"), or its own name for the
# modules directly in memplan/ (memplan.hints -> "hints" -> listed below with its floor).
FLOORS: list[tuple[str, set[str]]] = [
    # errors and the small helpers every floor uses: typed errors, reading a user's file and writing ours safely,
    # wording a pydantic error with its field, Ctrl-C handling, the installed library versions.
    ("base", {"errors", "field_errors", "userfiles", "outfiles", "interrupt", "versions"}),
    # what the user describes (pydantic): the model, layout, workload, hardware.  Imports nothing of memplan but
    # the base floor's errors.
    ("spec", {"spec"}),
    # views: the tables, plots and text a result is shown as.  A view reads a result's fields (it names the result
    # classes for type checkers only), so it sits below the results and a result can offer its own views
    # (`.table()`, the notebook's _repr_html_) without importing upward.
    ("report", {"report"}),
    # what memplan answers (pydantic): the shapes of the answers, filled in by the arithmetic above (memory/ builds a
    # MemoryEstimate, perf/ a TimeEstimate).  So results sit below the arithmetic and import none of it -- only
    # spec (the setup an answer echoes), the views and base.
    ("results", {"results"}),
    # knowledge of a model family (config.json -> Model) and of a training engine (its conventions as data).
    ("knowledge", {"families", "engines"}),
    # profiles/ loaded by name (GPUs, links, models through their family's reader, data tables).
    ("catalog", {"catalog"}),
    # the serving engines' release rules and tables (read from profiles/ through the catalog); other tools' setup
    # files (Trainer, DeepSpeed, Accelerate, axolotl, torchtitan, Megatron) and RL configs, read and written.
    ("files", {"serving", "setupfiles", "rlfiles"}),
    # bytes.
    ("memory", {"memory"}),
    # one builder for every setup, from flags, keyword arguments or setup files (`keywords` holds the typed option
    # fields the API's signatures and the CLI's flags are generated from).  It validates with the model's
    # arithmetic in memory/ (a LoRA spec's targets resolved against the model's linear layers, memory/lora.py; the
    # TP/EP divisibility of a serving layout, memory/layout.py), so it sits above memory/; nothing in memory/ or
    # perf/ builds a setup.
    ("setups", {"setups", "keywords"}),
    # seconds (reads memory/ only for the planner's model-state bound and the serving roofline's KV kinds).
    ("perf", {"perf"}),
    # answers composed from the arithmetic: verdicts, the smallest change that fits (hints), the serving capacity
    # plan, the RL plan.
    ("answers", {"answers", "hints"}),
    # measurement: runs the step with torch and compares it with the answer for the same setup, so it sits above
    # the answers it checks (measure/rl_step reads the RL plan); nothing below imports it.
    ("measure", {"measure"}),
    # the Python API (memplan.api; the package `memplan`, whose attributes are the API's, loaded lazily; the
    # generated stub memplan/__init__.pyi).
    ("api", {"api", "memplan", "stub"}),
    # the command line: parse, call, render.
    ("cli", {"cli", "__main__"}),
]

# Edges ast cannot see: memplan/__init__.py loads these by name (importlib) on first attribute access.
PACKAGE_EDGES = {("memplan", "memplan.api"), ("memplan", "memplan.errors")}

# Upward imports still in the code, each with why: the list can only shrink (the test fails when an edge listed
# here is gone -- delete it from the list -- and for every edge not listed).
KNOWN_UPWARD: dict[tuple[str, str], str] = {
    ("memplan.families.profiles", "memplan.measure.trace.module_tree"):
        "a built-in profile of a model type no family file covers (olmo-3, smollm3, apertus) stores the "
        "architecture read from transformers' module tree; --layers/--hidden on it read the changed config again "
        "through that reader, which needs torch and so lives in measure/ (lazy; one line without torch). Goes when "
        "the stored architecture can take the flags itself",
    ("memplan.families.profiles", "memplan.measure.trace.probe"):
        "the same path: probe.with_layers rewrites the config's per-layer lists (layer_types, ...) for --layers",
}

# Modules outside measure/ that still import a HEAVY library, each with why (same rule: it can only shrink).
KNOWN_HEAVY: dict[str, str] = {
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is_main_guard(test: ast.expr) -> bool:
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and len(test.comparators) == 1 and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node that runs when the module is imported or its functions are called."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and (_is_type_checking(node.test) or _is_main_guard(node.test)):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _targets(mods: dict[str, Path], name: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The absolute module names an import statement reaches (a `from pkg import sub` reaches pkg and pkg.sub)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        parts = name.split(".")
        pkg = parts if mods[name].name == "__init__.py" else parts[:-1]
        pkg = pkg[:len(pkg) - node.level + 1]
        base = ".".join(pkg + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [base] + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]


def _nearest(mods: dict[str, Path], target: str) -> str | None:
    while target and target not in mods:
        target = target.rpartition(".")[0]
    return target or None


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(memplan module -> memplan modules it imports, memplan module -> HEAVY libraries it imports)."""
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    heavy: dict[str, set[str]] = collections.defaultdict(set)
    for name, path in mods.items():
        for node in _imports(ast.parse(path.read_text(), str(path))):
            for target in _targets(mods, name, node):
                top = target.partition(".")[0]
                if top in HEAVY:
                    heavy[name].add(top)
                elif top == "memplan":
                    found = _nearest(mods, target)
                    if found and found != name:
                        edges[name].add(found)
    for a, b in PACKAGE_EDGES:
        edges[a].add(b)
    return edges, dict(heavy)


def floor_of(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "memplan"
    for i, (_, members) in enumerate(FLOORS):
        if key in members:
            return i
    raise AssertionError(f"{module}: no floor in FLOORS names {key!r}; add it where it belongs")


def upward_edges(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a, b) for a, bs in edges.items() for b in bs if floor_of(b) > floor_of(a)}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_every_module_has_a_floor():
    for module in _modules():
        floor_of(module)


def test_heavy_libraries_only_in_measure():
    _, heavy = graph()
    outside = {m: libs for m, libs in heavy.items() if not m.startswith("memplan.measure")}
    new = {m: sorted(libs) for m, libs in outside.items() if m not in KNOWN_HEAVY}
    gone = sorted(set(KNOWN_HEAVY) - set(outside))
    assert not new, f"imports {sorted(HEAVY)} outside memplan/measure/ (route them through measure/): {new}"
    assert not gone, f"no longer import a heavy library: delete them from KNOWN_HEAVY: {gone}"


def test_no_import_cycle():
    edges, _ = graph()
    found = cycles(edges)
    assert not found, "import cycles (lazy imports included): " + "; ".join(
        f"{len(c)} modules: {', '.join(c)}" for c in found)


def test_no_upward_import():
    edges, _ = graph()
    up = upward_edges(edges)
    new = sorted(up - set(KNOWN_UPWARD))
    gone = sorted(set(KNOWN_UPWARD) - up)
    names = [n for n, _ in FLOORS]
    assert not new, "imports from a lower floor to a higher one:\n" + "\n".join(
        f"  {a} ({names[floor_of(a)]}) -> {b} ({names[floor_of(b)]})" for a, b in new)
    assert not gone, f"gone: delete them from KNOWN_UPWARD: {gone}"


def test_the_graph_is_read():
    """Not vacuous: the graph holds module-level and lazy edges, and leaves out the TYPE_CHECKING ones."""
    edges, heavy = graph()
    assert "memplan.results.memory" in edges["memplan.memory.estimate"]  # module level
    assert "memplan.hints" in edges["memplan.answers.time"]  # inside a function
    assert "memplan.api" in edges["memplan.cli.estimate"]  # `import memplan.api as api` inside a function
    assert "memplan.results.memory" not in edges["memplan.report.tables"]  # under `if TYPE_CHECKING:`
    assert "torch" in heavy["memplan.measure.runner"]
    assert sum(map(len, edges.values())) > 500
