"""The engines' own config files, in and out.

Readers turn a DeepSpeed ds_config.json, an accelerate config YAML, a torchtitan job TOML, an axolotl YAML,
HF TrainingArguments JSON or a Megatron-LM launch script into setup keyword arguments (the CLI flags' names),
with every value's source key and every ignored key's reason.  Emitters write a layout as DeepSpeed,
accelerate, torchtitan or Megatron-LM configuration.  One module per format; registry.py lists them.

    read_setup_file(path, format=None) -> SetupFileReading
    emit_setup(layout, format) -> EmittedSetup
    write_setup_file(path, layout, format, force=False) -> (Path, EmittedSetup)
"""
from memplan.setupfiles.registry import (EMITTERS, READERS, detect_format, emit_setup, read_setup_file,
                                         write_setup_file)
from memplan.setupfiles.results import EmittedSetup, EngineLayout, SetupFileReading, SetupKeywords

__all__ = ["EMITTERS", "READERS", "EmittedSetup", "EngineLayout", "SetupFileReading", "SetupKeywords",
           "detect_format", "emit_setup", "read_setup_file", "write_setup_file"]
