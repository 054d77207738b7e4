"""The request bodies the daemon accepts, as pydantic models (FastAPI validates them and publishes
them in the OpenAPI schema).

Types are strict (no "5" for 5, no 5.0 for an integer, no NaN or infinity). Fields OpenAI defines
but this daemon does not implement are declared, so a client sending their neutral value
(``n: 1``, ``top_p: 1``, ``logprobs: false``...) is served, and any other value is refused with a
400 that names the field (``unsupported``); fields OpenAI does not define are refused too, by
name, rather than silently ignored. One field is edge's own: ``adapter_scales``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_STOP_SEQUENCES = 4  # OpenAI's limit


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)

    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or {})


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    include_usage: Optional[bool] = Field(None, description="A last chunk with the usage "
                                          "(and no choices), as OpenAI sends it.")


class _Generation(_Body):
    """What completions and chat completions share."""

    model: str = Field(min_length=1, description='An adapter name, the base model id, or "auto" '
                       "(the router chooses the adapter).")
    max_tokens: Optional[int] = Field(None, ge=1, description="Tokens to generate at most "
                                      "(default 16).")
    temperature: Optional[float] = Field(None, ge=0, description="0 (the default): greedy; "
                                         "above 0: sampling at this temperature.")
    seed: Optional[int] = Field(None, ge=0, description="Seed of the sampler (temperature > 0).")
    user: Optional[str] = Field(None, description="The end user's id: the request's tenant "
                                "(recorded in the access log).")
    stream: Optional[bool] = Field(None, description="true: the answer as server-sent events, "
                                   "as OpenAI streams it.")
    stream_options: Optional[StreamOptions] = Field(None, description="With stream: true only.")
    stop: Optional[Union[str, list[str]]] = Field(
        None, description=f"Up to {MAX_STOP_SEQUENCES} strings; the text ends before the first "
        'one generated (finish_reason "stop").')
    adapter_scales: Optional[dict[str, float]] = Field(
        None, description="edge's extension: the LoRA scale of some of the adapters the model "
        'field names ("a" or "a+b"), by name; the others keep their own (default 1).')
    # Declared so that their neutral values pass; see UNSUPPORTED.
    n: Optional[int] = None
    top_p: Optional[float] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    logit_bias: Optional[dict[str, float]] = None

    @field_validator("stop")
    @classmethod
    def _stop_sequences(cls, stop: Optional[Union[str, list[str]]]
                        ) -> Optional[Union[str, list[str]]]:
        sequences = [stop] if isinstance(stop, str) else stop or []
        if len(sequences) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences, got "
                             f"{len(sequences)}")
        if any(not s for s in sequences):
            raise ValueError("a stop sequence cannot be empty")
        return stop

    def stop_sequences(self) -> tuple[str, ...]:
        """``stop`` as a tuple (empty without one)."""
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Generation):
    """``POST /v1/completions``."""

    prompt: Union[str, list[str]] = Field(description="The prompt (a list of exactly one "
                                          "string is accepted too).")
    logprobs: Optional[int] = None
    echo: Optional[bool] = None
    best_of: Optional[int] = None
    suffix: Optional[str] = None


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = None
    name: Optional[str] = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_Generation):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1, description="Newer clients' name "
                                                 "for max_tokens; wins when both are given.")
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = None
    response_format: Optional[dict[str, Any]] = None
    tools: Optional[list[Any]] = None
    tool_choice: Optional[Any] = None
    parallel_tool_calls: Optional[bool] = None
    functions: Optional[list[Any]] = None
    function_call: Optional[Any] = None


class FeedbackRequest(_Body):
    """``POST /v1/feedback``: the reward of a request the router routed (``model: "auto"``)."""

    id: Union[str, int] = Field(description="The id of the completion response.")
    reward: float


def _neutral(*values: Any) -> Callable[[Any], bool]:
    return lambda value: value is None or value in values


# field -> (is the value one this daemon serves, why any other is refused)
UNSUPPORTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (_neutral(1), "this daemon returns one choice per request; send n requests instead"),
    "best_of": (_neutral(1), "this daemon returns one choice per request"),
    # False only: OpenAI's logprobs 0 still returns the chosen tokens' log-probabilities.
    "logprobs": (lambda v: v is None or v is False, "log-probabilities are not returned yet"),
    "top_logprobs": (_neutral(0), "log-probabilities are not returned yet"),
    "echo": (_neutral(False), "echo is not supported"),
    "suffix": (_neutral(""), "suffix (insertion) is not supported"),
    "top_p": (_neutral(1, 1.0), "only top_p 1 (no nucleus truncation) is supported"),
    "presence_penalty": (_neutral(0, 0.0), "penalties are not supported"),
    "frequency_penalty": (_neutral(0, 0.0), "penalties are not supported"),
    "logit_bias": (lambda v: not v, "logit_bias is not supported"),
    "response_format": (lambda v: v is None or v == {"type": "text"},
                        "only the text response format is supported"),
    "tools": (lambda v: not v, "tools are not supported"),
    "tool_choice": (_neutral("none"), "tools are not supported"),
    "parallel_tool_calls": (_neutral(), "tools are not supported"),
    "functions": (lambda v: not v, "function calling is not supported"),
    "function_call": (_neutral("none"), "function calling is not supported"),
}


def unsupported(body: BaseModel) -> Optional[str]:
    """Why the request cannot be served as asked, naming the field; None if it can."""
    for name, (served, why) in UNSUPPORTED.items():
        if name in type(body).model_fields:
            value = getattr(body, name)
            if not served(value):
                return f"{name}={value!r} is not supported: {why}"
    return None
