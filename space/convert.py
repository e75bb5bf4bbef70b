"""Converting a checkpoint for the OpenVINO CPU engine (space/engine_openvino.py), once, into a cache.

A Dolly checkpoint (a local folder or a Hub id, as everywhere) becomes an OpenVINO model in a folder of
the cache (`DOLLY_CACHE`, else `dolly/openvino` beside the Hugging Face cache), keyed by the
checkpoint's files (names, sizes, modification times), the format and the versions that wrote it: a
second start with the same checkpoint reuses it, a retrained checkpoint converts again.

No optimum-intel (it pins an older transformers): the GPT-NeoX model of transformers is wrapped so it
takes and returns its keys and values as plain tensors, `openvino.convert_model` traces it, and
OpenVINO's MakeStateful transformation turns those inputs/outputs into state the runtime keeps between
calls, which is how optimum-intel's stateful export does it. `nncf` compresses the weights for int8
(per output channel) and int4 (groups). The model returns the last position's logits only: the
sampling loop needs nothing else, and a prompt's other rows through the 50k-word head cost prefill time.

A conversion is written into a temporary folder and renamed into place only when complete, so a
failed or killed one leaves nothing a later start takes for a good model.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import uuid
import warnings
from pathlib import Path

FORMATS = ("none", "int8", "int4")  # --quantize's formats: the checkpoint's own precision, 8-bit, 4-bit weights
CONVERTER_VERSION = 3  # bump when what this module writes changes: old cache entries are then not reused
MODEL_FILE = "model.xml"
DONE_FILE = "dolly-conversion.json"  # written last, inside the temporary folder: its presence means complete
CHECKPOINT_FILES = ("*.safetensors", "*.bin", "*.json", "*.txt", "*.model")
SUPPORTED = ("gpt_neox",)


class ConversionError(RuntimeError):
    """A checkpoint the OpenVINO engine cannot take, with the reason (the app then runs the torch path)."""


def cache_root(engine: str = "openvino") -> Path:
    """Where converted models of `engine` live: $DOLLY_CACHE/<engine>, or `dolly/<engine>` beside the Hugging
    Face cache (space/gguf.py keeps its files under "gguf")."""
    if os.environ.get("DOLLY_CACHE"):
        return Path(os.environ["DOLLY_CACHE"]).expanduser() / engine
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "dolly" / engine


def checkpoint_files(folder: Path) -> list[Path]:
    """The files a conversion reads (weights, config, tokenizer), sorted."""
    files = {p for pattern in CHECKPOINT_FILES for p in folder.glob(pattern) if p.is_file()}
    return sorted(files)


def cache_key(folder: Path, fmt: str) -> str:
    """A name for `folder`'s conversion to `fmt`, with the versions of this converter, OpenVINO and nncf."""
    import openvino

    return fingerprint(folder, fmt, f"{CONVERTER_VERSION}\0{openvino.__version__}\0{_nncf_version()}")


def fingerprint(folder: Path, fmt: str, versions: str) -> str:
    """A cache name for `folder` converted to `fmt` by `versions` (of the converter and what it uses): a hash of
    the checkpoint's files' names, sizes and modification times (cheap on a 5 GB checkpoint, and a file written
    again is a new key), the format and the versions."""
    digest = hashlib.sha256()
    for path in checkpoint_files(folder):
        stat = path.stat()  # resolves a Hub snapshot's symlinks to the blob's own size and time
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    digest.update(f"{fmt}\0{versions}".encode())
    return f"{folder.name[:40]}-{fmt}-{digest.hexdigest()[:16]}"


def _nncf_version() -> str:
    try:
        from importlib.metadata import version

        return version("nncf")
    except Exception:  # not installed: only 'none' can convert, and that does not use it
        return "-"


def converted(folder: Path, fmt: str) -> Path | None:
    """The complete conversion of `folder` to `fmt` in the cache, or None."""
    target = cache_root() / cache_key(folder, fmt)
    return target if (target / DONE_FILE).is_file() and (target / MODEL_FILE).is_file() else None


def convert(folder: Path, fmt: str, on_stage=lambda stage: None) -> Path:
    """The OpenVINO model of the checkpoint in `folder` in format `fmt`, converted now unless the
    cache has it. Returns the folder holding model.xml. ConversionError when it cannot be converted."""
    folder = Path(folder)
    if fmt not in FORMATS:
        raise ConversionError(f"Unknown format '{fmt}': use one of {', '.join(FORMATS)}.")
    done = converted(folder, fmt)
    if done is not None:
        return done
    root = cache_root()
    target = root / cache_key(folder, fmt)
    root.mkdir(parents=True, exist_ok=True)
    remove_abandoned(root)
    temporary = root / f"{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        temporary.mkdir()
        _convert_into(folder, fmt, temporary, on_stage)
        (temporary / DONE_FILE).write_text(json.dumps({
            "checkpoint": str(folder), "format": fmt, "converter": CONVERTER_VERSION,
            "files": [p.name for p in checkpoint_files(folder)]}, indent=1))
        try:
            temporary.rename(target)
        except OSError:
            if converted(folder, fmt) is None:  # not another process finishing the same conversion first
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return target


def remove_abandoned(root: Path) -> None:
    """Temporary files and folders (named `*.tmp-<pid>-*`) of conversions whose process is gone (killed,
    crashed): never used, only space."""
    for path in root.glob("*.tmp-*"):
        try:
            pid = int(path.name.rsplit(".tmp-", 1)[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except (ValueError, IndexError, PermissionError, OSError):
            pass


def _convert_into(folder: Path, fmt: str, out: Path, on_stage) -> None:
    import openvino as ov
    import torch
    from openvino._offline_transformations import apply_make_stateful_transformation
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise ConversionError(f"cannot read {folder}/config.json: {error}") from error
    if config.model_type not in SUPPORTED:
        raise ConversionError(f"the OpenVINO engine converts GPT-NeoX (Pythia, Dolly) checkpoints; this one is "
                              f"'{config.model_type}'")
    on_stage("converting for OpenVINO: loading the weights")
    try:
        # The checkpoint's own dtype (bf16 for Dolly): a float32 copy of a 2.8b model would need 11 GB.
        model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto").eval()
    except Exception as error:  # a truncated or corrupt file: safetensors' errors have no common base
        raise ConversionError(f"cannot load the weights: {error}") from error
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    head_dim = config.hidden_size // heads
    _compute_in_float32(model)
    wrapped = _WithPlainCache(model, layers)
    past = 2
    example = (torch.tensor([[1, 2, 3]]), torch.ones(1, past + 3, dtype=torch.long), torch.arange(past, past + 3)[None],
               *[torch.zeros(1, heads, past, head_dim) for _ in range(2 * layers)])
    kv_names = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    names = ["input_ids", "attention_mask", "position_ids", *kv_names]
    shapes = [(ov.PartialShape([-1, -1]), ov.Type.i64)] * 3 + \
             [(ov.PartialShape([-1, heads, -1, head_dim]), ov.Type.f32)] * (2 * layers)
    on_stage("converting for OpenVINO: tracing the model")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python branches, which hold for every shape here
            ov_model = ov.convert_model(wrapped, example_input=example, input=shapes)
    except Exception as error:  # the tracer's errors have no common type
        raise ConversionError(f"OpenVINO could not trace the model: {type(error).__name__}: {_first_line(error)}") from error
    # The OpenVINO model's weights are the torch tensors themselves (convert_model shares them, no
    # copy): `model` must live until the model is compressed and saved.
    for port, name in zip(ov_model.inputs, names):
        port.get_tensor().set_names({name})
    ov_model.outputs[0].get_tensor().set_names({"logits"})
    for i, port in enumerate(ov_model.outputs[1:]):
        port.get_tensor().set_names({kv_names[i].replace("past_key_values", "present")})
    apply_make_stateful_transformation(ov_model, {name: name.replace("past_key_values", "present") for name in kv_names})
    ov_model.set_rt_info(str(layers), ["dolly", "layers"])
    if fmt != "none":
        on_stage(f"converting for OpenVINO: compressing the weights to {fmt}")
        ov_model = _compress(ov_model, fmt, config)
    on_stage("converting for OpenVINO: saving")
    ov.save_model(ov_model, out / MODEL_FILE, compress_to_fp16=False)  # 'none' keeps the checkpoint's precision
    (out / "config.json").write_text(config.to_json_string())
    del ov_model, wrapped, model
    gc.collect()


def _compute_in_float32(model) -> None:
    """Make a bf16/fp16 model compute in float32 while its weights stay as stored: each parameter is
    read through an upcast, which the trace records as a 16-bit constant followed by a Convert.

    That is the form OpenVINO's CPU plugin fuses into its compressed-weight matmul (FullyConnected):
    a graph traced in bf16 has bf16 matmuls after nncf's decompression, which it does not fuse, and then
    every token converted all weights with a reference kernel (1b shape: 1.6 against 18.6 tokens/s of
    the torch path). Converting the model to float32 instead would need 11 GB for the 2.8b shape."""
    import torch
    from torch.nn.utils import parametrize

    class Upcast(torch.nn.Module):
        def forward(self, value):
            return value.float()

    for module in list(model.modules()):
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dtype != torch.float32 and param.is_floating_point():
                parametrize.register_parametrization(module, name, Upcast(), unsafe=True)


def _compress(ov_model, fmt: str, config):
    try:
        import nncf
    except ImportError as error:
        raise ConversionError(f"--quantize {fmt} needs the nncf package (pip install -r requirements.txt)") from error
    # int8 symmetric, one scale per output channel (as llama.cpp's Q8_0, no zero point): where the CPU has
    # no AVX-512, OpenVINO's 8-bit matmul is bound by unpacking the weights, not by reading them, and
    # without the zero point it decoded the 1b shape 21% faster on an AVX2 EPYC (bench/RESULTS.md).
    if fmt == "int8":
        return nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_SYM)
    # int4: groups as small as the layers allow, up to 128 (nncf's default); the embedding and the
    # head stay 8-bit (the same symmetric int8, as nncf's backup), as llama.cpp's Q4_K_M keeps its most
    # sensitive tensors wider.
    sizes = (config.hidden_size, config.intermediate_size)
    group = next((g for g in (128, 64, 32) if all(s % g == 0 for s in sizes)), None)
    if group is None:
        raise ConversionError(f"int4 needs layer widths divisible by 32; this model's are {sizes}")
    return nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=group, ratio=1.0,
                                 backup_mode=nncf.BackupMode.INT8_SYM)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _plain_cache_module():
    import torch
    from transformers.cache_utils import DynamicCache

    class WithPlainCache(torch.nn.Module):
        """The model with its key/value cache as flat tensors in and out, which a tracer can follow."""

        def __init__(self, model, layers: int):
            super().__init__()
            self.model, self.layers = model, layers

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache(config=self.model.config)
            for i, layer in enumerate(cache.layers[: self.layers]):
                # Filled directly: DynamicCache.update() would start from an empty tensor, which the
                # tracer records as a concatenation with a tensor of the wrong rank.
                layer.device = past[2 * i].device
                layer.keys, layer.values, layer.is_initialized = past[2 * i], past[2 * i + 1], True
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             cache=cache, use_cache=True, logits_to_keep=1)
            flat = []
            for layer in out.cache.layers[: self.layers]:
                flat += [layer.keys, layer.values]
            return (out.logits.float(), *flat)

    return WithPlainCache


def _WithPlainCache(model, layers: int):
    return _plain_cache_module()(model, layers)
