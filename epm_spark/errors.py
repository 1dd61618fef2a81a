"""Errors a user can act on. The CLI prints these as one clear message, not a traceback."""


class EpmError(Exception):
    """Base of every error the suite raises on purpose."""


class ConfigError(EpmError, ValueError):
    """A setting is unknown, of the wrong type or out of range."""


class InputError(EpmError, ValueError):
    """An input file, table or argument cannot be used as given."""


class TableNotFoundError(InputError):
    """A job needs a Delta table that the warehouse does not hold."""


class EnvironmentProblem(EpmError, RuntimeError):
    """The machine lacks something the job needs (Java, a package, model weights)."""
