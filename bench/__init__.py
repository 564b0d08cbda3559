"""``make bench``: lbproxy against HAProxy, NGINX and going direct, with wrk; and its memory.

Run it as ``python -m bench --help`` from the repository root (``make bench`` does).
"""
