"""The HTTP application: Starlette routes over the served models' batchers.

``POST /translate``, ``/generate``, ``/classify`` (each task's :class:`Endpoint`),
``GET /health`` and ``GET /models``. Every error is a JSON body ``{"error": "..."}`` with a
4xx status naming the problem (5xx only for the server's own: 503 busy, 504 timeout, 500 a
bug), and the server keeps serving after any of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from seqgen.errors import SeqgenError
from seqgen.serving.batching import Batcher
from seqgen.serving.endpoint import Endpoint, ParsedRequest, RequestError, parse_request
from seqgen.serving.limits import Limits
from seqgen.serving.models import ServedModel
from seqgen.task import registered_tasks
from seqgen.version import __version__

logger = logging.getLogger(__name__)


def create_app(models: Sequence[ServedModel], limits: Limits | None = None) -> Starlette:
    """The ASGI application serving ``models`` (``limits``: None, the defaults)."""
    limits = limits or Limits()
    batchers = {
        model.name: Batcher(
            decoder(model),
            window=limits.window,
            max_batch=limits.max_batch,
            max_queued=limits.max_queued,
            batches=model.endpoint.batches,
            name=model.name,
        )
        for model in models
    }

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for batcher in batchers.values():
            batcher.start()
        yield
        await asyncio.gather(*(batcher.stop() for batcher in batchers.values()))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__, "models": len(models)})

    async def listing(request: Request) -> Response:
        return JSONResponse({"models": [model.describe() for model in models]})

    routes = [Route("/health", health), Route("/models", listing)]
    for task in registered_tasks().values():
        endpoint: Endpoint = task.hook("serve")
        served = [model for model in models if model.task is task]
        handler = task_handler(endpoint, task.title, served, batchers, limits)
        routes.append(Route(endpoint.path, handler, methods=["POST"]))
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )


def decoder(model: ServedModel):
    """The batcher's decode function for ``model``: its endpoint's ``run`` on its pipeline."""

    def decode(texts: list[str], options: Any, stream: Any) -> list[Any]:
        return model.endpoint.run(model.pipeline, texts, options, stream)

    return decode


def task_handler(
    endpoint: Endpoint,
    title: str,
    served: list[ServedModel],
    batchers: dict[str, Batcher],
    limits: Limits,
):
    """The route of one task: parse, pick the model, resolve options, queue, answer."""

    async def handle(request: Request) -> Response:
        try:
            body = await read_json(request, limits.max_body_bytes)
            parsed = parse_request(body, endpoint, max_texts=limits.max_texts)
            model = pick_model(served, parsed.model, title, endpoint.path)
            try:
                options = model.pipeline.options(**parsed.options)
            except SeqgenError as error:
                raise RequestError(str(error)) from None
            batcher = batchers[model.name]
            key = tuple(sorted(asdict(options).items()))
            if parsed.stream:
                return streamed(batcher, parsed, options, key, endpoint, limits.timeout)
            results = await asyncio.wait_for(
                batcher.submit(parsed.texts, options, key), limits.timeout
            )
            return JSONResponse(endpoint.answer(results, options))
        except RequestError as error:
            return error_response(str(error), error.status)
        except SeqgenError as error:
            return error_response(str(error), 422)
        except asyncio.TimeoutError:
            return error_response(
                f"the request took longer than the server's limit of {limits.timeout:g} s; "
                "send fewer texts or retry later",
                504,
            )

    return handle


def pick_model(served: list[ServedModel], name: str | None, title: str, path: str) -> ServedModel:
    """The model a request names, or the task's only one."""
    if not served:
        raise RequestError(
            f"this server has no {title}; start it with a {title} (seqgen serve --model ...) "
            f"to use {path}",
            status=404,
        )
    if name is None:
        if len(served) > 1:
            names = ", ".join(model.name for model in served)
            raise RequestError(f'name the {title} with "model": one of {names}')
        return served[0]
    for model in served:
        if model.name == name:
            return model
    names = ", ".join(model.name for model in served)
    raise RequestError(f"no {title} named {name!r} here; choose one of: {names}", status=404)


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body, at most ``limit`` bytes; RequestError otherwise."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"the body is {declared} bytes; this server takes {limit}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the body is over {limit} bytes, this server's limit", 413)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(f"the body is not valid JSON ({error})", 400) from None


def streamed(
    batcher: Batcher,
    parsed: ParsedRequest,
    options: Any,
    key: Any,
    endpoint: Endpoint,
    timeout: float,
) -> StreamingResponse:
    """Server-sent events: ``{"index": i, "text": piece}`` as the text is produced, then an
    ``end`` event with the whole answer (or an ``error`` event)."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[tuple[int, str]] = asyncio.Queue()

    def stream(index: int, piece: str) -> None:  # called on the batcher's thread
        loop.call_soon_threadsafe(pieces.put_nowait, (index, piece))

    async def events() -> AsyncIterator[str]:
        job = asyncio.ensure_future(batcher.submit(parsed.texts, options, key, stream))
        deadline = loop.time() + timeout
        try:
            while not (job.done() and pieces.empty()):
                getter = asyncio.ensure_future(pieces.get())
                await asyncio.wait(
                    {getter, job},
                    timeout=deadline - loop.time(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if getter.done():
                    index, piece = getter.result()
                    yield sse("piece", {"index": index, "text": piece})
                    continue
                getter.cancel()
                if loop.time() >= deadline:
                    raise asyncio.TimeoutError
            yield sse("end", endpoint.answer(job.result(), options))
        except SeqgenError as error:
            yield sse("error", {"error": str(error)})
        except asyncio.TimeoutError:
            yield sse("error", {"error": f"the request took longer than {timeout:g} s"})
        finally:
            job.cancel()  # a client that left stops the generation (batching.Cancelled)

    return StreamingResponse(events(), media_type="text/event-stream")


def sse(event: str, data: dict[str, Any]) -> str:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def error_response(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def http_error(request: Request, error: Exception) -> Response:
    """Starlette's own errors (an unknown path, a wrong method) as JSON too."""
    assert isinstance(error, HTTPException)
    messages = {404: f"no such endpoint {request.url.path}; see GET /models"}
    message = (
        messages.get(error.status_code) or f"{request.method} {request.url.path}: {error.detail}"
    )
    return error_response(message, error.status_code)


async def server_error(request: Request, error: Exception) -> Response:
    logger.exception("error while serving %s", request.url.path)
    return error_response(f"internal error ({type(error).__name__}); the server goes on", 500)
