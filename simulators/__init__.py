"""Simulators: log schema v1 loading, the ground-truth synthetic world, models fitted from logs.

Modules: :mod:`supportrl.simulators.logs` (schema v1 loading and validation),
:mod:`supportrl.simulators.synthetic` (the ground-truth world),
:mod:`supportrl.simulators.fitted` (customer models fitted from logs) and
:mod:`supportrl.simulators.fidelity` (how well a fitted model matches the world or the logs).
"""
