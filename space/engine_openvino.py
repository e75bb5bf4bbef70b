"""The OpenVINO CPU engine: a converted checkpoint (space/convert.py) run by OpenVINO's runtime.

On a CPU, decoding reads every weight once per token; OpenVINO's CPU kernels read 8- and 4-bit weights
near the memory's bandwidth on any x86 CPU (AVX2 included), where PyTorch's weight-only kernels are fast
only with AVX-512 BF16/AMX (issue 18, bench/RESULTS.md).

`OpenVINOModel.generate` takes what space/chat.py hands transformers' generate() (token ids, a
GenerationConfig, logits processors, stopping criteria, a streamer) and does the same with a plain loop:
so the token ids are exactly dolly.prompt.encode_prompt's (the engine never tokenizes), decoding of the
streamed ids stays ours, and seed, temperature, top-p/top-k (space/chat.py's seeded sampler),
repetition penalty, `### End`/EOS and Stop behave as on the torch path. Replies running at once
(--concurrency) are decoded together (`_Batch`): each prompt is read in a step of its own, then each step
feeds every reply's next token, so a step reads the weights once for all of them. Keys and values live in
fixed-size blocks of one pool (`paged`, `_Pool`); each reply attends to its own blocks only, so a reply is
the same whoever shares its steps.
"""
from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np
import torch
from transformers import LogitsProcessorList, MinNewTokensLengthLogitsProcessor, PretrainedConfig, \
    RepetitionPenaltyLogitsProcessor

NAME = "openvino"


def available() -> str | None:
    """None when the engine can run here, else why not (for the status line)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "OpenVINO is not installed (pip install -r requirements.txt)"
    return None


def paged(model):
    """The converted (stateful) model with its attention on paged keys and values: every reply's keys and
    values live in fixed-size blocks of one pool (`_Pool`) that the engine hands out, and a step takes the
    tokens of all the replies it runs, each with its own block list and length (OpenVINO's paged attention
    op, which its CPU plugin runs). Where the model kept a state that grew by a token a step, every step
    had new shapes: the plugin compiled and cached kernels for each, and the state was reallocated, so
    memory grew ~6 MB a decoded token on the 2.8b shape (bench/RESULTS.md). Paged, the shapes change only
    when a reply takes a new block, and the memory is the blocks in use.

    The transformation wants the stateful pattern of optimum-intel's exports: each state read through a
    `beam_idx` Gather and given an initializer. It also gains `logits_indices`: the rows (tokens) whose
    logits are computed, so that a prompt's other tokens skip the vocabulary projection."""
    import openvino as ov
    import openvino.opset13 as ops
    from openvino._offline_transformations import paged_attention_transformation

    batch = ops.gather(ops.shape_of(model.input("input_ids"), "i64"), ops.constant([0], dtype=np.int64),
                       ops.constant(0))
    beam = ops.parameter([-1], ov.Type.i32, name="beam_idx")
    beam.output(0).get_tensor().set_names({"beam_idx"})
    for read in [op for op in model.get_ops() if op.get_type_name() == "ReadValue"]:
        shape = read.get_output_partial_shape(0)
        dims = ops.concat([batch, ops.constant([shape[1].get_length(), 0, shape[3].get_length()], dtype=np.int64)], 0)
        users = list(read.output(0).get_target_inputs())
        read.set_arguments([ops.broadcast(ops.constant(0.0, dtype=np.float32), dims)])
        gathered = ops.gather(read, beam, ops.constant(0))
        for user in users:
            user.replace_source_output(gathered.output(0))
    model.add_parameters([beam])
    model.validate_nodes_and_infer_types()
    paged_attention_transformation(model)
    head = model.output("logits").get_node().input_value(0).get_node()  # the vocabulary projection (MatMul)
    indices = ops.parameter([-1], ov.Type.i64, name="logits_indices")
    indices.output(0).get_tensor().set_names({"logits_indices"})
    head.input(0).replace_source_output(ops.gather(head.input_value(0), indices, ops.constant(0)).output(0))
    model.add_parameters([indices])
    model.validate_nodes_and_infer_types()
    return model


PROMPT_CHUNK = 128  # a prompt's tokens read in one step (see _Batch._run)
KEPT_PROMPT_BYTES = 256 << 20  # recent prompts kept (_KeptPrompts): ~1,400 tokens of the 2.8b shape, ~3,500 of 1b


class _KeptPrompts:
    """Recent prompts' keys and values (their blocks, copied out of the pool) and last logits, so that the same
    prompt asked again (a Retry, an example many people click first) starts writing at once instead of being
    read again: on a CPU a prompt costs ~17 ms a token on the 1b shape, ~50 on 2.8b.

    Only the very same prompt, and nothing recomputed: a prompt read in other chunks would round differently
    (how OpenVINO's matmuls compute a row depends on how many rows the step has, and keys are stored 8-bit,
    quantized per block: bench/RESULTS.md), so its start alone could not be reused exactly. Restored, the blocks
    hold the bytes the first reading wrote and the logits are those it gave: the reply is the one the prompt
    read again would give. The least recently used go first once `limit` bytes are kept."""

    def __init__(self, limit: int = KEPT_PROMPT_BYTES):
        self.limit, self.bytes = limit, 0
        self.kept: dict[tuple, tuple[dict, np.ndarray]] = {}  # prompt ids -> ({pool array name: its blocks}, logits)

    def get(self, ids: list[int]) -> tuple[dict, np.ndarray] | None:
        key = tuple(ids)
        if key not in self.kept:
            return None
        self.kept[key] = self.kept.pop(key)  # used: the newest
        return self.kept[key]

    def keep(self, ids: list[int], blocks: list[int], arrays: dict, logits: np.ndarray) -> None:
        """Copy the prompt `ids`'s `blocks` of the pool's `arrays`, just written by reading it, and its logits."""
        key = tuple(ids)
        size = sum(array[0].nbytes for array in arrays.values()) * len(blocks) + logits.nbytes
        if key in self.kept or size > self.limit:
            return
        self.kept[key] = ({name: array[blocks] for name, array in arrays.items()}, logits.copy())  # copies
        self.bytes += size
        while self.bytes > self.limit:
            self._drop(next(iter(self.kept)))  # the least recently used

    def _drop(self, key: tuple) -> None:
        arrays, logits = self.kept.pop(key)
        self.bytes -= sum(a.nbytes for a in arrays.values()) + logits.nbytes


class _Pool:
    """The keys and values of every reply in fixed-size blocks: per layer, one tensor of `capacity` blocks in
    the layout the CPU plugin asks for (8-bit with scales, by default). Allocated, not written: a block's
    pages become resident when a reply first writes it, and `release` gives them all back when no reply
    runs, so memory follows the blocks in use (replies at once × their lengths), not the capacity or the
    busiest moment so far. Grows (by copying) if replies need more."""

    def __init__(self, compiled, request, capacity_tokens: int):
        import openvino as ov

        self.ov, self.request = ov, request
        self.layouts = {}
        for port in compiled.inputs:
            name = port.get_any_name()
            if name.startswith(("key_cache.", "value_cache.")):
                self.layouts[name] = (port.get_element_type(), [d.get_length() for d in list(port.get_partial_shape())[1:]])
        self.block_size = self.layouts["value_cache.0"][1][1]
        self.arrays, self.capacity, self.free = {}, 0, []
        self._grow(-(-capacity_tokens // self.block_size))

    def _grow(self, capacity: int) -> None:
        for name, (kind, dims) in self.layouts.items():
            array = np.empty([capacity, *dims], dtype=np.dtype(f"u{kind.size}"))  # its bytes, typed as `kind` below
            if name in self.arrays:
                array[: self.capacity] = self.arrays[name]
            self.arrays[name] = array
            self.request.set_tensor(name, self.ov.Tensor(array, self.ov.Shape(array.shape), kind))
        self.free = sorted(self.free + list(range(self.capacity, capacity)), reverse=True)  # lowest ids first
        self.capacity = capacity

    def take(self, n: int) -> list[int]:
        if n > len(self.free):
            self._grow(max(2 * self.capacity, self.capacity + n))
        return [self.free.pop() for _ in range(n)]

    def give(self, blocks: list[int]) -> None:
        self.free = sorted(self.free + blocks, reverse=True)

    def release(self) -> None:
        """Give every block's pages back to the system; only while no reply holds a block. A block is
        written before it is read, so the zeroed pages a later reply gets are as good as new ones; where
        replies once filled four windows of the 2.8b shape, that is ~1.5 GB an idle app no longer holds."""
        for array in self.arrays.values():
            _dont_need(array.ctypes.data, array.nbytes)


class _Row:
    """One reply: its prompt until it is read, its blocks and length in the pool, the token it feeds next
    and the logits the step gave it."""

    def __init__(self, prompt: list[int]):
        self.ids = prompt  # the whole prompt (for _KeptPrompts)
        self.prompt, self.blocks, self.length = prompt, [], 0
        self.token, self.logits, self.left = None, None, False


class _Batch:
    """Replies running at once, decoded together: one infer request over one pool of blocks. A reply's
    prompt is read in a step of its own (as it would be alone); then each step feeds every reply's next
    token at once, so a step reads the weights once for all of them. Each reply attends only to its own
    blocks at its own positions, so its logits do not depend on which others share the step."""

    def __init__(self, compiled, capacity_tokens: int, company: bool = True):
        self.company = company  # whether replies may share a step (--concurrency above 1): see _infer
        self.request = compiled.create_infer_request()
        self.pool = _Pool(compiled, self.request, capacity_tokens)
        self.scratch = self.pool.take(1)  # the placeholder row's block (see _infer)
        self.kept = _KeptPrompts()
        self.restored_tokens = 0  # prompt tokens restored from self.kept instead of read (tests, benches)
        self.cond = threading.Condition()
        self.rows: list[_Row] = []  # replies whose prompt has been read
        self.prompts: list[_Row] = []  # replies waiting for their prompt to be read
        self.thread = None
        self.steps = 0  # batched steps run, and rows decoded in them (bench/chat_cpu.py --batch reads these)
        self.rows_decoded = 0
        self.decoded_last = None  # whether the last step decoded (False: it read a prompt's chunk)

    def start(self, ids: list[int]) -> tuple[_Row, np.ndarray]:
        """Read the prompt `ids`; the reply's row, and the logits of its last token."""
        row = _Row(list(ids))
        with self.cond:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="dolly-openvino-batch", daemon=True)
                self.thread.start()
            self.prompts.append(row)
            self.cond.notify_all()
        return row, self._wait(row)

    def step(self, row: _Row, token: int) -> np.ndarray:
        """Feed `token` to `row` at the next batched step; its logits."""
        with self.cond:
            row.token = token
            self.cond.notify_all()
        return self._wait(row)

    def _wait(self, row: _Row) -> np.ndarray:
        """The logits of `row`'s step, once it has run; a failed step's error is raised here, in the reply's thread."""
        with self.cond:
            while row.logits is None:
                self.cond.wait()
            logits, row.logits = row.logits, None
        if isinstance(logits, BaseException):
            raise logits
        return logits

    def leave(self, row: _Row) -> None:
        with self.cond:
            row.left = True
            self.cond.notify_all()

    def _decodable(self) -> bool:
        return bool(self.rows) and all(r.token is not None for r in self.rows)

    def _ready(self) -> bool:
        """A prompt waiting is read (a chunk a step); a decoding step runs when every reply has fed its token
        (or left), so that it is shared by all of them."""
        for row in [r for r in self.rows + self.prompts if r.left]:
            if row.blocks:
                self.pool.give(row.blocks)
                row.blocks = []
                self.cond.notify_all()  # for whoever waits for the pool (tests)
        self.rows = [r for r in self.rows if not r.left]
        self.prompts = [r for r in self.prompts if not r.left]
        return bool(self.prompts) or self._decodable()

    def _run(self) -> None:
        written = False  # whether a step wrote blocks since the pool last gave its pages back
        while True:
            with self.cond:
                while not self._ready():
                    if written and not self.rows:  # idle: the pages the replies wrote go back
                        self.pool.release()
                        written = False
                        self.cond.notify_all()  # for whoever waits for the pages (tests)
                    self.cond.wait()
                written = True
                # A long prompt is read PROMPT_CHUNK tokens a step, taking turns with the decoding steps of the
                # replies already writing, which would otherwise stand still for the whole prompt (seconds on
                # the 2.8b shape). Its chunks are the same alone or in company, so its reply is too.
                reading = bool(self.prompts) and not (self.decoded_last is False and self._decodable())
                if reading and self.prompts[0].length == 0 and self._restore(self.prompts[0]):
                    continue  # the same prompt was read before: no step to run
                if reading:
                    rows = [self.prompts[0]]
                    feeds = [rows[0].prompt[:PROMPT_CHUNK]]
                    rows[0].prompt = rows[0].prompt[PROMPT_CHUNK:]
                    if not rows[0].prompt:
                        self.prompts.pop(0)
                else:
                    rows = list(self.rows)
                    feeds = [[r.token] for r in rows]
                    for r in rows:
                        r.token = None
                try:
                    for r, feed in zip(rows, feeds):  # the blocks the new tokens need
                        needed = -(-(r.length + len(feed)) // self.pool.block_size) - len(r.blocks)
                        r.blocks += self.pool.take(needed) if needed > 0 else []
                    error = None
                except BaseException as failed:  # no room (out of memory): every row of the step gets the error
                    error = failed
            try:
                if error is not None:
                    raise error
                logits = self._infer(rows, feeds, decoding=not reading)
            except BaseException as failed:  # handed to each caller, which raises it in its own thread
                logits = [failed] * len(rows)
            with self.cond:
                for r, feed, row_logits in zip(rows, feeds, logits):
                    if isinstance(row_logits, BaseException):  # the reply ends: its blocks go back now
                        r.left = True
                        self.pool.give(r.blocks)
                        r.blocks = []
                        if r in self.rows:
                            self.rows.remove(r)
                        r.logits = row_logits
                    else:
                        r.length += len(feed)
                        if not (reading and r.prompt):  # a prompt's last chunk: the reply starts writing
                            r.logits = row_logits
                            if reading:
                                self.rows.append(r)
                                self.kept.keep(r.ids, r.blocks, self.pool.arrays, row_logits)
                self.decoded_last = not reading
                if not reading:
                    self.steps += 1
                    self.rows_decoded += len(rows)
                self.cond.notify_all()

    def _restore(self, row: _Row) -> bool:
        """Whether `row`'s prompt was kept: then its blocks are copied into blocks of its own, it gets the logits
        the prompt gave, and it starts writing (called with the lock held)."""
        kept = self.kept.get(row.ids)
        if kept is None:
            return False
        arrays, logits = kept
        try:
            row.blocks = self.pool.take(len(next(iter(arrays.values()))))
        except MemoryError:  # no room to copy it into: it is read, as if it had not been kept
            return False
        for name, array in self.pool.arrays.items():
            array[row.blocks] = arrays[name]
        row.length, row.prompt, row.logits = len(row.ids), [], logits.copy()
        self.prompts.remove(row)
        self.rows.append(row)
        self.restored_tokens += row.length
        self.cond.notify_all()
        return True

    def _infer(self, rows: list[_Row], feeds: list[list[int]], decoding: bool = False) -> list[np.ndarray]:
        """One step: each row's tokens at its next positions; each row's last logits. A decoding step of
        one row gets a placeholder row beside it (one token at position 0 in a scratch block, its logits
        dropped): OpenVINO runs other matmul kernels for one token than for several, whose rounding
        differs in the last bits, and a greedy reply can turn on such a near tie (measured on the 1b
        shape: 3 of 4 replies differed alone and in company). With two or more rows always, a reply is
        the same alone or with others. Where replies never share a step (--concurrency 1) no placeholder
        is needed, and on an AVX2 CPU, where two rows cost more than one, a reply decodes ~30% faster."""
        placeholder = decoding and len(rows) == 1 and self.company
        if placeholder:
            row = _Row([])
            row.blocks = self.scratch
            rows, feeds = rows + [row], feeds + [[0]]
        ids, positions, begins, blocks, block_begins = [], [], [0], [], [0]
        for r, feed in zip(rows, feeds):
            ids += feed
            positions += range(r.length, r.length + len(feed))
            begins.append(len(ids))
            blocks += r.blocks
            block_begins.append(len(blocks))
        self.request.infer({
            "input_ids": np.array(ids, dtype=np.int64), "position_ids": np.array(positions, dtype=np.int64),
            "past_lens": np.array([r.length for r in rows], dtype=np.int32),
            "subsequence_begins": np.array(begins, dtype=np.int32),
            "block_indices": np.array(blocks, dtype=np.int32),
            "block_indices_begins": np.array(block_begins, dtype=np.int32),
            "max_context_len": np.array(max(r.length + len(f) for r, f in zip(rows, feeds)), dtype=np.int32),
            "logits_indices": np.array([end - 1 for end in begins[1:]], dtype=np.int64)})
        logits = self.request.get_tensor("logits").data
        return [logits[n].reshape(1, -1).astype(np.float32, copy=True) for n in range(len(rows) - placeholder)]


@functools.cache
def _madvise():
    """libc's madvise, or None where there is none (not Linux)."""
    import ctypes

    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return madvise


def _dont_need(address: int, size: int) -> int:
    """madvise(MADV_DONTNEED) on the whole pages inside [address, address + size): the system takes them
    back (a file's are read again from it, private memory comes back zeroed on its next touch). Returns
    the bytes advised. Linux only; elsewhere, or on any failure, nothing."""
    import mmap

    start, end = -(-address // mmap.PAGESIZE) * mmap.PAGESIZE, (address + size) // mmap.PAGESIZE * mmap.PAGESIZE
    madvise = _madvise()
    if end <= start or madvise is None:
        return 0
    return end - start if madvise(start, end - start, 4) == 0 else 0  # 4: MADV_DONTNEED


def release_mapped(path: Path) -> int:
    """Give back the resident pages of this process's read-only mappings of `path`; returns how many bytes
    of mappings it advised. Safe for a read-only file mapping: a page read again is read back from the file."""
    import os

    target = os.path.realpath(path)
    try:
        with open("/proc/self/maps") as maps:
            regions = [line.split(maxsplit=5) for line in maps]
    except OSError:
        return 0
    advised = 0
    for parts in regions:
        if len(parts) == 6 and parts[5].strip() == target and "w" not in parts[1]:
            start, end = (int(x, 16) for x in parts[0].split("-"))
            advised += _dont_need(start, end - start)
    return advised


class OpenVINOModel:
    """A converted model, compiled for the CPU, with the part of a transformers model that
    space/chat.py uses: `generate`, `config`, `device`."""

    device = torch.device("cpu")

    def __init__(self, folder: Path, fmt: str, replies_at_once: int = 2):
        import openvino as ov

        self.folder, self.format = Path(folder), fmt
        self.config = PretrainedConfig.from_json_file(str(self.folder / "config.json"))
        core = ov.Core()
        properties = {"PERFORMANCE_HINT": "LATENCY"}
        if fmt == "none":
            # The checkpoint's own precision, exactly: float32 arithmetic and keys/values, as the torch
            # path computes on a CPU. (8/4-bit formats let OpenVINO pick, bf16 where the CPU has it.)
            properties.update({"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"})
        self.compiled = core.compile_model(paged(core.read_model(self.folder / "model.xml")), "CPU", properties)
        precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.precision = {"bf16": "bfloat16", "f32": "float32", "f16": "float16"}.get(precision, precision)
        # Room for a few replies of the whole window before the pool grows; only blocks written take memory.
        window = getattr(self.config, "max_position_embeddings", 2048) or 2048
        self.batch = _Batch(self.compiled, capacity_tokens=4 * window, company=replies_at_once > 1)
        self._warm_up()

    def _warm_up(self) -> None:
        """One token through the model at load, giving back the memory-mapped model.bin's pages meanwhile.
        OpenVINO maps model.bin, and on the first inference the CPU plugin repacks every weight into buffers
        of its own and never reads the mapping again: left alone, the weights stay resident twice (the 2.8b
        shape in int8: 5.8 GB against 3.0, bench/RESULTS.md). Given back while the repack runs, they are
        never resident twice, so the peak stays near one copy too."""
        stop = threading.Event()

        def give_back():
            while not stop.wait(0.02):
                release_mapped(self.folder / "model.bin")

        thread = threading.Thread(target=give_back, name="dolly-openvino-warm-up", daemon=True)
        thread.start()
        try:
            row, _ = self.start([0])
            self.batch.leave(row)
        finally:
            stop.set()
            thread.join()
        release_mapped(self.folder / "model.bin")

    def start(self, ids: list[int]) -> tuple[_Row, torch.Tensor]:
        """Read the prompt `ids` for a new reply: its row in the batch, and its last token's logits.
        The caller ends the reply with `self.batch.leave(row)`, which gives its blocks back."""
        row, logits = self.batch.start(ids)
        return row, torch.from_numpy(logits)

    def step(self, row: _Row, token: int) -> torch.Tensor:
        """Decode `token` for `row` in the next batched step, beside whatever other replies run; its logits."""
        return torch.from_numpy(self.batch.step(row, token))

    def generate(self, inputs: torch.Tensor, attention_mask=None, generation_config=None, logits_processor=None,
                 stopping_criteria=None, streamer=None, **unused):
        """What transformers' generate() does for space/chat.py's call (greedy over the processed scores,
        which the seeded sampler has narrowed to one token when sampling), on this engine."""
        config = generation_config
        processors = LogitsProcessorList()
        if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
        eos = config.eos_token_id
        eos = set([eos] if isinstance(eos, int) else (eos or []))
        if config.min_new_tokens:
            processors.append(MinNewTokensLengthLogitsProcessor(inputs.shape[1], config.min_new_tokens, sorted(eos)))
        processors.extend(logits_processor or [])
        stopping = list(stopping_criteria or [])
        sequence = inputs.clone()
        if streamer is not None:
            streamer.put(sequence.cpu())
        row = None
        try:
            row, scores = self.start(sequence[0].tolist())
            for step in range(config.max_new_tokens):
                if step:
                    scores = self.step(row, token)
                scores = processors(sequence, scores)
                token = int(scores[0].argmax())
                sequence = torch.cat([sequence, torch.tensor([[token]])], dim=1)
                if streamer is not None:
                    streamer.put(torch.tensor([token]))
                if token in eos or any(bool(c(sequence, scores).all()) for c in stopping):
                    break
        finally:
            if row is not None:
                self.batch.leave(row)
            if streamer is not None:
                streamer.end()
        return sequence


def load(folder: Path, fmt: str, replies_at_once: int = 2) -> OpenVINOModel:
    """The converted model in `folder`, compiled; `replies_at_once`: the most replies that may run at once
    (--concurrency)."""
    return OpenVINOModel(folder, fmt, replies_at_once)
