"""open_clip is imported only when the open_clip backend needs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LABEL_MAP_RUN = """
import json, sys
import numpy as np
import activekd.teacher
import activekd.teacher.batching, activekd.teacher.cache, activekd.teacher.class_views
import activekd.teacher.pool_job, activekd.teacher.precomputed, activekd.teacher.scoring
after_import = "open_clip" in sys.modules
from activekd.data.fashion_mnist import load_fashion_mnist
from activekd.teacher import TeacherConfig, create_teacher, score_pool
teacher = create_teacher(TeacherConfig(backend="label-map", device="cpu", image_size=64))
out = score_pool(teacher, load_fashion_mnist("test")[0][:4], chunk_size=2)
print(json.dumps({"after_import": after_import, "after_predict": "open_clip" in sys.modules,
                  "shape": list(out.probs.shape), "sums": out.probs.sum(1).tolist()}))
"""


def test_the_label_map_path_never_imports_open_clip() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", LABEL_MAP_RUN],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["after_import"] is False
    assert got["after_predict"] is False
    assert got["shape"] == [4, 10]
    assert all(abs(s - 1.0) < 1e-5 for s in got["sums"])


def test_the_open_clip_configs_register_on_demand() -> None:
    code = (
        "import sys\n"
        "from activekd.teacher import MODEL_CONFIG_DIR, register_model_configs\n"
        "assert 'open_clip' not in sys.modules\n"
        "register_model_configs(); register_model_configs()\n"
        "import open_clip\n"
        "assert (MODEL_CONFIG_DIR / 'tiny-clip-32.json').is_file()\n"
        "print('tiny-clip-32' in open_clip.list_models())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "True"
