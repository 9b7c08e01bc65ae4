"""kiln's pipeline: zoo configs, the Dask cluster, capture/lower tasks, the runner and the CLI.

Dependency direction: pipeline → storage → compiler. Only ``pipeline.cluster`` touches the
Dask client; tasks (``pipeline.tasks``) are plain functions on small frozen dataclasses.
"""
