"""The bookkeeping every reader shares: typed look-ups that fail with one line naming the file and the key,
the keyword arguments found so far with the key each came from, and at the end every key that was not used,
with why.

Keys are dotted paths into the parsed file (`zero_optimization.offload_optimizer.device`).  A key whose value
is null says nothing and is neither read nor listed.
"""
from __future__ import annotations

from typing import Any

from memplan.errors import MemplanError
from memplan.setupfiles.results import FieldIgnored, FieldRead

MISSING = object()
AUTO = "auto"
NOT_MODELLED = "not part of memplan's memory or time model"


class Collector:
    def __init__(self, path: str, data: dict[str, Any]):
        self.path = str(path)
        self.data = data
        self.kwargs: dict[str, Any] = {}
        self.read: list[FieldRead] = []
        self.ignored: list[FieldIgnored] = []
        self.warnings: list[str] = []
        self.files: list[str] = [self.path]
        self._used: set[str] = set()

    # ---- looking things up -------------------------------------------------------------------------------
    def get(self, key: str, default: Any = MISSING) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def has(self, key: str) -> bool:
        return self.get(key, None) is not None

    def error(self, key: str, message: str) -> MemplanError:
        """One line: the file, the key, what is wrong (a value quoted in it is shortened: see `show`)."""
        key = key if len(key) <= 120 else key[:100] + "..."
        message = " ".join(message.split())  # a value with a newline stays on one line
        if len(message) > 400:
            message = message[:380] + "... (shortened)"
        return MemplanError(f"{self.path}: {key}: {message}")

    @staticmethod
    def show(value: Any, limit: int = 60) -> str:
        """A value as an error message quotes it: repr, shortened; 'a list of N', 'a section' for containers."""
        if isinstance(value, dict):
            return "a section of settings" if value else "an empty section {}"
        if isinstance(value, list) and (len(value) > 4 or len(repr(value)) > limit):
            return f"a list of {len(value)} values"
        text = repr(value)
        return text if len(text) <= limit else text[:limit - 15] + f"... ({len(text):,} characters)"

    def integer(self, key: str, minimum: int | None = 1, auto: bool = False) -> int | str | None:
        """A whole number (1e9 written as a float counts), None when absent/null, AUTO when 'auto' and allowed."""
        raw = self.get(key, None)
        if raw is None:
            return None
        if auto and raw == AUTO:
            return AUTO
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int):
            hint = " or 'auto'" if auto else ""
            raise self.error(key, f"expected a whole number{hint}, got {self.show(raw)}")
        if minimum is not None and raw < minimum:
            raise self.error(key, f"must be at least {minimum}, got {raw}")
        return raw

    def boolean(self, key: str, auto: bool = False) -> bool | str | None:
        raw = self.get(key, None)
        if raw is None:
            return None
        if auto and raw == AUTO:
            return AUTO
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false", "yes", "no"):
            return raw.strip().lower() in ("true", "yes")  # accelerate/transformers accept these strings too
        raise self.error(key, f"expected true or false{' or auto' if auto else ''}, got {self.show(raw)}")

    def text(self, key: str, choices: dict[str, Any] | None = None, auto: bool = False) -> Any:
        """A string; with `choices` (lower-case spelling -> what it means) the meaning, else an error listing them."""
        raw = self.get(key, None)
        if raw is None:
            return None
        if auto and raw == AUTO:
            return AUTO
        if choices is not None:
            key_text = str(raw).strip().lower() if isinstance(raw, (str, int, float)) else None
            if key_text not in choices:
                raise self.error(key, f"{self.show(raw)} is not one of {', '.join(sorted(choices))}")
            return choices[key_text]
        if not isinstance(raw, str):
            raise self.error(key, f"expected a string, got {self.show(raw)}")
        return raw

    def mapping(self, key: str) -> dict[str, Any] | None:
        raw = self.get(key, None)
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise self.error(key, f"expected a section of settings, got {self.show(raw)}")
        return raw

    # ---- recording -------------------------------------------------------------------------------------
    def set(self, field: str, value: Any, key: str, note: str = "", default: bool = False,
            file: str | None = None) -> None:
        """`field` = `value`, read from `key`.  A default never replaces a value the file gave; a second
        explicit value that disagrees wins with a warning (the later one is the one the engine applies)."""
        before = next((r for r in self.read if r.field == field and not r.consulted), None)
        if before is not None:
            if default and not before.default:
                return
            if not before.default and before.value != value:
                self.warnings.append(f"{before.key} ({before.file}) says {field} = {before.value!r} but {key} says "
                                     f"{value!r}; memplan uses {value!r}")
            self.read.remove(before)
            if not before.default and (before.file, before.key) != (file or self.path, key) and \
                    not any(r.file == before.file and r.key == before.key for r in self.read):
                self.ignored.append(FieldIgnored(file=before.file, key=before.key,
                                                 reason=f"{field} is taken from {key} instead"))
        self.kwargs[field] = value
        self.read = [r for r in self.read if not (r.consulted and r.file == (file or self.path) and r.key == key)]
        self.read.append(FieldRead(file=file or self.path, key=key, field=field, value=value, note=note,
                                   default=default))
        self.use(key)

    def is_default(self, field: str) -> bool:
        """Nothing set yet for `field`, or only an engine default."""
        return all(r.default for r in self.read if r.field == field and not r.consulted)

    def consult_all(self, field: str, *keys: str, note: str = "") -> None:
        for key in keys:
            self.consult(key, field, note)

    def consult(self, key: str, field: str, note: str = "") -> None:
        """`key` (if the file has it) informed `field` without being the value set: listed as read."""
        value = self.get(key, None)
        self.use(key)
        if value is None or any(r.file == self.path and r.key == key for r in self.read):
            return
        self.read.append(FieldRead(file=self.path, key=key, field=field, value=value, note=note, consulted=True))

    def default(self, field: str, value: Any, key: str, note: str) -> None:
        """The engine's own default for a key the file leaves out (so the run is what the engine would do)."""
        self.set(field, value, key, note=note, default=True)

    def use(self, *keys: str) -> None:
        self._used.update(keys)

    def ignore(self, key: str, reason: str) -> None:
        if self.get(key, None) is not None and key not in self._used:
            self.ignored.append(FieldIgnored(file=self.path, key=key, reason=reason))
        self.use(key)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def merge(self, other: "Collector", key_prefix: str = "") -> None:
        """Take in what a file this one points to (an axolotl YAML's DeepSpeed JSON, ...) gave; `key_prefix`
        when `other` read a section of this same file (an inline DeepSpeed config)."""
        for r in other.read:
            key = r.key if r.key.startswith("(") else key_prefix + r.key
            if r.consulted:
                self.read.append(r.model_copy(update={"key": key}))
            else:
                self.set(r.field, r.value, key, note=r.note, default=r.default, file=r.file)
        self.ignored += [i.model_copy(update={"key": key_prefix + i.key}) for i in other.ignored]
        self.warnings += other.warnings
        self.files += [f for f in other.files if f not in self.files]

    # ---- the rest of the file ------------------------------------------------------------------------------
    def finish(self, reasons: dict[str, str] | None = None) -> None:
        """Every key not used: listed once per unused section (or leaf), with the reason given for it or for its
        nearest listed parent, else NOT_MODELLED."""
        reasons = reasons or {}

        def walk(node: dict, prefix: str) -> None:
            for name, value in node.items():
                key = f"{prefix}{name}"
                if value is None or key in self._used:
                    continue
                below = key + "."
                if isinstance(value, dict) and value and any(k.startswith(below) for k in (*self._used, *reasons)):
                    walk(value, below)  # something inside was used or has its own reason: list it key by key
                    continue
                self.ignored.append(FieldIgnored(file=self.path, key=key, reason=_reason(key, reasons)))

        walk(self.data, "")
        recorded = {(r.file, r.key) for r in self.read} | {(i.file, i.key) for i in self.ignored}
        for key in sorted(self._used):  # consulted but not listed: say so rather than drop it silently
            if (self.path, key) not in recorded and not isinstance(self.get(key, None), (dict, type(None))):
                self.ignored.append(FieldIgnored(file=self.path, key=key, reason="read; changes nothing with this "
                                                                                 "file's other settings"))


def _reason(key: str, reasons: dict[str, str]) -> str:
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in reasons:
            return reasons[".".join(parts[:i])]
    return NOT_MODELLED
