"""Software fixes that ``commprof try`` applies to an unmodified job (docs/try.md):
:mod:`.catalog` defines them, :mod:`.install` applies them inside a worker."""
from commprof.fixes.catalog import DEFAULT_WARMUP, FIXES, Fix, parse

__all__ = ["DEFAULT_WARMUP", "FIXES", "Fix", "parse"]
