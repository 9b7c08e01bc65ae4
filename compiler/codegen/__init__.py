"""Kernel emitters (one per kernel family, one shared signature builder), launch heuristics,
the scheduler's planner, and the wrapper's source. Codegen reads the IR and the scheduler's
steps; nothing in graph, lowering or the scheduler imports it."""
