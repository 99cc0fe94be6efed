"""Linear weights pre-packed once for oneDNN on CPUs with native bf16 (what IPEX and inductor's
`freezing` do).

A plain `F.linear` in bf16 on the CPU reorders its weight into oneDNN's blocked layout on every
call; at decode time (a handful of rows per step) that reorder costs about as much as the product
itself. Packing each weight once at load time and calling oneDNN's linear on the packed copy gives
bit-identical results (the same kernel) at ~1.5x the speed of every decode-step linear, measured
on the packaged model's shapes (BENCHMARKS.md, serve).

Only bf16 on the CPU is packed, and only a weight whose packed product equals `F.linear`'s on a
probe (checked per module at load): there the packed kernel is the same one `F.linear` runs, so
served answers do not change. In fp32 `F.linear` runs MKL's sgemm and the packed oneDNN kernel rounds
differently; GPUs have no such reorder. The packed copy replaces the module's dense weight (no
second copy in memory) unless another module shares that weight (a tied LM head keeps the
embedding's weight and gets its own packed copy). The served model is never saved, and export
and training load their own weights; before an adapter that is not plain LoRA is loaded (DoRA
reads the base weights, `modules_to_save` copies modules), the registry `unpack`s the base.
"""

from __future__ import annotations

import types

import torch

_BATCH_HINT = 8  # oneDNN picks the packed layout for this many rows; measured as fast at 1 and 100s


def packable(model) -> bool:
    """Whether `model`'s linears would be packed: bf16 weights on the CPU, with the oneDNN linear
    available in this torch build."""
    try:
        weight = model.get_output_embeddings().weight
    except AttributeError:
        weight = next(model.parameters())
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


def prepack(model) -> int:
    """Pack every `nn.Linear` of `model` in place (when `packable`); returns how many were packed.
    Call before adapters are added: LoRA's own small linears stay as they are."""
    if not packable(model):
        return 0
    users: dict[int, int] = {}  # parameter id -> how many modules hold it
    for module in model.modules():
        for p in module.parameters(recurse=False):
            users[id(p)] = users.get(id(p), 0) + 1
    packed = 0
    for module in model.modules():
        if type(module) is not torch.nn.Linear or module.weight.dtype != torch.bfloat16 or "forward" in module.__dict__:
            continue
        weight = module.weight.detach()
        bias = None if module.bias is None else module.bias.detach()
        try:
            pack = torch.ops.mkldnn._reorder_linear_weight(weight, _BATCH_HINT)
            probe = torch.randn(2, weight.shape[1], generator=torch.Generator().manual_seed(0)).to(weight.dtype)
            with torch.inference_mode():
                same = torch.equal(_onednn_linear(probe, pack, bias), torch.nn.functional.linear(probe, weight, bias))
        except RuntimeError:  # a shape or build oneDNN refuses: that module stays plain
            continue
        if not same:  # this CPU's F.linear runs another kernel: packing would change answers
            continue
        module._tunery_packed = pack
        module._tunery_packed_bytes = weight.numel() * weight.element_size()
        module.forward = types.MethodType(_packed_forward, module)
        if users[id(module.weight)] == 1:  # nobody else reads it: free the dense copy
            module.weight = torch.nn.Parameter(weight.new_empty(0), requires_grad=False)
        packed += 1
    return packed


# adapter_config.json keys whose non-default values make peft read or copy base weights when it
# loads or runs the adapter (DoRA's norms, copied modules, replicated layers, ...).
_WEIGHT_READERS = ("use_dora", "modules_to_save", "layer_replication", "trainable_token_indices", "target_parameters", "lora_bias")


def keeps_packing(adapter_config: dict) -> bool:
    """Whether peft can load and run this adapter on packed base linears: plain LoRA only."""
    return (
        adapter_config.get("peft_type") == "LORA"
        and not any(adapter_config.get(key) for key in _WEIGHT_READERS)
        and adapter_config.get("init_lora_weights", True) in (True, False, "gaussian")
    )


def unpack(model) -> int:
    """Undo `prepack`: dense weights back (for code that reads them, e.g. peft's DoRA), plain
    forwards. Returns how many modules were unpacked."""
    n = 0
    for module in model.modules():
        packed = module.__dict__.pop("_tunery_packed", None)
        if packed is None:
            continue
        if module.weight.numel() == 0:
            module.weight = torch.nn.Parameter(packed.to_dense(), requires_grad=False)
        del module._tunery_packed_bytes, module.forward
        n += 1
    return n


def _packed_forward(module, x: torch.Tensor) -> torch.Tensor:
    packed = module._tunery_packed
    bias = None if module.bias is None else module.bias.detach()
    if x.dtype != packed.dtype or x.device.type != "cpu" or (x.requires_grad and torch.is_grad_enabled()):
        # Not the serving path (another dtype, or autograd): the dense weight, rebuilt for this call.
        return torch.nn.functional.linear(x, packed.to_dense().to(x.dtype), None if bias is None else bias.to(x.dtype))
    return _onednn_linear(x, packed, bias)


def _onednn_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def packed_bytes(model) -> int:
    """Bytes held by packed weights (not counted by `model.parameters()`)."""
    return sum(m._tunery_packed_bytes for m in model.modules() if hasattr(m, "_tunery_packed_bytes"))
