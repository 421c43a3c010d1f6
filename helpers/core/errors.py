"""Errors the workbook raises for bad input. Messages name the file, key or value and what was expected."""
from __future__ import annotations


class WorkbookError(ValueError):
    """Bad input: a parameter, a data file, a checkpoint. The message says what and where."""


class ParameterError(WorkbookError):
    """A parameter override does not match the notebook's declared parameters."""


class DataError(WorkbookError):
    """A data file is missing or malformed."""
