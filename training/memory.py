"""GPU memory arithmetic for a recipe (what `--dry-run` prints), without loading any weights.

Per GPU, in GiB:

* weights: bf16 = 2 bytes/param; NF4 (QLoRA) = 0.5 byte/param + 0.127 bit/param of double-
  quantized constants for the quantized linear layers, the embeddings and output layer in bf16;
  divided by the number of GPUs under ZeRO-3 / FSDP full sharding (0 on the GPU when offloaded);
* gradients: bf16 = 2 bytes per *trainable* param (sharded like the weights);
* optimizer: AdamW with an fp32 master copy = 12 bytes per trainable param (4 master + 4 + 4
  moments), sharded; 0 on the GPU with optimizer offload (it then needs that much CPU RAM);
* LoRA: trainable params = r x (in + out) per adapted linear, fp32 (4 + 4 grad + 8 Adam);
* activations with gradient checkpointing: the saved layer inputs (L x b x s x h x 2 bytes)
  plus one layer recomputed in full (~ b x s x (34 h + 2 x intermediate x 3) bytes, attention
  through a fused/flash kernel so no s^2 term);
* the output layer: bf16 logits, an fp32 copy and its gradient = b x s x V x 10 bytes (the
  chunked loss keeps only ``chunk`` rows of it: chunk x V x 10 bytes);
* ZeRO-3/FSDP working set: two layers' parameters gathered at a time (prefetch);
* overhead: CUDA context and kernels ~1.5 GiB, allocator fragmentation +8%.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

GIB = 1024**3


@dataclass(frozen=True)
class Arch:
    """The numbers the arithmetic needs (from a config.json or the built-in table)."""

    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    tied_embeddings: bool = False

    @property
    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer in one decoder block (q, k, v, o, gate, up, down)."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    @property
    def block_params(self) -> int:
        return sum(a * b for a, b in self.linear_shapes) + 2 * self.hidden

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def params(self) -> int:
        return self.layers * self.block_params + self.embedding_params + self.hidden

    def lora_params(self, r: int) -> int:
        return self.layers * sum(r * (a + b) for a, b in self.linear_shapes)

    @classmethod
    def from_config(cls, cfg: dict) -> Arch:
        cfg = cfg.get("text_config", cfg)
        heads = cfg["num_attention_heads"]
        return cls(
            hidden=cfg["hidden_size"], layers=cfg["num_hidden_layers"], intermediate=cfg["intermediate_size"],
            vocab=cfg["vocab_size"], heads=heads, kv_heads=cfg.get("num_key_value_heads", heads),
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )


#: architectures of the registry's models, for estimates where the weights are not present
KNOWN_ARCHS: dict[str, Arch] = {
    "llama-3.1-8b": Arch(4096, 32, 14336, 128256, 32, 8, 128, False),
    "foundation-sec-8b": Arch(4096, 32, 14336, 128256, 32, 8, 128, False),
    "secfm-8b": Arch(4096, 32, 14336, 128256, 32, 8, 128, False),
    "gemma-3-270m": Arch(640, 18, 2048, 262144, 4, 1, 256, True),
    "secfm-270m": Arch(640, 18, 2048, 262144, 4, 1, 256, True),
}


def arch_for(model: str) -> tuple[Arch, str]:
    """(architecture, where it came from): a local config.json when the model resolves without
    downloading, else the built-in table."""
    try:
        from secfm.models import resolve

        resolved = resolve(model, auto_pull=False)
        config = Path(resolved.weights_dir) / "config.json"
        if config.is_file():
            return Arch.from_config(json.loads(config.read_text())), str(config)
    except Exception:  # noqa: BLE001 - absent weights are the normal case for a dry run
        pass
    if model in KNOWN_ARCHS:
        return KNOWN_ARCHS[model], "built-in table (weights not present locally)"
    path = Path(model) / "config.json"
    if path.is_file():
        return Arch.from_config(json.loads(path.read_text())), str(path)
    from secfm.errors import SecfmError

    raise SecfmError(f"cannot estimate memory for {model}: no local config.json and not in the built-in table")


@dataclass
class MemoryEstimate:
    model: str
    arch_source: str
    params_b: float
    trainable_params_m: float
    method: str
    sharding: str
    gpus: int
    gpu_memory_gib: float
    per_gpu_gib: dict = field(default_factory=dict)
    total_gib: float = 0.0
    cpu_offload_gib: float = 0.0
    fits: bool = True
    notes: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        lines = [f"memory estimate per GPU: {self.model} ({self.params_b:.2f}B params, {self.method}, "
                 f"{self.sharding}, {self.gpus} x {self.gpu_memory_gib:.0f} GiB)"]
        for k, v in self.per_gpu_gib.items():
            lines.append(f"  {k:<28} {v:8.2f} GiB")
        lines.append(f"  {'total':<28} {self.total_gib:8.2f} GiB  -> {'fits' if self.fits else 'DOES NOT FIT'}")
        if self.cpu_offload_gib:
            lines.append(f"  CPU RAM for offloaded state  {self.cpu_offload_gib:8.2f} GiB")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def estimate(
    model: str,
    method: str,
    gpus: int,
    gpu_memory_gib: float,
    batch: int,
    seq_len: int,
    lora_r: int = 16,
    sharding: str = "none",  # none, zero3, fsdp
    offload_optimizer: bool = False,
    offload_params: bool = False,
    gradient_checkpointing: bool = True,
    chunked_loss: bool = False,
    loss_chunk: int = 1024,
    arch: Arch | None = None,
) -> MemoryEstimate:
    if arch is None:
        arch, source = arch_for(model)
    else:
        source = "given"
    p = arch.params
    shard = gpus if sharding in ("zero3", "fsdp") else 1
    linear_params = arch.layers * sum(a * b for a, b in arch.linear_shapes)
    notes: list[str] = []
    if method == "qlora":
        weights = linear_params * (0.5 + 0.127 / 8) + (p - linear_params) * 2
    else:
        weights = p * 2
    if method in ("lora", "qlora"):
        trainable = arch.lora_params(lora_r)
        grads = trainable * 4
        optim = trainable * 8
        master = trainable * 4  # LoRA weights are kept in fp32
        weights += master
    else:
        trainable = p
        grads = trainable * 2
        optim = trainable * 12
    cpu = 0.0
    weights_gpu = weights / shard
    grads_gpu = grads / shard
    optim_gpu = optim / shard
    if offload_optimizer:
        cpu += optim / GIB
        optim_gpu = 0.0
        notes.append("optimizer state offloaded to CPU RAM (DeepSpeed offload_optimizer / FSDP offload)")
    if offload_params:
        cpu += weights / GIB
        weights_gpu = 0.0
        notes.append("parameters offloaded to CPU RAM; gathered layer by layer")
    h, L = arch.hidden, arch.layers
    tokens = batch * seq_len
    if gradient_checkpointing:
        acts = L * tokens * h * 2 + tokens * (34 * h + 6 * arch.intermediate)
    else:
        acts = L * tokens * (34 * h + 6 * arch.intermediate)
    rows = min(tokens, loss_chunk) if chunked_loss else tokens
    logits = rows * arch.vocab * 10
    gathered = 2 * arch.block_params * 2 if shard > 1 or offload_params else 0
    per = {
        "weights": weights_gpu / GIB,
        "gradients": grads_gpu / GIB,
        "optimizer (AdamW)": optim_gpu / GIB,
        "activations": acts / GIB,
        "logits + loss": logits / GIB,
        "gathered layers (ZeRO-3/FSDP)": gathered / GIB,
        "CUDA context": 1.5,
    }
    subtotal = sum(per.values())
    per["fragmentation (+8%)"] = subtotal * 0.08
    total = subtotal * 1.08
    fits = total <= gpu_memory_gib * 0.97
    if method == "full" and not shard > 1 and not offload_optimizer and p * 16 / GIB > gpu_memory_gib:
        notes.append("full fine-tuning without sharding or offload needs 16 bytes/param")
    return MemoryEstimate(
        model=model, arch_source=source, params_b=p / 1e9, trainable_params_m=trainable / 1e6, method=method,
        sharding=sharding + (" + offload" if offload_optimizer or offload_params else ""), gpus=gpus,
        gpu_memory_gib=gpu_memory_gib, per_gpu_gib={k: round(v, 2) for k, v in per.items()},
        total_gib=round(total, 2), cpu_offload_gib=round(cpu, 2), fits=fits, notes=notes,
    )


__all__ = ["Arch", "KNOWN_ARCHS", "MemoryEstimate", "arch_for", "estimate"]
