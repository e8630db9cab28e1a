"""``python -m ffd.serve``: ffd.predict's verdicts over HTTP, for tools that call a service and for people
with a browser.

``uploads`` reads a request's photos into memory under the size limits, ``service`` judges them as
ffd.predict does (the same decoding, face alignment, decision and verdicts), ``batching`` runs requests
that arrive together through the model as one batch, ``app`` is the FastAPI application and its page.
FastAPI and uvicorn are the optional ``serve`` extra; only ``app`` and ``__main__`` import them.
"""
