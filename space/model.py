"""Loading the chat model: a Hub id (databricks/dolly-v2-3b) or a local checkpoint folder.

Loading runs in a background thread so the app serves (and the Explorer works) while weights
download and load; `ModelLoader.status()` says where it is. Every failure becomes a message that
says what went wrong and which flag fixes it, never a crash of the app. No trust_remote_code:
Dolly is a plain GPT-NeoX, and prompt building lives in this project (dolly/prompt.py).
"""
import threading
from dataclasses import dataclass
from pathlib import Path

from dolly.background import Background, NotReady
from dolly.source import cached_snapshot, hub_unreachable, is_local
from space import zerogpu  # first: on a ZeroGPU Space it imports `spaces`, which must come before CUDA starts

DEFAULT_MODEL = "databricks/dolly-v2-3b"
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZE = ("auto", "none", "int8", "int4")  # --quantize; space/quantize.py says what each means
# --cpu-engine: what runs the model on a CPU. llamacpp = space/engine_llamacpp.py (a GGUF copy, cached);
# openvino = space/engine_openvino.py (a converted copy, cached); torch = transformers in this process;
# auto = the kept engine measured fastest on this CPU (kept_engines), else the other, else torch.
CPU_ENGINES = ("auto", "llamacpp", "openvino", "torch")
ENGINE_LABELS = {"llamacpp": "llama.cpp", "openvino": "OpenVINO", "torch": "torch"}
FIX_HINT = "Start the app with a model it can load, e.g. `python app.py --model path/to/checkpoint`."


class ModelError(RuntimeError):
    """A model that cannot be loaded or used, with a message meant for the person running the app."""


@dataclass
class LoadedModel:
    """A model ready to generate: what the chat logic needs and nothing else."""
    model: object
    tokenizer: object
    name: str
    device: str
    dtype: str
    quantize: str = "none"  # the weights' format: none, int8 or int4
    engine: str = "torch"  # what runs it: torch, llamacpp or openvino (CPU_ENGINES)
    why: str = ""  # why this engine, when it is not the one asked for (--cpu-engine auto fell back)
    decode_dtype: str = ""  # quantized layers decode in this dtype, not `dtype` (pick_decode_dtype)

    @property
    def mode(self) -> str:
        """How it computes, for the status line: 'bfloat16', or 'int8 weights, bfloat16 activations'."""
        from space.quantize import describe

        if self.engine == "openvino":
            weights = "the checkpoint's weights" if self.quantize == "none" else f"{self.quantize} weights"
            return f"OpenVINO, {weights}, {self.dtype} activations"
        if self.engine == "llamacpp":
            from space.engine_llamacpp import FORMAT_NAMES

            return f"llama.cpp, {FORMAT_NAMES[self.quantize]} weights, {self.dtype} activations"
        return describe(self.quantize, self.dtype, self.decode_dtype or None)

    @property
    def plain_mode(self) -> str:
        """The mode in plain words, for the status line people read ("fast 8-bit mode"); `mode` holds the
        technical words for its details line."""
        words = {"int8": "fast 8-bit mode", "int4": "fastest 4-bit mode"}.get(self.quantize)
        if words is None:
            words = "full-precision mode" if self.dtype == "float32" else "16-bit mode"
        return words if self.device == "cpu" else f"{words} on the GPU"

    @property
    def window(self) -> int:
        """How many tokens (prompt + reply) the model can attend to."""
        return int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)


def pick_device(device: str = "auto") -> str:
    """`auto` means the GPU when there is one, else the CPU; an explicit device must exist."""
    import torch

    device = (device or "auto").strip().lower()
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ModelError(f"Unknown device '{device}': use one of {', '.join(DEVICES)} (or cuda:N).")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"--device {device} was asked for, but this machine has no CUDA GPU. Use --device cpu.")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelError("--device mps was asked for, but MPS is not available here. Use --device cpu.")
    return device


def pick_dtype(dtype: str, device: str, quantized: bool = False):
    """`auto` means bfloat16 on a GPU that supports it (Dolly is published in bf16), float16 on older
    GPUs (T4, V100). On a CPU, quantized weights compute with bfloat16 activations where the CPU does
    bf16 natively (AVX512-BF16, AMX), which halves the bytes again; everything else on a CPU is
    float32, the exact reference (emulated half precision is slow and sometimes wrong there)."""
    import torch

    from space.quantize import native_bf16

    dtype = (dtype or "auto").strip().lower()
    if dtype not in DTYPES:
        raise ModelError(f"Unknown dtype '{dtype}': use one of {', '.join(DTYPES)}.")
    if dtype == "auto":
        if device.startswith("cuda") and zerogpu.ACTIVE:
            return torch.bfloat16  # ZeroGPU's cards (H200) have bf16; asking CUDA now would start it too early
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.startswith("cuda") or device == "mps":
            return torch.float16
        return torch.bfloat16 if quantized and native_bf16() else torch.float32
    return getattr(torch, dtype)


def pick_decode_dtype(dtype: str, device: str, mode: str, native: bool | None = None):
    """The dtype quantized layers decode in when it is not the model's: bfloat16 for `--dtype auto`
    on a CPU without native bf16, where the model computes in float32 (prompts stay float32, fast
    there) but PyTorch's int8 kernel is ~9x faster given bf16 input (space/quantize.decode_in).
    None otherwise. `native`: whether the CPU has native bf16 (default: this CPU's answer)."""
    import torch

    from space.quantize import native_bf16

    if (dtype or "auto").strip().lower() != "auto" or device != "cpu" or mode == "none":
        return None
    return None if (native_bf16() if native is None else native) else torch.bfloat16


def pick_quantize(quantize: str, device: str) -> str:
    """The weights' format that runs on `device` for a --quantize value (space/quantize.py decides)."""
    from space.quantize import QuantizeError, pick_mode

    try:
        return pick_mode(quantize, device)
    except QuantizeError as error:
        raise ModelError(str(error)) from None


_load_lock = threading.Lock()


def check_cpu_engine(cpu_engine: str | None) -> str:
    engine = (cpu_engine or "auto").strip().lower()
    if engine not in CPU_ENGINES:
        raise ModelError(f"Unknown --cpu-engine '{cpu_engine}': use one of {', '.join(CPU_ENGINES)}.")
    return engine


def load_model(name: str, device: str = "auto", dtype: str = "auto", quantize: str = "none",
               on_stage=lambda stage: None, cpu_engine: str = "torch", replies_at_once: int = 2) -> LoadedModel:
    """Load `name` (local folder or Hub id) for generation. Raises ModelError with a fix.

    `quantize` (app flag default: auto): none, int8, int4, or auto (int8 on a CPU, none on a GPU).
    `cpu_engine` (app flag default: auto): on a CPU, llamacpp, openvino, torch, or auto (the kept engine
    fastest on this CPU, else the other, else torch: kept_engines; `LoadedModel.why` says why). A GPU runs torch.
    `replies_at_once` (app flag --concurrency): the most replies the app runs at once.
    """
    name = str(name or "").strip()
    if not name:
        raise ModelError(f"No model given. {FIX_HINT}")
    engine = check_cpu_engine(cpu_engine)
    device = pick_device(device)
    mode = pick_quantize(quantize, device)
    passed = []  # why each kept engine tried could not run it
    for kept in kept_engines(engine) if device == "cpu" else []:
        load_kept = _load_llamacpp if kept == "llamacpp" else _load_openvino
        loaded, reason = load_kept(name, mode, engine == kept, on_stage, replies_at_once)
        if loaded is not None:
            loaded.why = _why(loaded.engine, engine, passed)
            return loaded
        passed.append(f"not {ENGINE_LABELS[kept]}: {reason}")
    lm = _load_torch(name, device, dtype, mode, on_stage)
    lm.why = _why("torch", engine, passed) if passed else ""
    return lm


def kept_engines(engine: str, flags: set | None = None) -> list[str]:
    """The kept CPU engines --cpu-engine `engine` tries, in order: itself, none for torch, and for auto the one
    measured fastest on this CPU first (bench/RESULTS.md): OpenVINO where the CPU has AVX-512, whose 8-bit kernels
    it uses well (the 2.8b shape 1.14x llama.cpp's Q8_0 on an AVX-512 EPYC); llama.cpp elsewhere (AVX2 only:
    1.4-1.6x OpenVINO on the 1b shape; Arm). `flags`: the CPU's flags (default: this CPU's)."""
    if engine == "torch":
        return []
    if engine != "auto":
        return [engine]
    return ["openvino", "llamacpp"] if _avx512(flags) else ["llamacpp", "openvino"]


def _avx512(flags: set | None = None) -> bool:
    from space.quantize import cpu_flags

    return "avx512f" in (cpu_flags() if flags is None else flags)


def _why(chosen: str, asked: str, passed: list[str]) -> str:
    """The status line's reason for the engine that runs, when --cpu-engine auto chose it."""
    if passed:
        return f"Runs on {ENGINE_LABELS[chosen]}, {'; '.join(passed)}."
    if asked == "auto" and chosen != "torch":
        cpu = "with AVX-512" if _avx512() else "without AVX-512"
        return f"{ENGINE_LABELS[chosen]} was chosen as the fastest engine measured on a CPU {cpu}, as this one is."
    return ""


def _checkpoint_folder(name: str, on_stage) -> str:
    """A local folder holding `name`'s checkpoint: the folder itself, or the Hub snapshot (downloaded
    when the Hub is reachable, else the one in this machine's cache). ModelError when there is none."""
    if is_local(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise ModelError(f"Model folder not found: {path}. {FIX_HINT}")
        if not (path / "config.json").exists():
            raise ModelError(
                f"{path} is not a model checkpoint (no config.json in it). Point --model at the folder "
                "the training script wrote (it holds config.json, the weights and the tokenizer)."
            )
        return str(path)
    on_stage("checking that the Hugging Face Hub is reachable")
    unreachable = hub_unreachable()
    if unreachable:  # said in seconds, instead of after the Hub client's minute of retries
        source = cached_snapshot(name)
        if source is None:
            folder = name.split("/")[-1]
            raise ModelError(
                f"Could not load model '{name}': the Hugging Face Hub is not reachable ({unreachable}) and the "
                f"model is not in this machine's cache. Download it once where the Hub is reachable "
                f"(`hf download {name} --local-dir ./{folder}`), then start the app with `--model ./{folder}`."
            )
        return source
    return name


def _load_openvino(name: str, mode: str, required: bool, on_stage, replies_at_once: int) -> tuple[LoadedModel | None, str]:
    """(the model on OpenVINO, "") or, unless `required` (--cpu-engine openvino), (None, why it cannot run it).
    `required`: a model it cannot run is a ModelError."""
    from space import engine_openvino

    def cannot(reason: str):
        if required:
            raise ModelError(f"--cpu-engine openvino cannot run {name}: {reason}. Use --cpu-engine torch (or auto).")
        return None, reason

    missing = engine_openvino.available()
    if missing:
        return cannot(missing)
    from space.convert import ConversionError, convert, converted

    try:
        folder = _checkpoint_snapshot(name, on_stage)
        if converted(folder, mode) is None:
            on_stage(f"converting for OpenVINO ({mode}), once")
        ov_folder = convert(folder, mode, on_stage=on_stage)
        on_stage("loading the tokenizer")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        on_stage("compiling the OpenVINO model")
        model = engine_openvino.load(ov_folder, mode, replies_at_once)
    except ConversionError as error:
        return cannot(f"it could not be converted ({error})")
    except ModelError:
        raise  # no checkpoint at all: no other engine would find one either
    except MemoryError as error:
        raise ModelError(f"Out of memory converting {name} for OpenVINO: use a smaller model or --cpu-engine torch.") from error
    except (OSError, ValueError, RuntimeError) as error:
        return cannot(f"{type(error).__name__}: {_first_line(error)}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, name, "cpu", model.precision, mode, engine="openvino"), ""


def _checkpoint_snapshot(name: str, on_stage) -> Path:
    """The checkpoint's files in a local folder, for an engine that converts them: the folder, or the Hub's
    snapshot (downloaded now when the Hub is reachable)."""
    source = _checkpoint_folder(name, on_stage)
    if not is_local(source):
        from huggingface_hub import snapshot_download

        on_stage("downloading the checkpoint")
        source = snapshot_download(name)
    return Path(source)


def _load_llamacpp(name: str, mode: str, required: bool, on_stage, replies_at_once: int) -> tuple[LoadedModel | None, str]:
    """(the model on llama.cpp, "") or, unless `required` (--cpu-engine llamacpp), (None, why it cannot run it)."""
    from space import engine_llamacpp

    def cannot(reason: str):
        if required:
            raise ModelError(f"--cpu-engine llamacpp cannot run {name}: {reason}. Use --cpu-engine torch (or auto).")
        return None, reason

    missing = engine_llamacpp.available()
    if missing:
        return cannot(missing)
    from space import gguf

    try:
        folder = _checkpoint_snapshot(name, on_stage)
        from transformers import AutoConfig, AutoTokenizer

        config = AutoConfig.from_pretrained(folder)
        if config.model_type != "gpt_neox":
            return cannot(f"it could not be converted (llama.cpp's engine here takes GPT-NeoX (Pythia, Dolly) "
                          f"checkpoints; this one is '{config.model_type}')")
        path = gguf.convert(folder, mode, on_stage)  # once: then from the cache
        on_stage("loading the tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        on_stage("loading the model into llama.cpp")
        model = engine_llamacpp.load(path, config, mode, tokenizer, replies_at_once)
    except ModelError:
        raise  # no checkpoint at all: no other engine would find one either
    except MemoryError as error:
        raise ModelError(f"Out of memory converting {name} for llama.cpp: use a smaller model or --cpu-engine torch.") from error
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        return cannot(f"{type(error).__name__}: {_first_line(error)}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, name, "cpu", model.precision, mode, engine="llamacpp"), ""


def _load_torch(name: str, device: str, dtype: str, mode: str, on_stage) -> LoadedModel:
    torch_dtype = pick_dtype(dtype, device, quantized=mode != "none")
    source = _checkpoint_folder(name, on_stage)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        on_stage("loading the tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(source)
        on_stage("loading the weights" if is_local(name) else "downloading and loading the weights")
        # Quantized weights are made from bf16 ones, never from a float32 copy of the whole model
        # (twice the memory); float32 activations, where the CPU has no bf16, come after.
        load_dtype = torch.bfloat16 if mode != "none" else torch_dtype
        # from_pretrained sets torch's process-wide default dtype while it builds the model and puts the
        # old one back after: two loads at once (two apps in one process) could each restore the other's
        # bf16, leaving every later float32 tensor of the process in bf16. One load at a time, and the
        # default put back whatever happens.
        with _load_lock:
            default_dtype = torch.get_default_dtype()
            try:
                model = AutoModelForCausalLM.from_pretrained(source, dtype=load_dtype)
            finally:
                torch.set_default_dtype(default_dtype)
        if mode != "none":
            from space.quantize import quantize_model

            quantize_model(model, mode, on_progress=lambda done, total: on_stage(
                f"quantizing the weights to {mode}: matrix {done} of {total}"))
            if torch_dtype != load_dtype:
                model.to(torch_dtype)  # float tensors only; the int8/int4 weights stay as they are
            decode_dtype = pick_decode_dtype(dtype, device, mode)
            if decode_dtype is not None and decode_dtype != torch_dtype:
                from space.quantize import decode_in

                decode_in(model, decode_dtype)
        on_stage(f"moving the model to {device}")
        model.to(device)
        model.eval()
    except torch.OutOfMemoryError as error:
        raise ModelError(
            f"Out of memory loading {name} on {device} ({error}). Use a smaller model "
            "(--model databricks/dolly-v2-3b), --dtype bfloat16, or --device cpu."
        ) from error
    except (OSError, ValueError, EnvironmentError) as error:
        if "out of memory" in str(error).lower() or isinstance(error, MemoryError):
            raise ModelError(f"Out of memory loading {name}: use a smaller model or --device cpu.") from error
        where = "the Hugging Face Hub (is this machine offline, or is the id misspelled?)" if not is_local(name) else str(source)
        raise ModelError(f"Could not load model '{name}' from {where}: {_first_line(error)}. {FIX_HINT}") from error
    except MemoryError as error:
        raise ModelError(f"Out of memory loading {name}: use a smaller model or --device cpu.") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # Pythia has no pad token; generate needs one
    decode = pick_decode_dtype(dtype, device, mode)
    return LoadedModel(model, tokenizer, name, device, str(torch_dtype).removeprefix("torch."), mode,
                       decode_dtype=str(decode).removeprefix("torch.") if decode not in (None, torch_dtype) else "")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0].rstrip(".") if text else type(error).__name__


class ModelLoader(Background[LoadedModel]):
    """Loads a model in a background thread; the app asks `status()` and `get()` meanwhile.

    The thread ends once the model is loaded, and that matters for speed on a CPU: a thread that ran
    torch's parallel ops (quantizing does) keeps an OpenMP thread pool while it lives, and once there
    are more pool threads than cores GNU OpenMP stops spinning between parallel regions, so each
    generate() thread then decoded ~15% slower (bench/RESULTS.md). Keep torch work off long-lived threads.
    """

    def __init__(self, name: str, device: str = "auto", dtype: str = "auto", on_done=None, quantize: str = "none",
                 cpu_engine: str = "torch", replies_at_once: int = 2):
        self.name, self.device, self.dtype, self.quantize = str(name), device, dtype, quantize
        self.cpu_engine = cpu_engine
        super().__init__(f"model '{self.name}'",
                         lambda stage: load_model(self.name, device, dtype, quantize, on_stage=stage,
                                                  cpu_engine=cpu_engine, replies_at_once=replies_at_once),
                         expected=(ModelError,), on_done=on_done)

    def start(self) -> "ModelLoader":
        super().start()
        if zerogpu.ACTIVE:
            # ZeroGPU takes the model's CUDA tensors over when the app launches: they must be there by then.
            self.wait()
        return self

    @property
    def label(self) -> str:
        """The model's name for people: a Hub id as it is, a local folder by its own name (the
        whole path is a detail, and on a server nobody else's business)."""
        return Path(self.name).name if is_local(self.name) else self.name

    def status(self) -> str:
        """Markdown for the Chat tab: one line naming the model, and where a local one came from."""
        where = f"\n\n<small>Loaded from `{self.name}`</small>" if is_local(self.name) else ""
        if self.state == "ready":
            # The first line in plain words; how it runs, and why that engine, on the small details line.
            m = self.get()
            why = f" {m.why}" if m.why else ""
            source = f" from `{self.name}`" if is_local(self.name) else ""
            return (f"**Model ready:** {self.label} is ready, {m.plain_mode} ({m.window:,}-token window).\n\n"
                    f"<small>Runs on {m.device}: {m.mode}; loaded{source} in {self.elapsed:.0f} s.{why}</small>")
        if self.state == "failed":
            return f"**The chat model could not be loaded.** {self.error}"
        return f"**Loading the chat model** {self.label}: {self.stage}… ({self.elapsed:.0f} s).{where}"

    def get(self) -> LoadedModel:
        """The loaded model, or ModelError saying why there is none (yet)."""
        try:
            return super().get()
        except NotReady:
            if self.error is not None:
                raise ModelError(self.error) from None
            raise ModelError(f"The model {self.name} is still loading ({self.stage}); try again in a moment.") from None
