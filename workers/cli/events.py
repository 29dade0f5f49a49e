"""`paygate events tail`: the events topic as JSON lines, one event a line.

    paygate events tail --from-beginning --max 5
    paygate events tail --follow --key INV-1001 | jq .value.payment.status

Each line is `{"key", "headers", "value", "partition", "offset"}`: the key and headers
decoded as UTF-8, the value as the JSON document it is (or as text when it is not JSON).
Without `--from-beginning` only events published after the command started are printed,
and it waits for them; with it, everything on the topic is printed and the command stops
at the end of the topic as it was at start (unless `--follow`). `--max N` stops after N
printed events, `--key REF` prints only one payment's events (a reference number is the
key).

It speaks Kafka through aiokafka, so it works against the embedded broker of `paygate
dev` (used when KAFKA_BOOTSTRAP_SERVERS is unset) as well as a real cluster; the
librdkafka-based tools (kcat, confluent-kafka) cannot talk to the embedded broker.

Two things the embedded broker does differently are handled here: its end offset points
into the last record batch rather than past it (reading until the position reaches it
still yields the whole batch, since a fetch returns whole batches), and so seeking to the
end can land before the last few records: when only new events are wanted, records
stamped before the command started are skipped in each partition's first fetch.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

import orjson

from gateway.config import Settings
from workers.cli.command import Command
from workers.cli.discovery import locate

POLL_MS = 200
CONNECT_TIMEOUT_S = 10.0


def record_line(record: Any) -> str:
    """One consumer record as the JSON line `tail` prints."""
    value: Any = None
    if record.value is not None:
        try:
            value = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            value = record.value.decode("utf-8", "replace")
    return orjson.dumps(
        {
            "key": None if record.key is None else record.key.decode("utf-8", "replace"),
            "headers": {k: v.decode("utf-8", "replace") for k, v in record.headers or ()},
            "value": value,
            "partition": record.partition,
            "offset": record.offset,
        }
    ).decode()


class Tail:
    """Read one topic from every partition and print what matches."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        *,
        from_beginning: bool,
        follow: bool,
        limit: int | None,
        key: str | None,
        out: TextIO,
    ) -> None:
        self.settings = settings
        self.bootstrap = settings.kafka_bootstrap_servers
        self.topic = topic
        self.from_beginning = from_beginning
        # Only new events wanted: there is no end to stop at.
        self.follow = follow or not from_beginning
        self.limit = limit
        self.key = None if key is None else key.encode()
        self.out = out
        self.printed = 0

    async def run(self) -> int:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        started_ms = int(time.time() * 1000)
        from gateway.clients.kafka import connection_options, describe_start_failure, tls_refusal

        consumer = AIOKafkaConsumer(
            **connection_options(self.settings),
            client_id="paygate-events-tail",
            group_id=None,  # no offsets committed anywhere: a look, not a consumer group
            enable_auto_commit=False,
            request_timeout_ms=int(CONNECT_TIMEOUT_S * 1000),
        )
        try:
            await asyncio.wait_for(consumer.start(), CONNECT_TIMEOUT_S)
        except Exception as exc:  # aiokafka's SASL exchange may fail with a KeyError
            await consumer.stop()
            why = await tls_refusal(self.settings) or describe_start_failure(self.settings, exc)
            return _fail(f"cannot reach the broker at {self.bootstrap}: {why}")
        try:
            await consumer.topics()  # fresh metadata
            parts = consumer.partitions_for_topic(self.topic)
            if not parts:
                return _fail(f"topic {self.topic!r} does not exist at {self.bootstrap}")
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            if self.from_beginning:
                await consumer.seek_to_beginning(*tps)
            else:
                await consumer.seek_to_end(*tps)
            ends = await consumer.end_offsets(tps)
            first_fetch = {tp: not self.from_beginning for tp in tps}
            print(
                f"paygate events tail: {self.topic} at {self.bootstrap}, "
                f"{len(tps)} partition(s)" + (" (waiting; Ctrl-C stops)" if self.follow else ""),
                file=sys.stderr,
                flush=True,
            )
            while not self._enough():
                if not self.follow and await self._at_end(consumer, tps, ends):
                    break
                batches = await consumer.getmany(*tps, timeout_ms=POLL_MS)
                for tp, records in sorted(batches.items(), key=lambda kv: kv[0].partition):
                    skip_before = started_ms if first_fetch[tp] else None
                    first_fetch[tp] = False
                    if self._print(records, skip_before):
                        return 0
            return 0
        finally:
            await consumer.stop()

    def _enough(self) -> bool:
        return self.limit is not None and self.printed >= self.limit

    async def _at_end(self, consumer: Any, tps: list[Any], ends: dict[Any, int]) -> bool:
        for tp in tps:
            if await consumer.position(tp) < ends[tp]:
                return False
        return True

    def _print(self, records: Iterable[Any], skip_before: int | None) -> bool:
        """Print the matching records; True once the limit is reached."""
        for r in records:
            if skip_before is not None and r.timestamp < skip_before:
                continue
            if self.key is not None and r.key != self.key:
                continue
            self.out.write(record_line(r) + "\n")
            self.out.flush()
            self.printed += 1
            if self._enough():
                return True
        return False


def _fail(message: str) -> int:
    print(f"paygate events tail: {message}", file=sys.stderr)
    return 1


def _arguments(events: argparse.ArgumentParser) -> None:
    actions = events.add_subparsers(dest="events_action", required=True)
    tail = actions.add_parser("tail", help="print events from KAFKA_TOPIC as JSON lines")
    tail.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest event (default: only events published from now on)",
    )
    tail.add_argument(
        "--follow",
        action="store_true",
        help="keep waiting for new events (implied without --from-beginning)",
    )
    tail.add_argument("--max", type=int, dest="limit", metavar="N", help="stop after N events")
    tail.add_argument("--key", metavar="REF", help="only events with this key (reference number)")
    tail.add_argument("--topic", help="topic to read (default: KAFKA_TOPIC)")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.limit is not None and args.limit < 1:
        return _fail("--max must be at least 1")
    # KAFKA_BOOTSTRAP_SERVERS, else the broker of the dev stack running here.
    settings = await locate(settings, "KAFKA_BOOTSTRAP_SERVERS")
    tail = Tail(
        settings,
        args.topic or settings.kafka_topic,
        from_beginning=args.from_beginning,
        follow=args.follow,
        limit=args.limit,
        key=args.key,
        out=sys.stdout,
    )
    try:
        return await tail.run()
    except BrokenPipeError:  # `... | head`: the reader has all it wanted
        return 0


COMMAND = Command("events", "look at the events topic: tail", run, _arguments)
