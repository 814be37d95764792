"""The exception tree recaudit raises for problems a user can fix.

Each class maps to one documented exit code of the CLI:
0 all gates pass, 1 a gate failed, 2 usage or configuration error, 3 runtime error.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_RUNTIME = 3


class RecauditError(Exception):
    """Base class: a message meant for the user, and the exit code to end with."""

    exit_code: int = EXIT_RUNTIME


class ConfigError(RecauditError, ValueError):
    """A suite file, a variant/probe/adapter config or a CLI argument is wrong."""

    exit_code = EXIT_USAGE


class UnknownNameError(ConfigError, KeyError):
    """A name was looked up in a registry and is not there."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DatasetMissingError(RecauditError, FileNotFoundError):
    """A data set is not in the cache; the message names the fetch command."""

    exit_code = EXIT_USAGE


class ChecksumError(RecauditError):
    """A downloaded or local file does not match its published checksum."""

    exit_code = EXIT_RUNTIME


class CapabilityMissing(RecauditError, NotImplementedError):
    """A recommender was asked for a capability it does not declare."""

    exit_code = EXIT_RUNTIME


class OutputContractError(RecauditError, TypeError):
    """A recommender returned something its interface does not allow (a ``generate`` that is not
    a list of lists of strings, a ``score`` of the wrong shape): a runtime error, never repaired."""

    exit_code = EXIT_RUNTIME


class EndpointError(RecauditError, ConnectionError):
    """An HTTP endpoint could not be reached or kept failing after retries."""

    exit_code = EXIT_RUNTIME


def suggest(close: list[str]) -> str:
    """`` Did you mean 'x', 'y'?`` for the given suggestions, '' for none."""
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def did_you_mean(name: str, names: list[str]) -> str:
    """`` Did you mean 'x'?`` for close matches of ``name`` among ``names``, else ''."""
    import difflib

    return suggest(difflib.get_close_matches(name, names, n=3, cutoff=0.5))
