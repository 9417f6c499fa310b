"""One request to the traffic API, with a bounded timeout and a bounded body.

Every way a request can fail becomes a :class:`FetchError` that says, in words, what
happened and whether retrying soon may help (``transient``): a timeout, a refused or dropped
connection, HTTP 5xx and 429 are transient; other HTTP statuses mean the request itself is
wrong (a bad URL) and are not.
"""

from __future__ import annotations

import aiohttp


class FetchError(Exception):
    def __init__(self, reason: str, *, transient: bool, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.kind = kind  # timeout, connection, http_5xx, http_4xx: the metric's label


async def fetch_document(
    session: aiohttp.ClientSession, url: str, timeout_s: float, max_bytes: int
) -> bytes:
    """The body at ``url`` (at most ``max_bytes`` + 1 bytes, so that the parser can refuse
    an oversized document with its start in hand); :class:`FetchError` otherwise."""
    try:
        async with session.get(
            url,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            headers={"Accept": "application/xml"},
        ) as response:
            if response.status >= 500 or response.status == 429:
                raise FetchError(
                    f"the API answered HTTP {response.status} {response.reason or ''}".strip(),
                    transient=True,
                    kind="http_5xx" if response.status >= 500 else "http_4xx",
                )
            if response.status != 200:
                raise FetchError(
                    f"the API answered HTTP {response.status} {response.reason or ''} for {url}; "
                    "is CASATWIN_GATEWAY_API_URL right?",
                    transient=False,
                    kind="http_4xx",
                )
            return await _read_at_most(response, max_bytes + 1)
    except TimeoutError:
        raise FetchError(
            f"no complete answer within {timeout_s:g} s", transient=True, kind="timeout"
        ) from None
    except aiohttp.ClientConnectorError as exc:
        raise FetchError(
            f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc})",
            transient=True,
            kind="connection",
        ) from None
    except aiohttp.ClientError as exc:  # dropped connection, broken payload, bad headers
        raise FetchError(
            f"the connection failed mid-answer: {exc or type(exc).__name__}",
            transient=True,
            kind="connection",
        ) from None


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]
