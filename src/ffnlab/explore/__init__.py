"""The FFN explorer: every layer's FFN and every neuron of a model in the browser, prompts and live
interventions, and a static export (`ffnlab explore MODEL`).

    from ffnlab.explore import Explorer, build_app, export_static
    ex = Explorer.open("smollm2")          # with the newest `ffnlab memories` statistics
    app = build_app(ex)                    # a Starlette app: serve it with uvicorn
    export_static(ex, "supplement/")       # plain HTML files that open offline
"""

from ffnlab.explore.app import build_app
from ffnlab.explore.explorer import Explorer
from ffnlab.explore.export import export_static

__all__ = ["Explorer", "build_app", "export_static"]
