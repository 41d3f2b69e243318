"""The errors a weight conversion raises: it never drops or guesses a tensor silently."""
from ..errors import UserError


class ConversionError(UserError, ValueError):
    """A source file that cannot be turned into resnext_det weights as asked."""


class KeyMismatchError(ConversionError):
    """Converted keys that do not fit the model the shapes describe.

    Each problem is one line naming the key and, for a shape mismatch, both shapes;
    `allow_partial=True` (tools/convert_weights.py --allow-partial) skips these keys
    instead and lists them in the report.
    """

    def __init__(self, problems, header=None):
        self.problems = list(problems)
        lines = "\n  ".join(self.problems[:40])
        more = f"\n  ... ({len(self.problems) - 40} more)" if len(self.problems) > 40 else ""
        header = header or f"{len(self.problems)} key problem(s) in the converted weights"
        super().__init__(
            f"{header}:\n  {lines}{more}\n"
            "Pass allow_partial=True (--allow-partial) to skip them and continue.")
