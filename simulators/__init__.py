"""Simulators: log schema v1 loading, the ground-truth synthetic world, models fitted from logs.

Packages: :mod:`supportrl.simulators.logs` (schema v1 loading and validation, and reading
logs larger than memory), :mod:`supportrl.simulators.synthetic` (the ground-truth world),
:mod:`supportrl.simulators.fitted` (customer models fitted from logs); and the module
:mod:`supportrl.simulators.fidelity` (how well a fitted model matches the world or the logs).
"""
