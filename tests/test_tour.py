"""The README's main job (the API tour) runs end to end and its round trips are exact."""

from __future__ import annotations

import json
import subprocess
import sys


def test_tour_runs_and_round_trips_exactly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "georsclip_jax.tour", "--model", "tiny-quickgelu",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["act"] == "quick_gelu" and results["image_features_shape"] == [4, 32]
    assert results["round_trip_max_abs_diff"] == {"open_clip": 0.0, "hf": 0.0}
    assert (tmp_path / "open_clip" / "open_clip_config.json").is_file()
    assert (tmp_path / "hf" / "config.json").is_file()
