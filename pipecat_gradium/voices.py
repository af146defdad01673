"""Checking a voice id with Gradium's REST API, through the official ``gradium`` SDK.

Gradium answers a setup with an unknown voice id with error 1011, the code it also uses for
worker failures, so the WebSocket alone cannot tell a mistyped voice from a passing fault. The
service asks the REST API once at start (``voice_get``) and says at once, naming the voice, when
it does not exist. The answer is kept per process, so a hundred sessions ask once.
"""

import asyncio
import hashlib
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from gradium.client import GradiumClient
from loguru import logger

#: A check taking longer than this is abandoned (the setup's own error still names the voice).
CHECK_TIMEOUT_S = 5.0

# (REST base URL, key digest, voice id) -> whether the voice exists, or the check in flight.
_known: dict[tuple[str, str, str], bool] = {}
_in_flight: dict[tuple[str, str, str], "asyncio.Future[bool | None]"] = {}


def rest_base_url(ws_url: str) -> str:
    """The REST base URL the SDK wants, from the TTS WebSocket URL.

    Args:
        ws_url: E.g. ``wss://api.gradium.ai/api/speech/tts``.

    Returns:
        E.g. ``https://api.gradium.ai/api/``.
    """
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    path = parts.path
    if path.endswith("speech/tts"):
        path = path[: -len("speech/tts")]
    if not path.endswith("/"):
        path += "/"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


async def voice_exists(ws_url: str, api_key: str, voice_id: str) -> bool | None:
    """Whether Gradium knows ``voice_id``, asked once per process.

    Args:
        ws_url: The service's TTS WebSocket URL (the REST API is on the same host).
        api_key: The API key.
        voice_id: The voice.

    Returns:
        True or False when Gradium said; None when the check could not tell (network, timeout,
        another error): the setup then decides.
    """
    base = rest_base_url(ws_url)
    key = (base, hashlib.sha256(api_key.encode()).hexdigest()[:16], voice_id)
    if key in _known:
        return _known[key]
    pending = _in_flight.get(key)
    if pending is not None and pending.get_loop() is asyncio.get_running_loop():
        return await asyncio.shield(pending)
    future: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
    _in_flight[key] = future
    result: bool | None = None
    try:
        result = await _ask(base, api_key, voice_id)
    finally:
        _in_flight.pop(key, None)
        if result is not None:
            _known[key] = result
        future.set_result(result)
    return result


async def _ask(base: str, api_key: str, voice_id: str) -> bool | None:
    client = GradiumClient(base_url=base, api_key=api_key)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await client.voice_get(voice_id, include_catalog=True)
    except aiohttp.ClientResponseError as e:
        if e.status == 404:
            return False
        logger.debug(f"Gradium: voice check for {voice_id!r} got HTTP {e.status}; not judged")
        return None
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
        logger.debug(f"Gradium: voice check for {voice_id!r} failed ({e!r}); not judged")
        return None
    return True
