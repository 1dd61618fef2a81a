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


class WarehouseWriteError(EpmError):
    """The warehouse refused a table's files (read-only, full, no permission); nothing was committed."""


class ConcurrentWriteError(EpmError):
    """Another job committed to the same rows of a table first; this job's write was not applied."""


def from_worker(exc: BaseException) -> EpmError | None:
    """The suite's own error inside a Spark task failure, rebuilt on the driver (else ``None``).

    A task that raises ``InputError("...")`` reaches the driver as a Java/Python worker
    exception whose text carries ``epm_spark.errors.InputError: ...``; users should see
    that one line, not the stack traces around it.
    """
    import re

    text = str(exc)
    m = re.search(r"epm_spark\.errors\.(\w+): (.+)", text)
    if not m:
        return None
    cls = globals().get(m.group(1))
    if not (isinstance(cls, type) and issubclass(cls, EpmError)):
        return None
    return cls(m.group(2).strip())


class worker_errors:
    """Context manager: re-raise a Spark task's epm-spark error as itself on the driver."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, EpmError):
            return False
        rebuilt = from_worker(exc)
        if rebuilt is not None:
            raise rebuilt from None
        return False
