"""The torch path's CPU choice where the CPU has no native bf16 (issue 18): quantized layers decode a
token in bf16 (PyTorch's int8 kernel is ~9x faster given bf16 input there) while prompts and the rest
of the model stay float32 (an emulated bf16 prompt matmul is ~4x slower). Real tiny models, real kernels."""
import torch

from dolly.prompt import encode_prompt
from space.chat import stream_reply, validate_settings
from space.model import load_model, pick_decode_dtype
from space.quantize import Int4Linear, Int8Linear, decode_in, describe
from tests.tiny_model import save_scripted_model, save_tiny_model

SCRIPT = " The capital of France is Paris."


def test_only_auto_on_a_cpu_without_native_bf16_decodes_in_bf16():
    assert pick_decode_dtype("auto", "cpu", "int8", native=False) == torch.bfloat16
    assert pick_decode_dtype("auto", "cpu", "int4", native=False) == torch.bfloat16
    assert pick_decode_dtype("auto", "cpu", "int8", native=True) is None  # bf16 activations throughout already
    assert pick_decode_dtype("float32", "cpu", "int8", native=False) is None  # asked for float32: float32
    assert pick_decode_dtype("auto", "cpu", "none", native=False) is None
    assert pick_decode_dtype("auto", "cuda", "int8", native=False) is None
    assert describe("int8", torch.float32, torch.bfloat16) == "int8 weights, float32 activations (bfloat16 when decoding)"
    assert describe("int8", torch.bfloat16, None) == "int8 weights, bfloat16 activations"


def test_decoding_in_bf16_keeps_prompts_in_float32_and_the_reply(tmp_path):
    path = str(save_tiny_model(tmp_path / "tiny", dolly_tokens=True, hidden_size=128))
    plain = load_model(path, "cpu", dtype="float32", quantize="int8", cpu_engine="torch")
    mixed = load_model(path, "cpu", dtype="float32", quantize="int8", cpu_engine="torch")
    decode_in(mixed.model, torch.bfloat16)
    layers = [m for m in mixed.model.modules() if isinstance(m, Int8Linear)]
    assert layers and all(m.decode_scale.dtype == torch.bfloat16 and m.scale.dtype == torch.float32 for m in layers)
    ids = torch.tensor([encode_prompt(plain.tokenizer, "Name a river.", "Rivers of Europe and Asia.")])
    assert ids.shape[1] >= 16  # a prompt: the float32 path
    with torch.inference_mode():
        prompt_plain, prompt_mixed = plain.model(ids).logits, mixed.model(ids).logits
        assert torch.equal(prompt_plain, prompt_mixed)  # prompts: untouched float32
        one_plain, one_mixed = plain.model(ids[:, :3]).logits, mixed.model(ids[:, :3]).logits
    assert one_mixed.dtype == torch.float32  # the model stays float32 around the bf16 matmul
    assert not torch.equal(one_plain, one_mixed)  # a token: the bf16 kernel ran
    assert torch.allclose(one_plain, one_mixed, atol=0.05, rtol=0.05)


def test_a_scripted_model_answers_the_same_decoding_in_bf16(tmp_path):
    path = str(save_scripted_model(tmp_path / "m", SCRIPT))
    for quantize, layer in (("int8", Int8Linear), ("int4", Int4Linear)):
        lm = load_model(path, "cpu", dtype="float32", quantize=quantize, cpu_engine="torch")
        decode_in(lm.model, torch.bfloat16)
        assert any(isinstance(m, layer) for m in lm.model.modules())
        ids = encode_prompt(lm.tokenizer, "What is the capital of France?")
        reply = list(stream_reply(lm, ids, validate_settings(do_sample=False, max_new_tokens=30)))[-1]
        assert reply == SCRIPT.strip(), quantize
