"""A small NetworkPolicy evaluator (the rules of networking.k8s.io/v1, for matchLabels
selectors), so the tests can ask "may this pod open that connection?" of the manifests
without a cluster or a network plugin."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pod:
    labels: dict[str, str]
    namespace: str = "clowder-ml"
    namespace_labels: dict[str, str] = field(default_factory=dict)

    def ns_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


@dataclass(frozen=True)
class Address:
    """A destination outside the cluster's pods (the internet, the Kubernetes API...)."""

    ip: str


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"evaluator knows matchLabels only: {selector}"
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _peer_matches(peer: dict[str, Any], policy_ns: str, other: Pod | Address) -> bool:
    if "ipBlock" in peer:
        if not isinstance(other, Address):
            return False  # pods are reached by pod rules in these tests
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(other.ip)
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(c) for c in block.get("except", []))
    if not isinstance(other, Pod):
        return False
    if "namespaceSelector" in peer:
        if not _matches(peer["namespaceSelector"], other.ns_labels()):
            return False
    elif other.namespace != policy_ns:
        return False  # a podSelector alone means the policy's own namespace
    return _matches(peer.get("podSelector") or {}, other.labels)


def _port_matches(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    return any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port)
               for p in ports)


def allowed(policies: list[dict[str, Any]], direction: str, pod: Pod, other: Pod | Address,
            port: int, protocol: str = "TCP") -> bool:
    """Whether ``pod`` may send to (``direction="Egress"``) or receive from (``"Ingress"``)
    ``other`` on ``port``: allowed when no policy of that direction selects ``pod``, else when
    a rule of one of the selecting policies allows it."""
    key, peers = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    selecting = [p for p in policies
                 if p["metadata"].get("namespace", "default") == pod.namespace
                 and _matches(p["spec"]["podSelector"], pod.labels)
                 and direction in p["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return True
    for policy in selecting:
        ns = policy["metadata"].get("namespace", "default")
        for rule in policy["spec"].get(key) or []:
            if not _port_matches(rule.get("ports"), port, protocol):
                continue
            if not rule.get(peers) or any(_peer_matches(peer, ns, other)
                                          for peer in rule[peers]):
                return True
    return False
