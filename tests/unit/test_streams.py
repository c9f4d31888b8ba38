"""Declared streams and buckets on a real nats-server: created once, older ones brought to the
declaration, a counter stream that keeps one message per window, and several URLs for a cluster."""

from __future__ import annotations

import asyncio

import nats
from nats.js.api import KeyValueConfig, StorageType, StreamConfig

from llmaas import natsconn, streams, subjects
from llmaas.nats_server import NatsServer


def test_an_older_stream_is_brought_to_the_declaration(server: NatsServer) -> None:
    async def scenario() -> tuple[StreamConfig, StreamConfig]:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        # As an earlier version made it: another retention, no delete protection.
        await js.add_stream(
            StreamConfig(
                name=streams.USAGE.name, subjects=[subjects.USAGE], storage=StorageType.FILE, max_age=60
            )
        )
        await streams.ensure(js, streams.USAGE)
        first = (await js.stream_info(streams.USAGE.name)).config
        await streams.ensure(js, streams.USAGE)  # a second service starting: nothing changes
        second = (await js.stream_info(streams.USAGE.name)).config
        await nc.close()
        return first, second

    first, second = asyncio.run(scenario())
    assert first.max_age == streams.USAGE.max_age_s and first.deny_delete
    assert first.duplicate_window == streams.USAGE.duplicate_window_s
    assert second == first


def test_a_bucket_made_with_other_settings_is_updated_in_place(server: NatsServer) -> None:
    async def scenario() -> tuple[int | None, bytes | None]:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        old = await js.create_key_value(KeyValueConfig(bucket=streams.TENANTS.bucket, history=1))
        await old.put("acme", b"kept")
        kv = await streams.ensure_bucket(js, streams.TENANTS)
        config = (await js.stream_info(streams.TENANTS.stream)).config
        value = (await kv.get("acme")).value
        await nc.close()
        return config.max_msgs_per_subject, value

    history, value = asyncio.run(scenario())
    assert history == streams.TENANTS.history
    assert value == b"kept"


def test_limit_counters_keep_one_message_per_window(server: NatsServer) -> None:
    async def scenario() -> tuple[int, int]:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await streams.ensure(js, streams.LIMITS)
        subject = subjects.limit_counter("acme", "rpm", "202612020600")
        for _ in range(50):
            ack = await js.publish(subject, b"", headers={"Nats-Incr": "+1"})
        state = (await js.stream_info(streams.LIMITS.name)).state
        await nc.close()
        return int(ack.val or 0), state.messages

    total, kept = asyncio.run(scenario())
    assert total == 50  # the count is exact ...
    assert kept == 1  # ... from one message, not fifty


def test_several_urls_are_the_nodes_of_one_cluster(server: NatsServer) -> None:
    assert natsconn.servers(" nats://a:1 , nats://b:2,") == ["nats://a:1", "nats://b:2"]
    assert natsconn.redact("nats://u:p@a:1,nats://b:2") == "nats://a:1,nats://b:2"

    async def scenario() -> bool:
        # The first node is down: the client goes on to the next one.
        nc = await natsconn.connect(f"nats://127.0.0.1:1,{server.url}", "test")
        connected = nc.is_connected
        await nc.close()
        return connected

    assert asyncio.run(scenario())
