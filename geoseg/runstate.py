"""A job's run state: one record per scene (what was done, with which input, model and settings),
and the state of the combined layer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from geoseg.atomic import write_text_atomic
from geoseg.env import fault_point
from geoseg.errors import GeosegError

MANIFEST_FORMAT = "geoseg-manifest/1"


@dataclass
class Manifest:
    path: str
    job: str
    scenes: dict[str, dict] = field(default_factory=dict)
    combined: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str, job: str) -> Manifest:
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return cls(path, job)
        except (OSError, ValueError) as exc:
            raise GeosegError(
                f"manifest '{path}': unreadable ({exc}); move it aside to start afresh"
            ) from None
        if doc.get("format") != MANIFEST_FORMAT:
            raise GeosegError(f"manifest '{path}': not a {MANIFEST_FORMAT} file")
        return cls(path, job, doc.get("scenes", {}), doc.get("combined", {}))

    def save(self) -> None:
        doc = {"format": MANIFEST_FORMAT, "job": self.job, "scenes": self.scenes, "combined": self.combined}
        write_text_atomic(self.path, json.dumps(doc, indent=1, sort_keys=True))
        fault_point("manifest-written")
