"""`ffnlab explore MODEL`: browse every layer's FFN and every neuron in the browser, or export them as HTML."""

from __future__ import annotations

import argparse
import socket
import sys

from ffnlab.commands._options import add_device_option
from ffnlab.errors import FFNLabError

NAME = "explore"
HELP = "browse a model's FFN layers and neurons in the browser (prompts, live interventions), or --export HTML"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an ffnlab run/checkpoint directory, or a pretrained name or path (e.g. smollm2)")
    p.add_argument("--stats", help="statistics directory (default: the newest results/neurons/MODEL-*)")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; another exposes the app "
                        "and its model to whoever can reach it)")
    p.add_argument("--open", action="store_true", help="open the overview in the system's web browser")
    p.add_argument("--export", metavar="DIR", help="write the overview, layers and chosen neurons as static HTML "
                   "to DIR instead of serving")
    p.add_argument("--neurons", default="", metavar="L:N,...", help="neurons to export besides each layer's strongest")
    p.add_argument("--per-layer", type=int, default=5,
                   help="each layer's strongest neurons (by top |activation|) to export (default 5)")
    p.add_argument("--results", help="results directory (default: $FFNLAB_RESULTS or ./results)")
    add_device_option(p)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), or a one-line error saying why not."""
    if not 0 <= port <= 65535:
        raise FFNLabError(f"--port must be between 0 and 65535, got {port}")
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(128)
    except OSError as err:
        raise FFNLabError(f"cannot listen on {host}:{port} ({err.strerror or err}); pass another --port "
                          "(0 picks a free one) or --host") from None
    return sock


def run(args: argparse.Namespace) -> int:
    from ffnlab.explore import Explorer, build_app, export_static
    from ffnlab.explore.live import indices

    neurons = [indices(item, 2, "--neurons", "LAYER:NEURON (e.g. 3:17,5:120)")
               for item in filter(None, (part.strip() for part in args.neurons.split(",")))]
    if neurons and args.export is None:
        raise FFNLabError("--neurons chooses what --export writes; pass --export DIR too")
    if args.per_layer < 0:
        raise FFNLabError(f"--per-layer must be 0 or more, got {args.per_layer}")
    if args.export is None:
        sock = listen(args.host, args.port)  # before the model loads: a taken port fails at once
    ex = Explorer.open(args.model, args.stats, args.results, device=args.device)
    for caveat in ex.opened.caveats:
        print(f"note: {caveat}")
    if args.export is not None:
        out = export_static(ex, args.export, neurons, args.per_layer)
        print(f"{ex.name}: overview, {ex.n_layers} layers and {len(list(out.glob('neuron-*.html')))} neurons "
              f"in {out}/index.html (opens offline)")
        return 0
    import uvicorn

    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    if args.host not in LOOPBACK:
        print(f"note: listening on {args.host}: anyone who can reach this machine can use the app and run the model",
              file=sys.stderr)
    print(f"ffnlab explore: {ex.name} at {url} (Ctrl-C stops)", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(url)
    server = uvicorn.Server(uvicorn.Config(build_app(ex), log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # why: uvicorn shuts down cleanly, then re-raises the signal; Ctrl-C is how a
        pass                   # server is meant to stop, not an interruption of work
    print("ffnlab explore: stopped")
    return 0
