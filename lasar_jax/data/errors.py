"""The one exception every data source raises for input it cannot use."""


class DataError(ValueError):
  """Bad or missing input data; the message names the file and, where there is one, the line."""

  def __init__(self, path, message: str, line: int | None = None):
    self.path = str(path)
    self.line = line
    where = f"{self.path}:{line}" if line is not None else self.path
    super().__init__(f"{where}: {message}")
