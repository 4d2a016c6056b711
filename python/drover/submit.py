"""Submitting jobs from Python: the same envelope as `drover submit`, published persistent
with publisher confirms, so that an id returned is a job the broker has on disk. Needs the
`amqp` extra (`pip install "drover[amqp]"`, which brings pika)."""

import json
import re
import socket
import time
import uuid
from datetime import datetime, timezone
from typing import Any, List, Optional, Union

from . import wire

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
DEFAULT_PREFIX = "drover"
DEFAULT_DEADLINE_S = 86_400.0

_UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400, "w": 604_800}


class SubmitError(Exception):
    """The jobs could not be submitted (nothing returned is on the broker)."""


def parse_duration(text: Union[str, float, int]) -> float:
    """Seconds in a duration written like Drover's: `90s`, `40m`, `24h`, `1h30m`, `500ms`."""
    if isinstance(text, (int, float)):
        return float(text)
    parts = re.findall(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)", text)
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s+", "", text):
        raise ValueError(f"{text!r} is not a duration such as '40m' or '1h30m'")
    total = 0.0
    for number, unit in parts:
        if unit not in _UNITS:
            raise ValueError(f"{text!r}: unknown unit {unit!r}")
        total += float(number) * _UNITS[unit]
    return total


def rfc3339(ms: int) -> str:
    t = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _read_config(path: str) -> dict:
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # pragma: no cover
        import tomli as tomllib  # type: ignore
    with open(path, "rb") as f:
        return tomllib.load(f)


def _body(payload: Any) -> bytes:
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload).encode()


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
        return True
    except ValueError:
        return False


def envelope(job_id: str, job_class: str, now_ms: int, deadline_s: float, tenant: Optional[str]) -> dict:
    """The headers of a new job (attempt 1), as `drover submit` writes them."""
    headers = {
        wire.H_ATTEMPT: 1,
        wire.H_SUBMITTED: now_ms,
        wire.H_DEADLINE: now_ms + int(deadline_s * 1000),
        wire.H_CLASS: job_class,
    }
    if tenant:
        headers[wire.H_TENANT] = tenant
    return headers


def submit(
    job_class: str,
    payload: Any = b"",
    *,
    config: Optional[str] = None,
    url: Optional[str] = None,
    prefix: Optional[str] = None,
    deadline: Union[str, float, None] = None,
    tenant: Optional[str] = None,
    count: int = 1,
    host: Optional[str] = None,
) -> List[str]:
    """Publishes `count` jobs of `job_class` and returns their ids in order.

    `payload`: bytes and str are sent as they are; anything else as JSON. `deadline`: seconds
    or a duration such as "40m", from now (default: the class's `deadline` in `config`, else
    24h). `config`: a Drover configuration file, read for the broker's url and prefix, the host
    and the class's deadline; `url` and `prefix` override it."""
    try:
        import pika  # the optional `amqp` extra
    except ImportError as e:
        raise SubmitError('drover.submit needs pika: pip install "drover[amqp]"') from e
    cfg = _read_config(config) if config else {}
    broker = cfg.get("broker", {})
    url = url or broker.get("url") or DEFAULT_URL
    prefix = prefix or broker.get("prefix") or DEFAULT_PREFIX
    host = host or cfg.get("host") or socket.gethostname()
    classes = cfg.get("classes", {})
    if config and job_class not in classes:
        raise SubmitError(f"class {job_class!r} is not configured in {config}")
    if deadline is None:
        deadline = classes.get(job_class, {}).get("deadline", DEFAULT_DEADLINE_S)
    deadline_s = parse_duration(deadline)
    if deadline_s <= 0:
        raise SubmitError(f"deadline {deadline!r}: a positive duration is needed")
    if count < 1:
        raise SubmitError("count must be at least 1")
    body = _body(payload)
    content_type = "application/json" if _is_json(body) else None
    queue = wire.work_queue(prefix, job_class)

    try:
        conn = pika.BlockingConnection(pika.URLParameters(url))
    except pika.exceptions.AMQPError as e:
        raise SubmitError(f"cannot reach the broker at {url}: {e!r}") from e
    try:
        chan = conn.channel()
        try:
            chan.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as e:
            raise SubmitError(
                f"queue {queue} does not exist: start a worker of class {job_class} or run `drover submit` once"
            ) from e
        chan.confirm_delivery()
        ids = []
        now_ms = int(time.time() * 1000)
        for _ in range(count):
            job_id = str(uuid.uuid4())
            props = pika.BasicProperties(
                message_id=job_id,
                timestamp=now_ms // 1000,
                delivery_mode=2,
                content_type=content_type,
                headers=envelope(job_id, job_class, now_ms, deadline_s, tenant),
            )
            try:
                chan.basic_publish("", queue, body, props, mandatory=True)
            except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as e:
                raise SubmitError(f"the broker refused job {job_id}: {e!r} ({len(ids)} submitted before)") from e
            ids.append(job_id)
        _submitted_event(conn, prefix, job_class, host, tenant, len(ids), now_ms)
        return ids
    finally:
        try:
            conn.close()
        except Exception:
            pass


def _submitted_event(conn, prefix: str, job_class: str, host: str, tenant: Optional[str], n: int, at_ms: int) -> None:
    """The `submitted` event `drover submit` publishes (per-tenant backlogs count these);
    telemetry: skipped when the events exchange does not exist yet."""
    import pika

    exchange = wire.events_exchange(prefix)
    try:
        chan = conn.channel()
        chan.exchange_declare(exchange, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return
    event = {
        "v": wire.EVENTS_VERSION,
        "event": "submitted",
        "at": rfc3339(at_ms),
        "class": job_class,
        "host": host,
        "unit": "drover.submit",
        "count": n,
    }
    if tenant:
        event["tenant"] = tenant
    props = pika.BasicProperties(content_type="application/json", delivery_mode=2)
    chan.basic_publish(exchange, wire.event_routing_key("submitted", job_class, host), json.dumps(event), props)
