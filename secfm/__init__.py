"""secfm: an open security-domain language-model stack.

Core (this package): settings, model registry and engines, knowledge base (ATT&CK, CWE),
identifier validation and IOC extraction. Training, workflows, evals and the app live in
``secfm.training``, ``secfm.workflows``, ``secfm.evals`` and ``secfm.app``.
"""

__version__ = "0.1.0"

from secfm.errors import SecfmError

__all__ = ["SecfmError", "__version__"]
