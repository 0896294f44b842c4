"""Applies fixes inside one worker, where the job builds its model (``commprof try``).

* DDP: ``DistributedDataParallel.__init__`` is wrapped — the constructor options of the option
  fixes are set (the job's own values are reported), and a comm-hook fix is registered on the
  instance at its first forward, unless the job registered a hook of its own by then (the fix
  is then skipped: DDP takes one hook).  The hook goes through a dispatcher, so a hook the job
  registers later replaces the fix instead of failing ("can only be called once"); that is
  reported as the fix withdrawn at that step.
* FSDP2: ``fully_shard`` (``torch.distributed.fsdp`` and its home module) gets the options.
* Local SGD's model averaging runs from an optimizer step post-hook (the job's first optimizer).

Each fix is applied whole or not at all, and says which in one ``fix`` JSON event per process
(``{"type": "event", "event": "fix", "fix", "status": applied|skipped|withdrawn, "why", ...}``);
a failure in commprof's own code is recorded through ``degrade`` and never raised.  A torch whose
``DistributedDataParallel`` or ``fully_shard`` takes no keyword an option fix sets skips that fix
(``fixes.ddp.signature`` / ``fixes.fsdp.signature`` in the report's ``degraded``) and the job's
constructor runs as written; one without ``fully_shard`` skips the FSDP2 fixes (``fixes.fsdp``).
"""
from __future__ import annotations

import functools
import inspect

from commprof.fixes.catalog import Fix

#: Where ``fully_shard`` lives: the public module first; the others are its homes in torch 2.6-2.15.
FSDP_MODULES = ("torch.distributed.fsdp", "torch.distributed.fsdp._fully_shard._fully_shard",
                "torch.distributed.fsdp._fully_shard")


def keywords_refused(fn, names) -> list[str]:
    """The keywords of ``names`` that ``fn``'s signature does not take ([] when it takes
    ``**kwargs`` or its signature cannot be read: then the call itself decides)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return []
    taken = {p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                  inspect.Parameter.POSITIONAL_OR_KEYWORD)}
    return [n for n in names if n not in taken]


class FixInstaller:
    """The fixes of one process.  ``emit(dict)`` records an event; ``degrade(where, exc)`` a
    failure of commprof's own code."""

    def __init__(self, torch_module, fixes: list[Fix], emit, degrade):
        self.torch = torch_module
        self.fixes = fixes
        self.emit = emit
        self.degrade = degrade
        self.status: dict[str, str] = {}  # spec -> applied / skipped / withdrawn
        self.ddps: list = []
        self.first_optimizer = None
        self.steps = 0

    def install(self) -> None:
        if any(f.target == "ddp" for f in self.fixes):
            self._patch_ddp()
        if any(f.target == "fsdp" for f in self.fixes):
            self._patch_fully_shard()
        if any(type(f).after_optimizer_step is not Fix.after_optimizer_step for f in self.fixes):
            from torch.optim.optimizer import register_optimizer_step_post_hook
            register_optimizer_step_post_hook(self._after_step)

    def close(self) -> None:
        """At exit: every fix that never applied is reported skipped."""
        for f in self.fixes:
            if f.spec not in self.status:
                what = "no DistributedDataParallel model" if f.target == "ddp" else "no fully_shard call"
                self._say(f, "skipped", f"the job built {what}: nothing to apply it to")

    def _say(self, fix: Fix, status: str, why: str | None = None, **details) -> None:
        self.status[fix.spec] = status
        self.emit({"type": "event", "event": "fix", "fix": fix.spec, "status": status, "why": why,
                   "changes": fix.changes, **details})

    # -- DDP ------------------------------------------------------------------------------------
    def _patch_ddp(self) -> None:
        DDP = self.torch.nn.parallel.DistributedDataParallel
        original_init = DDP.__init__
        installer = self
        options = self._accepted([f for f in self.fixes if f.kind == "ddp_option"], original_init,
                                 "DistributedDataParallel", "fixes.ddp.signature")
        hooks = [f for f in self.fixes if f.kind == "hook" and f.target == "ddp"]

        @functools.wraps(original_init)
        def __init__(ddp, *args, **kwargs):
            mine, previous = {}, {}
            for f in options:
                for key, value in f.options().items():
                    if key in kwargs:
                        previous[key] = kwargs[key]
                    mine[key] = value
            original_init(ddp, *args, **{**kwargs, **mine})
            try:
                installer._on_ddp(ddp, options, hooks, previous)
            except Exception as exc:  # noqa: BLE001 - recorded, never raised into the job
                installer.degrade("fixes.ddp", exc)

        __init__.__commprof_original__ = original_init
        DDP.__init__ = __init__
        for name in ("register_comm_hook", "_register_builtin_comm_hook"):
            original = getattr(DDP, name, None)
            if original is not None:
                setattr(DDP, name, self._user_hook_wrapper(original))

    def _user_hook_wrapper(self, original):
        installer = self

        @functools.wraps(original)
        def register(ddp, *args, **kwargs):
            slot = getattr(ddp, "_commprof_fix_slot", None)
            if slot is None or slot.get("fix") is None:
                if slot is not None:
                    slot["user"] = True  # before the first forward: the fix will not register
                return original(ddp, *args, **kwargs)
            # The fix's dispatcher is DDP's hook already: the job's hook replaces the fix in it.
            hook = kwargs.get("hook", args[1] if len(args) > 1 else None)
            state = kwargs.get("state", args[0] if args else None)
            if not callable(hook):  # a builtin hook (an enum): cannot run through the dispatcher
                installer.degrade("fixes.user_hook", RuntimeError(
                    "the job registered a builtin comm hook after commprof's fix: kept the fix"))
                return None
            fix = slot["fix"]
            slot.update(fix=None, state=state, hook=hook)
            installer._say(fix, "withdrawn", "the job registered its own comm hook "
                           f"({getattr(hook, '__name__', hook)}) after the fix: the job's hook "
                           f"runs from step {installer.steps} on", step=installer.steps)
            return None

        register.__commprof_original__ = original
        return register

    def _on_ddp(self, ddp, options, hooks, previous) -> None:
        self.ddps.append(ddp)
        for f in options:
            self._say(f, "applied", None, options={k: repr(v) for k, v in f.options().items()},
                      replaced={k: repr(v) for k, v in previous.items() if k in f.options()})
        if hooks:
            slot = {"fix": None, "user": False}
            ddp._commprof_fix_slot = slot
            handle = None

            def first_forward(module, inputs):
                handle.remove()
                try:
                    self._register_hook(ddp, hooks[0], slot)
                except Exception as exc:  # noqa: BLE001
                    self.degrade("fixes.hook", exc)
                    self._say(hooks[0], "skipped", f"registering it failed: {type(exc).__name__}: {exc}")

            handle = ddp.register_forward_pre_hook(first_forward)

    def _register_hook(self, ddp, fix: Fix, slot: dict) -> None:
        if slot["user"]:
            self._say(fix, "skipped", "the job registered its own DDP comm hook (DDP takes one)")
            return
        why = fix.refuse(ddp, self.torch)
        if why:
            self._say(fix, "skipped", why)
            return
        state, hook = fix.hook(ddp, self.torch)
        slot.update(fix=fix, state=state, hook=hook)

        def commprof_fix_hook(unused, bucket):  # DDP checks the name "bucket"; no annotations
            return slot["hook"](slot["state"], bucket)

        original = getattr(type(ddp).register_comm_hook, "__commprof_original__",
                           type(ddp).register_comm_hook)
        original(ddp, None, commprof_fix_hook)
        try:
            details = fix.applied_details(ddp)
        except Exception as exc:  # noqa: BLE001 - the fix applied; its arithmetic is unknown
            self.degrade("fixes.details", exc)
            details = {}
        self._say(fix, "applied", None, hook=getattr(hook, "__name__", str(hook)), **details)

    def _after_step(self, optimizer, args, kwargs) -> None:
        if self.first_optimizer is None:
            self.first_optimizer = id(optimizer)
        if id(optimizer) != self.first_optimizer:
            return
        self.steps += 1
        for ddp in self.ddps:
            slot = getattr(ddp, "_commprof_fix_slot", None)
            fix = slot.get("fix") if slot else None
            if fix is not None:
                try:
                    fix.after_optimizer_step(ddp)
                except Exception as exc:  # noqa: BLE001
                    self.degrade("fixes.after_step", exc)

    # -- FSDP2 ----------------------------------------------------------------------------------
    def _patch_fully_shard(self) -> None:
        import importlib
        fixes = [f for f in self.fixes if f.target == "fsdp"]
        modules = []
        for name in FSDP_MODULES:
            try:
                modules.append(importlib.import_module(name))
            except ImportError:  # a home this torch does not have: the others are patched
                continue
        original = getattr(modules[0], "fully_shard", None) if modules else None
        if original is None:
            self.degrade("fixes.fsdp", RuntimeError("this torch has no torch.distributed.fsdp.fully_shard"))
            for f in fixes:
                self._say(f, "skipped", "this torch has no torch.distributed.fsdp.fully_shard")
            return
        applied = self._accepted(fixes, original, "fully_shard", "fixes.fsdp.signature")
        if not applied:
            return
        mine = {}
        for f in applied:
            mine.update(f.options())
        installer = self
        calls = {"n": 0}

        @functools.wraps(original)
        def fully_shard(module, *args, **kwargs):
            result = original(module, *args, **{**kwargs, **mine})
            calls["n"] += 1
            if calls["n"] == 1:
                for f in applied:
                    installer._say(f, "applied", None, options={k: repr(v) for k, v in f.options().items()})
            return result

        fully_shard.__commprof_original__ = original
        for mod in modules:
            if getattr(mod, "fully_shard", None) is original:
                mod.fully_shard = fully_shard

    def _accepted(self, fixes: list[Fix], fn, what: str, where: str) -> list[Fix]:
        """The option fixes whose keywords ``fn`` takes; the others are skipped and named, in
        one degraded message."""
        out, refusals = [], []
        for f in fixes:
            try:
                refused = keywords_refused(fn, list(f.options()))
            except Exception as exc:  # noqa: BLE001 - e.g. this torch has no MixedPrecisionPolicy
                self.degrade(where, exc)
                self._say(f, "skipped", f"its options cannot be made here: {type(exc).__name__}: {exc}")
                continue
            if refused:
                self._say(f, "skipped", f"this torch's {what} takes no {', '.join(refused)}")
                refusals.append(f"{', '.join(refused)} (fix {f.spec} skipped)")
            else:
                out.append(f)
        if refusals:
            self.degrade(where, RuntimeError(f"this torch's {what} takes no {'; '.join(refusals)}"))
        return out
