"""``seqgen serve``: the tasks' pipelines behind an HTTP service.

- :mod:`~seqgen.serving.endpoint`: what a task serves (its ``serve`` hook, an ``Endpoint``)
  and how a JSON body becomes a call with checked options;
- :mod:`~seqgen.serving.batching`: dynamic batching, one queue and one decode thread per model;
- :mod:`~seqgen.serving.models`: the models loaded, named and described;
- :mod:`~seqgen.serving.app`: the Starlette routes and their JSON errors;
- :mod:`~seqgen.serving.server`: uvicorn on a socket bound here, graceful on SIGTERM.

Starlette and uvicorn come with the ``serve`` extra; nothing else in seqgen imports them.
"""
