"""Celery task messages written by hand, so enqueueing needs one Redis round trip and no Celery.

The shape is Celery's task protocol 2 inside kombu's Redis envelope, as `app.send_task` writes it
(checked against celery/kombu 5.x; tests/test_integration.py proves a real worker consumes it).
The message carries only the job id: the payload stays in Redis (keys.job), so Flower, which shows
task arguments, never shows an email address or an attribute.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid

from cio_worker.kinds import Kind, queue_name

_ORIGIN = f"cio-producer-{os.getpid()}@{socket.gethostname()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def task_message(job_id: str, kind: Kind) -> str:
    """The JSON kombu pushes onto the family's list for a task `kind.task_name(job_id)`."""
    queue = queue_name(kind.family)
    body = json.dumps([[job_id], {}, _EMBED]).encode()
    return json.dumps(
        {
            "body": base64.b64encode(body).decode("ascii"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py",
                "task": kind.task_name,
                "id": job_id,
                "shadow": None,
                "eta": None,
                "expires": None,
                "group": None,
                "group_index": None,
                "retries": 0,
                "timelimit": [None, None],
                "root_id": job_id,
                "parent_id": None,
                "argsrepr": f"['{job_id}']",
                "kwargsrepr": "{}",
                "origin": _ORIGIN,
                "ignore_result": True,
                "replaced_task_nesting": 0,
                "stamped_headers": None,
                "stamps": {},
            },
            "properties": {
                "correlation_id": job_id,
                "reply_to": "",
                "delivery_mode": 2,
                "delivery_info": {"exchange": queue, "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )
