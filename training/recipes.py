"""Training recipes: one YAML per model and stage (``training/recipes/<model>/<stage>.yaml``).

A recipe names the model, the stage (``cpt`` or ``sft``), the method (``lora``, ``qlora`` or
``full``), the data (a dataset folder, built first when missing), the optimisation settings,
and for GPUs the accelerate config beside it (DeepSpeed ZeRO-3 or FSDP). Relative data and
output paths are taken from the current directory (run from the repository root); the
accelerate config is taken relative to the recipe file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from secfm.errors import SecfmError

RECIPES_DIR = Path(__file__).parent / "recipes"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN or inf in a recipe is an error


class DataSpec(_Strict):
    path: str  # a DatasetDict folder (secfm data corpus / secfm data sft)
    build: dict[str, Any] | None = None  # CorpusConfig / SftConfig fields; used when ``path`` is missing
    train_split: str = "train"
    eval_split: str | None = None  # default: validation (test when validation is empty); never test by choice
    max_eval_samples: int | None = 64
    max_train_samples: int | None = None
    shuffle_seed: int = 0
    kinds: list[str] | None = None  # sft: keep train rows whose ``kind`` matches one of these patterns (fnmatch)
    replay_split: str | None = None  # sft: mix rows of this split into training (e.g. conversations
    replay_samples: int = 0  # while training short answers), this many, drawn with shuffle_seed


class LoraSpec(_Strict):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"


class TrainSpec(_Strict):
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    max_steps: int = -1
    num_epochs: float = 1.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    bf16: bool | Literal["auto"] = "auto"
    gradient_checkpointing: bool = True
    loss: Literal["chunked", "plain"] = "chunked"
    loss_chunk_size: int = 1024
    logging_steps: int = 10
    eval_steps: int | None = 100
    save_steps: int = 100
    save_total_limit: int | None = 2
    max_minutes: float | None = None  # stop (saving a checkpoint) after this much training time
    threads: int | None = None  # CPU threads (default: $SECFM_THREADS, else torch's default)
    optim: str = "adamw_torch"
    dataloader_num_workers: int = 0


class DistributedSpec(_Strict):
    accelerate_config: str | None = None  # relative to the recipe file
    num_gpus: int = 0  # 0: CPU
    gpu: str = "cpu"
    gpu_memory_gb: float = 80.0
    sharding: Literal["none", "zero3", "fsdp"] = "none"
    offload_optimizer: bool = False
    offload_params: bool = False


class ExportSpec(_Strict):
    adapter_dir: str | None = None  # the trained adapter alone (vLLM --lora-modules, secfm --adapter)
    merged_dir: str | None = None  # merge-and-unload into a Hugging Face folder (vllm serve DIR)
    merged_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    base_model_name: str | None = None  # written as base_model_name_or_path (default: the recipe's model)


class Recipe(_Strict):
    name: str
    stage: Literal["cpt", "sft"]
    model: str
    method: Literal["lora", "qlora", "full"] = "lora"
    description: str = ""
    output_dir: str
    data: DataSpec
    seq_len: int = 512
    packing: bool = True
    lora: LoraSpec = Field(default_factory=LoraSpec)
    init_adapter: str | None = None  # continue training this adapter (e.g. SFT on top of CPT-LoRA)
    trainer: Literal["auto", "hf", "trl"] = "auto"  # sft: trl on GPUs, hf (chunked loss) on the CPU
    train: TrainSpec = Field(default_factory=TrainSpec)
    distributed: DistributedSpec = Field(default_factory=DistributedSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
    path: str | None = None  # where the recipe was read from (set by load_recipe)

    @model_validator(mode="after")
    def _checks(self) -> Recipe:
        if self.method == "qlora" and self.distributed.num_gpus < 1:
            raise ValueError("method qlora needs a GPU (bitsandbytes NF4): set distributed.num_gpus >= 1")
        if self.init_adapter and self.method == "full":
            raise ValueError("init_adapter only applies to lora/qlora")
        if self.distributed.sharding != "none" and self.method != "full":
            raise ValueError("ZeRO-3/FSDP sharding is for full-parameter training; LoRA recipes use one GPU")
        if self.data.replay_split and self.stage != "sft":
            raise ValueError("data.replay_split is for sft recipes")
        if self.train.max_steps <= 0 and self.train.num_epochs <= 0:
            raise ValueError("set train.max_steps or train.num_epochs")
        return self

    @property
    def eval_split(self) -> str:
        return self.data.eval_split or "validation"

    @property
    def recipe_dir(self) -> Path:
        return Path(self.path).parent if self.path else Path.cwd()

    def accelerate_config_path(self) -> Path | None:
        if not self.distributed.accelerate_config:
            return None
        return (self.recipe_dir / self.distributed.accelerate_config).resolve()


def find_recipe(path: str | Path) -> Path:
    """A recipe path as given, or relative to the packaged ``recipes/`` folder."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    packaged = RECIPES_DIR / path
    if packaged.is_file():
        return packaged
    raise SecfmError(f"recipe not found: {path}")


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Parse and validate a recipe; ``overrides`` are dotted keys (``train.max_steps``)."""
    p = find_recipe(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SecfmError(f"cannot read recipe {p}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(raw, dict):
        raise SecfmError(f"recipe {p} is not a YAML mapping")
    for key, value in (overrides or {}).items():
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    raw["path"] = str(p)
    try:
        return Recipe(**raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "recipe"
        raise SecfmError(f"invalid recipe {p}: {where}: {first['msg']}") from exc


def read_accelerate_config(recipe: Recipe) -> dict | None:
    path = recipe.accelerate_config_path()
    if path is None:
        return None
    if not path.is_file():
        raise SecfmError(f"recipe {recipe.path}: accelerate config not found: {path}")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SecfmError(f"accelerate config {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(cfg, dict) or "distributed_type" not in cfg:
        raise SecfmError(f"accelerate config {path} has no distributed_type")
    n = int(cfg.get("num_processes", 1))
    if n != max(1, recipe.distributed.num_gpus):
        raise SecfmError(f"accelerate config {path.name} has num_processes={n} but the recipe asks for "
                         f"{recipe.distributed.num_gpus} GPUs")
    kind = cfg["distributed_type"]
    if recipe.distributed.sharding == "zero3" and (kind != "DEEPSPEED" or cfg.get("deepspeed_config", {}).get("zero_stage") != 3):
        raise SecfmError(f"recipe asks for ZeRO-3 but {path.name} is not a DeepSpeed stage-3 config")
    if recipe.distributed.sharding == "fsdp" and kind != "FSDP":
        raise SecfmError(f"recipe asks for FSDP but {path.name} is distributed_type {kind}")
    return cfg


def dry_run(recipe: Recipe) -> dict:
    """Validate everything that can be checked without weights; the memory estimate per GPU."""
    from secfm.training.memory import estimate

    accel = read_accelerate_config(recipe)
    data_path = Path(recipe.data.path)
    data_state = "present" if (data_path / "dataset_dict.json").is_file() else (
        "built on first run" if recipe.data.build is not None else "MISSING")
    if data_state == "MISSING":
        raise SecfmError(f"recipe {recipe.path}: data {data_path} is missing and the recipe has no data.build")
    d = recipe.distributed
    gpus = max(1, d.num_gpus)
    est = estimate(
        recipe.model, recipe.method, gpus, d.gpu_memory_gb, recipe.train.per_device_batch_size, recipe.seq_len,
        lora_r=recipe.lora.r, sharding=d.sharding, offload_optimizer=d.offload_optimizer,
        offload_params=d.offload_params,
        gradient_checkpointing=recipe.train.gradient_checkpointing
        or bool(accel and (accel.get("fsdp_config") or {}).get("fsdp_activation_checkpointing")),
        chunked_loss=recipe.train.loss == "chunked" and d.sharding == "none", loss_chunk=recipe.train.loss_chunk_size,
    )
    tokens_per_step = recipe.train.per_device_batch_size * recipe.seq_len * recipe.train.gradient_accumulation_steps * gpus
    launch = None
    if needs_launcher(recipe):
        launch = (f"accelerate launch --config_file {recipe.accelerate_config_path()} -m secfm.training.launch "
                  f"{recipe.stage} --config {recipe.path}")
    return {
        "recipe": recipe.name, "path": recipe.path, "stage": recipe.stage, "model": recipe.model,
        "method": recipe.method, "device": f"{d.num_gpus} x {d.gpu}" if d.num_gpus else "cpu",
        "accelerate": {"config": str(recipe.accelerate_config_path()) if accel else None,
                       "distributed_type": accel.get("distributed_type") if accel else None},
        "data": {"path": str(data_path), "state": data_state},
        "tokens_per_optimizer_step": tokens_per_step,
        "max_steps": recipe.train.max_steps,
        "memory": est.as_dict(),
        "memory_table": est.table(),
        "launch": launch,
        "valid": True,
    }


def needs_launcher(recipe: Recipe) -> bool:
    """Multi-GPU or sharded (DeepSpeed / FSDP) recipes run under ``accelerate launch``."""
    d = recipe.distributed
    return bool(recipe.accelerate_config_path()) and (d.num_gpus > 1 or d.sharding != "none")


def list_recipes() -> list[Path]:
    return sorted((p for p in RECIPES_DIR.glob("*/*.yaml") if not p.name.startswith("accelerate-")), key=str)


__all__ = ["Recipe", "RECIPES_DIR", "dry_run", "needs_launcher", "find_recipe", "list_recipes", "load_recipe", "read_accelerate_config"]
