"""activekd: active learning with knowledge distillation from vision-language models."""

__version__ = "0.1.0"
