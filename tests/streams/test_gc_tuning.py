"""The flow process's collector settings (in a child: they are process-wide)."""

from __future__ import annotations

import json
import subprocess
import sys

from streams import compiled
from streams.gc_tuning import YOUNG_THRESHOLD


def test_the_flow_process_freezes_its_start_and_collects_young_objects_less_often():
    code = ("import gc, json; from streams.gc_tuning import tune_for_flow;"
            "before = gc.get_threshold(); tune_for_flow();"
            "print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=compiled.ROOT, check=True).stdout
    before, after, frozen = json.loads(out)
    assert after == [YOUNG_THRESHOLD, before[1], before[2]]
    assert YOUNG_THRESHOLD > before[0]
    assert frozen > 1000  # the imports' objects are no longer scanned
