"""Group findings by code so that a million bad lines make one finding with a count."""

from __future__ import annotations

from collections.abc import Iterable

from tunery.data.findings import Finding, Level

EXAMPLE_LINES = 5  # how many example lines a grouped finding keeps


class Collector:
    """Accumulates findings; the first of each (code, level) keeps its message, line and field."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, Level], Finding] = {}

    def add(self, finding: Finding) -> Finding:
        key = (finding.code, finding.level)
        group = self._groups.get(key)
        if group is None:
            if finding.line is not None and not finding.lines:
                finding.lines = [finding.line]
            self._groups[key] = finding
            return finding
        group.count += finding.count
        for line in finding.lines or ([finding.line] if finding.line is not None else []):
            if len(group.lines) < EXAMPLE_LINES:
                group.lines.append(line)
        return group

    def extend(self, findings: Iterable[Finding]) -> None:
        for f in findings:
            self.add(f)

    def findings(self) -> list[Finding]:
        return list(self._groups.values())

    def has_errors(self) -> bool:
        return any(level is Level.ERROR for _, level in self._groups)
