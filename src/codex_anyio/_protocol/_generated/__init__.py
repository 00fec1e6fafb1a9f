"""Generated from schema/ by scripts/codegen.py; do not edit. Regenerate with `nox -s codegen`."""
