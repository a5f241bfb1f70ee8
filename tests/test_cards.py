"""Model cards are read on other machines: no file-system path of the machine that made them, and the
dataset named by the path it was given as, the command that made it and its sha256."""

from __future__ import annotations

import json
import re

import pytest

from roteq_param.models import TRAINED_MODELS_DIR
from roteq_param.models.store import portable

# an absolute POSIX or Windows path, or a home directory, anywhere in the text
_MACHINE_PATH = re.compile(r"(?<![\w.:/~-])(/(?:work|home|tmp|root|Users|mnt|var|opt|scratch|data)\b|~/|[A-Z]:\\)")
SHIPPED = sorted(p for p in TRAINED_MODELS_DIR.iterdir() if (p / "card.json").is_file())


@pytest.mark.parametrize("model", SHIPPED, ids=[p.name for p in SHIPPED])
def test_no_shipped_card_holds_a_machine_path(model):
    for name in ("card.json", "CARD.md"):
        text = (model / name).read_text()
        found = _MACHINE_PATH.findall(text)
        assert not found, f"{model.name}/{name} holds machine paths: {found}"
    training = json.loads((model / "card.json").read_text())["training"]
    assert len(training["dataset_sha256"]) == 64
    assert training["dataset"].startswith("data/") and "roteq generate" in training["dataset_command"]
    assert training["dataset"] in training["dataset_command"]


def test_the_writer_makes_paths_portable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inside = str(tmp_path / "data" / "coarse.nc")
    card = portable({"dataset": inside, "options": {"data": "/elsewhere/runs/x.nc"},
                     "command": f"roteq train --data {inside} --out=/scratch/me/run --name runs/m",
                     "units": "m2 s-2, 1/s", "link": "https://github.com/pyqg/pyqg"})
    assert card == {"dataset": "data/coarse.nc", "options": {"data": "x.nc"},
                    "command": "roteq train --data data/coarse.nc --out=run --name runs/m",
                    "units": "m2 s-2, 1/s", "link": "https://github.com/pyqg/pyqg"}
    repo = str(TRAINED_MODELS_DIR / "eddy-c4")
    assert portable({repo: 1}) == {"trained_models/eddy-c4": 1}
