"""One JSON call from a command-line tool to one of our daemons (`oca drain`, `steering withdraw`, ...):
GET, or POST a JSON body, with an optional bearer token; the answer's JSON, or `CallFailed` carrying
the daemon's own error `detail` (our JSON errors) or why it could not be reached. Blocking, stdlib only:
a CLI makes one call and exits."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class CallFailed(Exception):
    pass


def call_json(url: str, body: dict[str, Any] | None = None, token: str | None = None,
              timeout_s: float = 30.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=timeout_s) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read() or b"{}").get("detail", exc.reason)
        except (ValueError, AttributeError):
            detail = exc.reason
        raise CallFailed(f"{url}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise CallFailed(f"{url}: {exc}") from None
