"""The HTML report's one figure style: every plotly figure of the report (html.py, html_training.py)
is built here, so the sections share margins, height, template and legend."""
from __future__ import annotations


def figure(data, layout: dict) -> dict:
    """The plotly JSON of a figure of ``data`` (plotly traces) with the report's style, ``layout``
    on top of it."""
    import plotly.graph_objects as go
    base = dict(margin=dict(l=60, r=20, t=30, b=50), height=360, template="plotly_white",
                legend=dict(orientation="h", y=1.12))
    return go.Figure(data=data, layout={**base, **layout}).to_plotly_json()
