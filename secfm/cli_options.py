"""The command-line options several packages' commands share, declared once (`secfm eval`, `secfm triage`,
`secfm serve`, `secfm bench ...`): import them, never copy them."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Registered model name or a path (HF folder, .gguf, adapter).")]
AdapterOpt = Annotated[Optional[str], typer.Option("--adapter", help="PEFT adapter folder to apply on top of the model.")]
EngineOpt = Annotated[str, typer.Option("--engine", "-e", help="transformers (default), vllm (GPU) or openai (needs --endpoint).")]
EndpointOpt = Annotated[Optional[str], typer.Option("--endpoint", help="Base URL of an OpenAI-compatible server (its model is used instead of loading one).")]
QuantizationOpt = Annotated[Optional[str], typer.Option(
    "--quantization", help="int8-dynamic: the in-process transformers engine's Linear layers in dynamic int8 (CPU; an adapter is merged first). Default: the weights as they are.")]
AllowBusyOpt = Annotated[bool, typer.Option("--allow-busy", help="Measure and write the results even when the load average is above the number of cores (the load is recorded in them).")]

__all__ = ["AdapterOpt", "AllowBusyOpt", "EndpointOpt", "EngineOpt", "ModelOpt", "QuantizationOpt"]
