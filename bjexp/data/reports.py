"""Free-text radiology report sections (MIMIC-CXR `sXXXXXXXX.txt`): FINDINGS, IMPRESSION, addenda, PHI `___`.

MIMIC reports are fixed-width text: a `FINAL REPORT` banner, then `HEADER:` sections (EXAMINATION, INDICATION,
TECHNIQUE, COMPARISON, FINDINGS, IMPRESSION, ...); an addendum comes first under a `FINAL ADDENDUM` banner.
Many reports have only FINDINGS, only IMPRESSION, or neither (free text under other headers or none).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# A header: at the start of a line, upper-case words (and a few symbols), then a colon.
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z0-9 &/,()\-]{1,48}?)[ \t]*:", re.MULTILINE)
_BANNER = re.compile(r"^[ \t]*FINAL (?:REPORT|ADDENDUM)[ \t]*$", re.MULTILINE)
_PHI = re.compile(r"_{2,}")

# Header name (upper case, single-spaced) -> canonical section. Headers not listed are kept under their own name.
SYNONYMS = {
    "FINDINGS": "findings", "FINDING": "findings", "FINDINGS AND IMPRESSION": "findings_impression",
    "IMPRESSION": "impression", "IMPRESSIONS": "impression", "CONCLUSION": "impression", "CONCLUSIONS": "impression",
    "SUMMARY": "impression",
    "ADDENDUM": "addendum", "ADDENDA": "addendum",
    "INDICATION": "indication", "INDICATIONS": "indication", "HISTORY": "indication", "CLINICAL HISTORY": "indication",
    "REASON FOR EXAMINATION": "indication", "REASON FOR EXAM": "indication",
    "COMPARISON": "comparison", "COMPARISONS": "comparison",
    "TECHNIQUE": "technique", "EXAMINATION": "examination", "EXAM": "examination",
    "NOTIFICATION": "notification", "RECOMMENDATION": "recommendation", "RECOMMENDATIONS": "recommendation",
    "RECOMMENDATION(S)": "recommendation", "WET READ": "wet_read",
}


@dataclass
class Report:
    """Sections of one report (text whitespace-normalised; '' when absent)."""

    sections: dict[str, str] = field(default_factory=dict)
    preamble: str = ""  # text before the first header (minus banners)

    @property
    def findings(self) -> str:
        return self.sections.get("findings") or self.sections.get("findings_impression", "")

    @property
    def impression(self) -> str:
        return self.sections.get("impression") or self.sections.get("findings_impression", "")

    @property
    def addendum(self) -> str:
        return self.sections.get("addendum", "")

    def impression_or_findings(self) -> str:
        return self.impression or self.findings


_STORED = re.compile(r"^(?:FINDINGS: (?P<findings>.*?))?\s*(?:IMPRESSION: (?P<impression>.*))?$", re.DOTALL)


def stored_sections(text: str) -> tuple[str, str]:
    """(findings, impression) of a report as manifests store it: 'FINDINGS: … IMPRESSION: …', either part optional
    (`bjexp.data.mimic.layout.read_reports`, the miniature world). Text in neither form is returned as findings."""
    m = _STORED.match(text or "")
    if not m or not (m["findings"] or m["impression"]):
        return tidy(text or ""), ""
    return tidy(m["findings"] or ""), tidy(m["impression"] or "")


def tidy(text: str) -> str:
    """Collapse whitespace and the spaces before punctuation that line wrapping / PHI removal leave behind."""
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r" ([.,;:])", r"\1", text)


def remove_phi(text: str, replacement: str = "") -> str:
    """MIMIC de-identification writes `___`; replace it (default: drop) and tidy."""
    return tidy(_PHI.sub(replacement, text))


def parse(text: str) -> Report:
    """Split a report into canonical sections. Repeated headers are joined (e.g. two addenda)."""
    text = _BANNER.sub("", text.replace("\r\n", "\n"))
    matches = [m for m in _HEADER.finditer(text) if _is_header(m.group(1))]
    report = Report(preamble=tidy(text[: matches[0].start()] if matches else text))
    for m, nxt in zip(matches, [*matches[1:], None]):
        name = re.sub(r"\s+", " ", m.group(1).strip())
        key = SYNONYMS.get(name, name.lower().replace(" ", "_"))
        body = tidy(text[m.end(): nxt.start() if nxt else len(text)])
        if key in report.sections and body:
            body = f"{report.sections[key]} {body}".strip() if report.sections[key] else body
        elif key in report.sections:
            continue
        report.sections[key] = body
    return report


def _is_header(name: str) -> bool:
    # A known header, or a short all-caps label (e.g. 'PA AND LATERAL VIEWS OF THE CHEST'); not an abbreviation
    # that merely starts a sentence ('AP: ...' is rare; single-letter or digit-led labels are excluded by the regex).
    name = re.sub(r"\s+", " ", name.strip())
    return name in SYNONYMS or (len(name) >= 4 and any(c.isalpha() for c in name))
