"""Stop sequences over a stream of text pieces: what is safe to emit, and where to stop.

Generation produces text a token at a time, and a stop sequence can straddle pieces; a backend
(the llama backend: ``stop`` in a request's params) feeds each piece through a ``StopScanner``
and emits only what can no longer be the start of a stop sequence.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopScanner:
    """Text pieces in, text safe to send out: everything before the first stop sequence.

    ``feed`` returns the text that can no longer be part of a stop sequence and keeps the
    longest tail that is still a prefix of one; once a stop sequence is complete, ``stopped``
    is True and nothing more is returned. ``flush`` returns the tail held back when the pieces
    end without a stop."""

    def __init__(self, stops: Sequence[str]) -> None:
        if any(not isinstance(s, str) or not s for s in stops):
            raise ValueError(f"stop sequences must be non-empty strings, got {list(stops)!r}")
        self.stops = tuple(stops)
        self.stopped = False
        self._held = ""

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        text = self._held + piece
        # The held tail contains no whole stop sequence, so the earliest match in ``text`` is
        # the earliest in the whole output.
        cuts = [at for at in (text.find(s) for s in self.stops) if at >= 0]
        if cuts:
            self.stopped = True
            self._held = ""
            return text[:min(cuts)]
        keep = self._longest_partial_tail(text)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _longest_partial_tail(self, text: str) -> int:
        """The length of the longest end of ``text`` that begins some stop sequence."""
        longest = min(len(text), max((len(s) - 1 for s in self.stops), default=0))
        for size in range(longest, 0, -1):
            tail = text[-size:]
            if any(s.startswith(tail) for s in self.stops):
                return size
        return 0
