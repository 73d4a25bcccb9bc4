"""Label-efficiency benchmark (the paper's protocol on Fashion-MNIST, label-map teacher).

    .venv/bin/python bench/label_efficiency.py --quick            # CI/demo-sized grid
    .venv/bin/python bench/label_efficiency.py                    # full grid: hours on 2 cores
    .venv/bin/python bench/label_efficiency.py --time-budget 3600 # run for an hour, resume later
    python bench/label_efficiency.py --workers 14                # a GPU box: 14 runs at once
    .venv/bin/python bench/label_efficiency.py --summarise-only

Runs are saved under bench/results/label_efficiency/<tag>/<config>/seed-<s>.json and skipped
when present; results.csv, results.md and curves.png are rewritten after every invocation.
"""

from __future__ import annotations

import sys

from activekd.experiment.label_efficiency_cli import main

if __name__ == "__main__":
    sys.exit(main())
