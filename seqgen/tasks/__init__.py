"""The tasks, one folder each: ``generation``, ``translation``.

Each folder's ``__init__.py`` defines its :class:`~seqgen.task.Task` (``TASK``), and
``seqgen.task.TASK_PACKAGES`` registers it. A task imports the shared layers, never another
task.
"""
