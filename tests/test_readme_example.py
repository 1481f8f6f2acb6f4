"""The README's "use the library in your own training loop" block runs as printed, and learns something."""

import re
import subprocess
import sys
from pathlib import Path

from conftest import needs_mirror

README = Path(__file__).resolve().parents[1] / "README.md"


def example_code() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Use the library in your own training loop", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section holds exactly one python block"
    return blocks[0]


@needs_mirror
def test_readme_library_example_runs_and_trains(tmp_path):
    code = example_code()
    # the same block, once as printed and once with 0 steps: training must beat the untrained encoder
    untrained = code.replace("zip(range(60), sampler)", "zip(range(0), sampler)")
    assert untrained != code
    outputs = []
    for name, source in (("trained.py", code), ("untrained.py", untrained)):
        (tmp_path / name).write_text(source, encoding="utf-8")
        done = subprocess.run([sys.executable, str(tmp_path / name)], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout)
    maps = [dict(re.findall(r"'(mono|cross|multi)': ([0-9.]+)", out)) for out in outputs]
    assert set(maps[0]) == {"mono", "cross", "multi"}
    rank_distance = [float(re.search(r"rank distance ([0-9.]+)", out).group(1)) for out in outputs]
    # What 60 steps teach a trigram bag is language bias, not meaning: over init seeds 0-2 the rank distance
    # falls by 13-15 while cross mAP moves by -0.01..+0.015 (it once fell below the untrained bag's when the
    # two runs started from different random inits, which the block's manual_seed now rules out).
    assert rank_distance[0] < rank_distance[1] - 5, (rank_distance, maps)
    assert "torch.manual_seed(" in code, "trained and untrained must start from the same encoder"
