"""Building the XML documents carriers run (TwiML, Plivo XML) with ElementTree.

Escaping is never hand-rolled; characters XML 1.0 cannot carry at all (not even
escaped) are dropped, since agent text may contain them (lone surrogates cannot
even be encoded) and a carrier would reject the whole document (Twilio: error
12100).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

__all__ = ["XML_DECLARATION", "element", "render"]

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(value: str) -> str:
    return _XML_INVALID.sub("", value)


def element(parent: ET.Element, tag: str, text: str | None = None,
            **attrs: str | int | None) -> ET.Element:
    """A ``tag`` child of ``parent``; ``None`` attributes are left out."""
    el = ET.SubElement(parent, tag, {k: _clean(str(v)) for k, v in attrs.items()
                                     if v is not None})
    if text is not None:
        el.text = _clean(text)
    return el


def render(root: ET.Element) -> str:
    return XML_DECLARATION + ET.tostring(root, encoding="unicode")
