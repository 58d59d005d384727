"""Shared helpers: config loading and validation, device selection, seeding, atomic file writes, file hashes.

A config is a nested dict (JSON or YAML). Its schema is a nested dict of `Field`s; `validate`
collects every problem (unknown key, wrong type, value out of range) with its dotted path, so a
user sees all mistakes at once, before any data is loaded.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent
STAGES = ("W", "N1", "N2", "N3", "REM")
REQUIRED = object()


class InputError(ValueError):
    """Bad input (a file, a checkpoint, a flag): one line naming it and the next step. Scripts print it, no traceback."""


class ConfigError(ValueError):
    """Raised with every problem of a config, one per line, each naming its key path."""

    def __init__(self, problems: list[str], source: str | os.PathLike | None = None):
        self.problems = list(problems)
        where = f" in {source}" if source else ""
        super().__init__(f"{len(self.problems)} problem(s){where}:\n  " + "\n  ".join(self.problems))


@dataclass
class Field:
    """One config value: its type(s), default, and allowed values or range.

    `type` is a Python type or a tuple of types (`float` also accepts ints). `choices` lists the
    allowed values; `min`/`max` bound numbers (inclusive); `nullable` admits None; `item` is a
    per-element Field for lists.
    """

    type: type | tuple[type, ...]
    default: Any = REQUIRED
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    nullable: bool = False
    item: "Field | None" = None
    doc: str = ""
    check: Callable[[Any], str | None] | None = field(default=None, repr=False)

    def problems(self, value: Any, path: str) -> list[str]:
        if value is None:
            return [] if self.nullable else [f"{path}: must not be null"]
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in types:
            return [f"{path}: expected {_type_names(types)}, got bool {value!r}"]
        if not isinstance(value, types):
            return [f"{path}: expected {_type_names(types)}, got {type(value).__name__} {value!r}"]
        if self.choices is not None and value not in self.choices:
            return [f"{path}: {value!r} is not one of {list(self.choices)}"]
        if self.min is not None and value < self.min:
            return [f"{path}: {value!r} is below the minimum {self.min}"]
        if self.max is not None and value > self.max:
            return [f"{path}: {value!r} is above the maximum {self.max}"]
        if self.item is not None and isinstance(value, list):
            return [p for i, v in enumerate(value) for p in self.item.problems(v, f"{path}[{i}]")]
        if self.check is not None and (msg := self.check(value)):
            return [f"{path}: {msg}"]
        return []


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


def validate(config: Any, schema: dict, path: str = "") -> list[str]:
    """Return every problem of `config` against `schema` (nested dict of Field / dict / callable).

    A schema value may be a callable `f(config_dict, path) -> list[str]` for sections whose
    shape depends on another key (e.g. `backbone.params` depends on `backbone.type`).
    """
    if not isinstance(config, dict):
        return [f"{path or 'config'}: expected an object, got {type(config).__name__}"]
    problems = []
    for key in config:
        if key not in schema and not key.startswith("_"):  # "_comment" keys are allowed
            allowed = ", ".join(k for k in schema)
            problems.append(f"{_join(path, key)}: unknown key (allowed here: {allowed})")
    for key, spec in schema.items():
        sub = _join(path, key)
        if isinstance(spec, Field):
            if key not in config:
                if spec.default is REQUIRED:
                    allowed = f", one of {list(spec.choices)}" if spec.choices else ""
                    problems.append(f"{sub}: missing (required{allowed})")
                continue
            problems += spec.problems(config[key], sub)
        elif isinstance(spec, dict):
            problems += validate(config.get(key, {}), spec, sub)
        else:
            problems += spec(config.get(key, {}), sub)
    return problems


def fill_defaults(config: dict, schema: dict) -> dict:
    """A copy of `config` with every missing Field default filled in (recursively)."""
    out = dict(config)
    for key, spec in schema.items():
        if isinstance(spec, Field):
            if key not in out and spec.default is not REQUIRED:
                out[key] = spec.default
        elif isinstance(spec, dict):
            out[key] = fill_defaults(out.get(key, {}) or {}, spec)
    return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ----------------------------------------------------------------------------- files and overrides
def read_config_file(path: str | os.PathLike) -> dict:
    """Read a JSON or YAML config into a dict, with a clear error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise ConfigError([f"cannot parse: {exc}"], path) from exc
    if not isinstance(data, dict):
        raise ConfigError(["top level must be an object"], path)
    return data


def apply_overrides(config: dict, overrides: list[str] | None) -> dict:
    """Apply `--set a.b.c=value` overrides; the value is parsed as JSON when it can be."""
    config = json.loads(json.dumps(config))  # deep copy
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError([f"--set {item!r}: expected key.path=value"])
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = config
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError([f"--set {key}: {part} is not an object"])
        node[parts[-1]] = value
    return config


# ----------------------------------------------------------------------------- runtime
def select_device(gpu: str | int | None = "auto"):
    """`--gpu auto` -> cuda:0 when CUDA is available, else cpu with a one-line notice; `--gpu 0` -> cuda:0;
    `--gpu cpu` -> cpu. Anything else, or a GPU that is not there, is a SystemExit naming the value."""
    import torch

    value = "auto" if gpu is None else str(gpu).strip().lower()
    if value == "cpu":
        return torch.device("cpu")
    if value == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda:0")
        print("--gpu auto: no CUDA device found, running on the CPU", flush=True)
        return torch.device("cpu")
    if not value.isdigit():
        raise SystemExit(f"error: --gpu {gpu}: invalid value; expected auto, cpu or a CUDA device index (0, 1, ...)")
    if not torch.cuda.is_available():
        raise SystemExit(f"error: --gpu {gpu}: CUDA is not available on this machine; use --gpu cpu or --gpu auto")
    index = int(value)
    if index >= torch.cuda.device_count():
        raise SystemExit(f"error: --gpu {gpu}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device(f"cuda:{index}")


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save through a temporary file and a rename."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def safe_torch_load(path: str | os.PathLike) -> Any:
    """torch.load with weights_only=True: only tensors, numbers, strings, lists, tuples and dicts are
    rebuilt, so loading a file never runs code. Anything else is refused with an InputError naming the file."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(f"{path}: not loaded: it holds objects other than tensors, numbers, strings, lists and "
                         "dicts (an older release or another program wrote it); re-train or convert it") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable torch file (truncated or corrupt); re-create it") from exc


_HASHES: dict | None = None  # inside memoised_hashes(): (path, size, mtime, inode) -> SHA-256


@contextmanager
def memoised_hashes():
    """Inside the block, file_sha256 reads each unchanged file (same path, size, mtime and inode) once: for
    passes that check many results against the same checkpoints (benchmark.py's resume check). Outside it,
    every call reads the bytes, as a verification must."""
    global _HASHES
    outer = _HASHES
    _HASHES = {} if outer is None else outer
    try:
        yield
    finally:
        _HASHES = outer


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks (once per unchanged file in memoised_hashes())."""
    if _HASHES is None:
        return _read_sha256(path)
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _HASHES:
        _HASHES[key] = _read_sha256(path)
    return _HASHES[key]


def _read_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fold_name(fold: int) -> str:
    """Fold 1 -> 'fold-01' (checkpoint and result file names)."""
    return f"fold-{fold:02d}"


def embeddings_file_name(fold: int) -> str:
    """Test-set embeddings of a fold: checkpoints/<exp>/embeddings_fold-0K.pt."""
    return f"embeddings_{fold_name(fold)}.pt"
