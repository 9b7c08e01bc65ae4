"""Model factories for the zoos: each returns ``(module, example_args)``.

``pipeline.zoo.tiny`` holds small models defined in the repo (CPU, float32, fixed seeds);
``pipeline.zoo.faults`` holds models that misbehave on purpose, for fault-handling tests.
"""
