"""Weight-only quantization for fast chat on a CPU: int8 per output channel, or int4 in groups.

Decoding one token reads every weight once, so on a CPU its speed is memory bandwidth divided by
the weights' bytes: int8 weights are half of bf16's bytes, int4 a quarter. PyTorch ships the kernels
(`torch._weight_int8pack_mm`, `torch._weight_int4pack_mm_for_cpu`); these modules call them
directly. torchao 0.18's `Int8WeightOnlyConfig` is slower than plain bf16 on a CPU because, without
torch.compile, its linear does `weight.to(bfloat16)` and then a matmul: every token converts and
writes a full bf16 copy of every weight, so it moves more bytes than bf16 itself.

The weight-only kernels are matrix-vector kernels: for a prompt (many rows at once) they are several
times slower than a bf16 matmul, so prefill dequantizes the weight and runs the float matmul
(`PREFILL_ROWS`). Activations stay in the model's float dtype (bf16 where the CPU has it natively).
"""
from __future__ import annotations

import gc
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("auto", "none", "int8", "int4")
# From this many rows on (a prompt, not one decoded token) a layer dequantizes its weight and runs a
# float matmul: measured on an AVX-512 EPYC, int8pack_mm at 128 rows was 5x slower than bf16 F.linear.
PREFILL_ROWS = 8
INT4_GROUP_SIZES = (128, 64, 32)  # the kernel's group sizes, largest (fewest scales) first that divides K


class QuantizeError(ValueError):
    """A quantization mode that cannot run as asked; the message says what to use instead."""


def native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX on x86, BF16 on Arm), so a
    bf16 model is faster than fp32 rather than emulated. `cpuinfo`: /proc/cpuinfo's text (tests)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:  # not Linux: no cheap way to know, and fp32 is never wrong
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def check_mode(quantize: str | None) -> str:
    """Normalise a --quantize value; an unknown one is a QuantizeError naming the choices."""
    mode = (quantize or "auto").strip().lower()
    if mode not in MODES:
        raise QuantizeError(f"Unknown --quantize '{quantize}': use one of {', '.join(MODES)}.")
    return mode


def pick_mode(quantize: str | None, device: str) -> str:
    """The weight format that runs: 'none', 'int8' or 'int4'. `auto` is int8 on a CPU (half of bf16's
    bytes, quality loss within noise; bench/RESULTS.md) and none on a GPU, where bf16 is fast already."""
    mode = check_mode(quantize)
    on_cpu = device == "cpu"
    if mode == "auto":
        return "int8" if on_cpu else "none"
    if mode != "none" and not on_cpu:
        raise QuantizeError(f"--quantize {mode} runs on the CPU only (PyTorch's weight-only kernels used here are "
                            f"CPU kernels); on {device} use --quantize auto or none, which run bf16/fp16 weights.")
    return mode


def describe(mode: str, dtype: torch.dtype) -> str:
    """How the model computes, in words for the status line: 'int8 weights, bfloat16 activations'."""
    name = str(dtype).removeprefix("torch.")
    return name if mode == "none" else f"{mode} weights, {name} activations"


# --- the quantized linears --------------------------------------------------------------------------

class Int8Linear(nn.Module):
    """nn.Linear with int8 weights, one scale per output channel (symmetric: w ≈ q * scale)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach()
        dtype = weight.dtype
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = weight.float()
        scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127
        self.register_buffer("qweight", torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(dtype))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def dequantize(self) -> torch.Tensor:
        return self.qweight.to(self.scale.dtype) * self.scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.dtype != self.scale.dtype:
            rows = rows.to(self.scale.dtype)
        if rows.shape[0] < PREFILL_ROWS:
            out = torch._weight_int8pack_mm(rows.contiguous(), self.qweight, self.scale)
        else:
            # A prompt: the int values are exact in bf16, so scale the (smaller) output, not the weight.
            out = F.linear(rows, self.qweight.to(rows.dtype)) * self.scale
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per channel"


def _int4_layout(block: int, lanes: bool):
    """Unpacks the bytes that `_convert_weight_to_int4pack_for_cpu` wrote back to an [N, K] int tensor.

    The kernel packs rows in blocks of `block` (64 with AVX-512, 32 otherwise): in a full block with
    `lanes`, byte j of column k holds row j (low nibble) and row j + block/2 (high nibble); in the
    tail block, and in full blocks without lanes, a byte holds two neighbouring rows.
    """
    def unpack(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
        flat = packed.reshape(-1)
        full = n // block
        parts = []
        if full:
            b = flat[: full * k * block // 2].view(full, k, block // 2)
            low, high = (b & 0xF), (b >> 4)
            rows = torch.cat([low, high], dim=-1) if lanes else torch.stack([low, high], dim=-1).reshape(full, k, block)
            parts.append(rows.permute(0, 2, 1).reshape(full * block, k))
        tail = n - full * block
        if tail:
            b = flat[full * k * block // 2:].view(k, tail // 2)
            rows = torch.stack([b & 0xF, b >> 4], dim=-1).reshape(k, tail)
            parts.append(rows.t())
        return torch.cat(parts) if len(parts) > 1 else parts[0]
    return unpack


_unpack_int4 = None


def _int4_unpacker():
    """The unpacker that matches this CPU's packing, found once by packing a known matrix; None when
    none does (then prompts go through the int4 kernel too: slower, never wrong)."""
    global _unpack_int4
    if _unpack_int4 is None:
        probe = torch.randint(0, 16, (64 * 2 + 16, 64), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(probe, 1)
        _unpack_int4 = False
        for block, lanes in ((64, True), (32, True), (32, False), (64, False)):
            unpack = _int4_layout(block, lanes)
            try:
                if torch.equal(unpack(packed, *probe.shape).to(torch.int32), probe):
                    _unpack_int4 = unpack
                    break
            except RuntimeError:  # a view that does not fit this layout
                continue
    return _unpack_int4 or None


class Int4Linear(nn.Module):
    """nn.Linear with int4 weights in groups of `group` inputs, each with a scale and a zero point
    (asymmetric: w ≈ (q - 8) * scale + zero), in the layout PyTorch's CPU int4 kernel reads."""

    def __init__(self, linear: nn.Linear, group: int):
        super().__init__()
        weight = linear.weight.detach()
        dtype = weight.dtype
        n, k = weight.shape
        self.in_features, self.out_features, self.group = linear.in_features, linear.out_features, group
        # The kernel works on blocks of 16 output rows: pad with zero rows and cut them off the output.
        self.padded = -(-n // 16) * 16
        w = weight.float()
        if self.padded != n:
            w = torch.cat([w, w.new_zeros(self.padded - n, k)])
        groups = w.reshape(self.padded, k // group, group)
        low, high = groups.amin(dim=-1, keepdim=True), groups.amax(dim=-1, keepdim=True)
        scale = ((high - low).clamp(min=1e-8) / 15)
        q = ((groups - low) / scale).round_().clamp_(0, 15).to(torch.int32).reshape(self.padded, k)
        zero = low + 8 * scale
        self.register_buffer("qweight", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), 1))
        # [K/group, N, 2]: scale and zero of each group and output row, as the kernel wants them.
        self.register_buffer("scale_zero", torch.cat([scale, zero], dim=-1).transpose(0, 1).contiguous().to(dtype))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def dequantize(self) -> torch.Tensor | None:
        unpack = _int4_unpacker()
        if unpack is None:
            return None
        dtype = self.scale_zero.dtype
        q = unpack(self.qweight, self.padded, self.in_features).to(dtype)
        scale, zero = self.scale_zero[..., 0].t(), self.scale_zero[..., 1].t()  # [N, K/group]
        w = (q.view(self.padded, -1, self.group) - 8) * scale[..., None] + zero[..., None]
        return w.reshape(self.padded, self.in_features)[: self.out_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.dtype != self.scale_zero.dtype:
            rows = rows.to(self.scale_zero.dtype)
        weight = self.dequantize() if rows.shape[0] >= PREFILL_ROWS else None
        if weight is not None:
            out = F.linear(rows, weight)
        else:
            out = torch._weight_int4pack_mm_for_cpu(rows.contiguous(), self.qweight, self.group, self.scale_zero)
            out = out[:, : self.out_features]
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 groups of {self.group}"


def int4_group(in_features: int) -> int | None:
    """The group size for a layer with `in_features` inputs, or None when the kernel cannot take it."""
    return next((g for g in INT4_GROUP_SIZES if in_features % g == 0), None)


def quantize_model(model: nn.Module, mode: str, on_progress=lambda done, total: None) -> nn.Module:
    """Replace every nn.Linear of `model` (in place) with its `mode` ('int8', 'int4') twin.

    One layer at a time, each float weight freed as soon as its quantized copy exists, so memory
    never holds more than the float model plus one layer. The input embedding stays float: a token
    reads one of its rows, not the whole matrix. Linears the int4 kernel cannot take (inputs not a
    multiple of 32) stay float too.
    """
    if mode == "none":
        return model
    if mode not in ("int8", "int4"):
        raise QuantizeError(f"Unknown quantization mode '{mode}': use int8 or int4.")
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    for done, (name, linear) in enumerate(targets, 1):
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if mode == "int8":
            replacement = Int8Linear(linear)
        else:
            group = int4_group(linear.in_features)
            if group is None:
                continue
            replacement = Int4Linear(linear, group)
        setattr(parent, attr, replacement)
        linear.weight = None  # drop the float weight now, even if something else still holds the module
        del linear, replacement
        if done % 8 == 0:
            gc.collect()
        on_progress(done, len(targets))
    gc.collect()
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer: what decoding one token reads (about)."""
    tensors = list(model.parameters()) + [b for b in model.buffers() if b is not None]
    seen, total = set(), 0
    for t in tensors:
        if t.data_ptr() in seen:  # tied weights count once
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total
