"""The API client's pure helpers."""

from __future__ import annotations


def test_the_request_counter_names_verbs_and_resources_as_the_apiserver_does() -> None:
    from moe_operator.kube import _resource, _verb, resource_path

    pods = resource_path("v1", "Pod", "ns")
    assert (_verb("GET", pods), _resource(pods)) == ("LIST", "pods")
    one = resource_path("moe-operator.io/v1alpha1", "MoEDeployment", "ns", "m") + "/status"
    assert (_verb("PATCH", one), _resource(one)) == ("PATCH", "moedeployments/status")
    node = resource_path("v1", "Node", None, "n1")
    assert (_verb("GET", node), _resource(node)) == ("GET", "nodes")
