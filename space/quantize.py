"""Weight-only quantization for fast chat on a CPU: int8 per output channel, or int4 in groups.

Decoding one token reads every weight once, so on a CPU its speed is at most memory bandwidth divided
by the weights' bytes: int8 weights are half of bf16's bytes, int4 a quarter. (On two cores the int8
kernel reads weights well below the memory's bandwidth, ~8 GB/s per core: bench/RESULTS.md; keeping them in
2 MB pages, `_huge_page_empty`, makes it ~10% faster.) PyTorch ships the kernels
(`torch._weight_int8pack_mm`, `torch._weight_int4pack_mm_for_cpu`); these modules call them
directly. torchao 0.18's `Int8WeightOnlyConfig` is slower than plain bf16 on a CPU because, without
torch.compile, its linear does `weight.to(bfloat16)` and then a matmul: every token converts and
writes a full bf16 copy of every weight, so it moves more bytes than bf16 itself.

The int8 kernel is a matrix-vector kernel: for a prompt (many rows at once) it is several times
slower than a matmul, so int8 prefill converts the weight to the activations' dtype and runs the float
matmul (`PREFILL_ROWS`), converting into a buffer each generating thread reuses: a fresh 50 MB tensor
per layer cost 5x the conversion itself in page faults. Activations stay in the model's float dtype
(bf16 where the CPU has it natively).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
import mmap
import sys
import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from space.model import QUANTIZE as MODES  # beside --dtype's choices, where app.py reads them without torch

# From this many rows on (a prompt, not one decoded token) an int8 layer converts its weight and runs a
# float matmul: on an AVX-512 EPYC at 128 rows, int8pack_mm took 2.6x as long as that; at 16 rows they
# were about even.
PREFILL_ROWS = 16
INT4_GROUP_SIZES = (64, 32)  # the kernel's group sizes, preferred first: 64 decodes about as fast as 128 with 20-40% less weight error (bench/RESULTS.md)


class QuantizeError(ValueError):
    """A quantization mode that cannot run as asked; the message says what to use instead."""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """This CPU's feature flags (/proc/cpuinfo's `flags`, or `Features` on Arm); empty where there is no
    /proc/cpuinfo (not Linux). `cpuinfo`: its text (tests)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX on x86, BF16 on Arm), so a
    bf16 model is faster than fp32 rather than emulated (not Linux: no cheap way to know, and fp32 is
    never wrong). `cpuinfo`: /proc/cpuinfo's text (tests)."""
    return bool(cpu_flags(cpuinfo) & {"avx512_bf16", "amx_bf16", "bf16"})


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


def describe(mode: str, dtype: torch.dtype, decode_dtype: torch.dtype | None = None) -> str:
    """How the model computes, in words for the status line: 'int8 weights, bfloat16 activations'."""
    name = str(dtype).removeprefix("torch.")
    if mode == "none":
        return name
    decoding = f" ({str(decode_dtype).removeprefix('torch.')} when decoding)" if decode_dtype not in (None, dtype) else ""
    return f"{mode} weights, {name} activations{decoding}"


def decode_in(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Make the quantized layers of `model` compute one decoded token in `dtype` (bf16), whatever the
    model's own float dtype, and prompts in the model's dtype.

    For a CPU without native bf16 (AVX2 only): PyTorch's int8 matrix-vector kernel is ~9x slower with
    float32 input than with bf16 input there (17.35 against 1.92 ms on a 2048x8192 layer, issue 18),
    while a bf16 prompt matmul is emulated and ~5x slower than float32. Decoding in bf16 and prefilling
    in float32 is the fast one of each (bench/RESULTS.md). The bf16 scales are plain attributes, so a
    later model.to(float32) leaves them as they are.
    """
    for module in model.modules():
        if isinstance(module, Int8Linear):
            module.decode_scale = module.scale.to(dtype)
        elif isinstance(module, Int4Linear):
            module.decode_scale_zero = module.scale_zero.to(dtype)
    return model


# --- the quantized linears --------------------------------------------------------------------------

def _linux_madvise():
    """libc's madvise on Linux, or None (elsewhere, or without a libc to call)."""
    global _madvise
    if _madvise is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            _madvise = libc.madvise if sys.platform.startswith("linux") else False
        except (OSError, AttributeError):
            _madvise = False
    return _madvise or None


_madvise = None
MADV_HUGEPAGE, MADV_PAGEOUT = 14, 21
HUGE_PAGE = 2 << 20


def _page_out(tensor: torch.Tensor) -> None:
    """Ask Linux to drop `tensor`'s pages from this process (madvise MADV_PAGEOUT, Linux 5.4+).

    The loader memory-maps the checkpoint, so a weight's pages are the file's: once quantizing has
    read them they would stay counted in this process until the whole file is unmapped, and peak
    memory would be the full bf16 model plus its int8 copy. PAGEOUT is a hint that keeps the
    contents (a page read again comes back from the file, or from swap), so it is safe on any
    memory; where it is not available nothing happens.
    """
    madvise = _linux_madvise()
    if not madvise:
        return
    page = mmap.PAGESIZE
    start = -(-tensor.data_ptr() // page) * page
    end = (tensor.data_ptr() + tensor.numel() * tensor.element_size()) // page * page
    if end > start:
        madvise(start, end - start, MADV_PAGEOUT)  # an error (old kernel) leaves things as they were


def _huge_page_empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """An empty tensor in memory Linux is asked to back with 2 MB pages (madvise MADV_HUGEPAGE).

    Decoding reads every weight once per token, and with 4 KB pages each 4 KB read is a TLB miss on
    the path to memory: in 2 MB pages the int8 kernel read its weights 13% faster (bench/RESULTS.md).
    Only whole 2 MB pages are advised, so the tail never costs memory. Where transparent huge pages
    are off, or not on Linux, this is an ordinary tensor's memory.
    """
    numel = math.prod(shape)
    size = numel * dtype.itemsize
    madvise = _linux_madvise()
    if not madvise or size < HUGE_PAGE:
        return torch.empty(shape, dtype=dtype)
    region = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    address = ctypes.addressof(ctypes.c_char.from_buffer(region))
    start = -(-address // HUGE_PAGE) * HUGE_PAGE
    madvise(start, size // HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE)  # a kernel without THP: an error, ignored
    # The tensor keeps `region` mapped for as long as it lives.
    return torch.frombuffer(region, dtype=dtype, count=numel, offset=start - address).view(shape)


_scratch = threading.local()


def _scratch_like(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A tensor of `weight`'s shape in `dtype`, from a buffer this thread reuses (grown as needed), to
    convert a weight into for one matmul. Per thread: replies generated at once never share one."""
    if not hasattr(_scratch, "buffers"):
        _scratch.buffers = {}
    buffer = _scratch.buffers.get(dtype)
    # A buffer made under inference_mode cannot be written outside it (and the other way round is slow).
    if buffer is None or buffer.numel() < weight.numel() or buffer.is_inference() != torch.is_inference_mode_enabled():
        buffer = _scratch.buffers[dtype] = torch.empty(weight.numel(), dtype=dtype)
    return buffer[: weight.numel()].view(weight.shape)


def _row_chunks(n: int, size: int = 4096):
    """Slices of `size` rows (a multiple of the int4 packing's 64-row blocks) covering n rows."""
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


class Int8Linear(nn.Module):
    """nn.Linear with int8 weights, one scale per output channel (symmetric: w ≈ q * scale)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach()
        dtype = weight.dtype
        self.in_features, self.out_features = linear.in_features, linear.out_features
        qweight = _huge_page_empty(weight.shape, torch.int8)
        scale = torch.empty(weight.shape[0], dtype=torch.float32)
        for rows in _row_chunks(weight.shape[0]):  # float32 temporaries for a slice, never the whole matrix
            w = weight[rows].float()
            scale[rows] = w.abs().amax(dim=1).clamp(min=1e-8) / 127
            qweight[rows] = torch.round(w / scale[rows, None]).clamp_(-127, 127).to(torch.int8)
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale.to(dtype))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.decode_scale = None  # decode_in() sets it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.decode_scale is not None and rows.shape[0] < PREFILL_ROWS and rows.dtype != self.decode_scale.dtype:
            out = torch._weight_int8pack_mm(rows.to(self.decode_scale.dtype).contiguous(), self.qweight,
                                            self.decode_scale).to(x.dtype)
            if self.bias is not None:
                out = out + self.bias
            return out.reshape(*x.shape[:-1], self.out_features)
        if rows.dtype != self.scale.dtype:
            rows = rows.to(self.scale.dtype)
        if rows.shape[0] < PREFILL_ROWS:
            out = torch._weight_int8pack_mm(rows.contiguous(), self.qweight, self.scale)
        else:
            # A prompt: the int values are exact in bf16, so scale the (smaller) output, not the weight.
            weight = _scratch_like(self.qweight, rows.dtype).copy_(self.qweight)
            out = F.linear(rows, weight) * self.scale
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per channel"


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
        packed, scale_zero = [], []
        # The packing keeps each block of 64 rows together, so packing slices of a multiple of 64 rows and
        # concatenating them is packing the whole matrix, with float32 temporaries for a slice only.
        for rows in _row_chunks(self.padded):
            w = weight[rows.start:min(rows.stop, n)].float()
            if w.shape[0] < rows.stop - rows.start:
                w = torch.cat([w, w.new_zeros(rows.stop - rows.start - w.shape[0], k)])
            groups = w.reshape(-1, k // group, group)
            low, high = groups.amin(dim=-1, keepdim=True), groups.amax(dim=-1, keepdim=True)
            scale = (high - low).clamp(min=1e-8) / 15
            q = ((groups - low) / scale).round_().clamp_(0, 15).to(torch.int32).reshape(-1, k)
            packed.append(torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), 1))
            scale_zero.append(torch.cat([scale, low + 8 * scale], dim=-1).to(dtype))
        qweight = _huge_page_empty((sum(p.shape[0] for p in packed), *packed[0].shape[1:]), packed[0].dtype)
        self.register_buffer("qweight", torch.cat(packed, out=qweight))
        # [K/group, N, 2]: scale and zero of each group and output row, as the kernel wants them.
        self.register_buffer("scale_zero", torch.cat(scale_zero).transpose(0, 1).contiguous())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.decode_scale_zero = None  # decode_in() sets it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One kernel for prompts and tokens alike: at 128 rows it measured close to dequantizing the
        # weight plus a bf16 matmul, since unpacking its nibble layout in PyTorch costs more than it saves.
        rows = x.reshape(-1, self.in_features)
        scale_zero = self.scale_zero
        if self.decode_scale_zero is not None and rows.shape[0] < PREFILL_ROWS:
            scale_zero = self.decode_scale_zero
        if rows.dtype != scale_zero.dtype:
            rows = rows.to(scale_zero.dtype)
        out = torch._weight_int4pack_mm_for_cpu(rows.contiguous(), self.qweight, self.group, scale_zero)
        out = out[:, : self.out_features].to(x.dtype)
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
        _page_out(linear.weight.detach())
        linear.weight = None  # drop the float weight now, even if something else still holds the module
        del linear, replacement
        if done % 8 == 0:
            gc.collect()
        on_progress(done, len(targets))
    # What is left float (the input embedding, layer norms, biases) may still be views of the
    # checkpoint file, memory-mapped by the loader: the whole file then stays mapped, and every page
    # quantizing read stays counted in this process. Owning copies let the mapping go.
    with torch.no_grad():
        for module in model.modules():
            for name, param in list(module.named_parameters(recurse=False)):
                param.data = param.data.clone()
            for name, buffer in list(module.named_buffers(recurse=False)):
                if buffer is not None and buffer.is_floating_point():
                    setattr(module, name, buffer.clone())
    gc.collect()
    return model

