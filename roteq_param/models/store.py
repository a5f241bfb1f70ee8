"""Trained models on disk: ``model.pt`` (config + weights), ``card.json`` and ``CARD.md``.

``trained_models/<name>/`` holds ``model.pt`` (config + state dict), ``card.json`` (schema,
group, architecture, training recipe with the dataset's sha256, metrics, inference cost) and
``CARD.md`` (the same, for people), each with its sha256 manifest (``<file>.sha256``,
:mod:`roteq_param.integrity`). :func:`save_model` writes them atomically; :func:`load_model` checks
and reads them back with one call and explains what is wrong when it cannot.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from roteq_param.atomic import atomic_write_files, exclusive_output
from roteq_param.integrity import CorruptFileError, sha256_file, verify_file
from roteq_param.fields import Schema
from roteq_param.models.config import ModelConfig
from roteq_param.models.export import time_inference
from roteq_param.models.net import FluxNet

__all__ = ["ModelFileError", "MODEL_FORMAT", "TRAINED_MODELS_DIR", "DEFAULT_MODEL", "sha256_file", "model_dir", "save_model",
           "load_card", "load_model", "derive_model"]

MODEL_FORMAT = "roteq-fluxnet/1"
TRAINED_MODELS_DIR = Path(__file__).resolve().parents[2] / "trained_models"
DEFAULT_MODEL = "eddy-c4-dilated-apost2"  # the shipped model every entry point uses unless told otherwise


class ModelFileError(RuntimeError, ValueError):
    """A trained-model directory or file is unreadable, corrupt or does not fit what was asked.

    Also a ``ValueError``: every entry point that reports bad input reports this one too."""


_REMEDY = "re-save or re-train the model"  # verify_file adds: or re-copy it


def _verified(path: Path, what: str) -> None:
    """Check a model file against its manifest (:func:`~roteq_param.integrity.verify_file`)."""
    try:
        verify_file(path, what, _REMEDY)
    except CorruptFileError as e:
        raise ModelFileError(str(e)) from None


def _model_folder(name_or_path: str | os.PathLike) -> Path:
    """:func:`model_dir`, refusing a path that is a file (``.../card.json``) with what to give instead."""
    d = model_dir(name_or_path)
    if d.is_file():
        hint = (f"; the model folder is probably {d.parent}" if (d.parent / "model.pt").is_file() else "")
        raise ModelFileError(f"model path {d} is a file, not a model folder (a folder holding model.pt, card.json and "
                             f"CARD.md){hint}")
    if d.is_dir() and not (d / "model.pt").exists() and not (d / "card.json").exists():
        raise FileNotFoundError(f"folder {d} holds no trained model (no model.pt, no card.json); give a folder "
                                f"written by `roteq train` or a name under {TRAINED_MODELS_DIR}: {_known_models()}")
    return d


def model_dir(name_or_path: str | os.PathLike) -> Path:
    """A model directory: an existing path as given, else ``trained_models/<name>`` of this repository."""
    p = Path(name_or_path)
    if p.exists() or p.is_absolute() or len(p.parts) > 1:
        return p
    return TRAINED_MODELS_DIR / p


# an absolute file-system path inside a string: a "/" that does not continue a word, a URL or a path
_ABS_PATH = re.compile(r"(?<![\w.:/~-])/[^\s'\",;()\[\]]+")


def _portable_path(path: str) -> str:
    """``path`` relative to this repository, or to the working directory, when inside one; else its file name."""
    for root in (TRAINED_MODELS_DIR.parent, Path.cwd()):
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            continue
    return Path(path).name


def portable(value: Any) -> Any:
    """``value`` (a card's JSON) with every absolute path made portable (:func:`_portable_path`).

    A card is shipped and read on other machines: a path of the machine that trained the model says
    nothing there (and tells where it was made), so the dataset is named by the path it was given as,
    the command that made it and its sha256.
    """
    if isinstance(value, str):
        return _ABS_PATH.sub(lambda m: _portable_path(m.group(0)), value)
    if isinstance(value, Mapping):
        return {portable(k): portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    return value


def _card_markdown(card: Mapping[str, Any]) -> str:
    arch = card["architecture"]
    lines = [f"# Model card: {card['name']}", "",
             f"Rotation-equivariant subgrid flux network ({arch['arch']}, group {card['group']}), "
             f"format `{card['format']}`, created {card['created']}.", "",
             "## Fields", "", "| role | name | kind | layer | units | description |", "|---|---|---|---|---|---|"]
    for role in ("inputs", "outputs"):
        for f in card["schema"][role]:
            lines.append(f"| {role[:-1]} | `{f['name']}` | {f['kind']} | {f['layer'] if f['layer'] is not None else '-'} "
                         f"| {f['units']} | {f['long_name']} |")
    lines += ["", "## Architecture", "",
              f"- hidden channels {arch['channels']}, kernel sizes {arch['kernel_sizes']}, "
              f"dilations {arch.get('dilations', [1] * len(arch['channels']))}, "
              f"output kernel {arch['out_kernel_size']}, activation {arch['activation']}, circular padding",
              f"- fixed closure terms added to the network's PV forcing: grid-scale damping "
              f"{arch.get('grid_damping', 0.0):g} s^-1 (biharmonic viscosity on relative vorticity), energy "
              f"backscatter {arch.get('energy_backscatter', 0.0):g} (multiple of the network's energy drain "
              f"returned with shape order {arch.get('backscatter_order', 2)}: 2 = -a lap zeta, 1 = +a zeta); "
              "0 = none",
              f"- {card['n_parameters']} trainable parameters", ""]
    norm = card.get("normalization") or {}
    if norm:
        lines += ["## Normalisation (one scale per field, in the field's units)", ""]
        for role, scales in norm.items():
            lines.append(f"- {role}: " + ", ".join(f"`{k}` {v:.4g}" for k, v in scales.items()))
        lines.append("")
    lines += _regime_markdown(card.get("training", {}).get("solver"), bool(arch.get("similarity")),
                              card.get("training", {}).get("solver_span") or {})
    lines += ["## Training", "", "```json", json.dumps(card.get("training", {}), indent=2, sort_keys=True), "```", "",
              "## Metrics (held-out runs)", ""]
    metrics = card.get("metrics", {})
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, (int, float)) else f"| {k} | {v} |"
                  for k, v in sorted(_flatten(metrics).items())]
    else:
        lines.append("(none recorded)")
    lines += ["", "## Inference cost", "", "```json", json.dumps(card.get("inference_cost", {}), indent=2), "```", ""]
    return "\n".join(lines)


def _regime_markdown(solver: Mapping[str, Any] | None, similarity: bool, span: Mapping[str, Any]) -> list[str]:
    """The solver settings the model was trained on, one row each: a number, or a range for a trained
    family, and (``span``) the part of each range the training runs held. For people: the solver
    couplings' regime checks read the same settings from the JSON."""
    if not solver:
        return []
    grid = (" A similarity-scaled model is not bound to the grid size (`nx`, `ny`), only to the layer count."
            if similarity else "")
    held = (" The training runs drew only part of each range (last column): beyond it, inside the range, the "
            "plugin runs but warns that the network extrapolates." if span else "")

    def shown(value: Any) -> str:
        return (f"{value[0]:.6g} to {value[1]:.6g}" if isinstance(value, (list, tuple)) else
                f"{value:.6g}" if isinstance(value, (int, float)) else str(value))

    lines = ["## Trained regime (solver settings of the training data)", "",
             "The pyqg plugin accepts a solver when each setting equals the number below (to 1e-6 relative) or lies "
             "in the range, as it is or after one element of the model's group acts on beta and U." + grid + held, "",
             "| setting | trained | training runs |" if span else "| setting | trained |",
             "|---|---|---|" if span else "|---|---|"]
    for name, value in sorted(solver.items()):
        lines.append(f"| `{name}` | {shown(value)} |" + (f" {shown(span[name]) if name in span else ''} |"
                                                        if span else ""))
    return lines + [""]


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def save_model(model: FluxNet, name_or_path: str | os.PathLike, *, training: Mapping[str, Any] | None = None,
               metrics: Mapping[str, Any] | None = None, inference_cost: Mapping[str, Any] | None = None) -> Path:
    """Write ``model.pt``, ``card.json`` and ``CARD.md`` (together, atomically) and return the directory.

    ``training`` is the data recipe (dataset path, its sha256, options), ``metrics`` the held-out
    scores, ``inference_cost`` e.g. ms per 64^2 call; if not given it is measured here. Absolute paths
    in ``training`` and ``metrics`` are written relative to the repository or the working directory, or
    as a bare file name (:func:`portable`).
    """
    d = model_dir(name_or_path)
    d.mkdir(parents=True, exist_ok=True)
    if inference_cost is None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            inference_cost = {"ms_per_call_64x64_1thread": round(time_inference(model.export()), 4)}
        finally:
            torch.set_num_threads(threads)
    payload = {"format": MODEL_FORMAT, "config": model.config.to_dict(), "state_dict": model.canonical_state_dict()}
    buf = io.BytesIO()
    torch.save(payload, buf)
    card = {
        "name": d.name,
        "format": MODEL_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "schema": model.schema.to_dict(),
        "group": model.config.group,
        "architecture": {k: v for k, v in model.config.to_dict().items() if k != "schema"},
        "n_parameters": model.n_parameters(),
        "normalization": {"inputs": model.field_scales("inputs"), "outputs": model.field_scales("outputs")},
        "training": portable(dict(training or {})),
        "metrics": portable(dict(metrics or {})),
        "inference_cost": dict(inference_cost),
        "model_sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
    }
    with exclusive_output(d):  # one saver at a time; clears what a killed save left staged
        atomic_write_files({d / "card.json": (json.dumps(card, indent=2, sort_keys=True) + "\n").encode(),
                            d / "CARD.md": _card_markdown(card).encode(),
                            d / "model.pt": buf.getvalue()}, checksum=True)
    return d


def load_card(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """The ``card.json`` of a trained model (name under ``trained_models/`` or a directory)."""
    d = _model_folder(name_or_path)
    path = d / "card.json"
    if not path.is_file():
        raise FileNotFoundError(f"no model card {path} (a trained model directory holds model.pt, card.json, CARD.md; "
                                f"known models: {_known_models()})")
    _verified(path, "model card")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"model card {path} is not valid JSON ({e}); the file is corrupt") from e


def _known_models() -> list[str]:
    if not TRAINED_MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in TRAINED_MODELS_DIR.iterdir() if (p / "model.pt").is_file())


def load_model(name_or_path: str | os.PathLike, *, schema: Schema | None = None) -> FluxNet:
    """Load a trained :class:`FluxNet` (in eval mode) from ``trained_models/<name>`` or a directory.

    Checks that ``model.pt`` is readable and of this format, that ``card.json`` describes the
    same schema as the weights, and (if given) that the schema is ``schema``. Raises
    ``FileNotFoundError`` for missing files and :class:`ModelFileError` for anything corrupt or
    mismatched, with the path and the reason in the message.
    """
    d = _model_folder(name_or_path)
    path = d / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no model weights {path} (known models under {TRAINED_MODELS_DIR}: {_known_models()})")
    card = load_card(d)
    _verified(path, "model weights")
    raw = path.read_bytes()  # read once: loaded below and checked against the card's sha256
    try:
        payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError/EOFError/UnpicklingError for damaged files
        # torch's own text can advise weights_only=False, i.e. running code from an untrusted file:
        # it is neither shown nor chained
        raise ModelFileError(f"cannot read model weights {path} ({type(e).__name__}): the file is truncated or corrupt, "
                             f"or not a roteq weights file ({MODEL_FORMAT}); re-save or re-train the model. It is "
                             "loaded as data only, never as code.") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ModelFileError(f"{path} is not a {MODEL_FORMAT} file (format {got!r})")
    sha = card.get("model_sha256")
    if sha is not None and sha != hashlib.sha256(raw).hexdigest():
        raise ModelFileError(f"{d / 'card.json'} describes other weights (model_sha256 {sha[:12]}...) than {path}: "
                             "the files come from different saves (one interrupted, or one copied over); "
                             "re-save or re-train the model")
    config = ModelConfig.from_dict(payload["config"])
    model_schema = config.get_schema()
    card_schema = Schema.from_dict(card.get("schema", {}))
    if card_schema != model_schema:
        raise ModelFileError(f"{d / 'card.json'} describes a different schema than the weights in {path}: "
                             f"card {card_schema.to_json()} vs weights {model_schema.to_json()}")
    if schema is not None and schema != model_schema:
        raise ModelFileError(f"model {d} has schema {model_schema.to_json()}, but {schema.to_json()} was requested")
    model = FluxNet(config)
    try:
        model.load_canonical_state_dict(payload["state_dict"])
    except ValueError as e:
        raise ModelFileError(f"{path}: {e}") from e
    return model.eval()


def derive_model(source: str | os.PathLike, out: str | os.PathLike, *, closure: Mapping[str, float],
                 note: str | None = None, calibration: Mapping[str, Any] | None = None) -> Path:
    """Save the trained model ``source`` with other fixed closure terms as ``out``.

    ``closure`` sets any of :attr:`ModelConfig.closure`'s keys (``grid_damping`` [1/s],
    ``energy_backscatter`` [multiple of the network's drain], ``backscatter_order``); the others keep
    the source's values. The weights,
    normalisation and escnn bases are copied unchanged. The new card keeps the source's training
    recipe and its held-out metrics under ``metrics["network"]`` (they score the network alone),
    and records where it came from and, if given, the ``calibration`` that chose the values.
    """
    src_dir = model_dir(source)
    if model_dir(out).resolve() == src_dir.resolve():
        raise ValueError(f"the derived model must go to another folder than its source {src_dir}")
    net = load_model(src_dir)
    unknown = sorted(set(closure) - set(net.config.closure))
    if unknown:
        raise ValueError(f"unknown closure term(s) {unknown}; known: {sorted(net.config.closure)}")
    card = load_card(src_dir)
    config = ModelConfig.from_dict({**net.config.to_dict(), **closure})
    derived = FluxNet(config)
    derived.load_canonical_state_dict(net.canonical_state_dict())
    training = dict(card.get("training", {}))
    training["derived_from"] = {"model": card.get("name", src_dir.name), "model_sha256": card.get("model_sha256"),
                                "closure": net.config.closure}
    if note:
        training["derivation_note"] = note
    if calibration:
        training["calibration"] = dict(calibration)
    metrics = card.get("metrics", {})
    metrics = dict(metrics) if "network" in metrics else {"network": dict(metrics)}
    return save_model(derived.eval(), out, training=training, metrics=metrics,
                      inference_cost=card.get("inference_cost"))
