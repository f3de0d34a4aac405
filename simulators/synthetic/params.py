"""The ground-truth world's fixed parameters: intents, customer features, the action indices and
the hidden coefficients of its dynamics (shared by the world and its scalar fast path)."""

from __future__ import annotations

import numpy as np

INTENTS: tuple[str, ...] = ("billing", "technical", "account", "shipping", "cancel")
UNKNOWN_INTENT = "other"
DETECTED_INTENTS: tuple[str, ...] = (*INTENTS, UNKNOWN_INTENT)
TIERS: tuple[str, ...] = ("free", "pro", "enterprise")
CHANNELS: tuple[str, ...] = ("chat", "web", "mobile")
CATEGORICAL_FEATURES: tuple[str, ...] = ("tier", "channel")
NUMERIC_FEATURES: tuple[str, ...] = ("tenure_months", "prior_contacts_30d")
CUSTOMER_FEATURES: tuple[str, ...] = ("tier", "tenure_months")
"""Features that belong to the customer (the customers table), not the conversation."""

EMPATHIZE, DIRECT_ANSWER, FAQ_LINK, CLARIFY, OFFER_CREDIT, ESCALATE_HUMAN = range(6)

# Resolution logit by (action, true intent) before state effects; rows follow
# DEFAULT_ACTIONS, columns INTENTS.
_RESOLVE_BASE = np.array(
    [
        [-2.6, -2.8, -2.6, -2.6, -2.2],  # empathize: rarely resolves by itself
        [-0.6, -0.9, -0.7, -0.5, -1.4],  # direct_answer
        [-1.8, -1.6, -0.6, -0.4, -2.4],  # faq_link: good for account and shipping
        [-4.0, -4.0, -4.0, -4.0, -4.0],  # clarify: never resolves, reveals the intent
        [-0.3, -2.2, -2.0, -1.0, -0.4],  # offer_credit: billing and cancellations
        [-9.0, -9.0, -9.0, -9.0, -9.0],  # escalate_human: handled by the escalation row
    ]
)
# How strongly complexity lowers the chance that an action resolves the case.
_COMPLEXITY_SENSITIVITY = np.array([0.3, 1.2, 1.0, 0.0, 0.6, 0.0])
# Mean sentiment change when the conversation goes on, by action.
_SENTIMENT_DELTA = np.array([0.22, 0.0, -0.08, -0.04, 0.3, 0.0])
# Mean handle time in seconds by action.
_HANDLE_TIME_S = np.array([40.0, 65.0, 20.0, 35.0, 55.0, 240.0])
