"""edge: page LoRA adapters and MoE experts under a byte budget on one device.

The public surface grows with the project; today it is the pager and its configuration.
"""

from edge.errors import EdgeError

__version__ = "0.1.0"

__all__ = ["EdgeError", "__version__"]
