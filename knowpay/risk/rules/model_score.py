"""Model score: the active scikit-learn model's fraud probability at or above a threshold."""

from __future__ import annotations

from pydantic import Field

from knowpay.risk.outcomes import Outcome
from knowpay.risk.rules.base import Hit, Rule, RuleInput, RuleParams, SubjectKind


class ModelScoreParams(RuleParams):
    subjects: list[SubjectKind] = Field(default_factory=lambda: ["payment", "topup"])
    threshold: float = Field(0.8, gt=0, lt=1)


class ModelScore(Rule):
    name = "model_score"
    description = "The model's fraud score is at or above a threshold."
    Params = ModelScoreParams
    default_action = Outcome.REVIEW
    uses_score = True

    def check(self, data: RuleInput, params: ModelScoreParams) -> Hit | None:  # type: ignore[override]
        # No score (no model trained, or it failed): the rules decide alone; the decision records why.
        if data.score is None or data.score < params.threshold:
            return None
        return Hit(f"score {data.score:.3f} ≥ {params.threshold}", round(data.score, 4))


RULE = ModelScore()
