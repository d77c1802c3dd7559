"""Replace the body of the responses of one status with a JSON body of our own."""

from collections.abc import Callable

from starlette.types import Message, Send


def json_body_for(
    send: Send,
    status: int,
    body: bytes,
    header: Callable[[bytes, bytes], bytes] = lambda name, value: value,
) -> Send:
    """A `send` that gives responses with `status` the JSON `body` (Content-Type and
    Content-Length to match, the other headers passed through `header`) and leaves
    every other response alone."""
    replacing = False

    async def send_rewritten(message: Message) -> None:
        nonlocal replacing
        if message["type"] == "http.response.start" and message["status"] == status:
            replacing = True
            headers = [
                (name, header(name.lower(), value))
                for name, value in message.get("headers", [])
                if name.lower() not in (b"content-length", b"content-type")
            ]
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            await send({**message, "headers": headers})
        elif message["type"] == "http.response.body" and replacing:
            if not message.get("more_body", False):
                await send({"type": "http.response.body", "body": body})
        else:
            await send(message)

    return send_rewritten
