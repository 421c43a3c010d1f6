"""What the doctor reports: findings, recommendations and the diagnosis that holds them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


KINDS = ("divergence", "saturated_monitor", "schedule_ended", "overfitting", "oscillation", "plateau",
         "underfitting", "noise", "warmup_not_linear", "too_short", "healthy")


# Findings are listed most severe first: a cause ranks above the symptom it explains (a divergence above
# everything drawn before it, a saturated monitor or a schedule that ran out above the stall they cause).
SEVERITY = {k: i for i, k in enumerate(KINDS)}


@dataclass
class Finding:
    """One finding: its kind, the metric it concerns, the epoch it refers to and numeric evidence."""
    kind: str
    metric: str
    epoch: float | None
    evidence: dict[str, Any]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "metric": self.metric, "epoch": self.epoch,
                "evidence": self.evidence, "message": self.message}


@dataclass
class Recommendation:
    """A concrete change (``params`` can be applied to a config) and the reason from the findings."""
    change: str
    reason: str
    params: dict[str, Any] = field(default_factory=dict)
    plan: str = ""          # M4's plan letter or rule it comes from
    name: str = ""          # short id, used as a follow-up run's folder name
    confidence: str = "rule"    # "rule" (a finding's remedy), "evidence" (measured), "candidate" (untested)

    def to_dict(self) -> dict[str, Any]:
        return {"change": self.change, "reason": self.reason, "params": self.params,
                "plan": self.plan, "name": self.name, "confidence": self.confidence}


@dataclass
class Diagnosis:
    metric: str
    greater_is_better: bool
    findings: list[Finding]
    recommendations: list[Recommendation]
    rules: dict[str, Any]
    summary: dict[str, Any]

    @property
    def kinds(self) -> list[str]:
        return [f.kind for f in self.findings]

    @property
    def judged(self) -> bool:
        """False when the log could not be judged (then there is no finding)."""
        return bool(self.summary.get("judged", True))

    @property
    def label(self) -> str:
        """The most severe finding's kind; "unjudgeable" when nothing was judged."""
        if not self.judged:
            return "unjudgeable"
        return self.findings[0].kind if self.findings else "healthy"

    def finding(self, kind: str) -> Finding | None:
        return next((f for f in self.findings if f.kind == kind), None)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` shape: findings, recommendations, plus the rules and a summary."""
        return {"findings": [f.to_dict() for f in self.findings],
                "recommendations": [r.to_dict() for r in self.recommendations],
                "rules": self.rules, "summary": self.summary}
