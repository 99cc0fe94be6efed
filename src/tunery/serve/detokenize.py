"""Incremental detokenization with stop strings.

Text goes out as soon as it is certain: a tail that could still become a stop string, or a
half-decoded UTF-8 character (shown by tokenizers as U+FFFD), is held back until the next token
settles it. When a stop string appears, the text ends right before it (OpenAI's rule: the stop
sequence is not returned).
"""

from __future__ import annotations


class TextStream:
    def __init__(self, tokenizer, stop: list[str] | None = None):
        self.tokenizer = tokenizer
        self.stop = [s for s in (stop or []) if s]
        self.ids: list[int] = []
        self.text = ""  # all text decoded so far (before stop truncation)
        self.sent = 0  # characters already handed out
        self.stopped = False

    def push(self, token_id: int | None) -> str:
        """Add a token (None: end of generation, flush everything) and return the new safe text."""
        if token_id is not None:
            self.ids.append(token_id)
            self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if self.stop:
            start = max(0, self.sent - max(len(s) for s in self.stop))
            hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
            if hits:
                self.stopped = True
                return self._emit(min(hits))
        if token_id is None:
            return self._emit(len(self.text.rstrip("\ufffd")))
        end = len(self.text)
        while end > self.sent and self.text[end - 1] == "\ufffd":
            end -= 1
        return self._emit(end - self._partial_stop(end))

    def final_text(self) -> str:
        return self.text[: self.sent]

    def _partial_stop(self, end: int) -> int:
        """Length of the longest tail of text[:end] that is a proper prefix of a stop string."""
        best = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, end - self.sent), best, -1):
                if self.text[end - k : end] == s[:k]:
                    best = k
                    break
        return best

    def _emit(self, end: int) -> str:
        end = max(end, self.sent)
        out, self.sent = self.text[self.sent : end], end
        return out
