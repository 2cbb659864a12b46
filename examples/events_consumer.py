#!/usr/bin/env python3
"""A durable pull consumer of Surge's event stream (nats-py): prints each event, then acks it.

    pip install nats-py
    python3 examples/events_consumer.py [nats://127.0.0.1:4222] [surge.order.>] [count]

The consumer is durable (named "example-py"): the server remembers what it acknowledged, so a
restart goes on where it stopped. Delivery is at least once: an event handled but not yet
acknowledged when the consumer dies comes again, so handle events idempotently, by their "id".
"""

import asyncio
import json
import sys

import nats
from nats.errors import TimeoutError as FetchTimeout


async def main(url="nats://127.0.0.1:4222", subject="surge.>", count=None):
    left = int(count) if count is not None else None
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(subject, durable="example-py", stream="SURGE_EVENTS")
        while left is None or left > 0:
            try:
                batch = await sub.fetch(batch=min(100, left or 100), timeout=5)
            except FetchTimeout:
                continue  # nothing new yet
            for msg in batch:
                event = json.loads(msg.data)
                # One CloudEvent: "type" is what happened, "subject" the order, SKU or user id.
                print(event["id"], event["type"], event["subject"], event["time"], flush=True)
                await msg.ack()
                if left is not None:
                    left -= 1
    finally:
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
