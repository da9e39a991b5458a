"""The main job on real input: the planexec pair and real tool servers, with demo intents.

``python -m planexec.demo`` (``make run``) brings everything up on the embedded Postgres,
submits the demo intents and keeps serving until Ctrl-C; ``--exit`` (``make demo``) exits
with 0 only when every demo outcome was the expected one.
"""
