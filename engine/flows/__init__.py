"""Use-cases, made once in the ASGI lifespan (engine/services.py): what the HTTP adapters
call. A flow combines the stores (engine/store) and the pure logic (engine/logic); it imports
no web framework and answers with data, never with a response. See docs/architecture.md.
"""
