"""Seed offsets inside the workers: ``commprof try`` runs the baseline more than once with
different randomness, on the unmodified job, to measure the noise band (docs/try.md).

With ``COMMPROF_SEED_OFFSET=K`` (K ≠ 0) every seed the job *sets* through one of these is
replaced by seed + K before it takes effect:

* ``torch.manual_seed`` (also as ``torch.random.manual_seed``), ``torch.cuda.manual_seed`` and
  ``torch.cuda.manual_seed_all``;
* ``torch.Generator(...).manual_seed`` (``torch.Generator`` becomes a subclass whose
  ``manual_seed`` adds K; generators the job creates are still ``torch.Generator`` instances);
* ``random.seed`` and ``random.Random(seed)`` (integer seeds);
* ``numpy.random.seed`` and ``numpy.random.default_rng`` (integer seeds);
* ``torch.utils.data.distributed.DistributedSampler``'s shuffling order, through the above: it
  seeds a ``torch.Generator`` with ``seed + epoch`` each epoch.

Not offset: ``numpy.random.RandomState(seed)`` / ``numpy.random.Generator`` built directly,
``torch.Generator`` objects made inside C++ code, seeds read from files.  A job that seeds none
of these runs with whatever randomness it has (torch's and numpy's default generators are seeded
from the OS each process: different runs differ anyway).  Each seed the job set is recorded in
one ``seed`` event (``{"event": "seed", "kind", "seed", "offset"}``, the first 32 per process).
Standard library + torch (numpy when the job's process has it).
"""
from __future__ import annotations

import functools
import numbers

_MAX_EVENTS = 32


class SeedOffset:
    """Installs the offset ``offset`` into one process.  ``emit(dict)`` records an event."""

    def __init__(self, torch_module, offset: int, emit):
        self.torch = torch_module
        self.offset = int(offset)
        self.emit = emit
        self.events = 0
        self.patched: list[str] = []

    def _seen(self, kind: str, seed) -> None:
        if self.events < _MAX_EVENTS:
            self.events += 1
            self.emit({"type": "event", "event": "seed", "kind": kind, "seed": int(seed),
                       "offset": self.offset})

    def shifted(self, kind: str, seed):
        """``seed`` + the offset for an integer seed (recorded), anything else unchanged."""
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            return seed
        self._seen(kind, seed)
        return int(seed) + self.offset

    def install(self) -> list[str]:
        """Patch every seeding entry point this process has; the names patched."""
        if not self.offset:
            return []
        for name, fn in (("torch", self._torch), ("generator", self._generator),
                         ("random", self._random), ("numpy", self._numpy)):
            if fn():
                self.patched.append(name)
        self.emit({"type": "event", "event": "seed_offset", "offset": self.offset,
                   "patched": list(self.patched)})
        return self.patched

    def _wrap(self, owner, attr: str, kind: str) -> bool:
        original = getattr(owner, attr, None)
        if original is None or getattr(original, "__commprof_original__", None) is not None:
            return False
        me = self

        @functools.wraps(original)
        def seeded(*args, **kwargs):
            if args:
                args = (me.shifted(kind, args[0]), *args[1:])
            elif "seed" in kwargs:
                kwargs["seed"] = me.shifted(kind, kwargs["seed"])
            return original(*args, **kwargs)

        seeded.__commprof_original__ = original
        setattr(owner, attr, seeded)
        return True

    def _torch(self) -> bool:
        torch = self.torch
        done = self._wrap(torch.random, "manual_seed", "torch.manual_seed")
        torch.manual_seed = torch.random.manual_seed
        cuda = getattr(torch, "cuda", None)
        if cuda is not None:
            self._wrap(cuda, "manual_seed", "torch.cuda.manual_seed")
            self._wrap(cuda, "manual_seed_all", "torch.cuda.manual_seed_all")
        return done

    def _generator(self) -> bool:
        torch = self.torch
        base = torch.Generator
        if getattr(base, "__commprof_original__", None) is not None:
            return False
        me = self

        class Generator(base):  # noqa: D401 - the job's torch.Generator, seeds offset
            __commprof_original__ = base

            def manual_seed(self, seed):
                return super().manual_seed(me.shifted("torch.Generator.manual_seed", seed))

        Generator.__name__ = Generator.__qualname__ = "Generator"
        Generator.__module__ = base.__module__
        torch.Generator = Generator
        return True

    def _random(self) -> bool:
        import random
        original = random.Random.seed
        if getattr(original, "__commprof_original__", None) is not None:
            return False
        me = self

        @functools.wraps(original)
        def seed(rng, a=None, *args, **kwargs):
            return original(rng, me.shifted("random.seed", a), *args, **kwargs)

        seed.__commprof_original__ = original
        random.Random.seed = seed
        random.seed = random._inst.seed  # the module's function is the bound method of its instance
        return True

    def _numpy(self) -> bool:
        try:
            import numpy.random as npr
        except ImportError:
            return False
        done = self._wrap(npr, "seed", "numpy.random.seed")
        return self._wrap(npr, "default_rng", "numpy.random.default_rng") or done
