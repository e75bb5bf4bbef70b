"""open Dolly: one Gradio app with two tabs, Chat (a Dolly model, streaming) and Explorer (dolly-15k).

    python app.py                                # Hub dataset + Hub model
    python app.py --data dolly.jsonl --model ./out  # fully offline

Every flag can also be set through an environment variable, which is how Hugging Face Spaces
configure an app. This file only parses flags and puts the tabs side by side; each tab's screen
lives in its own package (explorer/tab.py, space/tab.py) and its logic in plain modules beside it.
"""
import argparse
import os
import re
import signal
import sys
import threading

from dolly import settings
from dolly.data import DEFAULT_DATA
from dolly.numbers import whole_number


def parse_args(argv=None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description="open Dolly: chat with a Dolly model and explore databricks-dolly-15k.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    # The settings that have no flag (dolly/settings.py) first: space/ reads them as it is imported.
    for problem in settings.check():
        parser.exit(2, f"{parser.prog}: error: {problem}\n")
    from space.model import CPU_ENGINES, DEFAULT_MODEL, DEVICES, DTYPES, QUANTIZE

    parser.add_argument("--data", default=env("DOLLY_DATA", DEFAULT_DATA),
                        help="Dataset for the Explorer: a Hub dataset id, or a local .jsonl/.json/.csv/.parquet "
                             "file or a folder of them (offline use). Env: DOLLY_DATA.")
    parser.add_argument("--curation-db", default=None, metavar="PATH_OR_URL",
                        help="Where the Explorer keeps curation decisions (edits, exclusions, acceptances, with "
                             "history): an SQLite file, or a postgresql:// URL that app replicas share. Default: "
                             "/data/open-dolly/curation.sqlite3 on a Space with persistent storage, else "
                             "~/.local/share/open-dolly/curation.sqlite3 ($XDG_DATA_HOME). Env: DOLLY_CURATION_DB.")
    parser.add_argument("--host", default=env("DOLLY_HOST", env("GRADIO_SERVER_NAME", "127.0.0.1")),
                        help="Interface to listen on; 0.0.0.0 to serve your network. Env: DOLLY_HOST.")
    # --port and --concurrency are read as text and checked below, flag and variable alike (_whole).
    parser.add_argument("--port", default=env("DOLLY_PORT", env("GRADIO_SERVER_PORT", "7860")),
                        help="Port to listen on. Env: DOLLY_PORT.")
    parser.add_argument("--share", action="store_true", default=None,
                        help="Also create a public gradio.live link. If it cannot be made, the app keeps "
                             "serving locally. Env: DOLLY_SHARE=1.")
    # No default shown for --auth: --help must not print a password taken from the environment.
    parser.add_argument("--auth", default=None, metavar="USER:PASSWORD",
                        help="Require this login. Env: DOLLY_AUTH (prefer it: flags show up in `ps`).")
    parser.add_argument("--model", default=env("DOLLY_MODEL", DEFAULT_MODEL),
                        help="Chat model: a Hub id (databricks/dolly-v2-3b, -7b, -12b) or a local checkpoint "
                             "folder, e.g. one `python -m train` wrote (offline use). Env: DOLLY_MODEL.")
    parser.add_argument("--device", default=env("DOLLY_DEVICE", "auto"),
                        help="Where the chat model runs: auto (the GPU when there is one), cpu, cuda, cuda:N, mps. "
                             "Env: DOLLY_DEVICE.")
    parser.add_argument("--dtype", default=env("DOLLY_DTYPE", "auto"), choices=DTYPES,
                        help="Precision of the model's float tensors: auto (bfloat16 on GPU, float16 on GPUs without "
                             "bf16; on CPU bfloat16 with --quantize int8/int4 where the CPU has native bf16, else "
                             "float32). Env: DOLLY_DTYPE.")
    parser.add_argument("--quantize", default=env("DOLLY_QUANTIZE", "auto"), choices=QUANTIZE,
                        help="Weights' format: auto (int8 on CPU: half of bf16's bytes to read per token, for a "
                             "negligible quality loss; none on GPU), none, int8 (per channel), int4 (groups of 64: "
                             "a quarter, with a measurable quality loss). int8/int4 run on the CPU only. "
                             "Env: DOLLY_QUANTIZE.")
    parser.add_argument("--cpu-engine", default=env("DOLLY_CPU_ENGINE", "auto"), choices=CPU_ENGINES,
                        help="What runs the model on a CPU: auto (the engine measured fastest on this CPU: OpenVINO "
                             "where it has AVX-512, else llama.cpp; the other if that one cannot run the model, else "
                             "torch; the Chat tab's status line says which and why), llamacpp, openvino (each converts "
                             "the checkpoint once into a cache: DOLLY_CACHE, else beside the Hugging Face cache), torch. "
                             "A GPU always runs torch. Env: DOLLY_CPU_ENGINE.")
    parser.add_argument("--concurrency", default=env("DOLLY_CONCURRENCY", "2"),
                        help="How many chat replies are generated at once (Chat tab, /chat and /v1 together); more "
                             "requests wait. With --backend, raise it: the backend batches. Env: DOLLY_CONCURRENCY.")
    parser.add_argument("--backend", default=env("DOLLY_BACKEND") or None, metavar="URL",
                        help="Generate through this OpenAI-compatible server (vLLM, TGI, llama.cpp's server, another "
                             "open Dolly), e.g. http://gpu-host:8000/v1, instead of loading --model here. Its API key, "
                             "if it needs one, comes from DOLLY_BACKEND_KEY. Env: DOLLY_BACKEND.")
    parser.add_argument("--backend-model", default=env("DOLLY_BACKEND_MODEL") or None,
                        help="Which of the backend's models to use (default: the one it serves). "
                             "Env: DOLLY_BACKEND_MODEL.")
    args = parser.parse_args(argv)
    # Every value from the environment is checked here, before anything heavy is imported, as its
    # flag is: argparse checks flags against choices and types, but a default taken from the
    # environment against neither, so the checks below cover both.
    if args.share is None:
        try:
            args.share = settings.switch("DOLLY_SHARE")
        except settings.SettingError as err:
            parser.error(str(err))
    args.quantize = str(args.quantize).strip().lower()
    if args.quantize not in QUANTIZE:
        parser.error(f"--quantize (or DOLLY_QUANTIZE) must be one of {', '.join(QUANTIZE)}, got {args.quantize!r}")
    args.cpu_engine = str(args.cpu_engine).strip().lower()
    if args.cpu_engine not in CPU_ENGINES:
        parser.error(f"--cpu-engine (or DOLLY_CPU_ENGINE) must be one of {', '.join(CPU_ENGINES)}, got {args.cpu_engine!r}")
    args.dtype = str(args.dtype).strip().lower()
    if args.dtype not in DTYPES:
        parser.error(f"--dtype (or DOLLY_DTYPE) must be one of {', '.join(DTYPES)}, got {args.dtype!r}")
    device = str(args.device).strip().lower()
    if device not in DEVICES and not re.fullmatch(r"cuda:\d+", device):
        parser.error(f"--device (or DOLLY_DEVICE) must be one of {', '.join(DEVICES)} or cuda:N (N a GPU's number), "
                     f"got {args.device!r}")
    args.port = _whole(parser, "--port (or DOLLY_PORT) must be a port number from 1 to 65535", args.port, 1, 65535)
    args.concurrency = _whole(parser, "--concurrency (or DOLLY_CONCURRENCY) must be a whole number, 1 or more",
                              args.concurrency, 1, None)
    if args.backend and not args.backend.strip().startswith(("http://", "https://")):
        parser.error(f"--backend (or DOLLY_BACKEND) must be an http(s) URL such as http://gpu-host:8000/v1, "
                     f"got {args.backend!r}")
    auth = args.auth if args.auth is not None else env("DOLLY_AUTH")
    try:
        args.auth = parse_auth(auth)
    except ValueError as err:
        parser.error(str(err))
    # Last, once every other setting is known good: a wrong place for the store is an error at start,
    # naming the setting, and nothing is created for a start that fails anyway.
    from dolly.curation import StoreError, open_store, resolve_location, shown

    try:
        args.curation_store = open_store(args.curation_db)
    except StoreError as err:
        parser.error(str(err))
    args.curation_where = shown(resolve_location(args.curation_db))
    return args


def _whole(parser, rule: str, value, low: int, high: int | None) -> int:
    """`value` (a flag's or its variable's text) as a whole number from low to high, else a usage error
    that says `rule` and what was given."""
    try:
        number = whole_number(value)
    except ValueError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        parser.error(f"{rule}, got {value!r:.80}")
    return number


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """'USER:PASSWORD' -> (user, password); None or '' -> None (no login)."""
    if value is None or value == "":
        return None
    user, colon, password = value.partition(":")
    if not colon or not user.strip() or not password:
        raise ValueError("--auth (or DOLLY_AUTH) must be USER:PASSWORD, with a non-empty user and password, "
                         "e.g. --auth alice:s3cret")
    return user.strip(), password


MAX_UPLOAD_SIZE = "10mb"


def launch_options(args) -> dict:
    """Keyword arguments for demo.launch() that style the app (Gradio 6 takes css at launch) and
    keep Explorer links written with Gradio's own `?page=N` working (redirected to `?p=N`)."""
    from starlette.middleware import Middleware

    from explorer.links import LegacyPageLinks
    from explorer.history import HEAD as HISTORY_HEAD
    from explorer.tab import CSS
    from space.tab import CSS as CHAT_CSS, HEAD as CHAT_HEAD

    from dolly.no_uploads import RefuseUploads
    from dolly.page_meta import FAVICON, PageMeta

    middleware = [Middleware(LegacyPageLinks), Middleware(RefuseUploads),
                  # The page's own <title>, description, link-preview tags and image (dolly/page_meta.py);
                  # outside RequireLogin, which still guards everything but what that module serves.
                  Middleware(PageMeta, view=_link_view, auth=bool(args.auth))]
    if args.auth:  # wrong passwords are rate-limited per client; Gradio alone would check them as fast as sent
        from dolly.login_limit import LoginRateLimit
        from dolly.login_required import RequireLogin

        # And nothing but the login page's own routes answers without a login (Gradio leaves a few open).
        middleware += [Middleware(LoginRateLimit), Middleware(RequireLogin)]
    # Nothing in the app takes an upload: RefuseUploads closes Gradio's upload routes, and the few
    # multipart bodies Gradio still reads elsewhere (component_server) are capped at MAX_UPLOAD_SIZE.
    return {"css": CSS + CHAT_CSS, "head": CHAT_HEAD + HISTORY_HEAD, "app_kwargs": {"middleware": middleware},
            "max_file_size": MAX_UPLOAD_SIZE, "favicon_path": str(FAVICON)}


def _link_view(query: str, known_categories) -> dict:
    """A link's Explorer view as a dict, for dolly.page_meta (which imports nothing of the Explorer)."""
    from dataclasses import asdict

    from explorer.links import parse_query

    return asdict(parse_query(query, known_categories))


def check_arity(block_fn, inputs: list) -> None:
    """Refuse an event call with the wrong number of values, in words that name the inputs.

    Gradio itself answers too few values with a ValueError that API clients see as
    {"error": null}, and silently drops extra values, which usually means every value is one
    place off (a seed landing in max_new_tokens). For the public API endpoints both are a gr.Error
    listing the inputs in order; the page's own events only get the clear message for too few.
    A public endpoint's function may mark its last N inputs optional (`fn.optional_inputs = N`, each
    with a default in its signature: inputs added later, such as /explore's `quality`): a call without
    them gets those defaults, put into `inputs` here, so calls written before they existed work unchanged.
    """
    import gradio as gr
    from gradio.utils import get_function_params

    expected, got = len(block_fn.inputs), len(inputs)
    public = bool(block_fn.api_name) and block_fn.api_visibility != "private"
    if got == expected or (got > expected and not public):
        return
    params = get_function_params(block_fn.fn) if block_fn.fn else []
    optional = min(int(getattr(block_fn.fn, "optional_inputs", 0)), expected, len(params)) if public else 0
    if any(not has_default for _, has_default, *_ in params[expected - optional:expected]):
        optional = 0  # only parameters with defaults can be left out
    if expected - optional <= got < expected:
        inputs.extend(default for _, _, default, *_ in params[got:expected])
        return
    names = block_fn.input_parameter_names or [name for name, *_ in params]
    listed = [name or getattr(block, "label", None) or f"input {i}"
              for i, (block, name) in enumerate(zip(block_fn.inputs, list(names) + [None] * expected))
              if not getattr(block, "skip_api", False)]
    endpoint = f"/{block_fn.api_name}" if block_fn.api_name else "This event"
    count = f"{len(listed) - optional} to {len(listed)}" if optional else str(len(listed))
    order = ", ".join(listed[:len(listed) - optional]) + "".join(f", {name} (optional)" for name in listed[len(listed) - optional:])
    raise gr.Error(f"{endpoint} takes {count} input value{'s' if len(listed) != 1 else ''}, in this order: "
                   f"{order}; this call sent {'fewer' if got < expected else 'more'}. "
                   "Nothing was run.", title="Wrong number of inputs", print_exception=False)


def _blocks(**kwargs):
    """The app's gr.Blocks, which checks every call's number of values (check_arity) first."""
    import gradio as gr

    class DollyBlocks(gr.Blocks):
        v1_routes: list = []  # the OpenAI API (space/openai_api.py), served by the app launch() creates
        on_close: list = []  # what the app started beside the server, stopped with it (a backend's rechecks)

        def validate_inputs(self, block_fn, inputs):
            check_arity(block_fn, inputs)
            super().validate_inputs(block_fn, inputs)

        def launch(self, *args, app_kwargs=None, **kwargs):
            # Routes given to the FastAPI app as it is made come before Gradio's own.
            app_kwargs = dict(app_kwargs or {})
            app_kwargs["routes"] = list(app_kwargs.get("routes") or []) + list(self.v1_routes)
            return super().launch(*args, app_kwargs=app_kwargs, **kwargs)

        def close(self, *args, **kwargs):
            super().close(*args, **kwargs)
            for stop in self.on_close:
                stop()

    return DollyBlocks(**kwargs)


def build_app(args, dataset=None):
    """The whole app as a gr.Blocks, not launched (tests launch it themselves).

    `dataset`: an explorer.loader.DatasetLoader to show instead of loading `args.data` (tests pass
    one whose load they control); started here if it was not.
    """
    from explorer.loader import DatasetLoader

    # The dataset loads in the background: it overlaps the imports of gradio, torch and transformers
    # (Arrow parses and indexes it mostly outside the GIL, on the other core), and the server starts
    # serving without waiting for it; the Explorer tab says "Loading dataset ..." until it is there.
    if dataset is None:
        print(f"Loading dataset {args.data} ...", flush=True)
        dataset = DatasetLoader(args.data, on_done=_report_dataset)
    dataset.start()
    import gradio as gr

    from explorer.tab import build_explorer_tab
    from space.model import ModelLoader
    from space.tab import build_chat_tab

    from space import openai_api
    from space.backend import BackendEngine
    from space.engine import LocalEngine

    if getattr(args, "backend", None):  # replies come from a serving engine; no model in this process
        engine = BackendEngine(args.backend, os.environ.get("DOLLY_BACKEND_KEY") or None, args.backend_model,
                               concurrency=args.concurrency).start()
    else:
        # The model loads in the background too: the app serves (and the Explorer works) meanwhile.
        engine = LocalEngine(ModelLoader(args.model, args.device, args.dtype, on_done=_report_model,
                                         quantize=args.quantize, cpu_engine=args.cpu_engine,
                                         replies_at_once=args.concurrency).start(),
                             concurrency=args.concurrency)
    # Gradio's cache (uploads; exports too, which explorer.export also sweeps): entries older than a
    # day go, hourly.
    with _blocks(title="open Dolly", delete_cache=(3600, 86400)) as demo:
        gr.Markdown("# open Dolly")
        with gr.Tabs() as tabs:
            # ---- Chat tab (id "chat", first) ----
            with gr.Tab("Chat", id="chat"):
                chat = build_chat_tab(engine, concurrency=args.concurrency)
                if getattr(args, "curation_store", None) is not None:  # 👍/👎 and better answers (space/feedback.py)
                    from space.feedback import build_feedback

                    build_feedback(chat, args.curation_store)
            # ---- Explorer tab (id "explorer") ----
            explorer = build_explorer_tab(demo, dataset, tabs=tabs, store=getattr(args, "curation_store", None))
            # Try in chat: the opened record's instruction is sent in a fresh chat, with its context, and
            # its human response in the reference panel beside the answer.
            chat.wire_try_in_chat(explorer.try_in_chat, explorer.selected, tabs)
            # ---- Contribute tab (id "contribute"): people write records into the curation store ----
            if getattr(args, "curation_store", None) is not None:
                from explorer.contribute_tab import build_contribute_tab

                build_contribute_tab(demo, dataset, args.curation_store, auth=args.auth is not None)
    # The OpenAI API on the same server, through the same engine (and --concurrency slots) as the chat.
    # Its key only from the environment; with --auth and no key, /v1 stays closed.
    demo.v1_routes = openai_api.routes(engine, api_key=os.environ.get("DOLLY_API_KEY") or None,
                                       login_required=args.auth is not None,
                                       store=getattr(args, "curation_store", None))
    demo.page_data = dataset  # what a shared link's title and preview image tell (dolly/page_meta.py)
    # Closing the app (demo.close(), which main() also calls on Ctrl-C and SIGTERM) removes its exports.
    demo.on_close = [explorer.exports.close] + ([engine.close] if isinstance(engine, BackendEngine) else []) + \
        ([args.curation_store.close] if getattr(args, "curation_store", None) is not None else [])
    return demo


def _report_model(loader) -> None:
    if loader.error:
        print(f"Chat model not loaded, the Chat tab explains why: {loader.error}", file=sys.stderr, flush=True)
    else:
        print(f"Chat model loaded: {loader.name} in {loader.elapsed:.0f} s", flush=True)


def _report_dataset(dataset) -> None:
    if dataset.error:
        print(f"Dataset not loaded, the Explorer tab explains why: {dataset.error}", file=sys.stderr, flush=True)
    else:  # an empty dataset, several files or missing fields: the Explorer's note, said here too
        note = dataset.note().replace("**", "").replace("`", "")
        print(note or f"Dataset loaded: {dataset.source} in {dataset.elapsed:.1f} s", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    demo = build_app(args)
    # After every event Gradio's queue rebuilds a pandas summary of up to the last 10,000 events (for
    # its monitoring page), a per-call cost that grows with the calls served (bench/RESULTS.md);
    # every 1,000 events is fresh enough.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    # Ctrl-C and SIGTERM (what `kill`, systemd, Docker and Spaces send) only set a flag from here on: an
    # exception raised wherever the main thread happens to be (inside Gradio's launch on a busy machine) could
    # be caught there and the stop lost. The serving loop sees the flag, even one set while still starting.
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _serve(demo, args, stop)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        demo.close(verbose=False)


def _serve(demo, args, stop: threading.Event) -> int:
    """Launch the app and serve until `stop` is set (Ctrl-C or SIGTERM, see main) or the server ends."""
    try:
        # quiet: Gradio's own lines would tell people to "set `share=True` in `launch()`"; the app says
        # where it serves and how to share in its own words below (Gradio's reasons a link failed remain).
        demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share, auth=args.auth,
                            prevent_thread_lock=True, quiet=True, **launch_options(args))
    except OSError as error:
        if "port" not in str(error).lower():
            raise
        print(f"open Dolly: cannot listen on {args.host}:{args.port}: the port is in use (or not allowed). "
              f"Start it on another port, e.g. `python app.py --port {args.port + 1 if args.port < 65535 else 7861}` "
              "(or DOLLY_PORT).", file=sys.stderr, flush=True)
        return 1
    print(f"open Dolly is serving at {demo.local_url}", flush=True)
    print(f"Curation decisions are kept in {args.curation_where}", flush=True)
    if args.share and not demo.share_url:
        # Gradio has printed its own reason; say plainly that the app is still up.
        print(f"open Dolly: no public --share link could be made (no tunnel to gradio.live from here); "
              f"the app keeps serving locally at {demo.local_url}", flush=True)
    elif not args.share:
        print("For a public gradio.live link as well, start it with --share (or DOLLY_SHARE=1).", flush=True)
    while demo.is_running and not stop.wait(0.1):  # what demo.block_thread() does, without its Ctrl-C message
        pass
    if stop.is_set():
        print("open Dolly: stopping, and removing this app's exports.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
