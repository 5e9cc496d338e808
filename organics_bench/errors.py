"""The one exception type for bad user input: Hydra prints its message alone, on one line, and exits non-zero."""

from hydra.errors import CompactHydraException


class UserError(CompactHydraException):
    """A problem the user can fix (bad config value, missing data, unwritable path); the message says how."""

    def __str__(self) -> str:
        return "error: " + " ".join(super().__str__().split())
