"""Reports a person reads: the self-contained HTML map report of a run or a prediction."""

from geoseg.report.build import ReportError, SceneEntry, build_report, scene_panel, write_report

__all__ = ["ReportError", "SceneEntry", "build_report", "scene_panel", "write_report"]
