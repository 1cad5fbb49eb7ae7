"""``ember.device``: where a tensor's data lives, and the backend module that computes on it."""

from __future__ import annotations

from ember import backends

__all__ = ["device", "CPU", "get_default_device", "to_device"]


class device:
    """A device such as ``device('cpu')`` or ``device('cuda', 0)``.

    Example:
        >>> import ember
        >>> ember.device("cpu")
        device(type='cpu')
    """

    __slots__ = ("type", "index", "backend")

    def __init__(self, type_or_str="cpu", index: int | None = None):
        if isinstance(type_or_str, device):
            type_or_str, index = type_or_str.type, type_or_str.index
        text = str(type_or_str)
        if ":" in text:
            text, _, idx = text.partition(":")
            if not idx.isdigit():
                raise RuntimeError(f"Invalid device string: '{type_or_str}'")
            index = int(idx)
        self.type = text
        self.index = index
        self.backend = backends.get(text)

    def __repr__(self) -> str:
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            other = device(other)
        return (
            isinstance(other, device)
            and self.type == other.type
            and (self.index == other.index or self.index is None or other.index is None)
        )

    def __hash__(self) -> int:
        return hash(self.type)

    def __enter__(self) -> device:
        """``with ember.device("meta"):`` makes factories (and modules built inside) default here."""
        _default.stack.append(_default.device)
        _default.device = CPU if self == CPU else self
        return self

    def __exit__(self, *exc) -> bool:
        _default.device = _default.stack.pop()
        return False


CPU = device("cpu")


class _Default:
    """The device factories use when none is given (``with ember.device(...)``)."""

    def __init__(self):
        self.device = CPU
        self.stack = []


_default = _Default()


def get_default_device() -> device:
    """The device factories use when none is given: cpu, or the one of an enclosing ``with``."""
    return _default.device


def to_device(d) -> device:
    if d is None:
        return _default.device
    if d is CPU:
        return CPU
    if isinstance(d, device):
        return d
    if isinstance(d, int):
        return device("cuda", d)
    if d == "cpu":
        return CPU
    return device(d)
