"""activekd: active learning with knowledge distillation from vision-language models."""

from activekd import extras as _extras

__version__ = "0.1.0"

_extras.install()
