"""Models from any transformers config, built on the meta device: what ``optimhub estimate
--model`` accepts beyond the ``llama:`` shorthand of :mod:`optimhub.model_shapes`.

- a config file (``config.json``, as on the Hub) or a folder holding one;
- an architecture name (a transformers ``model_type``) with sizes in the ``optim_args``
  grammar: ``"gpt2:n_embd=768,n_layer=12,n_head=12"``, ``"mistral:num_hidden_layers=2"``;
- an architecture name alone (``"gpt2"``): transformers' default config of that type.

Each key must be an attribute of the architecture's config class (its ``attribute_map``
aliases included) and is typed by that attribute's default, so ``tie_word_embeddings=false``
is False and ``n_layer=1.5`` is an error. The model is built with ``torch.device("meta")``:
a 70B config costs nothing and nothing is downloaded. transformers is the optional extra
``optimhub[transformers]``; without it the answer is :class:`MissingBackendError` with the
install line.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MissingBackendError, OptimArgsError, closest
from .optim_args import coerce_value, split_optim_args
from .spec import ArgSpec

if TYPE_CHECKING:
    from torch import nn

__all__ = ["CONFIG_MODEL_EXAMPLES", "INSTALL_TRANSFORMERS", "config_model", "model_from_text"]

INSTALL_TRANSFORMERS = 'pip install "optimhub[transformers]"'
CONFIG_MODEL_EXAMPLES = ("config.json", "gpt2:n_embd=768,n_layer=12,n_head=12",
                         "mistral:hidden_size=4096,num_hidden_layers=32")
_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_CONFIG_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def model_from_text(text: str, *, dtype: str | None = None) -> tuple[nn.Module, str]:
    """The meta-device model ``--model TEXT`` describes, and its parameter dtype.

    ``llama:`` with only the shorthand's keys (hidden, layers, vocab...) is
    :func:`optimhub.model_shapes.parse_model_spec`'s, which needs no transformers; every
    other text (``llama:`` with LlamaConfig's own keys included) is a transformers config.
    """
    from .model_shapes import LLAMA_KEYS, parse_model_spec

    family, colon, body = text.partition(":") if isinstance(text, str) else ("", "", "")
    if colon and family.strip().lower() == "llama":
        try:
            keys = set(split_optim_args(body))
        except OptimArgsError:
            keys = set()  # the shorthand's parser names the fault
        if keys <= set(LLAMA_KEYS):
            shape = parse_model_spec(text, dtype=dtype)
            return shape.build(), shape.dtype
    return config_model(text, dtype=dtype)


def config_model(text: str, *, dtype: str | None = None) -> tuple[nn.Module, str]:
    """The meta-device model ``text`` describes and its parameter dtype (fp32, bf16,
    fp16): ``dtype`` when given, else the config's own (``torch_dtype``), else fp32."""
    transformers = _transformers()
    config = _config(transformers, text)
    stored = vars(config)  # not the deprecated ``torch_dtype`` property, which warns
    own = _CONFIG_DTYPES.get(
        str(stored.get("dtype") or stored.get("torch_dtype") or "").removeprefix("torch."))
    chosen = dtype or own or "fp32"
    if chosen not in _DTYPES:
        raise OptimArgsError(f"dtype {chosen!r} is not one of {', '.join(_DTYPES)}")
    return _build(transformers, config, text, chosen), chosen


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise MissingBackendError(
            "a model described by a transformers config needs the package 'transformers' "
            f"(import name 'transformers'), which is not installed. Install it with: "
            f"{INSTALL_TRANSFORMERS} (or describe the model as llama:hidden=...,layers=...)"
        ) from exc
    return transformers


def _config(transformers: Any, text: str) -> Any:
    if not isinstance(text, str) or not text.strip():
        raise OptimArgsError(f"a model is described by text such as {CONFIG_MODEL_EXAMPLES[1]!r}"
                             f" or a config.json path; got {text!r}")
    path = Path(text)
    folder = path.is_dir()
    if folder:
        path = path / "config.json"
    if folder or text.endswith(".json") or path.is_file():
        return _config_from_file(transformers, path, text)
    family, _, body = text.partition(":")
    config_class = _config_class(transformers, family.strip(), text)
    values = _typed_values(config_class, body, text)
    return config_class(**values)


def _config_from_file(transformers: Any, path: Path, text: str) -> Any:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OptimArgsError(f"--model {text!r}: cannot read {path} ({exc.strerror or exc})"
                             ) from None
    except json.JSONDecodeError as exc:
        raise OptimArgsError(f"--model {text!r}: {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise OptimArgsError(
            f"--model {text!r}: {path} must be a transformers config (a JSON object with "
            "a 'model_type', such as a model's config.json)"
        )
    data = dict(data)
    config_class = _config_class(transformers, str(data.pop("model_type")), text)
    try:
        return config_class.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise OptimArgsError(f"--model {text!r}: transformers refused the config: {exc}"
                             ) from None


def _config_class(transformers: Any, family: str, text: str) -> Any:
    mapping = transformers.CONFIG_MAPPING
    if family in mapping:
        return mapping[family]
    names = sorted(mapping.keys())
    guess = closest(family, names, n=3)
    hint = f" Did you mean {', '.join(repr(g) for g in guess)}?" if guess else ""
    raise OptimArgsError(
        f"--model {text!r}: {family!r} is not a transformers architecture (model_type).{hint} "
        f"Known: {len(names)} types, e.g. llama, gpt2, mistral, qwen2, bert; or give a "
        "config.json path"
    )


def _typed_values(config_class: Any, body: str, text: str) -> dict[str, Any]:
    """The ``k=v`` sizes, each typed by the default of that config attribute."""
    defaults = config_class()
    try:
        raw = split_optim_args(body)
    except OptimArgsError as exc:
        message = str(exc).removeprefix("optim_args: ").removeprefix("optim_args")
        raise OptimArgsError(f"--model {text!r}: {message}") from None
    values = {}
    for key, value in raw.items():
        if not hasattr(defaults, key):
            known = sorted(k for k in vars(defaults) if not k.startswith("_"))
            known += sorted(getattr(defaults, "attribute_map", {}))
            guess = closest(key, known, n=1)
            hint = f" Did you mean {guess[0]!r}?" if guess else ""
            raise OptimArgsError(
                f"--model {text!r}: {type(defaults).__name__} has no {key!r}.{hint}"
            )
        arg = _arg_for(key, getattr(defaults, key))
        try:
            values[key] = coerce_value(arg, value) if arg is not None else value
        except OptimArgsError as exc:
            message = str(exc).removeprefix("optim_args: ").removeprefix("optim_args")
            raise OptimArgsError(f"--model {text!r}: {message}") from None
    return values


def _arg_for(key: str, default: Any) -> ArgSpec | None:
    """How to type ``key=...`` from the config's default value (None: keep the text)."""
    doc = "a config attribute"
    if isinstance(default, bool):
        return ArgSpec(key, "bool", doc, nullable=True)
    if isinstance(default, numbers.Integral):
        return ArgSpec(key, "int", doc, nullable=True)
    if isinstance(default, numbers.Real):
        return ArgSpec(key, "float", doc, nullable=True)
    return None


def _build(transformers: Any, config: Any, text: str, dtype: str) -> nn.Module:
    import torch

    model_class = _model_class(transformers, config)
    try:
        with torch.device("meta"):
            return model_class.from_config(config, dtype=getattr(torch, _DTYPES[dtype]))
    except (TypeError, ValueError, AssertionError, AttributeError, KeyError) as exc:
        raise OptimArgsError(
            f"--model {text!r}: transformers could not build {model_class.__name__} from "
            f"this config: {type(exc).__name__}: {exc}"
        ) from None


def _model_class(transformers: Any, config: Any) -> Any:
    """The config's own ``architectures`` class, else the causal LM, else the base model."""
    for name in getattr(config, "architectures", None) or ():
        found = getattr(transformers, name, None)
        if found is not None:
            return _FromConfig(found)
    causal = transformers.AutoModelForCausalLM
    if type(config) in causal._model_mapping:
        return causal
    return transformers.AutoModel


class _FromConfig:
    """A concrete model class with the Auto classes' ``from_config`` spelling."""

    def __init__(self, model_class: Any) -> None:
        self.model_class = model_class
        self.__name__ = model_class.__name__

    def from_config(self, config: Any, **kwargs: Any) -> Any:
        return self.model_class._from_config(config, **kwargs)
