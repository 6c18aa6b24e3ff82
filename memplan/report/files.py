"""Writing result files: the code is memplan/outfiles.py, on the base floor, since setups, setup files and
measure/ write files too and sit below report/.  This module keeps the name the views, the CLI and the tests use."""
from memplan.outfiles import (  # noqa: F401 - re-exported
    TargetRefused,
    Writer,
    _HOST,
    check_folder_writable,
    check_writable,
    remove_stale_temps,
    resolve_target,
    stream_fd,
    timestamped_path,
    write_new_file,
    write_new_file_with,
)
