"""The preview types kedro-viz renders, declared once for the project's datasets.

kedro-viz chooses how to show a dataset's ``preview()`` by the *name* of its return annotation
(``ImagePreview``: a base64 PNG; ``TablePreview``: a table as a dict), as kedro-datasets declares them
in its private ``_typing`` module. Declaring the same names here keeps the datasets off that private module.
"""

from __future__ import annotations

from typing import NewType

#: A base64-encoded PNG.
ImagePreview = NewType("ImagePreview", str)
#: A table, ``{"columns": [...], "index": [...], "data": [[...], ...]}`` (pandas' ``to_dict(orient="split")``).
TablePreview = NewType("TablePreview", dict)
