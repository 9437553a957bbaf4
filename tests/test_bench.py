"""The prepared GPU run's scripts run here too: on CPU tensors, at a tiny shape, so the day a
GPU is lent they measure instead of failing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_model_step_benchmark_runs_a_real_step_and_reports_its_share_of_the_matmul_rate():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "model_step.py"), "--shape", "tiny", "--steps", "2",
                          "--device", "cpu"], capture_output=True, text=True, timeout=300, check=True).stdout
    step = re.search(r"step: ([0-9.]+) s \(median of 2\), two passes, >= ([0-9.]+) GFLOP counted", out)
    mfu = re.search(r"MFU ([0-9.]+)%", out)
    assert step and mfu, out
    # The share is two timings taken apart (the matrix-product rate, then the step): on a machine
    # busy with other work it can read above 100 %, so only its presence is asserted.
    assert float(step.group(1)) > 0 and float(step.group(2)) > 0 and float(mfu.group(1)) > 0
