"""Wall time and peak memory of the prepare_acdc stage on a dataset (default: the shared ACDC).

    uv run python benchmarks/bench_prepare.py --raw ../shared/data/acdc [--crop motion]

Prints one table row per crop mode; memory is the process's peak resident set (ru_maxrss),
which includes the ~0.5 GB that importing torch costs, printed apart as the baseline.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from seglab.config import AcdcDataParams, AcdcPrepareParams
from seglab.data.prepare_acdc import prepare_acdc
from seglab.metrics.anatomy import anatomy_qc


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--raw", default="../shared/data/acdc", help="ACDC dataset path")
    parser.add_argument("--crop", nargs="+", default=["motion"], choices=["motion", "center", "gt"])
    args = parser.parse_args()
    baseline = _peak_mb()
    print(f"baseline peak RSS after imports: {baseline:.0f} MB")
    print(f"{'crop':<8} {'seconds':>8} {'peak MB':>8}  summary")
    for crop in args.crop:
        with tempfile.TemporaryDirectory() as tmp:
            params = AcdcDataParams(
                raw=args.raw,
                prepared=str(Path(tmp) / "prepared"),
                prepare=AcdcPrepareParams(crop=crop),
            )
            start = time.perf_counter()
            summary = prepare_acdc(params, qc=anatomy_qc)
            seconds = time.perf_counter() - start
            print(f"{crop:<8} {seconds:8.1f} {_peak_mb():8.0f}  {summary}")


if __name__ == "__main__":
    main()
