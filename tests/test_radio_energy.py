"""The radio model of an offloaded request (Huang et al., MobiSys'12): promotion + sending + tail
for isolated requests, sending + the gap in the tail for requests closer than the tail, and what
that does to an energy-driven split choice."""

from __future__ import annotations

import numpy as np
import pytest

from deploypipe.partition import network
from deploypipe.partition.analyzer import analyze
from deploypipe.partition.profile import LayerCosts

from conftest import tiny_classifier


def _without_state_machine(net: network.NetworkProfile) -> network.NetworkProfile:
    """The model before the tail: the same profile with promotion and tail zeroed."""
    zero = {k: getattr(net, k).model_copy(update={"value": 0.0}) for k in ("promotion_mw", "promotion_ms", "tail_mw", "tail_ms")}
    return net.model_copy(update=zero)


def test_isolated_request_pays_promotion_sending_and_the_whole_tail() -> None:
    lte = network.get("4g")
    nbytes = 100_000
    r = lte.radio(nbytes, inter_arrival_ms=60_000)
    assert r.promotion_mj == pytest.approx(lte.promotion_mw.value * lte.promotion_ms.value / 1e3)
    assert r.tail_mj == pytest.approx(lte.tail_mw.value * lte.tail_ms.value / 1e3)
    assert r.transfer_mj == pytest.approx(lte.radio_w() * lte.transfer_ms(nbytes))
    assert lte.promotion_delay_ms(nbytes, 60_000) == lte.promotion_ms.value
    # the tail dominates a small LTE transfer, as Huang et al. found
    assert r.tail_mj > 10 * r.transfer_mj


def test_back_to_back_requests_share_the_tail_and_skip_promotion() -> None:
    lte = network.get("4g")
    nbytes = 10_000
    busy = lte.transfer_ms(nbytes)
    gap = 500.0  # well inside LTE's tail
    r = lte.radio(nbytes, inter_arrival_ms=busy + gap)
    assert r.promotion_mj == 0 and lte.promotion_delay_ms(nbytes, busy + gap) == 0
    assert r.tail_mj == pytest.approx(lte.tail_mw.value * gap / 1e3)
    # just past the tail the radio has demoted: the next request pays promotion and the whole tail
    later = lte.radio(nbytes, inter_arrival_ms=busy + lte.tail_ms.value)
    assert later.promotion_mj > 0 and later.tail_mj == pytest.approx(lte.tail_mw.value * lte.tail_ms.value / 1e3)
    # overlapping requests (arriving before the last transfer ends) add no tail
    assert lte.radio(nbytes, inter_arrival_ms=busy / 2).tail_mj == 0


def test_wifi_tail_is_small_and_wired_or_custom_links_have_none() -> None:
    wifi, lte = network.get("wifi").radio(10_000, 60_000), network.get("4g").radio(10_000, 60_000)
    assert 0 < wifi.tail_mj < lte.tail_mj / 100
    for name in ("ethernet", "10,40"):
        r = network.get(name).radio(10_000, 60_000)
        assert r.total_mj == 0


def _costs(target: str, per_node_ms: float, nodes: int) -> LayerCosts:
    return LayerCosts(tuple([per_node_ms] * nodes), f"{per_node_ms} ms per node (given in the test)", False, target)


def test_energy_objective_leans_less_toward_offloading_a_small_payload() -> None:
    """An edge slow enough that offloading a 3 KB input won under sending-only energy: with the
    LTE tail the same request costs ~12 J more and the edge keeps the work, unless requests come
    back to back (the tail is then shared and offloading wins again)."""
    proto = tiny_classifier()
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    n = len(proto.graph.node)
    edge, cloud = _costs("rpi4", 20.0, n), _costs("server-gpu", 0.1, n)
    lte = network.get("4g")
    old = analyze(proto, "tiny", edge, cloud, _without_state_machine(lte), feeds, objective="energy")
    new = analyze(proto, "tiny", edge, cloud, lte, feeds, objective="energy")
    assert old.best_cut.kind == "cloud-only"
    assert new.best_cut.kind == "edge-only"
    co_old, co_new = old.cloud_only, new.cloud_only
    added = lte.promotion_mw.value * lte.promotion_ms.value / 1e3 + lte.tail_mw.value * lte.tail_ms.value / 1e3
    assert co_new.energy_mj - co_old.energy_mj == pytest.approx(added)
    assert co_new.tail_mj + co_new.promotion_mj == pytest.approx(added)
    assert co_new.transfer_ms - co_old.transfer_ms == pytest.approx(lte.promotion_ms.value)  # the idle radio's delay
    assert new.edge_only.energy_mj == old.edge_only.energy_mj  # no radio, no change
    stream = analyze(proto, "tiny", edge, cloud, lte, feeds, objective="energy", inter_arrival_ms=150.0)
    assert stream.best_cut.kind == "cloud-only" and stream.cloud_only.promotion_mj == 0
