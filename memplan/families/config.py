"""Typed, offline access to a Hugging Face config.json: every problem is one line naming the file and the key.

Defaults for absent keys are the matching configuration_<type>.py class's, passed by each family reader, so a
config means the same here as in transformers; structural sizes (hidden size, layers, heads, vocabulary) are
required, because guessing them would silently describe another model.
"""
from __future__ import annotations

from typing import Any

from memplan.errors import MemplanError, did_you_mean

MISSING: Any = object()
# transformers 5.24 activations.py ACT2CLS: the names ACT2FN[config.hidden_act] builds (any other is a KeyError
# when the model is built, so a config naming one describes no model transformers can run)
ACTIVATIONS = ("gelu", "gelu_10", "gelu_fast", "gelu_new", "gelu_python", "gelu_pytorch_tanh", "gelu_python_tanh",
               "gelu_accurate", "hardswish", "laplace", "leaky_relu", "linear", "mish", "quick_gelu", "relu", "relu2",
               "relu6", "sigmoid", "silu", "sqrtsoftplus", "swish", "tanh", "prelu", "xielu")
# Refuse sizes no machine could hold (a typo of a few digits); the message names the bound.
MAX_DIM = 1 << 24  # 16M: widths, vocabularies, positions
MAX_LAYERS = 1 << 14
MAX_EXPERTS = 1 << 16


class ConfigReader:
    """A config dict with typed getters.  `path` and `where` (e.g. 'text_config.') name it in errors."""

    def __init__(self, data: dict[str, Any], path: str, model_type: str, where: str = "") -> None:
        self.data, self.path, self.model_type, self.where = data, path, model_type, where

    def sub(self, key: str) -> "ConfigReader":
        """The nested config under `key` (text_config of a multimodal model), or this one if absent."""
        value = self.data.get(key)
        if value is None:
            return self
        if not isinstance(value, dict):
            raise self.bad(key, "an object", value)
        return ConfigReader(value, self.path, value.get("model_type", self.model_type), f"{self.where}{key}.")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def _raw(self, names: tuple[str, ...]) -> Any:
        for name in names:  # first present, non-null key wins (old and new spellings of one setting)
            if self.data.get(name) is not None:
                return self.data[name]
        return MISSING

    def bad(self, name: str, what: str, value: Any) -> MemplanError:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return MemplanError(f"{self.path}: key '{self.where}{name}' must be {what}, got {shown}")

    def missing(self, name: str) -> MemplanError:
        return MemplanError(f"{self.path}: missing key '{self.where}{name}', needed for a {self.model_type} config")

    def integer(self, *names: str, default: Any = MISSING, minimum: int = 1, maximum: int = MAX_DIM) -> Any:
        value = self._raw(names)
        if value is MISSING:
            if default is MISSING:
                raise self.missing(names[0])
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.bad(names[0], "a positive integer" if minimum == 1 else f"an integer >= {minimum}", value)
        if value > maximum:
            raise self.bad(names[0], f"at most {maximum:,} (no model this large exists)", value)
        return value

    def number(self, *names: str, default: Any = 0.0) -> Any:
        value = self._raw(names)
        if value is MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
                or value in (float("inf"), float("-inf")):
            raise self.bad(names[0], "a finite number", value)
        return float(value)

    def probability(self, *names: str, default: float = 0.0) -> float:
        value = self.number(*names, default=default)
        if not 0 <= value < 1:
            raise self.bad(names[0], "a probability in [0, 1)", value)
        return value

    def flag(self, *names: str, default: bool) -> bool:
        value = self._raw(names)
        if value is MISSING:
            return default
        if not isinstance(value, bool):
            raise self.bad(names[0], "true or false", value)
        return value

    def text(self, *names: str, default: Any = MISSING) -> Any:
        value = self._raw(names)
        if value is MISSING:
            if default is MISSING:
                raise self.missing(names[0])
            return default
        if not isinstance(value, str):
            raise self.bad(names[0], "a string", value)
        return value

    def activation(self, *names: str, default: Any = MISSING) -> Any:
        """An activation name transformers knows (ACTIVATIONS)."""
        value = self.text(*names, default=default)
        if value not in ACTIVATIONS:
            raise MemplanError(f"{self.path}: key '{self.where}{names[0]}': "
                               + did_you_mean(str(value), ACTIVATIONS, "activation") + " (transformers' ACT2FN)")
        return value

    def int_list(self, name: str, default: Any = MISSING) -> Any:
        value = self.data.get(name)
        if value is None:
            if default is MISSING:
                raise self.missing(name)
            return default
        if not isinstance(value, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
            raise self.bad(name, "a list of integers", value)
        return value

    def str_list(self, name: str, default: Any = MISSING) -> Any:
        value = self.data.get(name)
        if value is None:
            if default is MISSING:
                raise self.missing(name)
            return default
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise self.bad(name, "a list of strings", value)
        return value

    def rope(self, key: str) -> Any:
        """A rope setting: transformers 5 saves it inside rope_parameters, 4.x inside rope_scaling."""
        for holder in ("rope_parameters", "rope_scaling"):
            block = self.data.get(holder)
            if isinstance(block, dict) and block.get(key) is not None:
                return block[key]
        return None

    def refuse(self, key: str, why: str) -> MemplanError:
        return MemplanError(f"{self.path}: {self.where}{key} is not supported ({why})")

    def layer_types(self, n_layers: int, default: list[str], known: tuple[str, ...]) -> list[str]:
        """`layer_types` (transformers 5: one entry per layer), checked; else `default`."""
        types = self.str_list("layer_types", default=None)
        if types is None:
            return default
        unknown = sorted(set(types) - set(known))
        if unknown:
            raise self.bad("layer_types", "entries among " + ", ".join(known), unknown[0])
        if len(types) != n_layers:
            raise self.bad("layer_types", f"a list of {n_layers} entries (num_hidden_layers)", f"{len(types)} entries")
        return types
