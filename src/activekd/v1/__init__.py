"""Generated from protos/activekd/v1 by scripts/gen_protos.py; do not edit."""
