"""Typed JSON objects: stdlib dataclasses whose fields are the keys of a JSON document.

A field's annotation is its JSON type: ``int`` (an integral JSON number: ``3`` or ``3.0``),
``float`` (any finite JSON number), ``str``, ``bool`` (never a number, nor a number a boolean),
``X | None`` (may be null), ``list[X]``, ``dict[str, X]`` (an object with free keys), a nested
:class:`Model`, or ``dict[str, Any]`` / ``Any`` for free-form content.  Declare a field with
:func:`key` (every document has it) or :func:`optional` (a document may lack it).

:func:`parse` checks a JSON value against a class recursively and raises
:class:`~commprof.errors.ReportFileError` naming the first bad key (``ops[0].count: missing``);
:meth:`Model.to_dict` gives the JSON back, unknown keys and key order included.
:func:`json_schema_of` derives a JSON Schema (draft 2020-12).  The report document's classes are
in :mod:`commprof.analysis.result.model`.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from commprof.errors import ReportFileError


def key(doc: str = "") -> Any:
    """A key every document has (its value may still be null when typed ``X | None``)."""
    return field(metadata={"doc": doc})


def optional(doc: str = "") -> Any:
    """A key a document may lack (added later to ``commprof.report/1``, or written only when the
    run has the data).  An absent key reads as ``None``, like a null; :meth:`Model.has` tells the
    two apart, and :meth:`Model.to_dict` leaves an absent key out again."""
    return field(default=None, metadata={"doc": doc, "absent_ok": True})


@dataclass(kw_only=True)
class Model:
    """Base of the document's objects: unknown keys are kept in ``extra_keys``."""

    extra_keys: dict[str, Any] = field(default_factory=dict, repr=False,
                                       metadata={"internal": True})
    key_order: tuple[str, ...] = field(default=(), repr=False, compare=False,
                                       metadata={"internal": True})  # as parsed: kept by to_dict
    # optional keys the parsed document lacks (they read as None; to_dict leaves them out)
    absent_keys: frozenset[str] = field(default=frozenset(), repr=False, compare=False,
                                        metadata={"internal": True})
    # True where further keys are part of the design (they differ per instance, e.g. per source)
    OPEN: ClassVar[bool] = False

    def replaced(self, **changes: Any) -> "Model":
        """A copy with ``changes`` (field name -> value); a key the original lacked is present in
        the copy.  The original is unchanged."""
        return dataclasses.replace(self, **changes, absent_keys=self.absent_keys - set(changes))

    def without(self, *names: str) -> "Model":
        """A copy lacking the optional keys ``names`` (they read as ``None``; ``to_dict`` leaves
        them out).  A required key cannot be removed."""
        fields = {f.name: f for f in model_fields(type(self))}
        for name in names:
            if name not in fields or not is_optional(fields[name]):
                raise ValueError(f"{type(self).__name__}.{name}: not an optional key")
        return dataclasses.replace(self, **{n: None for n in names},
                                   absent_keys=self.absent_keys | set(names))

    def has(self, name: str) -> bool:
        """Whether the document has key ``name`` (an optional key may be absent; it reads as
        ``None`` either way)."""
        return name not in self.absent_keys

    def to_dict(self) -> dict:
        """The JSON object: its keys in the order they were parsed in (else modelled keys in
        declaration order, then the unknown ones); absent optional keys left out."""
        out = {}
        for f in model_fields(type(self)):
            if f.name not in self.absent_keys:
                out[f.name] = _dump(getattr(self, f.name))
        for name, value in self.extra_keys.items():
            out[name] = copy.deepcopy(value)
        if self.key_order:
            order = [k for k in self.key_order if k in out]
            out = {**{k: out[k] for k in order}, **out}
        return out


# -- checking ----------------------------------------------------------------------------------

_FIELDS: dict[type, list] = {}
_HINTS: dict[type, dict] = {}


def model_fields(cls: type) -> list[dataclasses.Field]:
    """The document keys of a model class (``extra_keys`` left out), in declaration order."""
    if cls not in _FIELDS:
        _FIELDS[cls] = [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
        _HINTS[cls] = typing.get_type_hints(cls)
    return _FIELDS[cls]


def field_type(cls: type, name: str) -> Any:
    """The resolved type of field ``name`` of model class ``cls``."""
    model_fields(cls)
    return _HINTS[cls][name]


def is_optional(f: dataclasses.Field) -> bool:
    """Whether a document may lack this field's key."""
    return bool(f.metadata.get("absent_ok"))


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Model)


def split_none(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union {tp!r}: only X | None")
        return args[0], True
    return tp, False


def expected(tp: Any) -> str:
    inner, nullable = split_none(tp)
    origin = typing.get_origin(inner)
    if inner is bool:
        what = "a boolean"
    elif inner is int:
        what = "an integer"
    elif inner is float:
        what = "a number"
    elif inner is str:
        what = "a string"
    elif inner is list or origin is list:
        what = "a list"
    elif inner is dict or origin is dict or _is_model(inner):
        what = "an object"
    else:
        what = "any JSON value"
    return what + (" or null" if nullable else "")


def _parse(tp: Any, value: Any, where: str, path) -> Any:
    if tp is Any:
        return copy.deepcopy(value)
    inner, nullable = split_none(tp)
    if value is None:
        if nullable:
            return None
        _fail(tp, value, where, path)
    origin = typing.get_origin(inner)
    if _is_model(inner):
        if not isinstance(value, dict):
            _fail(tp, value, where, path)
        return _parse_object(inner, value, where, path)
    if inner is list or origin is list:
        if not isinstance(value, list):
            _fail(tp, value, where, path)
        (item,) = typing.get_args(inner) or (Any,)
        return [_parse(item, v, f"{where}[{i}]", path) for i, v in enumerate(value)]
    if inner is dict or origin is dict:
        if not isinstance(value, dict):
            _fail(tp, value, where, path)
        args = typing.get_args(inner)
        item = args[1] if args else Any
        return {str(k): _parse(item, v, f"{where}.{k}", path) for k, v in value.items()}
    if not _scalar_ok(inner, value):
        _fail(tp, value, where, path)
    return value


def _scalar_ok(tp: type, value: Any) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False  # JSON true/false is never a number
    if tp is int:  # an integral JSON number (3 or 3.0: pandas writes a column with nulls as floats)
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)
                                          and value.is_integer())
    if tp is float:
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    if tp is str:
        return isinstance(value, str)
    raise TypeError(f"unsupported field type {tp!r}")


def parse(cls: type, value: Any, path: str | os.PathLike, where: str = "") -> Any:
    """``value`` checked against model class ``cls`` (``where``: its key path, for errors)."""
    return _parse_object(cls, value, where, path)


def _parse_object(cls: type, value: Any, where: str, path) -> Any:
    if not isinstance(value, dict):
        _fail(cls, value, where, path)
    kwargs, absent = {}, []
    for f in model_fields(cls):
        sub = f"{where}.{f.name}" if where else f.name
        if f.name not in value:
            if is_optional(f):
                absent.append(f.name)
                continue
            raise ReportFileError(path, f"{sub}: missing")
        kwargs[f.name] = _parse(_HINTS[cls][f.name], value[f.name], sub, path)
    known = {f.name for f in _FIELDS[cls]}
    extra = {k: copy.deepcopy(v) for k, v in value.items() if k not in known}
    return cls(**kwargs, extra_keys=extra, key_order=tuple(value), absent_keys=frozenset(absent))


def _fail(tp: Any, value: Any, where: str, path) -> typing.NoReturn:
    prefix = f"{where}: " if where else ""
    raise ReportFileError(path, f"{prefix}expected {expected(tp)}, got {describe(value)}")


def describe(value: Any) -> str:
    """``a string "12%"``, ``an integer 3``, ``null``, ``a list [1, 2]`` (at most 40 characters)."""
    if value is None:
        return "null"
    kind = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)
    if isinstance(value, float) and not math.isfinite(value):
        return f"a non-finite number {value!r}"
    try:
        text = json.dumps(value, allow_nan=True, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def _dump(value: Any) -> Any:
    if isinstance(value, Model):
        return value.to_dict()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


# -- introspection -----------------------------------------------------------------------------

class KeyPath(typing.NamedTuple):
    """One key path of the model (see :func:`key_paths`)."""

    path: str  # e.g. "ops[].count", "run.hosts[]", "links.sampler[].sources.*.why"
    type: Any
    optional: bool  # the document may lack it (list items ``[]`` are never optional)


def key_paths(cls: type, prefix: str = "") -> list[KeyPath]:
    """Every key path of the model, depth first: each field, and below it the items of a list
    (``[]``) and the values of an object with free keys (``.*``), e.g. ``run.hosts[]`` or
    ``links.sampler[].sources.*.why``.  Nothing below a free-form field (:func:`is_free_form`)."""
    out = []
    for f in model_fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        tp = _HINTS[cls][f.name]
        out.append(KeyPath(path, tp, is_optional(f)))
        out += _nested_paths(tp, path)
    return out


def _nested_paths(tp: Any, path: str) -> list[KeyPath]:
    inner, _ = split_none(tp)
    if _is_model(inner):
        return key_paths(inner, path)
    if is_free_form(inner):
        return []
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if origin is list and args:
        return [KeyPath(path + "[]", args[0], False)] + _nested_paths(args[0], path + "[]")
    if origin is dict and len(args) == 2:
        return [KeyPath(path + ".*", args[1], True)] + _nested_paths(args[1], path + ".*")
    return []


def is_free_form(tp: Any) -> bool:
    """Whether a field's content is not modelled (``Any``, ``dict[str, Any]``)."""
    inner, _ = split_none(tp)
    if inner is Any or inner is dict:
        return True
    args = typing.get_args(inner)
    return typing.get_origin(inner) is dict and (not args or args[1] is Any)


def defines(root: type, parts: typing.Sequence[str]) -> bool:
    """Whether model class ``root`` defines the key path ``parts`` (keys, ``"[]"`` for a list's
    items), e.g. ``("links", "sampler", "[]", "sources", "nic", "why")``.  Everything below a
    free-form field and any key of an :attr:`Model.OPEN` object counts as defined."""
    tp: Any = root
    for part in parts:
        inner, _ = split_none(tp)
        if is_free_form(inner):
            return True
        origin, args = typing.get_origin(inner), typing.get_args(inner)
        if _is_model(inner):
            names = {f.name for f in model_fields(inner)}
            if part not in names:
                return inner.OPEN
            tp = _HINTS[inner][part]
        elif origin is list and part == "[]":
            tp = args[0] if args else Any
        elif origin is dict and len(args) == 2:
            tp = args[1]
        else:
            return False
    return True


# -- JSON Schema -------------------------------------------------------------------------------

def json_schema_of(root: type, title: str, description: str) -> dict:
    """The JSON Schema (draft 2020-12) of model class ``root``: one ``$defs`` entry per nested
    class; ``required`` lists the keys not declared :func:`optional`; unknown keys are allowed."""
    defs: dict[str, dict] = {}
    schema = _object_schema(root, defs)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title,
            **schema, "description": description, "$defs": dict(sorted(defs.items()))}


def _object_schema(cls: type, defs: dict) -> dict:
    props, required = {}, []
    for f in model_fields(cls):
        sub = _type_schema(_HINTS[cls][f.name], defs)
        if f.metadata.get("doc"):
            sub = {**sub, "description": f.metadata["doc"]}
        props[f.name] = sub
        if not is_optional(f):
            required.append(f.name)
    return {"type": "object", "description": (cls.__doc__ or "").strip().splitlines()[0],
            "properties": props, "required": required}


def _type_schema(tp: Any, defs: dict) -> dict:
    if tp is Any:
        return {}
    inner, nullable = split_none(tp)
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if _is_model(inner):
        if inner.__name__ not in defs:
            defs[inner.__name__] = {}  # reserve (recursion)
            defs[inner.__name__] = _object_schema(inner, defs)
        ref = {"$ref": f"#/$defs/{inner.__name__}"}
        return {"anyOf": [ref, {"type": "null"}]} if nullable else ref
    if inner is list or origin is list:
        out = {"type": "array"}
        if args and args[0] is not Any:
            out["items"] = _type_schema(args[0], defs)
    elif inner is dict or origin is dict:
        out = {"type": "object"}
        if len(args) == 2 and args[1] is not Any:
            out["additionalProperties"] = _type_schema(args[1], defs)
    else:
        out = {"type": {bool: "boolean", int: "integer", float: "number", str: "string"}[inner]}
    if nullable:
        out["type"] = [out["type"], "null"]
    return out
