"""Writing a GPT-NeoX checkpoint (Pythia, a trained Dolly) as GGUF, llama.cpp's file format.

llama.cpp's own `convert_hf_to_gguf.py` is not on the package index and fails on a folder written by
transformers 5 (it reads `rotary_pct`, which transformers 5 keeps in `rope_parameters`). GPT-NeoX needs
little: its hyperparameters, the vocabulary, and its tensors under llama.cpp's names, with the fused
query/key/value weights reordered from per-head [q k v] to [all q, all k, all v] (as the official
converter does). `gguf` (llama.cpp's own Python package) names the tensors and packs the 8- and 4-bit
blocks in NumPy, so no part of llama.cpp is built for it.

Tensors are read one at a time from the safetensors files and written as they are converted: the 2.8b shape
converts in 46 s at 1.6 GB peak RSS. The file is written under a temporary name and renamed when complete:
a failed or killed conversion leaves nothing that reads as a good file.

Formats, as `--quantize` names them: none = float16 (the checkpoint's own bfloat16 would need llama.cpp's
bf16 kernels, which AVX2 CPUs emulate), int8 = Q8_0, int4 = Q4_0 (the 4-bit format NumPy can write; Q4_K
needs llama.cpp's quantizer; the embedding and the head stay Q8_0). Norms and biases stay float32, as llama.cpp
keeps them.

`convert` keeps one file per checkpoint and format in a cache (space/convert.py's rule, under "gguf"), which
the llama.cpp engine (space/engine_llamacpp.py) loads; bench/llamacpp_wheel.py measures the files bare.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import gguf
import numpy as np

WRITER_VERSION = 1  # bump when what this module writes changes: cached files are then written again
QUANT = {"none": "F16", "int8": "Q8_0", "int4": "Q4_0"}  # --quantize's format -> GGML type of the 2-D weights
FLOATS = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16}
# In int4 the embedding and the head stay 8-bit, as nncf keeps them for OpenVINO's int4 and llama.cpp's quantizer
# keeps the head above 4 bits: in 4 bits they cost a small Dolly every greedy reply (bench/RESULTS.md).
EIGHT_BIT_IN_INT4 = ("token_embd.weight", "output.weight")


def _hyperparameters(config: dict) -> dict:
    if config.get("model_type") != "gpt_neox":
        raise ValueError(f"only GPT-NeoX (Pythia) checkpoints convert to GGUF here, not {config.get('model_type')!r}")
    rope = config.get("rope_parameters") or {}
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    return {
        "heads": config["num_attention_heads"],
        "hidden": config["hidden_size"],
        "layers": config["num_hidden_layers"],
        "rotary": int(rope.get("partial_rotary_factor", config.get("rotary_pct", 0.25)) * head_dim),
        "theta": float(rope.get("rope_theta", config.get("rotary_emb_base", 10000.0))),
    }


def _vocabulary(folder: Path, vocab_size: int):
    """(tokens, their types, merges) from tokenizer.json, padded to the model's vocabulary size
    (Pythia's embedding has rows past the tokenizer's last id, as llama.cpp's converter pads them)."""
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    model = spec["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"{folder / 'tokenizer.json'}: a byte-level BPE tokenizer is needed, not {model.get('type')!r}")
    by_id = {i: (token, gguf.TokenType.NORMAL) for token, i in model["vocab"].items()}
    for added in spec.get("added_tokens", []):
        kind = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
        by_id[added["id"]] = (added["content"], kind)
    size = max(vocab_size, max(by_id) + 1)
    tokens = [by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED)) for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return [t for t, _ in tokens], [int(k) for _, k in tokens], merges


def _special_ids(folder: Path) -> dict:
    """bos/eos/unk ids as the tokenizer's config names them (Pythia: all <|endoftext|>)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return {name: tokenizer.convert_tokens_to_ids(getattr(tokenizer, f"{name}_token"))
            for name in ("bos", "eos", "unk") if getattr(tokenizer, f"{name}_token", None) is not None}


def _tensors(folder: Path):
    """(name, file, shape) of every weight in the checkpoint's safetensors files, read from their headers."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder}: no *.safetensors files (save the checkpoint with safe_serialization)")
    for path in files:
        try:
            with safe_open(path, framework="pt") as reader:
                shapes = [(name, tuple(reader.get_slice(name).get_shape())) for name in reader.keys()]
        except Exception as error:  # safetensors' errors (a truncated download) have no common base
            raise ValueError(f"cannot read the weights in {path.name}: {error}") from error
        for name, shape in shapes:
            yield name, path, shape


def _load(path: Path, name: str) -> np.ndarray:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as reader:
            return reader.get_tensor(name).float().numpy()
    except Exception as error:  # as in _tensors
        raise ValueError(f"cannot read {name} from {path.name}: {error}") from error


def _reorder_qkv(data: np.ndarray, heads: int) -> np.ndarray:
    """HF's fused QKV rows are per head [q, k, v]; llama.cpp wants all q rows, then all k, then all v."""
    split = data.reshape(heads, 3, data.shape[0] // (3 * heads), *data.shape[1:])
    return np.concatenate([split[:, i].reshape(-1, *data.shape[1:]) for i in range(3)], axis=0)


def write(folder: Path, out: Path, fmt: str = "int8", on_stage=lambda stage: None) -> Path:
    """Write the checkpoint in `folder` as a GGUF of `fmt` ('none', 'int8', 'int4') at `out`; return `out`.
    `on_stage(text)` hears which tensor it is writing (the app's status line shows it)."""
    folder, out = Path(folder), Path(out)
    if fmt not in QUANT:
        raise ValueError(f"GGUF format {fmt!r}: use one of {', '.join(QUANT)}")
    qtype = gguf.GGMLQuantizationType[QUANT[fmt]]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    hp = _hyperparameters(config)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPTNEOX, hp["layers"])
    plan = []  # (gguf name, safetensors name, its file, shape, ggml type)
    for hf_name, path, shape in _tensors(folder):
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            continue  # buffers the model rebuilds (rotary tables, masks)
        kind = gguf.GGMLQuantizationType.F32  # norms and biases, as llama.cpp keeps them
        if len(shape) == 2:  # a row that is not whole blocks stays 16-bit, as llama.cpp's converter does
            kind = qtype if shape[-1] % block == 0 else gguf.GGMLQuantizationType.F16
            if fmt == "int4" and name in EIGHT_BIT_IN_INT4 and kind == qtype:
                kind = gguf.GGMLQuantizationType.Q8_0
        plan.append((name, hf_name, path, shape, kind))

    tokens, kinds, merges = _vocabulary(folder, config["vocab_size"])
    special = _special_ids(folder)
    # Named for this process: space/convert.remove_abandoned clears what a killed conversion left in the cache.
    partial = out.with_name(f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    writer = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPTNEOX])
    try:
        writer.add_name(folder.name)
        writer.add_context_length(config["max_position_embeddings"])
        writer.add_embedding_length(hp["hidden"])
        writer.add_block_count(hp["layers"])
        writer.add_feed_forward_length(config["intermediate_size"])
        writer.add_rope_dimension_count(hp["rotary"])
        writer.add_rope_freq_base(hp["theta"])
        writer.add_head_count(hp["heads"])
        writer.add_parallel_residual(config.get("use_parallel_residual", True))
        writer.add_layer_norm_eps(config["layer_norm_eps"])
        writer.add_file_type(gguf.LlamaFileType[f"MOSTLY_{QUANT[fmt]}"])
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("gpt-2")
        writer.add_token_list(tokens)
        writer.add_token_types(kinds)
        writer.add_token_merges(merges)
        for which, token_id in special.items():
            getattr(writer, f"add_{which}_token_id")(token_id)
        writer.add_add_bos_token(False)

        for name, _, _, shape, kind in plan:  # the header holds every tensor's shape and type before the data
            stored = gguf.quant_shape_to_byte_shape(shape, kind) if kind not in FLOATS else shape
            dtype = np.uint8 if kind not in FLOATS else FLOATS[kind]
            writer.add_tensor_info(name, stored, dtype, int(np.prod(stored)) * np.dtype(dtype).itemsize, raw_dtype=kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for n, (_, hf_name, path, _, kind) in enumerate(plan, 1):  # one tensor in memory at a time
            on_stage(f"converting for llama.cpp ({QUANT[fmt]}): tensor {n} of {len(plan)}")
            writer.write_tensor_data(_convert(_load(path, hf_name), kind, "query_key_value" in hf_name, hp["heads"]))
        writer.close()
        os.replace(partial, out)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    return out


def cached(folder: Path, fmt: str) -> Path:
    """Where `folder`'s GGUF of `fmt` lives in the cache (whether or not it has been written)."""
    from importlib.metadata import version

    from space.convert import cache_root, fingerprint

    versions = f"{WRITER_VERSION}\0{version('gguf')}"
    return cache_root("gguf") / f"{fingerprint(Path(folder), fmt, versions)}.gguf"


def convert(folder: Path, fmt: str, on_stage=lambda stage: None) -> Path:
    """The GGUF of the checkpoint in `folder` in format `fmt`, from the cache, written there now if it is not
    (`on_stage`: as `write`'s)."""
    from space.convert import remove_abandoned

    target = cached(folder, fmt)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned(target.parent)
        write(folder, target, fmt, on_stage)
    return target


def _convert(data: np.ndarray, kind, qkv: bool, heads: int) -> np.ndarray:
    if qkv:
        data = _reorder_qkv(data, heads)
    if kind in FLOATS:
        return data.astype(FLOATS[kind])
    return gguf.quants.quantize(data.astype(np.float32), kind)
