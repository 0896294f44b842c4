"""What every renderer shows the same way: the verdict's parts, the notes (structured, chosen by
kind) and a rank's status word."""
from __future__ import annotations


def note_items(doc: dict) -> list[dict]:
    """The document's notes as ``{kind, severity, text}`` (documents written before
    ``note_items`` existed: their texts, kind ``note``)."""
    items = doc.get("note_items")
    if isinstance(items, list):
        return items
    return [{"kind": "note", "severity": "warning", "text": t} for t in doc.get("notes") or []]


def of_kind(doc: dict, *kinds: str) -> list[dict]:
    return [n for n in note_items(doc) if n.get("kind") in kinds]


def except_kind(doc: dict, *kinds: str) -> list[dict]:
    return [n for n in note_items(doc) if n.get("kind") not in kinds]


def rank_status(r: dict) -> str:
    """``ok``; ``failed (exception …)`` for a process that ended with an uncaught exception;
    ``incomplete (died?…)`` for one without a trailer."""
    reason = r.get("exit_reason")
    if r.get("complete"):
        if reason in (None, "exit", "finished"):
            return "ok"
        if str(reason).startswith("exception"):
            return f"failed ({reason})"
        return f"ok ({reason})"
    last = r.get("last_record_s")
    when = "" if last is None else f", last record at {last:.1f} s"
    return f"incomplete (died?{when})"


def assessment(doc: dict) -> dict:
    """The verdict's level and figures (documents written before ``assessment`` existed: the
    same function on their KPIs)."""
    if isinstance(doc.get("assessment"), dict):
        return doc["assessment"]
    from commprof.analysis.verdict import assess
    return assess(doc["kpis"]).to_dict()
