"""open Dolly: one Gradio app with two tabs, Chat (a Dolly model, streaming) and Explorer (dolly-15k).

    python app.py                                # Hub dataset + Hub model
    python app.py --data dolly.jsonl --model ./out  # fully offline

Every flag can also be set through an environment variable, which is how Hugging Face Spaces
configure an app. This file only parses flags and puts the tabs side by side; each tab's screen
lives in its own package (explorer/tab.py, space/tab.py) and its logic in plain modules beside it.
"""
import argparse
import os
import sys

from explorer.data import DEFAULT_DATA


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def parse_args(argv=None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description="open Dolly: chat with a Dolly model and explore databricks-dolly-15k.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", default=env("DOLLY_DATA", DEFAULT_DATA),
                        help="Dataset for the Explorer: a Hub dataset id, or a local .jsonl/.json/.csv/.parquet "
                             "file (offline use). Env: DOLLY_DATA.")
    parser.add_argument("--host", default=env("DOLLY_HOST", env("GRADIO_SERVER_NAME", "127.0.0.1")),
                        help="Interface to listen on; 0.0.0.0 to serve your network. Env: DOLLY_HOST.")
    parser.add_argument("--port", type=int, default=int(env("DOLLY_PORT", env("GRADIO_SERVER_PORT", "7860"))),
                        help="Port to listen on. Env: DOLLY_PORT.")
    parser.add_argument("--share", action="store_true", default=_env_flag("DOLLY_SHARE"),
                        help="Also create a public gradio.live link. If it cannot be made, the app keeps "
                             "serving locally. Env: DOLLY_SHARE=1.")
    parser.add_argument("--auth", default=env("DOLLY_AUTH"), metavar="USER:PASSWORD",
                        help="Require this login. Env: DOLLY_AUTH (prefer it: flags show up in `ps`).")
    return parser.parse_args(argv)


def build_app(args):
    """The whole app as a gr.Blocks, not launched (tests launch it themselves)."""
    import gradio as gr

    with gr.Blocks(title="open Dolly") as demo:
        gr.Markdown("# open Dolly")
        with gr.Tabs():
            pass  # the Chat and Explorer tabs are built here
    return demo


def main(argv=None) -> int:
    args = parse_args(argv)
    demo = build_app(args)
    demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
