"""Software fixes that ``commprof try`` applies to an unmodified job (docs/try.md):
:mod:`.catalog` defines them, :mod:`.install` applies them inside a worker, :mod:`.checks` rules
them out before running (:func:`applicable`) and checks their bytes per op after."""
from commprof.fixes.catalog import DEFAULT_WARMUP, FIXES, Fix, parse
from commprof.fixes.checks import applicable

__all__ = ["DEFAULT_WARMUP", "FIXES", "Fix", "applicable", "parse"]
