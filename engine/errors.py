"""The one error type the engine raises for problems a user can fix."""
from __future__ import annotations


class EngineError(Exception):
    """Bad input or a missing resource: a message naming the file (and time or frame), and what to do.

    The CLI prints it without a traceback; the Blender side shows `message` and `hint`.
    """

    def __init__(self, message: str, hint: str = "", path: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.path = None if path is None else str(path)

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message

    def to_dict(self) -> dict:
        return {"message": self.message, "hint": self.hint, "path": self.path}
