"""Bad config files and overrides, as typed by a user: one `error:` line, exit status 2."""
from pathlib import Path

import pytest

from tests.helpers import load_tool

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/demo/faster_rcnn_X50_digits.yaml")


def _error(capsys, *argv):
    with pytest.raises(SystemExit) as exit_:
        load_tool("train_net").run(list(argv))
    assert exit_.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1
    return lines[0]


@pytest.mark.parametrize("argv, expected", [
    (["--config-file", "nope.yaml"], "--config-file 'nope.yaml': no such file"),
    (["--config-file", str(ROOT / "README.md")], "README.md'"),
    (["--config-file", CONFIG, "MODEL.NOPE", "1"], "Non-existent key: MODEL.NOPE"),
    (["--config-file", CONFIG, "SOLVER.MAX_ITER", "abc"], "for config key: SOLVER.MAX_ITER"),
    (["--config-file", CONFIG, "SOLVER.MAX_ITER"], "Override list has odd length"),
    (["--config-file", CONFIG, "MODEL.RESNEXT.TEMPLATE", "X50_3x"],
     "MODEL.RESNEXT.TEMPLATE='X50_3x' is not valid"),
    (["--config-file", CONFIG, "TEST.COCO_EVAL_BACKEND", "fast"],
     "TEST.COCO_EVAL_BACKEND='fast' is not valid"),
])
def test_bad_config_input_is_one_line(argv, expected, capsys, tmp_path):
    error = _error(capsys, *argv, "OUTPUT_DIR", str(tmp_path / "out"))
    assert expected in error
    assert not (tmp_path / "out").exists()  # stopped before writing anything
