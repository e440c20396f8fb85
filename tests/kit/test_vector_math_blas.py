"""The runtime runs numpy's BLAS on one thread per call (``trellis.context.index.exact.use_one_blas_thread``).

Checked in a fresh process, so what another test set in this one cannot answer for it, and with
the control reading taken in the same process before the runtime is built.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_BUILD_AND_REPORT = """
import json, sys
from pathlib import Path
from threadpoolctl import threadpool_info
import numpy  # loads the BLAS library threadpoolctl reports on

def blas_threads():
    return sorted({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"})

from trellis.runtime import build_runtime
from trellis.settings import Settings

before = blas_threads()
build_runtime(Settings(data_dir=Path(sys.argv[1])))
print(json.dumps({"before": before, "after": blas_threads()}))
"""


def test_building_the_runtime_leaves_numpy_one_blas_thread(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS") and not k.startswith("TRELLIS_")}
    done = subprocess.run(
        [sys.executable, "-c", _BUILD_AND_REPORT, str(tmp_path / "data")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    threads = json.loads(done.stdout.strip().splitlines()[-1])

    assert threads["after"] == [1]
    # The control: left alone, OpenBLAS starts one thread per core (so on one core there is nothing to see).
    assert threads["before"] == [os.cpu_count()] or os.cpu_count() == 1
