"""The asyncio shell: call manager, ASGI apps, control API, server."""
