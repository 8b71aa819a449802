"""A node's Prometheus metrics (``GET /metrics`` on its HM port, TLS), for a Prometheus server
that holds the node's ``metrics_token`` (``Authorization: Bearer …``; no token configured:
the metrics are off, 404).

``prometheus_client`` is imported at the first scrape, not with the agent: an agent farm
of thousands of nodes that nobody scrapes does not carry it. The families are made from
the node's own state at each scrape (no registry kept per node).

Per path, a heartbeat counter is kept for the direct link only (``…_direct``) and the HM
network's is the total less it: a node without a direct link keeps no extra counter.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .protocol import HeartbeatPath

if TYPE_CHECKING:
    from .node import Node


def token_ok(node: Node, authorization: str) -> bool:
    scheme, _, token = authorization.partition(" ")
    expected = node.cfg.metrics_token
    return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), expected)


def _per_path(node: Node, name: str, paths: set[HeartbeatPath]) -> Iterator[tuple[str, int]]:
    total, direct = node.counters[name], node.counters[f"{name}_direct"]
    yield HeartbeatPath.HM.value, total - direct
    if HeartbeatPath.DIRECT in paths or direct:
        yield HeartbeatPath.DIRECT.value, direct


def exposition(node: Node, accept: str = "") -> tuple[bytes, str]:
    """One scrape of ``node``: (body, content type), in the format Accept asks for."""
    from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.exposition import choose_encoder

    cfg = node.cfg

    class NodeCollector:
        def collect(self):
            info = GaugeMetricFamily("mse_agent_info", "This node", labels=["node", "role", "device_type", "version"])
            info.add_metric([cfg.name, cfg.role.value, cfg.device_type, cfg.version], 1)
            yield info
            yield GaugeMetricFamily(
                "mse_agent_services_running", "1 while the node's services run", value=int(node.services_running)
            )
            state = GaugeMetricFamily("mse_agent_pair_state", "Each pair's HA state (1)", labels=["peer", "state"])
            generation = GaugeMetricFamily("mse_agent_pair_generation", "Each pair's generation", labels=["peer"])
            owner = GaugeMetricFamily(
                "mse_agent_pair_vip_owner", "1 while this node holds the pair's VIP (in charge)", labels=["peer"]
            )
            up = GaugeMetricFamily("mse_agent_pair_heartbeat_up", "1 while heartbeats flow", labels=["peer"])
            response = GaugeMetricFamily(
                "mse_agent_pair_heartbeat_response_seconds",
                "Mean heartbeat response time (the secondary's measure; the primary's as told)",
                labels=["peer"],
            )
            lag_records = GaugeMetricFamily(
                "mse_agent_pair_replication_lag_records",
                "Records the replica lacks (the copy in charge's sequence number less the other's)",
                labels=["peer"],
            )
            lag_seconds = GaugeMetricFamily(
                "mse_agent_pair_replication_lag_seconds", "Seconds the replica has been behind (0: it is not)",
                labels=["peer"],
            )  # fmt: skip
            paths: set[HeartbeatPath] = set()
            now = time.monotonic()
            for pr in node.pairs.values():
                peer = pr.peer["name"]
                paths.update(pr.paths)
                state.add_metric([peer, pr.ha.state.value], 1)
                generation.add_metric([peer], pr.ha.generation)
                owner.add_metric([peer], int(pr.ha.in_charge))
                up.add_metric([peer], int(pr.ha.heartbeat_up))
                mean_ms = pr.mean_ms
                if mean_ms is not None:
                    response.add_metric([peer], mean_ms / 1000)
                behind = pr.replication_lag()
                lag_records.add_metric([peer], behind)
                # since when, as last noted (a heartbeat, a replicated write); none behind: 0
                since = pr.lag_since if behind else None
                lag_seconds.add_metric([peer], now - since if since is not None else 0.0)
            yield from (state, generation, owner, up, response, lag_records, lag_seconds)
            for name, what in (
                ("heartbeats_sent", "Heartbeat datagrams sent (beats and answers), by path"),
                ("heartbeats_received", "Heartbeat datagrams received and accepted, by path"),
                ("heartbeats_missed", "Heartbeats sent that no answer came back for, by path"),
            ):
                family = CounterMetricFamily(f"mse_agent_{name}", what, labels=["path"])
                for path, value in _per_path(node, name, paths):
                    family.add_metric([path], value)
                yield family
            for name, what in (
                ("heartbeat_send_errors", "Heartbeat datagrams the network refused to send"),
                ("datagrams_refused", "Heartbeat datagrams refused (signature, sequence, malformed)"),
                ("writes", "Replicated writes applied to this node's instance"),
            ):
                yield CounterMetricFamily(f"mse_agent_{name}", what, value=node.counters[name])
            yield GaugeMetricFamily("mse_agent_events", "The last event's sequence number", value=node.seq)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector())
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
