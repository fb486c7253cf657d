"""``seqgen serve``: the models behind an HTTP service (``seqgen.serving``)."""

from __future__ import annotations

import click

from seqgen.cli.common import backend_option, device_option
from seqgen.errors import SeqgenError
from seqgen.serving.limits import Limits

DEFAULTS = Limits()


@click.command()
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME_OR_PATH",
    help="A bundled model's name, a checkpoint, run folder or bundle folder (repeatable) "
    "[default: multi30k-de-en].",
)
@click.option(
    "--ensemble",
    "ensembles",
    multiple=True,
    metavar="NAME=MODEL,MODEL",
    help="Translators served as one under NAME, their log-probabilities averaged at every "
    "step, as seqgen translate --model A --model B decodes (repeatable).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8000, show_default=True, help="0 picks a free port.")
@click.option(
    "--batch-window",
    type=float,
    default=DEFAULTS.window * 1000,
    show_default=True,
    help="Milliseconds an idle model waits to gather requests into one batch.",
)
@click.option(
    "--max-batch", type=int, default=DEFAULTS.max_batch, show_default=True, help="Texts per batch."
)
@click.option(
    "--max-texts",
    type=int,
    default=DEFAULTS.max_texts,
    show_default=True,
    help="Texts in one request.",
)
@click.option(
    "--max-queued",
    type=int,
    default=DEFAULTS.max_queued,
    show_default=True,
    help="Texts waiting per model; beyond it requests are answered 503.",
)
@click.option(
    "--timeout",
    type=float,
    default=DEFAULTS.timeout,
    show_default=True,
    help="Seconds per request.",
)
@device_option
@backend_option
def serve(
    models: tuple[str, ...],
    ensembles: tuple[str, ...],
    host: str,
    port: int,
    batch_window: float,
    max_batch: int,
    max_texts: int,
    max_queued: int,
    timeout: float,
    device: str,
    backend: str,
) -> None:
    """Serve models over HTTP: POST /translate, /generate, /classify; GET /health, /models.

    Requests that arrive together are decoded in one batch. Stop with Ctrl-C or SIGTERM:
    the requests in flight are answered first.
    """
    try:
        from seqgen.serving.models import load_models
        from seqgen.serving.server import serve as run_server
    except ModuleNotFoundError as error:
        raise SeqgenError(
            f"seqgen serve needs the serve extra ({error.name} is missing): "
            "pip install 'seqgen[serve]'"
        ) from None
    for name, value in (("--max-batch", max_batch), ("--max-texts", max_texts)):
        if value < 1:
            raise SeqgenError(f"{name} must be at least 1, got {value}")
    if not 0 <= port <= 65535:
        raise SeqgenError(f"--port must be between 0 and 65535, got {port}")
    if batch_window < 0 or timeout <= 0 or max_queued < 1:
        raise SeqgenError("--batch-window must be >= 0, --timeout > 0 and --max-queued >= 1")
    limits = Limits(
        max_body_bytes=DEFAULTS.max_body_bytes,
        max_texts=max_texts,
        timeout=timeout,
        window=batch_window / 1000,
        max_batch=max_batch,
        max_queued=max(max_queued, max_texts),
    )
    loaded = load_models(models, device=device, backend=backend, ensembles=ensembles)
    run_server(loaded, host=host, port=port, limits=limits, grace=timeout)
