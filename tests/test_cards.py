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
    card = json.loads((model / "card.json").read_text())
    if card.get("kind") == "operator-family":  # trains nothing itself: its anchors are shipped models with cards
        assert all((TRAINED_MODELS_DIR / a / "card.json").is_file() for a in card["anchors"])
        return
    training = card["training"]
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


def test_a_trained_card_names_its_data_by_command_and_sha256(tmp_path):
    """`roteq generate` records its command in the dataset; `roteq train` copies it into the card, and the
    dataset's path (here a temporary folder outside the repository) is not written as it is."""
    from roteq_param.models.store import sha256_file
    from solver_coupling.cli import main as roteq

    data = tmp_path / "tiny.nc"
    hour = 3600 / (360 * 86400)
    assert roteq(["generate", "--set", "nx=32", "--coarse-nx", "16", "--members", "2", "--years", str(150 * hour),
                  "--spinup-years", str(100 * hour), "--snapshot-hours", "50", "--serial", "--out-file",
                  str(data)]) == 0
    assert roteq(["train", "--data", str(data), "--channels", "4", "--kernel-sizes", "3", "--epochs", "1",
                  "--out", str(tmp_path / "run"), "--name", str(tmp_path / "model"), "--no-progress"]) == 0
    card = json.loads((tmp_path / "model" / "card.json").read_text())
    training = card["training"]
    assert training["dataset"] == "tiny.nc" and training["dataset_sha256"] == sha256_file(data)
    assert training["dataset_command"].startswith("roteq generate --set nx=32") and "--members 2" in \
        training["dataset_command"]
    for name in ("card.json", "CARD.md"):
        assert str(tmp_path) not in (tmp_path / "model" / name).read_text()
