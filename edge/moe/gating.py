"""How a MoE layer turns router logits into chosen experts and their weights.

llama.cpp's ``build_moe_ffn`` (src/llama-graph.cpp) is the reference: probabilities are the
gating function of the logits over *all* experts (softmax, or sigmoid for some architectures),
the top ``n_expert_used`` probabilities choose the experts, the chosen probabilities are the
weights, optionally divided by their sum (``norm_w``, "ffn_moe_weights_norm") and then
multiplied by a scale (``expert_weights_scale``, skipped when it is 0 or 1).

Which of those an architecture uses is the architecture's code, not always the file's: for
``llama`` (Mixtral in GGUF) src/models/llama.cpp calls ``build_moe_ffn(..., LLM_FFN_SILU,
true, hparams.expert_weights_scale, LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX, ...)``: softmax over
all experts, top-k, renormalised, whatever ``llama.expert_weights_norm`` or
``llama.expert_gating_func`` say. The rule here follows llama.cpp (the logits must match it)
and refuses a file whose metadata asks for something llama.cpp would silently not do, rather
than pick one of the two answers. Architectures not in ``ARCH_RULES`` take the rule from the
metadata keys (``<arch>.expert_gating_func``: 1 softmax, 2 sigmoid; ``expert_weights_norm``;
``expert_weights_scale``) and need at least ``expert_weights_norm`` to be present.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.backends.experts import MoeFormatError, MoeLayout

GATING_FUNCTIONS = {1: "softmax", 2: "sigmoid"}  # gguf.ExpertGatingFuncType values


@dataclass(frozen=True)
class GatingRule:
    function: str = "softmax"  # over all experts, before the top-k
    renormalise: bool = True  # divide the chosen weights by their sum
    scale: float = 1.0  # then multiply them by this

    def __post_init__(self) -> None:
        if self.function not in GATING_FUNCTIONS.values():
            raise ValueError(f"gating function must be one of "
                             f"{sorted(GATING_FUNCTIONS.values())}, got {self.function!r}")

    def route(self, logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(experts, weights), each (n_tokens, k): the chosen experts of each token, most
        probable first, and their float32 weights."""
        logits = np.asarray(logits, dtype=np.float32)
        if self.function == "softmax":
            shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
            probs = shifted / shifted.sum(axis=-1, keepdims=True)
        else:
            probs = 1.0 / (1.0 + np.exp(-logits))
        # A stable sort of the negated probabilities: ties go to the lower expert id.
        experts = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
        weights = np.take_along_axis(probs, experts, axis=-1)
        if self.renormalise:
            weights = weights / weights.sum(axis=-1, keepdims=True)
        if self.scale not in (0.0, 1.0):  # llama.cpp's "w_scale != 0 && w_scale != 1"
            weights = weights * np.float32(self.scale)
        return experts, weights.astype(np.float32, copy=False)


# What llama.cpp's code fixes for an architecture, whatever the file's metadata says.
ARCH_RULES = {
    "llama": GatingRule("softmax", renormalise=True),
}


def gating_rule(layout: MoeLayout) -> GatingRule:
    """The rule for a store's model: see the module docstring."""
    meta = layout.metadata
    function_id = meta.get("expert_gating_func")
    if function_id is not None and function_id not in GATING_FUNCTIONS:
        raise MoeFormatError(f"{layout.arch}.expert_gating_func = {function_id!r}; known: "
                             f"{GATING_FUNCTIONS}")
    function = GATING_FUNCTIONS.get(function_id)
    norm = meta.get("expert_weights_norm")
    scale = float(meta.get("expert_weights_scale", 1.0) or 1.0)
    fixed = ARCH_RULES.get(layout.arch)
    if fixed is not None:
        conflicts = []
        if function is not None and function != fixed.function:
            conflicts.append(f"expert_gating_func={function}")
        if norm is not None and bool(norm) != fixed.renormalise:
            conflicts.append(f"expert_weights_norm={bool(norm)}")
        if scale != fixed.scale:
            conflicts.append(f"expert_weights_scale={scale}")
        if conflicts:
            raise MoeFormatError(
                f"{layout.arch} MoE metadata asks for {', '.join(conflicts)}, but llama.cpp's "
                f"{layout.arch} graph always uses {fixed}; refusing to disagree with it")
        return fixed
    if norm is None:
        raise MoeFormatError(f"no gating rule known for architecture {layout.arch!r} and its "
                             f"metadata lacks {layout.arch}.expert_weights_norm")
    return GatingRule(function or "softmax", renormalise=bool(norm), scale=scale)
