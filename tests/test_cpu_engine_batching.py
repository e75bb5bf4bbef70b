"""The OpenVINO engine decodes replies running at once in one batch (issue 18 §2), on a real
conversion of a tiny GPT-NeoX: each reply is exactly the same request alone (greedy and seeded), whoever
joins or leaves the batch meanwhile, and the steps really are shared."""
import ctypes
import mmap
import sys
import threading
from contextlib import contextmanager

import numpy as np
import pytest

from dolly.prompt import encode_prompt
from space import chat
from space.chat import stream_reply, validate_settings
from space.engine import LocalEngine
from space.engine_openvino import PROMPT_CHUNK, _Batch, _KeptPrompts
from space.model import load_model
from tests.generations import Ready, reply_ids
from tests.tiny_model import save_tiny_model

# Different prompt lengths and reply lengths: rows of the batch are padded differently and leave at
# different steps.
PROMPTS = ["Hi", "Name three rivers of Europe and say why each matters.", "A much longer question " * 12, "Why?"]
MAX_NEW = [30, 12, 45, 24]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOLLY_CACHE", str(cache))
        path = save_tiny_model(tmp_path_factory.mktemp("tiny"), dolly_tokens=True)
        yield load_model(str(path), "cpu", quantize="int8", cpu_engine="openvino")


def reply(lm, ids, **settings):
    """A whole reply's text through the app's generation path (reply_ids records through a patch of
    the shared model, which replies at once cannot share)."""
    return list(stream_reply(lm, ids, validate_settings(**settings)))[-1]


def at_once(lm, requests):
    """reply() for each (ids, settings) of `requests`, all started together."""
    out = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def run(i, ids, settings):
        barrier.wait()
        out[i] = reply(lm, ids, **settings)

    threads = [threading.Thread(target=run, args=(i, ids, s)) for i, (ids, s) in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return out


@contextmanager
def watching(batch, see):
    """While inside: `see(inputs)` is called before each step the batch hands OpenVINO (it may raise)."""

    class Watched:
        def __init__(self, request):
            self.request = request

        def infer(self, inputs):
            see(inputs)
            return self.request.infer(inputs)

        def __getattr__(self, name):
            return getattr(self.request, name)

    batch.request = Watched(batch.request)
    try:
        yield
    finally:
        batch.request = batch.request.request


@contextmanager
def nothing_kept(batch):
    """While inside, every prompt is read (none is restored from _KeptPrompts)."""
    kept, batch.kept = batch.kept, _KeptPrompts(limit=0)
    try:
        yield
    finally:
        batch.kept = kept


def test_four_replies_at_once_are_decoded_together_each_as_if_alone(lm):
    requests = [(encode_prompt(lm.tokenizer, p), dict(do_sample=False, max_new_tokens=n)) for p, n in zip(PROMPTS, MAX_NEW)]
    # The tiny model writes no `### End` this soon: every row runs its length, so rows leave at different steps.
    assert [len(reply_ids(lm, ids, **settings)) for ids, settings in requests] == MAX_NEW
    batch = lm.model.batch
    with nothing_kept(batch):  # every prompt read, alone and in company (restored prompts: the next tests)
        alone = [reply(lm, ids, **settings) for ids, settings in requests]
        steps, rows = batch.steps, batch.rows_decoded
        together = at_once(lm, requests)
    assert together == alone
    # Shared steps: fewer batched steps than rows decoded (alone, each step decodes one row).
    assert batch.rows_decoded - rows == sum(n - 1 for n in MAX_NEW)
    assert batch.steps - steps < batch.rows_decoded - rows


def test_seeded_sampling_is_reproducible_per_request_in_a_batch(lm):
    ids = [encode_prompt(lm.tokenizer, p) for p in PROMPTS]
    settings = [dict(do_sample=True, seed=s, temperature=t, top_k=k, top_p=0.9, repetition_penalty=r, max_new_tokens=n)
                for s, t, k, r, n in ((1, 0.7, 50, 1.0, 20), (2, 1.2, 0, 1.3, 33), (1, 0.9, 20, 1.1, 16), (99, 1.5, 0, 1.0, 28))]
    alone = [reply(lm, i, **s) for i, s in zip(ids, settings)]
    assert at_once(lm, list(zip(ids, settings))) == alone
    assert alone[0] != alone[2]  # same seed, other prompt and settings: another reply


def test_the_same_prompt_again_is_restored_not_read_and_its_replies_are_those_of_the_prompt_read(lm):
    """A Retry, or an example many people click: the same prompt again starts writing with no step over it (its
    blocks and logits were kept when it was first read), and its replies, greedy and seeded, alone and in
    company, are exactly those the prompt read again gives."""
    batch = lm.model.batch
    ids = encode_prompt(lm.tokenizer, "Tell me about the rivers of Europe, and why they matter. " * 14)
    assert len(ids) > PROMPT_CHUNK  # read in two steps the first time
    asks = [dict(do_sample=False, max_new_tokens=30), dict(do_sample=True, seed=7, max_new_tokens=30)]

    def logits(steps=6):
        """The prompt's logits and those of the next greedy steps, from the engine itself."""
        row, out = lm.model.start(ids)
        out = [out]
        for _ in range(steps):
            out.append(lm.model.step(row, int(out[-1].argmax())))
        batch.leave(row)
        return out

    with nothing_kept(batch):
        read = [reply(lm, ids, **settings) for settings in asks]
        read_logits = logits()
    kept, batch.kept = batch.kept, _KeptPrompts()
    try:
        logits()  # read, and kept
        restored = batch.restored_tokens
        assert all(a.equal(b) for a, b in zip(logits(), read_logits))  # bit for bit
        assert batch.restored_tokens - restored == len(ids)
        batch.kept = _KeptPrompts()
        fed = []  # the tokens of each step OpenVINO runs
        with watching(batch, lambda inputs: fed.append(len(inputs["input_ids"]))):
            first = reply(lm, ids, **asks[0])  # read, and kept
            prompt_tokens, restored = sum(n for n in fed if n > 2), batch.restored_tokens
            again = [reply(lm, ids, **settings) for settings in asks] + at_once(lm, [(ids, s) for s in asks])
        assert prompt_tokens == len(ids)  # the first time every prompt token was fed; a decoding step feeds <= 2
        assert sum(n for n in fed if n > 2) == prompt_tokens  # never again
        assert batch.restored_tokens - restored == 4 * len(ids)
        assert [first] + again == [read[0]] + read + read
        assert read[0] != read[1]
    finally:
        batch.kept = kept


def test_kept_prompts_are_copies_within_their_limit_the_least_recently_used_going_first():
    arrays = {"key_cache.0": np.arange(40, dtype=np.uint8).reshape(4, 10)}  # a pool of 4 blocks of 10 bytes
    logits = np.ones(5, dtype=np.float32)  # 20 bytes
    kept = _KeptPrompts(limit=2 * (2 * 10 + 20))  # room for two prompts of two blocks
    kept.keep([1, 2], [0, 1], arrays, logits)
    kept.keep([3], [2, 3], arrays, logits)
    assert kept.get([1, 2]) is not None  # used: now the newest
    kept.keep([4], [1, 2], arrays, logits)  # over the limit: [3], the least recently used, goes
    assert kept.get([3]) is None and kept.get([1, 2]) is not None and kept.get([4]) is not None
    assert kept.bytes == kept.limit
    arrays["key_cache.0"][:] = 0  # the pool's blocks are written again by later replies ...
    blocks, restored_logits = kept.get([4])
    assert blocks["key_cache.0"].tolist() == [list(range(10, 20)), list(range(20, 30))]  # ... the kept ones are copies
    assert restored_logits.tolist() == [1.0] * 5
    kept.keep([5], [0, 1, 2, 3], arrays, np.ones(20, dtype=np.float32))  # 120 bytes: more than the limit, not kept
    assert kept.get([5]) is None and kept.bytes == kept.limit


def test_a_reply_stopped_mid_way_leaves_the_others_as_if_alone(lm):
    engine = LocalEngine(loader=Ready(lm), concurrency=4)
    requests = [(encode_prompt(lm.tokenizer, p), dict(do_sample=False, max_new_tokens=n)) for p, n in zip(PROMPTS[:3], (40, 25, 50))]
    alone = [reply(lm, ids, **settings) for ids, settings in requests]
    before = chat.generation_threads()
    generation = engine.chat("Go on and on", max_new_tokens=1000, do_sample=False)
    stream = iter(generation)
    assert next(stream)  # it streams, in the batch
    long_reply = chat.generation_threads() - before
    out = [None] * len(requests)
    started = threading.Barrier(len(requests) + 1)

    def run(i, ids, settings):
        started.wait()
        out[i] = reply(lm, ids, **settings)

    threads = [threading.Thread(target=run, args=(i, ids, s)) for i, (ids, s) in enumerate(requests)]
    for thread in threads:
        thread.start()
    started.wait()
    for _ in range(5):  # let the others decode a few steps beside it, then Stop it
        next(stream)
    assert len(long_reply) == 1, long_reply
    generation.cancel()
    thread = long_reply.pop()
    thread.join(60)  # Stop ends its generate() thread (long before its 1,000 tokens) ...
    assert not thread.is_alive()
    for thread in threads:
        thread.join(300)
    assert out == alone  # ... and the others, which shared its steps, are as if alone


def test_replies_are_the_same_when_the_pool_of_blocks_grows_under_them(lm):
    """Keys and values live in fixed-size blocks of one pool; replies that need more blocks than it holds
    make it grow (copying what it holds) mid-reply, and no reply notices. Once they end, every block is
    back in the pool (all but the placeholder row's, see the next test)."""
    requests = [(encode_prompt(lm.tokenizer, p), dict(do_sample=False, max_new_tokens=n)) for p, n in zip(PROMPTS, MAX_NEW)]
    alone = [reply(lm, ids, **settings) for ids, settings in requests]
    roomy = lm.model.batch
    lm.model.batch = batch = _Batch(lm.model.compiled, capacity_tokens=1)  # one block: each new block grows it
    try:
        assert batch.pool.capacity == 1
        assert at_once(lm, requests) == alone
        longest = max(-(-(len(ids) + s["max_new_tokens"] - 1) // batch.pool.block_size) for ids, s in requests)
        assert batch.pool.capacity >= longest  # it grew (the longest reply alone needs this many)
        with batch.cond:
            assert batch.cond.wait_for(lambda: len(batch.pool.free) == batch.pool.capacity - len(batch.scratch), timeout=60)
    finally:
        lm.model.batch = roomy


def test_a_reply_alone_is_decoded_in_steps_of_two_rows_as_in_company(lm):
    """OpenVINO's matmul kernels for one token round differently from those for several: on the 1b shape, 3
    of 4 greedy replies differed alone and in company (bench/RESULTS.md). So a lone reply is stepped beside
    a placeholder row, and every decoding step runs the kernels of several rows; its prompt is read alone.
    (The placeholder's logits never reach a reply: the other tests here compare replies token for token.)"""
    rows = []
    with nothing_kept(lm.model.batch), watching(lm.model.batch, lambda inputs: rows.append(len(inputs["past_lens"]))):
        reply(lm, encode_prompt(lm.tokenizer, PROMPTS[1]), do_sample=False, max_new_tokens=12)
    assert rows == [1] + [2] * 11


def test_with_one_reply_at_a_time_a_reply_is_decoded_in_steps_of_one_row(lm):
    """With --concurrency 1 replies never share a step, so the placeholder row buys nothing, and on an AVX2
    CPU it costs ~30% of the decoding speed (bench/RESULTS.md): there each step is the reply's one row."""
    alone = load_model(lm.name, "cpu", quantize="int8", cpu_engine="openvino", replies_at_once=1)
    rows = []
    with watching(alone.model.batch, lambda inputs: rows.append(len(inputs["past_lens"]))):
        text = reply(alone, encode_prompt(alone.tokenizer, PROMPTS[1]), do_sample=False, max_new_tokens=12)
    assert rows == [1] * 12 and text


@pytest.mark.parametrize("failing_call", [0, 3])  # the prompt's step, a decoding step
def test_a_failed_step_ends_its_reply_gives_its_blocks_back_and_the_next_reply_is_as_before(lm, failing_call):
    ids = encode_prompt(lm.tokenizer, PROMPTS[1])
    before = reply(lm, ids, do_sample=False, max_new_tokens=12)
    batch = lm.model.batch
    calls = []

    def fail_once(inputs):
        calls.append(inputs)
        if len(calls) == failing_call + 1:
            raise RuntimeError("the CPU plugin failed")

    with nothing_kept(batch), watching(batch, fail_once):  # every step runs: the prompt's is call 0
        with pytest.raises(RuntimeError, match="the CPU plugin failed"):
            reply(lm, ids, do_sample=False, max_new_tokens=12)
        with batch.cond:
            assert batch.cond.wait_for(lambda: len(batch.pool.free) == batch.pool.capacity - len(batch.scratch), timeout=60)
        assert reply(lm, ids, do_sample=False, max_new_tokens=12) == before


def test_a_long_prompt_is_read_in_chunks_between_the_steps_of_a_reply_already_writing(lm):
    """A long prompt does not stop the replies already writing until it is read: it is read PROMPT_CHUNK
    tokens a step, and the others decode between its chunks. Both replies are still as alone."""
    long_ids = encode_prompt(lm.tokenizer, "Tell me everything you know about the rivers of Europe. " * 30)
    assert len(long_ids) > 2 * PROMPT_CHUNK
    # The writing reply is long (the tiny model runs all 400 tokens) so that it is still writing while the long
    # prompt's chunks are read, however late a busy machine lets this thread ask for it (with 45 tokens, a CI run
    # under load failed here: a reply that ends first leaves no decoding step between the chunks).
    short = (encode_prompt(lm.tokenizer, PROMPTS[0]), dict(do_sample=False, max_new_tokens=400))
    long = (long_ids, dict(do_sample=False, max_new_tokens=10))
    alone = [reply(lm, ids, **settings) for ids, settings in (short, long)]
    batch = lm.model.batch
    tokens = []
    out = {}
    with nothing_kept(batch), watching(batch, lambda inputs: tokens.append(len(inputs["input_ids"]))):
        steps = batch.steps
        writing = threading.Thread(target=lambda: out.setdefault("short", reply(lm, short[0], **short[1])))
        writing.start()
        with batch.cond:  # the short reply is writing ...
            assert batch.cond.wait_for(lambda: batch.steps > steps, timeout=60)
        out["long"] = reply(lm, long[0], **long[1])  # ... when the long prompt comes
        writing.join(300)
    assert [out["short"], out["long"]] == alone
    chunks = [i for i, n in enumerate(tokens) if n == PROMPT_CHUNK]
    # Decoding steps between the chunks: the engine decodes between two chunks when the writing reply has fed its next
    # token by then, so where the machine keeps that reply's thread waiting, two chunks may follow each other (a busy CI
    # run: chunks at steps 2, 4, 6, 7, 8, 10...). Never is the whole prompt read while the reply stands still.
    between = [i for i in range(chunks[0], chunks[-1]) if tokens[i] != PROMPT_CHUNK]
    assert len(chunks) >= 2 and between, tokens


def resident(array) -> int:
    """Bytes of `array`'s whole pages that are in memory (mincore)."""
    page = mmap.PAGESIZE
    start, end = -(-array.ctypes.data // page) * page, (array.ctypes.data + array.nbytes) // page * page
    if end <= start:
        return 0
    pages = (ctypes.c_ubyte * ((end - start) // page))()
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(end - start), pages) == 0, ctypes.get_errno()
    return sum(p & 1 for p in pages) * page


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pages are given back with Linux's madvise")
def test_an_idle_engine_gives_the_pages_of_its_blocks_back_and_replies_as_before(lm):
    """While replies run, the blocks they write are in memory; once none runs, the pool gives every page
    back (a busy moment's keys and values, up to ~1.5 GB on the 2.8b shape, no longer stay resident), and a
    reply after that, on zeroed pages, is the same as before."""
    batch = lm.model.batch
    ids = encode_prompt(lm.tokenizer, PROMPTS[2])

    def pool_resident():
        return sum(resident(a) for a in batch.pool.arrays.values())

    def given_back():
        with batch.cond:
            return batch.cond.wait_for(lambda: pool_resident() == 0, timeout=60)

    first = reply(lm, ids, do_sample=False, max_new_tokens=45)
    assert given_back()
    seen = []
    with watching(batch, lambda inputs: seen.append(pool_resident())):
        again = reply(lm, ids, do_sample=False, max_new_tokens=45)
    assert max(seen) > 0  # the engine wrote into the pool's own arrays: their pages came back in use
    assert given_back()
    assert again == first
