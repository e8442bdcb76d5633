"""Run a module under cProfile with the process's CPU time as the clock (not the wall clock:
on a shared, loaded machine a wall-clock profile charges the time a process waits for a core
to whatever it was doing, typically a socket send), and write the stats when it exits.

    python bench/_cpuprof.py OUT.prof engine.cli mailer --loglevel warning
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time

if __name__ == "__main__":
    out, module = sys.argv[1], sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        profile.disable()
        profile.dump_stats(out)
